"""The gradleak calls the integrations make: attack an update, score a result.

One small adapter so that the integrations depend on one place only (the public API of
``gradleak`` once it lands: ``gradleak.reconstruct`` and ``gradleak.score``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gradleak.types import AttackResult, SharedUpdate


def reconstruct(model: nn.Module, update: SharedUpdate, *, attack: str, seed: int, **settings: Any) -> AttackResult:
    """Run attack ``attack`` (a registered name) with ``settings`` on ``update``."""
    from gradleak.attacks import ATTACKS

    attacker = ATTACKS.get(attack)(**settings)
    attacker.check(update, model)
    return attacker.run(model, update, generator=torch.Generator().manual_seed(seed))


def score(result: AttackResult, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Matched MSE/PSNR/SSIM per image and label accuracy, as plain numbers for ``metrics.json``."""
    from gradleak.metrics import score_batch

    scored = score_batch(result.images, images, true_labels=labels, recovered_labels=result.labels)
    return {
        "psnr": scored.psnr,
        "ssim": scored.ssim,
        "mse": scored.mse,
        "label_accuracy": scored.label_accuracy,
        "per_image": [
            {"psnr": s.psnr, "ssim": s.ssim, "mse": s.mse, "label": s.label, "recovered_label": s.recovered_label}
            for s in scored.per_image
        ],
        "order": list(scored.order),
    }
