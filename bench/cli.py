"""The ``bench`` command line: train, eval, attack, defend, run, leaderboard, plot."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from models.errors import HashBenchError

DATA_ROOT_HELP = "Folder with the dataset files (default: HASHBENCH_DATA_ROOT, then Debian's dataset package)."
RESULTS_ROOT_HELP = "Folder for the cache, checkpoints and run outputs."


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
    )


class _Group(click.Group):
    """Turns HashBench errors into a one-line message and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HashBenchError as error:
            click.secho(f"error: {error}", fg="red", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.option("-v", "--verbose", is_flag=True, help="Log progress of library code.")
def main(verbose: bool) -> None:
    """HashBench: adversarial robustness of deep hashing retrieval."""
    _setup_logging(verbose)


from bench.commands import attack_cmd, info_cmd, matrix_cmd, train_cmd  # noqa: E402

main.add_command(train_cmd.train)
main.add_command(train_cmd.evaluate)
main.add_command(attack_cmd.attack)
main.add_command(train_cmd.defend)
main.add_command(matrix_cmd.run)
main.add_command(matrix_cmd.leaderboard)
main.add_command(matrix_cmd.plot)
main.add_command(info_cmd.list_plugins)


if __name__ == "__main__":
    main()
