"""``bench attack``: one attack against one checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from bench.cache import ResultsRoot
from bench.commands.common import console, data_root_option, device_option, parse_eps, results_root_option
from bench.profiles import PROFILES, get_profile
from bench.runtime import resolve_device, seed_everything
from bench.steps import data_spec_from_checkpoint, load_data
from models.errors import ConfigError


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--attack", "attack_name", default="mainstay", show_default=True, help="Registered attack name (see 'bench list').")
@click.option("--targeted", is_flag=True, help="Use the targeted variant (mainstay -> mainstay-targeted, sdha -> sdha-targeted).")
@click.option("--eps", default=None, help="L-infinity budget on the [0, 1] pixel scale, e.g. 8/255 (the default).")
@click.option("--steps", type=int, default=None, help="Iterations (default: the profile's value).")
@click.option("--queries", type=int, default=None, help="Number of queries to attack (default: the profile's).")
@click.option("--profile", default="default", show_default=True, type=click.Choice(list(PROFILES)))
@click.option("--seed", default=0, show_default=True, type=int)
@data_root_option
@results_root_option
@device_option
def attack(checkpoint, attack_name, targeted, eps, steps, queries, profile, seed, data_root, results_root, device):
    """Attack the query set of CHECKPOINT's dataset and report MAP or t-MAP."""
    from attacks import ATTACKS
    from bench.attack import attack_cell
    from models.checkpoint import read_checkpoint_config

    name = ATTACKS.check(attack_name)
    if targeted and not ATTACKS.get(name).capabilities.targeted:
        variant = f"{name}-targeted"
        if variant not in ATTACKS:
            raise ConfigError(f"attack {name!r} has no targeted variant; targeted attacks: "
                              + ", ".join(n for n in ATTACKS.names() if ATTACKS.get(n).capabilities.targeted))
        name = variant
    settings = get_profile(profile)
    options = dict(settings["attacks"].get(name, {}))
    if eps is not None:
        options["eps"] = parse_eps(eps)
    if steps is not None:
        options["steps"] = steps
    seed_everything(seed)
    root = ResultsRoot.at(results_root)
    torch_device = resolve_device(device)
    config = read_checkpoint_config(checkpoint)
    data = load_data(data_spec_from_checkpoint(config, data_root), root)
    n_queries = queries if queries is not None else settings["queries"]
    record = attack_cell(root, data, Path(checkpoint), name, options, queries=n_queries, seed=seed,
                         profile=profile, device=torch_device)
    _print_record(record)
    console.print(f"record: {root.record(record['key'])}")
    console.print(f"adversarial codes: {root.adversarial(record['key'])}")


def _print_record(record: dict) -> None:
    m = record["metrics"]
    topk = record["topk"]
    console.print(f"[bold]{record['attack']}[/] against {record['model']} ({record['n_bits']} bits, {record['dataset']}), "
                  f"{record['queries']} queries" + (f", {record['skipped_queries']} without a valid target skipped"
                                                   if record["skipped_queries"] else ""))
    console.print(f"  clean MAP@{topk}     {m['clean_map']:.4f}")
    console.print(f"  attacked MAP@{topk}  {m['attacked_map']:.4f}")
    if record["targeted"]:
        console.print(f"  clean t-MAP@{topk}    {m['clean_tmap']:.4f}")
        console.print(f"  attacked t-MAP@{topk} {m['attacked_tmap']:.4f}")
    if "theory" in m:
        console.print(f"  theory {record['metric'].upper()}  {m['theory']:.4f}")
    if "unbounded_score" in m:
        console.print(f"  unbounded {record['metric'].upper()} {m['unbounded_score']:.4f} (L-inf {m['unbounded_linf']:.4f})")
    console.print(f"  perturbation: L-inf {m['linf']:.4f} ({m['linf'] * 255:.2f}/255), L2 {m['l2']:.4f}, "
                  f"MSE {m['mse']:.3g}, PSNR {m['psnr']:.2f} dB")
    console.print(f"  {m['seconds_per_query'] * 1000:.1f} ms per query")
