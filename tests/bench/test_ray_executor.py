"""The Ray executor: same CSVs as the local one, failed tasks as error rows, graph order."""

from __future__ import annotations

import pytest

from bench.cache import ResultsRoot
from bench.matrix.config import parse_matrix
from bench.matrix.run import run_matrix
from tests.bench.conftest import E2E_THREADS, read_csvs, requires_fashion_mnist

ray = pytest.importorskip("ray", reason="the Ray executor needs the extra: pip install 'hashbench[ray]'")

pytestmark = [pytest.mark.slow, requires_fashion_mnist]

# One task at a time on the 2-CPU instance, each with the local run's thread count.
QUICK = {"name": "quick", "profile": "quick", "models": ["dph"], "bits": [16], "device": "cpu",
         "attacks": ["all"], "defenses": {"every_model": ["saat"]},
         "run": {"cpus_per_task": E2E_THREADS, "threads": E2E_THREADS}}


def test_ray_matches_local_and_respects_graph(quick_run, tmp_path):
    local_root, _ = quick_run
    root = ResultsRoot.at(tmp_path / "ray")
    summary = run_matrix(parse_matrix(QUICK), root, executor="ray", ray_cpus=2, quiet=True)
    assert summary["error"] == 0, summary["failures"]
    ray_csvs = read_csvs(root.run("quick"))
    local_csvs = read_csvs(local_root.run("quick"))
    for name in set(local_csvs) - {"timing.csv"}:
        assert ray_csvs[name] == local_csvs[name], f"{name} differs between the Ray and local executors"
    timeline = summary["timeline"]
    defense_end = timeline["fashion-mnist/16bit/seed0/dph+saat"][1]
    train_end = timeline["fashion-mnist/16bit/seed0/dph"][1]
    assert timeline["fashion-mnist/16bit/seed0/dph+saat"][0] >= train_end
    for node_id, (start, _) in timeline.items():
        if node_id.startswith("fashion-mnist/16bit/seed0/dph+saat/"):
            assert start >= defense_end, f"{node_id} started before its defense finished"


def test_failed_cell_is_error_row_and_rerun_completes_it(tmp_path, monkeypatch):
    marker = tmp_path / "fail-now"
    marker.write_text("")
    monkeypatch.setenv("HASHBENCH_FLAKY_MARKER", str(marker))
    raw = {**QUICK, "name": "flaky", "attacks": ["flaky", "mainstay"], "defenses": {},
           "plugins": ["tests.plugins.flaky"]}
    root = ResultsRoot.at(tmp_path / "ray")
    first = run_matrix(parse_matrix(raw), root, executor="ray", ray_cpus=2, quiet=True)
    assert first["error"] == 1
    assert "injected failure" in first["failures"][0]
    cells = (root.run("flaky") / "leaderboards" / "cells.csv").read_text()
    assert "flaky,error" in cells
    assert "mainstay,ok" in cells

    marker.unlink()
    second = run_matrix(parse_matrix(raw), root, executor="ray", ray_cpus=2, quiet=True)
    assert second["error"] == 0
    assert second["ok"] == 1
    assert second["cached"] == 2
