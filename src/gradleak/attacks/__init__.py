"""Gradient-inversion attacks. Each receives the model and a SharedUpdate, never the private data.

Registered names: ``dlg`` (the original, with a stall guard that restarts a try that is not
converging; ``restarts=1`` is the single-try original), ``idlg``, ``analytic`` (R-GAP-style exact
inversion), ``ig`` (Inverting Gradients), ``map`` (noise-aware MAP inversion for defended updates),
``imprint`` (whole batches out of a malicious server's imprint block, Robbing the Fed),
``linear_input`` (one image from a first Linear layer, closed form), ``layerwise`` (one image through a chain of layers with a Linear head,
from its exact input by active-set gradient matching), ``patch_embedding`` (one
image from a ViT-style patch projection and position embedding, closed form), ``spear`` (exact
disaggregation of a batch through a fully connected ReLU layer) and ``auto``
(picks among them without ground truth).
"""

from __future__ import annotations

from gradleak.attacks.analytic import AnalyticInversion, relative_gradient_error
from gradleak.attacks.auto import Auto
from gradleak.attacks.base import ATTACKS, Attack
from gradleak.attacks.dlg import DLG, IDLG, idlg
from gradleak.attacks.ig import InvertingGradients
from gradleak.attacks.imprint import ImprintAttack
from gradleak.attacks.labels import idlg_label, restore_batch_labels
from gradleak.attacks.layerwise import LayerwiseInversion
from gradleak.attacks.linear_input import LinearInputInversion
from gradleak.attacks.patch_embedding import PatchEmbeddingInversion
from gradleak.attacks.noise_model import noise_model
from gradleak.attacks.posterior import MapInversion
from gradleak.attacks.spear import Spear

__all__ = [
    "ATTACKS",
    "AnalyticInversion",
    "Attack",
    "Auto",
    "DLG",
    "ImprintAttack",
    "IDLG",
    "InvertingGradients",
    "LayerwiseInversion",
    "LinearInputInversion",
    "PatchEmbeddingInversion",
    "MapInversion",
    "idlg",
    "idlg_label",
    "noise_model",
    "relative_gradient_error",
    "restore_batch_labels",
    "Spear",
]
