"""Time HashBench's MAP@k evaluator against the usual per-query numpy loop.

The baseline is the loop of the DeepHash and SAAT evaluation code: for each
query, compute its Hamming distances with one matrix-vector product, argsort
them (stable, so that ties keep index order), and accumulate AP over the top
k. The script checks that both give the same MAP to 1e-9 and prints the
times and their ratio.

Run from the repository root:

    python benchmarks/evaluator.py
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time

import numpy as np
import torch

from bench.metrics import average_precisions, mean_average_precision

TOLERANCE = 1e-9


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2000, help="number of query codes (default 2000)")
    parser.add_argument("--database", type=int, default=100_000, help="number of database codes (default 100000)")
    parser.add_argument("--bits", type=int, default=64, help="code length in bits (default 64)")
    parser.add_argument("--classes", type=int, default=10, help="number of classes, one label per item (default 10)")
    parser.add_argument("--topk", type=int, default=5000, help="k of MAP@k (default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random codes and labels (default 0)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the HashBench evaluator (default 5)")
    parser.add_argument("--baseline-repeats", type=int, default=1, help="timed runs of the numpy loop (default 1)")
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="queries per chunk for HashBench (default: its own choice)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)"
    )
    arguments = parser.parse_args(argv)
    for name in ("queries", "database", "bits", "classes", "topk", "repeats", "baseline_repeats"):
        if getattr(arguments, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(arguments, name)}")
    for name in ("chunk_size", "threads"):
        value = getattr(arguments, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    return arguments


def make_case(arguments: argparse.Namespace) -> tuple[torch.Tensor, ...]:
    """Return random -1/+1 codes and one-hot labels for queries and database."""
    generator = torch.Generator().manual_seed(arguments.seed)

    def codes(n: int) -> torch.Tensor:
        return torch.randint(0, 2, (n, arguments.bits), generator=generator).float() * 2 - 1

    def labels(n: int) -> torch.Tensor:
        classes = torch.randint(0, arguments.classes, (n,), generator=generator)
        return torch.nn.functional.one_hot(classes, arguments.classes).float()

    return codes(arguments.queries), codes(arguments.database), labels(arguments.queries), labels(arguments.database)


def baseline_average_precisions(query_codes, database_codes, query_labels, database_labels, topk):
    """Per-query AP@k with the per-query numpy loop; inputs are numpy arrays."""
    n_bits = query_codes.shape[1]
    aps = np.zeros(len(query_codes))
    for i in range(len(query_codes)):
        hamming = 0.5 * (n_bits - database_codes @ query_codes[i])
        order = np.argsort(hamming, kind="stable")
        relevant = (database_labels @ query_labels[i] > 0).astype(np.float64)[order][:topk]
        n_relevant = relevant.sum()
        if n_relevant == 0:
            continue
        found = np.cumsum(relevant)
        positions = np.arange(1, len(relevant) + 1)
        aps[i] = np.sum(found / positions * relevant) / n_relevant
    return aps


def time_runs(function, repeats: int) -> tuple[list[float], object]:
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return times, result


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)
    query_codes, database_codes, query_labels, database_labels = make_case(arguments)
    print(
        f"case: {arguments.queries} queries x {arguments.database} database codes x {arguments.bits} bits, "
        f"{arguments.classes} classes (one label each), top-k {arguments.topk}, seed {arguments.seed}"
    )
    print(f"torch {torch.__version__}, numpy {np.__version__}, torch threads {torch.get_num_threads()}")

    numpy_inputs = [t.numpy() for t in (query_codes, database_codes, query_labels, database_labels)]
    baseline_times, baseline_aps = time_runs(
        lambda: baseline_average_precisions(*numpy_inputs, arguments.topk), arguments.baseline_repeats
    )
    baseline_map = float(np.mean(baseline_aps))

    tensors = dict(
        query_codes=query_codes,
        database_codes=database_codes,
        query_labels=query_labels,
        database_labels=database_labels,
        topk=arguments.topk,
        chunk_size=arguments.chunk_size,
    )
    hashbench_times, hashbench_map = time_runs(lambda: mean_average_precision(**tensors), arguments.repeats)

    per_query = average_precisions(**tensors).average_precision.numpy()
    max_difference = float(np.max(np.abs(per_query - baseline_aps)))

    baseline_median = statistics.median(baseline_times)
    hashbench_median = statistics.median(hashbench_times)
    print(f"numpy loop:  {baseline_median:8.3f} s median of {len(baseline_times)} ({_format_times(baseline_times)})")
    print(f"HashBench:   {hashbench_median:8.3f} s median of {len(hashbench_times)} ({_format_times(hashbench_times)})")
    print(f"speed-up:    {baseline_median / hashbench_median:8.1f}x")
    print(f"MAP@{arguments.topk}: numpy {baseline_map:.12f}, HashBench {hashbench_map:.12f}")
    print(f"max per-query AP difference: {max_difference:.3e}")
    print(f"rerun: python benchmarks/evaluator.py {shlex.join(argv if argv is not None else sys.argv[1:])}".rstrip())

    if abs(baseline_map - hashbench_map) > TOLERANCE or max_difference > TOLERANCE:
        print(f"FAILED: the two evaluators differ by more than {TOLERANCE}", file=sys.stderr)
        return 1
    return 0


def _format_times(times: list[float]) -> str:
    return ", ".join(f"{t:.3f}" for t in times)


if __name__ == "__main__":
    sys.exit(main())
