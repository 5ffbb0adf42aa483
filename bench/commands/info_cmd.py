"""``bench list``: the registered models, attacks, defenses, datasets and profiles."""

from __future__ import annotations

import click
from rich.table import Table

from bench.commands.common import console


@click.command("list")
def list_plugins() -> None:
    """List registered models, attacks (with capabilities), defenses, datasets and profiles."""
    from attacks import ATTACKS
    from bench.data import DATASETS
    from bench.profiles import PROFILES
    from defenses import DEFENSES
    from models import MODELS
    from models.backbones import BACKBONES

    console.print("models:    " + ", ".join(MODELS.names()))
    console.print("backbones: " + ", ".join(BACKBONES.names()))
    console.print("defenses:  " + ", ".join(DEFENSES.names()) + "  (defended copies are named MODEL+DEFENSE)")
    console.print("datasets:  " + ", ".join(DATASETS))
    console.print("profiles:  " + ", ".join(f"{name} ({value['description']})" for name, value in PROFILES.items()))
    console.print("attacks:   " + ", ".join(ATTACKS.names()))
    table = Table(title="attack capabilities")
    table.add_column("name", no_wrap=True)
    for column in ("targeted", "label-aware", "train codes", "train images", "bounded"):
        table.add_column(column)
    for name in ATTACKS.names():
        caps = ATTACKS.get(name).capabilities
        table.add_row(name, *("yes" if flag else "-" for flag in (
            caps.targeted, caps.label_aware, caps.needs_train_codes, caps.needs_train_images, caps.bounded)))
    console.print(table)
