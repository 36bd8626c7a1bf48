"""Defenses the client applies to what it shares, parsed from repeatable ``--defense`` specs.

Example:
    >>> from gradleak.defenses import parse_defenses
    >>> [d.name for d in parse_defenses(["gaussian:1e-3", "prune:0.3", "int8"])]
    ['gaussian:0.001', 'prune:0.3', 'int8']

Kinds (see :mod:`gradleak.defenses.base` for details): ``gaussian:VARIANCE`` (the number is the
variance, as in the DLG paper), ``laplacian:SCALE`` (the scale b), ``prune:RATIO`` (per tensor,
smallest magnitudes), ``fp16``, ``int8`` (per-tensor symmetric), and
``dpsgd:clip=C,sigma=S[,delta=D]`` (applied at gradient time via
:meth:`DPSGD.private_gradient`, not by :func:`apply_defenses`) and
``opacus:noise_multiplier=S,max_grad_norm=C[,delta=D]`` (the same mechanism computed by Opacus).
"""

from __future__ import annotations

# Import order fixes the order kinds are listed in help and error messages (dpsgd last).
from gradleak.defenses.base import (
    DEFENSES,
    Defense,
    DefenseKind,
    apply_defenses,
    defense_help,
    parse_defense,
    parse_defenses,
)
from gradleak.defenses.noise import GaussianNoise, LaplacianNoise
from gradleak.defenses.prune import Prune
from gradleak.defenses.quantize import HalfPrecision, Int8Quantization

# isort: split
from gradleak.defenses.dpsgd import DPSGD, clip_per_example, per_example_norms, split_dpsgd
from gradleak.defenses.opacus import OpacusDPSGD

__all__ = [
    "DEFENSES",
    "DPSGD",
    "Defense",
    "DefenseKind",
    "GaussianNoise",
    "HalfPrecision",
    "Int8Quantization",
    "LaplacianNoise",
    "OpacusDPSGD",
    "Prune",
    "apply_defenses",
    "clip_per_example",
    "defense_help",
    "parse_defense",
    "parse_defenses",
    "per_example_norms",
    "split_dpsgd",
]
