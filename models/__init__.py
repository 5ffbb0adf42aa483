"""Hashing models: networks, losses, backbones, registry and checkpoints.

Importing this package registers DPH, DPSH, HashNet and CSQ in ``MODELS``.
"""

from models import csq, dph, dpsh, hashnet  # noqa: F401  (registration)
from models.base import MODELS, HashingModel, build_model
from models.codes import binarize, check_codes, hamming_distances

__all__ = ["MODELS", "HashingModel", "binarize", "build_model", "check_codes", "hamming_distances"]
