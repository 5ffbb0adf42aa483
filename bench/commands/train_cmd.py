"""``bench train``, ``bench eval`` and ``bench defend``."""

from __future__ import annotations

import shutil
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.cache import ResultsRoot
from bench.commands.common import console, data_root_option, device_option, results_root_option
from bench.data import DATASETS
from bench.data.splits import SplitSpec
from bench.profiles import PROFILES, get_profile
from bench.runtime import resolve_device, seed_everything
from bench.steps import DataSpec, data_spec_from_checkpoint, data_topk, load_data, open_checkpoint, train_step
from models import MODELS
from models.training import TrainConfig, encode_images


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


@click.command()
@click.option("--model", "model_name", default="dph", show_default=True, help="Hashing method: " + ", ".join(MODELS.names()) + ".")
@click.option("--dataset", default="fashion-mnist", show_default=True, type=click.Choice(list(DATASETS)))
@click.option("--bits", default=32, show_default=True, type=int, help="Code length K in bits.")
@click.option("--profile", default="default", show_default=True, type=click.Choice(list(PROFILES)),
              help="Split sizes and training settings.")
@click.option("--epochs", type=int, default=None, help="Override the profile's epoch count.")
@click.option("--backbone", default=None, help="Backbone (default: small-cnn for Fashion-MNIST).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Also copy the checkpoint here (default: RESULTS_ROOT/checkpoints/NAME.pt).")
@data_root_option
@results_root_option
@device_option
def train(model_name, dataset, bits, profile, epochs, backbone, seed, output, data_root, results_root, device):
    """Train a hashing model and report its MAP on the query set."""
    MODELS.check(model_name)
    settings = get_profile(profile)
    seed_everything(seed)
    root = ResultsRoot.at(results_root)
    torch_device = resolve_device(device)
    data = load_data(DataSpec(dataset, SplitSpec(**settings["split"], seed=seed), data_root), root)
    train_settings = {**settings["train"], "seed": seed}
    if epochs is not None:
        train_settings["epochs"] = epochs
    config = TrainConfig(**train_settings)
    options = {"backbone": backbone} if backbone else {}
    console.print(f"Training [bold]{model_name}[/] ({bits} bits) on {dataset}: {len(data.train)} training images, "
                  f"{config.epochs} epochs, device {torch_device}")

    def on_epoch(epoch: int, entry: dict) -> None:
        console.print(f"  epoch {epoch:3d}/{config.epochs}  loss {entry['loss']:.4f}  lr {entry['lr']:.4g}  "
                      f"{entry['seconds']:.1f} s")

    with _progress() as progress:
        task = progress.add_task("batches", total=None)

        def on_batch(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        path = train_step(root, data, model_name=model_name, n_bits=bits, train=config, options=options,
                          profile=profile, device=torch_device, on_epoch=on_epoch, on_batch=on_batch)
    _, checkpoint_config = open_checkpoint(path, data)
    target = Path(output) if output else root.path / "checkpoints" / f"{dataset}-{model_name}-{bits}bit-seed{seed}.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    console.print(f"MAP@{checkpoint_config['topk']}: [bold]{checkpoint_config['clean_map']:.4f}[/] "
                  f"(training {checkpoint_config['train_seconds']:.1f} s)")
    console.print(f"checkpoint: {target}")


@click.command("eval")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--topk", type=int, default=None, help="Top-k for MAP (default: the dataset's).")
@data_root_option
@results_root_option
@device_option
def evaluate(checkpoint, topk, data_root, results_root, device):
    """Report MAP, the precision-recall curve and precision@N of a checkpoint."""
    from bench.evaluation import retrieval_report
    from models.checkpoint import read_checkpoint_config

    root = ResultsRoot.at(results_root)
    torch_device = resolve_device(device)
    config = read_checkpoint_config(checkpoint)
    data = load_data(data_spec_from_checkpoint(config, data_root), root)
    model, _ = open_checkpoint(Path(checkpoint), data, torch_device)
    query_codes = encode_images(model, data.query, device=torch_device)
    database_codes = encode_images(model, data.database, device=torch_device)
    topk = topk if topk is not None else data_topk(data)
    report = retrieval_report(query_codes=query_codes, database_codes=database_codes,
                              query_labels=data.query.labels, database_labels=data.database.labels, topk=topk)
    name = config["model"]["model"] + (f"+{config['defense']['defense']}" if config.get("defense") else "")
    console.print(f"{name} ({config['model']['n_bits']} bits) on {data.name}: MAP@{topk} = [bold]{report['map']:.4f}[/]")
    table = Table(title="Precision-recall and precision@N")
    table.add_column("recall")
    table.add_column("precision")
    pr = report["pr_curve"]
    for level in (0.1, 0.25, 0.5, 0.75, 1.0):
        index = min(range(len(pr["recall"])), key=lambda i: abs(pr["recall"][i] - level))
        table.add_row(f"{pr['recall'][index]:.2f}", f"{pr['precision'][index]:.4f}")
    console.print(table)
    pn = report["precision_at_n"]
    for n in (100, 500, 1000):
        if n in pn["n"]:
            console.print(f"P@{n} = {pn['precision'][pn['n'].index(n)]:.4f}")


@click.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--defense", "defense_name", default="saat", show_default=True)
@click.option("--epochs", type=int, default=None, help="Override the profile's epoch count.")
@click.option("--lambda", "lambda_", type=float, default=None, help="SAAT weight of the adversarial term (1.0).")
@click.option("--mu", type=float, default=None, help="SAAT weight of the quantisation term (1e-4).")
@click.option("--profile", default="default", show_default=True, type=click.Choice(list(PROFILES)))
@click.option("--inner-mode", type=click.Choice(["train", "eval"]), default=None,
              help="Victim mode during the inner attack (default: train, as the reference code).")
@click.option("--output", type=click.Path(dir_okay=False), default=None, help="Also copy the defended checkpoint here.")
@data_root_option
@results_root_option
@device_option
def defend(checkpoint, defense_name, epochs, lambda_, mu, profile, inner_mode, output, data_root, results_root, device):
    """Adversarially train a defended copy of CHECKPOINT."""
    from bench.defend import run_defense
    from defenses import DEFENSES
    from models.checkpoint import read_checkpoint_config

    DEFENSES.check(defense_name)
    root = ResultsRoot.at(results_root)
    torch_device = resolve_device(device)
    config = read_checkpoint_config(checkpoint)
    data = load_data(data_spec_from_checkpoint(config, data_root), root)
    settings = get_profile(profile)
    options = dict(settings["defenses"].get(defense_name, {}))
    if epochs is not None:
        options["epochs"] = epochs
    if lambda_ is not None:
        options["lambda_"] = lambda_
    if mu is not None:
        options["mu"] = mu
    if inner_mode is not None:
        options["inner_mode"] = inner_mode
    path = run_defense(root, data, Path(checkpoint), defense_name, options, profile=profile, device=torch_device,
                       console=console)
    if output:
        shutil.copyfile(path, output)
    console.print(f"defended checkpoint: {output or path}")
