"""The server's side: reconstruct the private data from an update, and score it."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gradleak.api.settings import build_component
from gradleak.errors import GradleakError
from gradleak.types import AttackResult, SharedUpdate, StepObserver


def reconstruct(
    model: nn.Module,
    update: SharedUpdate,
    *,
    attack: str | Any = "auto",
    observer: StepObserver | None = None,
    generator: torch.Generator | None = None,
    **settings: Any,
) -> AttackResult:
    """Reconstruct the client's private batch from ``update`` and the server's ``model`` alone.

    Args:
        model: the model the server sent (with the weights the client trained from).
        update: what the client shared (:func:`client_update`, :func:`load_update`).
        attack: a registered attack name (``"auto"`` picks, without ground truth, the strongest
            that applies and says why in ``result.stop_reason``) or an attack object.
        observer: called with a :class:`~gradleak.types.StepReport` after each iteration.
        generator: the attack's random stream (a seeded one makes it reproducible).
        **settings: the attack's own settings (e.g. ``iterations=2000, tv_weight=1e-4``);
            an unknown one is refused with the valid ones listed.

    Example:
        >>> import torch, gradleak
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> u = gradleak.client_update(model, torch.rand(1, 1, 2, 2), [1])
        >>> gradleak.reconstruct(model, u, attack="auto", speed=1)
        Traceback (most recent call last):
        ...
        gradleak.errors.GradleakError: attack 'auto' has no setting 'speed': its settings are ...
    """
    from gradleak.attacks import ATTACKS
    from gradleak.io.update_file import check_update_fits

    if not isinstance(update, SharedUpdate):
        raise GradleakError(f"update must be a gradleak SharedUpdate (got {type(update).__name__}): see gradleak.client_update or gradleak.load_update")
    check_update_fits(update, model)
    if isinstance(attack, str):
        attack_obj = build_component(ATTACKS.get(attack), settings, kind="attack", name=attack)
    else:
        if settings:
            raise GradleakError("give settings to the attack object itself, not to reconstruct")
        attack_obj = attack
    device = next(model.parameters()).device
    update = update.to(device)
    attack_obj.check(update, model)
    kwargs: dict[str, Any] = {"observer": observer}
    if generator is not None:
        kwargs["generator"] = generator
    return attack_obj.run(model, update, **kwargs)


def score(result: AttackResult | torch.Tensor, images: torch.Tensor, labels: torch.Tensor | None = None) -> Any:
    """Match each reconstruction to a private image (optimal assignment by MSE) and score it.

    Returns a :class:`~gradleak.metrics.BatchScore`: ``per_image`` (MSE, PSNR, SSIM, labels),
    ``psnr``/``ssim``/``mse`` (means over the images) and ``label_accuracy`` (``None`` without
    ``labels``).
    """
    from gradleak.metrics import score_batch

    reconstructions = result.images if isinstance(result, AttackResult) else result
    recovered = result.labels if isinstance(result, AttackResult) else None
    if reconstructions.shape != images.shape:
        raise GradleakError(
            f"cannot score: {tuple(reconstructions.shape)} reconstructions against images of shape {tuple(images.shape)}"
        )
    return score_batch(
        reconstructions.detach().cpu(), images.detach().cpu(),
        true_labels=None if labels is None else torch.as_tensor(labels).cpu(),
        recovered_labels=None if recovered is None else recovered.cpu(),
    )
