"""A test plug-in: an attack that fails while a marker file exists.

The marker's path comes from ``HASHBENCH_FLAKY_MARKER``. Workers of every
executor import this module through the matrix's ``plugins`` key.
"""

from __future__ import annotations

import os
from pathlib import Path

from attacks import ATTACKS
from attacks.mainstay import MainstayAttack
from models.errors import HashBenchError

MARKER_VARIABLE = "HASHBENCH_FLAKY_MARKER"


class InjectedFailure(HashBenchError):
    """The failure this plug-in raises on purpose."""


if "flaky" not in ATTACKS:

    @ATTACKS.register("flaky")
    class FlakyAttack(MainstayAttack):
        """The mainstay attack, except that it fails while the marker file exists."""

        name = "flaky"

        def _perturb(self, model, images, labels, target_labels, generator):
            marker = os.environ.get(MARKER_VARIABLE)
            if marker and Path(marker).exists():
                raise InjectedFailure(f"injected failure: marker {marker} exists")
            return super()._perturb(model, images, labels, target_labels, generator)
