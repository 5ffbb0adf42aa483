"""Adversarial training that turns a trained hashing model into a defended copy.

Importing this package registers SAAT, ATRDH and CgAT in ``DEFENSES``.
"""

from defenses import atrdh, cgat, saat  # noqa: F401  (registration)
from defenses._base import DEFENSES, Defense

__all__ = ["DEFENSES", "Defense"]
