"""The matrix as a work graph: train -> defend -> attack cells (encode and score inside).

Nodes are plain data, so the local, per-GPU and Ray executors can ship them
to workers. ``execute_node`` runs one node; every node's result is also
cached under the results root, so a rerun skips finished work.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.matrix.config import MatrixConfig, ModelVariant, pairing_problem

log = logging.getLogger(__name__)


@dataclass
class Node:
    """One unit of work; ``depends_on`` lists node ids whose results it needs."""

    id: str
    kind: str  # "train", "defend" or "cell"
    params: dict[str, Any]
    depends_on: list[str] = field(default_factory=list)
    resources: dict[str, float] = field(default_factory=dict)


@dataclass
class RunContext:
    """Settings that every node needs besides its parameters (picklable)."""

    results_root: str
    data_root: str | None
    device: str
    threads: int = 0
    plugins: list[str] = field(default_factory=list)


def _dataset_key(dataset: str, bits: int, seed: int) -> str:
    return f"{dataset}/{bits}bit/seed{seed}"


def build_graph(config: MatrixConfig) -> list[Node]:
    """Return the matrix's nodes in an order where dependencies come first."""
    nodes: list[Node] = []
    profile = config.profile
    resources = {"num_cpus": float(config.run.get("cpus_per_task", 1)),
                 "num_gpus": float(config.run.get("gpus_per_task", 0))}
    for dataset in config.datasets:
        for bits in config.bits:
            for seed in config.seeds:
                base = _dataset_key(dataset, bits, seed)
                common = {"dataset": dataset, "bits": bits, "seed": seed, "split": profile["split"],
                          "profile": profile["name"]}
                for model in config.models:
                    nodes.append(Node(f"{base}/{model}", "train", {
                        **common, "model": model, "train": profile["train"], "options": config.model_options,
                    }, resources=resources))
                for variant in config.variants():
                    if variant.defense:
                        nodes.append(Node(f"{base}/{variant.name}", "defend", {
                            **common, "model": variant.model, "defense": variant.defense,
                            "options": profile["defenses"].get(variant.defense, {}),
                            "monitor": profile["monitor"],
                        }, depends_on=[f"{base}/{variant.model}"], resources=resources))
                for variant in config.variants():
                    for attack in config.attacks:
                        nodes.append(Node(f"{base}/{variant.name}/{attack}", "cell", {
                            **common, "variant": variant.name, "model": variant.model, "defense": variant.defense,
                            "attack": attack, "options": config.attack_options(attack),
                            "queries": profile["queries"], "skip": pairing_problem(attack, variant),
                        }, depends_on=[f"{base}/{variant.name}"], resources=resources))
    return nodes


def _data(params: dict[str, Any], ctx: RunContext):
    from bench.cache import ResultsRoot
    from bench.data.splits import SplitSpec
    from bench.steps import DataSpec, load_data

    root = ResultsRoot.at(ctx.results_root)
    data_root = ctx.data_root
    if data_root and params["dataset"] not in ("fashion-mnist", "fashion-mnist-mosaic"):
        data_root = str(Path(data_root) / params["dataset"])
    split = SplitSpec(**params["split"], seed=params["seed"])
    return root, load_data(DataSpec(params["dataset"], split, data_root), root)


def execute_node(node: Node, upstream: dict[str, dict[str, Any]], ctx: RunContext) -> dict[str, Any]:
    """Run ``node`` and return its result; errors become a result with status "error".

    ``upstream`` maps dependency ids to their results. A node whose dependency
    failed is not run and reports that dependency.
    """
    started = time.perf_counter()
    started_at = time.time()
    result = _execute(node, upstream, ctx, started)
    result.update(started_at=started_at, finished_at=time.time())
    return result


def _execute(node: Node, upstream: dict[str, dict[str, Any]], ctx: RunContext, started: float) -> dict[str, Any]:
    import torch

    from bench.plugins import import_plugins
    from bench.runtime import resolve_device, seed_everything

    failed = [key for key in node.depends_on if upstream.get(key, {}).get("status") != "ok"]
    if failed:
        return {"id": node.id, "kind": node.kind, "status": "error",
                "error": f"not run because {failed[0]} failed", "seconds": 0.0}
    if node.kind == "cell" and node.params.get("skip"):
        return {"id": node.id, "kind": node.kind, "status": "skipped", "error": node.params["skip"], "seconds": 0.0}
    if ctx.threads:
        torch.set_num_threads(ctx.threads)
    try:
        import_plugins(ctx.plugins)
        seed_everything(node.params["seed"])
        device = resolve_device(ctx.device)
        root, data = _data(node.params, ctx)
        result = _RUNNERS[node.kind](node, upstream, root, data, device)
        result.update(id=node.id, kind=node.kind, status="ok", seconds=time.perf_counter() - started)
        return result
    except KeyboardInterrupt:
        raise
    except Exception as error:  # one failing cell must not stop the matrix
        log.error("%s failed: %s: %s", node.id, type(error).__name__, error)
        log.debug("%s", traceback.format_exc())
        return {"id": node.id, "kind": node.kind, "status": "error",
                "error": f"{type(error).__name__}: {error}", "seconds": time.perf_counter() - started}


def _run_train(node, upstream, root, data, device) -> dict[str, Any]:
    from bench.steps import train_key, train_step
    from models.training import TrainConfig

    params = node.params
    train = TrainConfig(**params["train"], seed=params["seed"])
    cached = root.checkpoint(train_key(data, params["model"], params["bits"], params["options"], train)).is_file()
    path = train_step(root, data, model_name=params["model"], n_bits=params["bits"], train=train,
                      options=params["options"], profile=params["profile"], device=device)
    return {"checkpoint": str(path), "cached": cached}


def _run_defend(node, upstream, root, data, device) -> dict[str, Any]:
    from bench.defend import run_defense

    params = node.params
    victim = Path(upstream[node.depends_on[0]]["checkpoint"])
    options = {**params["options"], "seed": params["seed"]}
    before = set(root.cache.glob("checkpoints/*.pt"))
    path = run_defense(root, data, victim, params["defense"], options, profile=params["profile"],
                       monitor=params["monitor"], device=device)
    return {"checkpoint": str(path), "cached": path in before}


def _run_cell(node, upstream, root, data, device) -> dict[str, Any]:
    from bench.attack import attack_cell

    params = node.params
    checkpoint = Path(upstream[node.depends_on[0]]["checkpoint"])
    record = attack_cell(root, data, checkpoint, params["attack"], params["options"], queries=params["queries"],
                         seed=params["seed"], profile=params["profile"], device=device)
    return {"record": record, "cached": bool(record.get("_cached"))}


_RUNNERS = {"train": _run_train, "defend": _run_defend, "cell": _run_cell}


def model_variant(name: str) -> ModelVariant:
    model, _, defense = name.partition("+")
    return ModelVariant(model, defense or None)
