"""Benchmark: one sign-PGD step of the attack base class against a bare gradient step.

The baseline is what any L-infinity attack must pay per step: a forward pass
of the frozen model and a backward pass to the input. The attack step adds
the loss, the sign update, the eps clamp and the image-box clamp. Both run on
the same model and batch; the script prints the median time of each and the
ratio (target: at most 1.15).

Rerun: python benchmarks/attack_step.py [--batch 1000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from attacks import ATTACKS, frozen_eval
from models import MODELS


def bare_step(model, images: torch.Tensor, codes: torch.Tensor) -> None:
    delta = torch.zeros_like(images, requires_grad=True)
    outputs = model(images + delta)
    torch.autograd.grad((outputs * codes).mean(), delta)


def median_seconds(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000, help="images per batch (28x28, one channel)")
    parser.add_argument("--steps", type=int, default=5, help="sign-PGD steps per timed call")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls; the median is reported")
    arguments = parser.parse_args()

    torch.manual_seed(0)
    model = MODELS.create("dph", n_bits=32, n_classes=10)
    images = torch.rand(arguments.batch, 1, 28, 28)
    codes = torch.sign(torch.randn(arguments.batch, 32))
    attack = ATTACKS.create("mainstay", steps=arguments.steps)
    generator = torch.Generator().manual_seed(0)

    def loss(outputs: torch.Tensor) -> torch.Tensor:
        return (outputs * codes).mean()

    with frozen_eval(model):
        bare = median_seconds(lambda: [bare_step(model, images, codes) for _ in range(arguments.steps)],
                              arguments.repeats) / arguments.steps
        pgd = median_seconds(lambda: attack.sign_pgd(model, images, loss, generator, random_start=False),
                             arguments.repeats) / arguments.steps
    print(f"threads: {torch.get_num_threads()}, batch {arguments.batch} images of 1x28x28, small-cnn DPH, frozen")
    print(f"bare forward + input-gradient backward: {bare * 1000:.1f} ms per step (median)")
    print(f"attack base class sign-PGD step:        {pgd * 1000:.1f} ms per step (median)")
    print(f"ratio: {pgd / bare:.3f} (target <= 1.15)")
    print("rerun: python benchmarks/attack_step.py")


if __name__ == "__main__":
    main()
