"""``bench run --matrix``, ``bench leaderboard`` and ``bench plot``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from bench.cache import ResultsRoot
from bench.commands.common import console, data_root_option
from models.errors import ConfigError


@click.command()
@click.option("--matrix", "matrix", is_flag=False, flag_value="default", default=None,
              help="Matrix TOML file or built-in name (default, quick, paper); '--matrix' alone runs 'default'.")
@click.option("--results-root", type=click.Path(file_okay=False), default=None,
              help="Folder for the cache and run outputs (default: the matrix's results_root, else ./results).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this machine (one process per GPU when there are several); ray: a Ray cluster.")
@click.option("--address", default=None, help="Ray address (auto or HOST:PORT); without it a local Ray instance starts.")
@click.option("--ray-cpus", type=int, default=None, help="CPUs of the local Ray instance started without --address.")
@click.option("--device", default=None, help="Override the matrix's device: auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=int, default=0, help="torch CPU threads per task (0: torch's default).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@data_root_option
def run(matrix, results_root, executor, address, ray_cpus, device, threads, quiet, data_root):
    """Run every model x attack pairing of a matrix, resuming from cached results."""
    from bench.matrix.config import load_matrix
    from bench.matrix.run import run_matrix

    if matrix is None:
        raise ConfigError("nothing to run: pass --matrix (the built-in default) or --matrix FILE")
    config = load_matrix(matrix)
    root = ResultsRoot.at(results_root or config.results_root or "results")
    console.print(f"matrix [bold]{config.name}[/] ({config.source}): {len(config.variants())} model variants x "
                  f"{len(config.attacks)} attacks, profile {config.profile['name']}, results in {root.run(config.name)}")
    summary = run_matrix(config, root, executor=executor, address=address, ray_cpus=ray_cpus, device=device, data_root=data_root,
                         threads=threads, quiet=quiet)
    console.print(f"done in {summary['seconds']:.0f} s: {summary['ok']} computed, {summary['cached']} cached, "
                  f"{summary['skipped']} skipped, {summary['error']} failed")
    for line in summary["failures"]:
        console.print(f"[red]failed[/] {line}")
    console.print(f"leaderboards: {root.run(config.name) / 'leaderboards'}")
    if summary["error"]:
        sys.exit(1)


def _run_dir(run_arg: str | None) -> Path:
    path = Path(run_arg or "results/default")
    if not (path / "records").is_dir():
        candidate = Path("results") / (run_arg or "default")
        if (candidate / "records").is_dir():
            return candidate
        raise ConfigError(f"{path} is not a run folder (no records/); pass RESULTS_ROOT/MATRIX_NAME, e.g. results/default")
    return path


@click.command()
@click.argument("run_dir", required=False)
def leaderboard(run_dir):
    """Print the leaderboard tables of RUN_DIR (default: results/default)."""
    from bench.leaderboard import build_tables

    folder = _run_dir(run_dir)
    for name, frame in build_tables(folder).items():
        if frame.empty or name == "cells.csv":
            continue
        table = Table(title=name.removesuffix(".csv"))
        for column in frame.columns:
            table.add_column(str(column))
        for row in frame.itertuples(index=False):
            table.add_row(*(f"{value:.4f}" if isinstance(value, float) else str(value) for value in row))
        console.print(table)


@click.command()
@click.argument("run_dir", required=False)
@click.option("--results-root", type=click.Path(file_okay=False), default=None,
              help="Results root whose cache contains the images for the retrieval grid.")
def plot(run_dir, results_root):
    """Re-render the CSVs and figures of RUN_DIR from its records, without recomputing."""
    from bench.leaderboard import write_leaderboards
    from bench.plots import render_figures

    folder = _run_dir(run_dir)
    write_leaderboards(folder)
    root = ResultsRoot.at(results_root) if results_root else ResultsRoot.at(folder.parent)
    written = render_figures(folder, root=root)
    for name, paths in written.items():
        console.print(f"{name}: " + ", ".join(str(p) for p in paths))
