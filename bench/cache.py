"""Paths of cached artefacts under one results root.

Every artefact lives at a path derived from a hash of everything that
determines it, so a changed setting recomputes only what depends on it and
an unchanged one is read back. All writes are atomic (``bench.store``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ResultsRoot:
    """The folder that contains the cache and the run folders."""

    path: Path

    @classmethod
    def at(cls, path: str | Path) -> ResultsRoot:
        return cls(Path(path).expanduser().resolve())

    @property
    def cache(self) -> Path:
        return self.path / "cache"

    def artefact(self, kind: str, key: str, suffix: str) -> Path:
        return self.cache / kind / f"{key}{suffix}"

    def checkpoint(self, key: str) -> Path:
        return self.artefact("checkpoints", key, ".pt")

    def codes(self, key: str) -> Path:
        return self.artefact("codes", key, ".pt")

    def targets(self, key: str) -> Path:
        return self.artefact("targets", key, ".pt")

    def prepared(self, key: str) -> Path:
        return self.artefact("prepared", key, ".pt")

    def adversarial(self, key: str) -> Path:
        return self.artefact("adversarial", key, ".pt")

    def record(self, key: str) -> Path:
        return self.artefact("records", key, ".json")

    def defense_state(self, key: str) -> Path:
        return self.artefact("defense-state", key, ".pt")

    def run(self, name: str) -> Path:
        return self.path / name
