"""Exception types shared by every HashBench package.

The command line turns a ``HashBenchError`` into a one-line message and a
non-zero exit status. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class HashBenchError(Exception):
    """Base class of the errors a user can cause and fix."""


class ConfigError(HashBenchError, ValueError):
    """Invalid setting: unknown name, value out of range, impossible pairing."""


class DataError(HashBenchError, ValueError):
    """Missing, corrupt or inconsistent input data."""


class CheckpointError(HashBenchError, ValueError):
    """Checkpoint that is unreadable or belongs to another model."""


class UnsupportedPairingError(ConfigError):
    """Attack and model that cannot be paired; the harness records a skipped cell."""


class TrainingDivergedError(HashBenchError, RuntimeError):
    """Loss that became NaN or infinite during training."""
