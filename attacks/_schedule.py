"""The tanh-scale schedule of the SAAT attacks.

Early iterations see a flattened ``tanh(scale * z)`` (useful gradients), late
ones the real network. SAAT's ``get_alpha(i, T)`` picks
``[0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0][floor(i / (T / 10))]``.
The index is computed here as ``10 * i // T``, which gives the same stages.
For ``T`` not divisible by 10 some stages are skipped and the last scale can
stay below 1 (T = 7 ends at 0.7), exactly as in the reference code.
"""

from __future__ import annotations

from typing import Literal

from models.errors import ConfigError

SAAT_STAGES = (0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)

ScaleSchedule = Literal["saat", "none"]


def scale_at(step: int, steps: int, schedule: str) -> float:
    """Return the tanh scale for 0-based iteration ``step`` of ``steps``."""
    if schedule == "none":
        return 1.0
    if schedule == "saat":
        return SAAT_STAGES[min(9, (10 * step) // steps)]
    raise ConfigError(f"unknown scale_schedule {schedule!r}; valid: 'saat', 'none'")
