"""Gradient-inversion attacks. Each receives the model and a SharedUpdate, never the private data."""

from __future__ import annotations

from gradleak.attacks.base import ATTACKS, Attack
from gradleak.attacks.dlg import DLG, idlg
from gradleak.attacks.labels import idlg_label

__all__ = ["ATTACKS", "DLG", "Attack", "idlg", "idlg_label"]
