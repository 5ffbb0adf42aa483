"""Options and helpers shared by the commands."""

from __future__ import annotations

from fractions import Fraction

import click
from rich.console import Console

from models.errors import ConfigError

console = Console()


def parse_eps(text: str) -> float:
    """Parse ``8/255``, ``0.0314`` or ``8`` (read as 8/255 when above 1)."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError) as error:
        raise ConfigError(f"invalid eps {text!r}; write it as 8/255 or 0.0314 (pixel scale [0, 1])") from error
    if value > 1:
        value = value / 255
    if value < 0:
        raise ConfigError(f"eps must be non-negative, got {text!r}")
    return value


def data_root_option(function):
    return click.option("--data-root", type=click.Path(file_okay=False), default=None,
                        help="Folder with the dataset files (default: HASHBENCH_DATA_ROOT, then "
                             "Debian's dataset-fashion-mnist package).")(function)


def results_root_option(function):
    return click.option("--results-root", type=click.Path(file_okay=False), default="results",
                        show_default=True, help="Folder for the cache, checkpoints and run outputs.")(function)


def device_option(function):
    return click.option("--device", default="auto", show_default=True,
                        help="auto (GPU when present), cpu, cuda or cuda:N.")(function)
