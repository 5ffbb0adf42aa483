"""Attacks on deep hashing: a registry of plug-ins over one base class.

Importing this package registers every attack in ``ATTACKS``. It imports
only torch and ``models``.
"""

from attacks import dhta, hag, mainstay, prosgan, sdha, tha  # noqa: F401  (registration)
from attacks._base import ATTACKS, Attack, AttackOutput, Capabilities, VictimKnowledge, frozen_eval
from attacks._codes import anchor_codes, center_codes, mainstay_codes
from attacks._targets import select_target_labels, target_candidates

__all__ = [
    "ATTACKS", "Attack", "AttackOutput", "Capabilities", "VictimKnowledge", "anchor_codes",
    "center_codes", "frozen_eval", "mainstay_codes", "select_target_labels", "target_candidates",
]
