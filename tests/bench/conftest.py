"""Shared end-to-end fixtures: one quick-profile matrix run on real Fashion-MNIST per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cache import ResultsRoot
from bench.data import fashion_mnist


def fashion_mnist_available() -> bool:
    try:
        fashion_mnist.locate(download=False)
    except Exception:
        return False
    return True


requires_fashion_mnist = pytest.mark.skipif(
    not fashion_mnist_available(),
    reason="Fashion-MNIST IDX files not found: apt-get install dataset-fashion-mnist or set HASHBENCH_DATA_ROOT",
)


# Float reductions depend on the thread count, so every end-to-end run pins it
# to compare numbers across processes and executors.
E2E_THREADS = 2


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> tuple[ResultsRoot, dict]:
    """Run the built-in quick matrix once; return its results root and summary."""
    from bench.matrix.config import load_matrix
    from bench.matrix.run import run_matrix

    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST IDX files not found: apt-get install dataset-fashion-mnist")
    root = ResultsRoot.at(tmp_path_factory.mktemp("quick-local"))
    summary = run_matrix(load_matrix("quick"), root, quiet=True, threads=E2E_THREADS)
    return root, summary


def read_csvs(run_dir: Path) -> dict[str, str]:
    folder = Path(run_dir) / "leaderboards"
    return {path.name: path.read_text() for path in sorted(folder.glob("*.csv"))}
