"""End-to-end: the quick matrix on real Fashion-MNIST, its CSVs, caching and resuming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.cache import ResultsRoot
from bench.matrix.config import load_matrix, parse_matrix
from bench.matrix.run import run_matrix
from tests.bench.conftest import E2E_THREADS, read_csvs, requires_fashion_mnist

pytestmark = [pytest.mark.slow, requires_fashion_mnist]

# Wall-clock columns differ between runs; every other CSV must be identical.
TIMED = {"timing.csv"}


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted((run_dir / "records").glob("*.json"))]


def test_quick_matrix_all_cells_ok(quick_run):
    root, summary = quick_run
    config = load_matrix("quick")
    expected = len(config.variants()) * len(config.attacks)
    records = _records(root.run("quick"))
    assert len(records) == expected
    assert all(record["status"] == "ok" for record in records)
    assert summary["error"] == 0


def test_nontargeted_csv_matches_records(quick_run):
    root, _ = quick_run
    run_dir = root.run("quick")
    table = pd.read_csv(run_dir / "leaderboards" / "nontargeted.csv")
    records = [r for r in _records(run_dir) if not r["targeted"]]
    attacks = sorted({r["attack"] for r in records})
    assert list(table.columns) == ["dataset", "n_bits", "model", "clean_map", *attacks]
    assert sorted(table["model"]) == ["dph", "dph+saat"]
    for record in records:
        row = table[table["model"] == record["model"]].iloc[0]
        assert row[record["attack"]] == pytest.approx(record["metrics"]["attacked_map"], abs=1e-4)
        assert row["clean_map"] == pytest.approx(record["metrics"]["clean_map"], abs=1e-4)
    values = table[["clean_map", *attacks]].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()


def test_targeted_csv_matches_records(quick_run):
    root, _ = quick_run
    run_dir = root.run("quick")
    table = pd.read_csv(run_dir / "leaderboards" / "targeted.csv")
    records = [r for r in _records(run_dir) if r["targeted"]]
    for record in records:
        row = table[table["model"] == record["model"]].iloc[0]
        assert row[record["attack"]] == pytest.approx(record["metrics"]["attacked_tmap"], abs=1e-4)
        assert row["clean_tmap"] == pytest.approx(record["metrics"]["clean_tmap"], abs=1e-4)
    assert "prosgan_unbounded" in table.columns
    scores = table.drop(columns=["dataset", "n_bits", "model"]).to_numpy()
    assert ((scores >= 0) & (scores <= 1)).all()


def test_perceptibility_within_budget(quick_run):
    root, _ = quick_run
    table = pd.read_csv(root.run("quick") / "leaderboards" / "perceptibility.csv")
    assert (table["linf"] <= 8 / 255 + 1e-4).all()
    assert (table["linf"] > 0).all()
    assert (table["psnr"] > 20).all()


def test_every_figure_written(quick_run):
    root, _ = quick_run
    figures = root.run("quick") / "figures"
    for name in ("heatmap", "pr_curves", "precision_at_n", "robustness", "perturbation", "image_grid"):
        assert list(figures.glob(f"{name}*.png")), f"no PNG for {name}"
        assert list(figures.glob(f"{name}*.pdf")), f"no PDF for {name}"


def test_changed_steps_recompute_one_attack(quick_run, tmp_path):
    root, _ = quick_run
    raw = {"name": "quick", "profile": "quick", "models": ["dph"], "bits": [16], "device": "cpu",
           "attacks": ["all"], "defenses": {"every_model": ["saat"]},
           "overrides": {"attacks": {"mainstay": {"steps": 12}}}}
    summary = run_matrix(parse_matrix(raw), root, quiet=True, render=False, threads=E2E_THREADS)
    assert summary["ok"] == 2, summary
    assert summary["cached"] == summary["nodes"] - 2
    log = (root.run("quick") / "run.log").read_text()
    assert "dph/mainstay: computed" in log
    assert "dph+saat/mainstay: computed" in log
    assert "dph/hag: cached, not recomputed" in log


def test_killed_run_resumes_to_same_csvs(quick_run, tmp_path):
    reference_root, _ = quick_run
    results = tmp_path / "results"
    command = [sys.executable, "-m", "bench.cli", "run", "--matrix", "quick", "--results-root", str(results), "--quiet",
               "--threads", str(E2E_THREADS)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = results / "quick" / "records"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and len(list(records.glob("*.json"))) < 3:
        if process.poll() is not None:
            break
        time.sleep(0.5)
    assert process.poll() is None, "the run finished before it could be killed; the test needs a longer run"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished_before = len(list(records.glob("*.json")))
    assert 3 <= finished_before < 18

    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    log = (results / "quick" / "run.log").read_text().split("matrix quick: ")[-1]
    assert log.count("cached, not recomputed") >= finished_before
    resumed = read_csvs(results / "quick")
    reference = read_csvs(reference_root.run("quick"))
    assert set(resumed) == set(reference)
    for name in set(reference) - TIMED:
        assert resumed[name] == reference[name], f"{name} differs after resuming"
