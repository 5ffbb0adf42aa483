"""Executors run the work graph: in this process, one process per GPU, or on Ray.

The graph decides the order. A node starts only when all its dependencies
have results, whatever the executor.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from bench.matrix.graph import Node, RunContext, execute_node

log = logging.getLogger(__name__)

ResultCallback = Callable[[Node, dict[str, Any]], None]


def run_local(nodes: list[Node], ctx: RunContext, on_start: Callable[[Node], None], on_result: ResultCallback) -> dict[str, dict]:
    """Run every node in this process, in graph order."""
    results: dict[str, dict[str, Any]] = {}
    for node in nodes:
        on_start(node)
        upstream = {key: results[key] for key in node.depends_on}
        results[node.id] = execute_node(node, upstream, ctx)
        on_result(node, results[node.id])
    return results


def _pinned_context(ctx: RunContext, slot: int) -> RunContext:
    device = f"cuda:{slot}" if ctx.device in ("auto", "cuda") else ctx.device
    return RunContext(ctx.results_root, ctx.data_root, device, ctx.threads, ctx.plugins)


def run_parallel(nodes: list[Node], ctx: RunContext, workers: int, on_start: Callable[[Node], None],
                 on_result: ResultCallback) -> dict[str, dict]:
    """Run ready nodes in ``workers`` processes; with GPUs, worker slot i uses cuda:i."""
    import multiprocessing

    results: dict[str, dict[str, Any]] = {}
    pending = list(nodes)
    running: dict[Any, tuple[Node, int]] = {}
    free_slots = list(range(workers))
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        while pending or running:
            for node in list(pending):
                if not free_slots:
                    break
                if all(key in results for key in node.depends_on):
                    pending.remove(node)
                    slot = free_slots.pop(0)
                    on_start(node)
                    upstream = {key: results[key] for key in node.depends_on}
                    future = pool.submit(execute_node, node, upstream, _pinned_context(ctx, slot))
                    running[future] = (node, slot)
            if not running:
                raise RuntimeError("work graph has a dependency cycle or a missing node")
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                node, slot = running.pop(future)
                free_slots.append(slot)
                results[node.id] = future.result()
                on_result(node, results[node.id])
    return results


def run_ray(nodes: list[Node], ctx: RunContext, address: str | None, on_start: Callable[[Node], None],
            on_result: ResultCallback, *, num_cpus: int | None = None) -> dict[str, dict]:
    """Submit every node as a Ray task; dependencies are passed as object refs, so Ray orders them."""
    try:
        import ray
    except ImportError as error:
        from models.errors import ConfigError

        raise ConfigError("--executor ray needs Ray: pip install 'hashbench[ray]'") from error

    started_here = False
    if not ray.is_initialized():
        # Workers import HashBench and plug-ins from the driver's import path.
        paths = [entry for entry in sys.path if entry and os.path.isdir(entry)]
        runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}
        if address in (None, "local"):
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
        else:
            ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
        started_here = True
    try:
        remote = ray.remote(_ray_execute)
        refs: dict[str, Any] = {}
        node_of: dict[Any, Node] = {}
        for node in nodes:
            options = {key: value for key, value in node.resources.items() if value}
            upstream_refs = [refs[key] for key in node.depends_on]
            ref = remote.options(**options, max_retries=1, retry_exceptions=False).remote(
                node, node.depends_on, ctx, *upstream_refs)
            refs[node.id] = ref
            node_of[ref] = node
            on_start(node)
        results: dict[str, dict[str, Any]] = {}
        waiting = list(refs.values())
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            node = node_of[done[0]]
            try:
                results[node.id] = ray.get(done[0])
            except Exception as error:  # a lost worker or node surfaces here
                results[node.id] = {"id": node.id, "kind": node.kind, "status": "error",
                                    "error": f"Ray task failed: {type(error).__name__}: {error}", "seconds": 0.0}
            on_result(node, results[node.id])
        return results
    finally:
        if started_here:
            ray.shutdown()


def _ray_execute(node: Node, dependency_ids: list[str], ctx: RunContext, *upstream_results: dict) -> dict:
    upstream = dict(zip(dependency_ids, upstream_results))
    return execute_node(node, upstream, ctx)
