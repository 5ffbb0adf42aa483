"""Run a matrix: build the graph, execute it, keep the run folder's records, render outputs."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from bench import store
from bench.cache import ResultsRoot
from bench.matrix.config import MatrixConfig
from bench.matrix.graph import Node, RunContext, build_graph

log = logging.getLogger("bench.matrix")

EXECUTORS = ("local", "ray")


def _safe(text: str) -> str:
    return text.replace("/", "__").replace("+", "-plus-")


def _model_record(node: Node, result: dict[str, Any]) -> dict[str, Any]:
    from models.checkpoint import read_checkpoint_config

    record = {"id": node.id, "kind": node.kind, "status": result["status"], "error": result.get("error"),
              "dataset": node.params["dataset"], "n_bits": node.params["bits"], "seed": node.params["seed"],
              "model": node.params["model"] + (f"+{node.params['defense']}" if node.kind == "defend" else ""),
              "base_model": node.params["model"], "defense": node.params.get("defense") or "none",
              "profile": node.params["profile"]}
    if result["status"] == "ok":
        config = read_checkpoint_config(result["checkpoint"])
        record.update(clean_map=config.get("clean_map"), topk=config.get("topk"),
                      train_seconds=config.get("train_seconds"), checkpoint=config.get("key"),
                      history=config.get("history"), split_hash=config.get("split", {}).get("hash"),
                      versions=config.get("versions"))
    return record


def _cell_record(node: Node, result: dict[str, Any]) -> dict[str, Any]:
    if result["status"] == "ok":
        record = dict(result["record"])
        record.pop("_cached", None)
        return record
    params = node.params
    from attacks import ATTACKS

    targeted = ATTACKS.get(params["attack"]).capabilities.targeted
    return {"status": result["status"], "error": result.get("error"), "dataset": params["dataset"],
            "n_bits": params["bits"], "seed": params["seed"], "model": params["variant"],
            "base_model": params["model"], "defense": params.get("defense") or "none", "attack": params["attack"],
            "targeted": targeted, "metric": "t-map" if targeted else "map", "profile": params["profile"]}


def run_matrix(
    config: MatrixConfig,
    root: ResultsRoot,
    *,
    executor: str = "local",
    address: str | None = None,
    ray_cpus: int | None = None,
    device: str | None = None,
    data_root: str | None = None,
    threads: int = 0,
    quiet: bool = False,
    render: bool = True,
) -> dict[str, Any]:
    """Run every node of ``config``; return a summary with counts and failed cells."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    run_dir = root.run(config.name)
    (run_dir / "records").mkdir(parents=True, exist_ok=True)
    (run_dir / "models").mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root_logger = logging.getLogger()
    previous_level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(min(previous_level or logging.WARNING, logging.INFO))
    nodes = build_graph(config)
    store.write_text(run_dir / "matrix.toml", Path(config.source).read_text(encoding="utf-8")
                     if Path(config.source).is_file() else "")
    threads = threads or int(config.run.get("threads", 0))
    ctx = RunContext(str(root.path), data_root or config.data_root, device or config.device, threads,
                     plugins=list(config.plugins))
    log.info("matrix %s: %d nodes (%s executor, device %s, profile %s)", config.name, len(nodes), executor,
             ctx.device, config.profile["name"])
    counts = {"ok": 0, "cached": 0, "error": 0, "skipped": 0}
    failures: list[str] = []
    timeline: dict[str, tuple[float, float]] = {}
    started = time.perf_counter()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=Console(stderr=True), disable=quiet, transient=False)
    task = progress.add_task(f"matrix {config.name}", total=len(nodes))

    def on_start(node: Node) -> None:
        progress.update(task, description=f"matrix {config.name}: {node.id}")

    def on_result(node: Node, result: dict[str, Any]) -> None:
        status = result["status"]
        timeline[node.id] = (result.get("started_at", 0.0), result.get("finished_at", 0.0))
        if status == "ok" and result.get("cached"):
            counts["cached"] += 1
            log.info("%s: cached, not recomputed", node.id)
        else:
            counts[status] += 1
            if status == "ok":
                log.info("%s: computed in %.1f s", node.id, result["seconds"])
            elif status == "skipped":
                log.info("%s: skipped: %s", node.id, result.get("error"))
            else:
                failures.append(f"{node.id}: {result.get('error')}")
        if node.kind == "cell":
            store.write_json(run_dir / "records" / f"{_safe(node.id)}.json", _cell_record(node, result))
        else:
            store.write_json(run_dir / "models" / f"{_safe(node.id)}.json", _model_record(node, result))
        progress.advance(task)

    try:
        with progress:
            if executor == "ray":
                from bench.matrix.executors import run_ray

                run_ray(nodes, ctx, address, on_start, on_result, num_cpus=ray_cpus)
            else:
                import torch

                from bench.matrix.executors import run_local, run_parallel

                gpus = torch.cuda.device_count() if ctx.device in ("auto", "cuda") else 0
                if gpus > 1:
                    log.info("running cells on %d GPUs in parallel", gpus)
                    run_parallel(nodes, ctx, gpus, on_start, on_result)
                else:
                    run_local(nodes, ctx, on_start, on_result)
        summary = {"matrix": config.name, "nodes": len(nodes), **counts, "failures": failures,
                   "timeline": timeline, "seconds": time.perf_counter() - started}
        log.info("matrix %s finished in %.1f s: %d computed, %d cached, %d skipped, %d failed", config.name,
                 summary["seconds"], counts["ok"], counts["cached"], counts["skipped"], counts["error"])
        for line in failures:
            log.error("failed: %s", line)
        if render:
            from bench.leaderboard import write_leaderboards

            write_leaderboards(run_dir)
            from bench.plots import render_figures

            render_figures(run_dir, root=root)
        return summary
    finally:
        root_logger.removeHandler(handler)
        root_logger.setLevel(previous_level)
        handler.close()
