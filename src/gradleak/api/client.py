"""The client's side: the update it would share, and the defenses it applies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from gradleak.api.settings import build_component
from gradleak.errors import GradleakError
from gradleak.types import SharedUpdate


def client_update(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | Sequence[int],
    *,
    scenario: str | Any = "fedsgd",
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    training: bool | None = None,
    defenses: Sequence[str | Any] = (),
    generator: torch.Generator | None = None,
    **settings: Any,
) -> SharedUpdate:
    """What a federated client shares after training ``model`` on ``images`` and ``labels``.

    Args:
        model: any ``torch.nn.Module`` ending in a ``Linear`` classifier; parameters with
            ``requires_grad=False`` are frozen and not sent.
        images: the private batch, (B, ...) as the model takes it.
        labels: B class indices.
        scenario: ``"fedsgd"`` (the batch-mean gradient), ``"fedavg"`` (the weight change after
            ``local_steps`` of SGD with ``local_lr``), ``"secagg"`` (the mean of ``clients``
            clients' gradients), any registered scenario, or a scenario object.
        loss: ``loss(logits, targets)`` with one-hot ``targets`` (B, classes) → scalar
            (``torch.nn.CrossEntropyLoss()`` works); default: DLG's soft-label cross-entropy.
        training: the forward's mode (``True``: BatchNorm uses batch statistics); ``None``: the
            model's own mode.
        defenses: specs such as ``"gaussian:1e-4"``, ``"dpsgd:clip=1,sigma=0.1"``, or defense
            objects, applied by the client in order.
        generator: the random stream of random defenses (reproducible when seeded).
        **settings: the scenario's own settings (e.g. ``local_steps=5, local_lr=1e-2``).

    Example:
        >>> import torch, gradleak
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> u = gradleak.client_update(model, torch.rand(2, 1, 2, 2), [0, 2], scenario="fedavg", local_steps=3, local_lr=0.1)
        >>> u.kind, u.local_steps, len(u.tensors)
        ('weight_delta', 3, 2)
    """
    from gradleak.defenses import parse_defense
    from gradleak.scenarios import SCENARIOS

    if not isinstance(images, torch.Tensor) or images.dim() < 2 or not images.is_floating_point():
        raise GradleakError("images must be a floating-point tensor of shape (batch, ...)")
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.shape != (images.shape[0],):
        raise GradleakError(f"give one label per image: {images.shape[0]} image(s) but labels of shape {tuple(labels.shape)}")
    parsed = tuple(parse_defense(d) if isinstance(d, str) else d for d in defenses)
    if isinstance(scenario, str):
        cls = SCENARIOS.get(scenario)
        extra = {"loss": loss, "training": training} if loss is not None or training is not None else {}
        scenario_obj = build_component(
            cls, {**settings, **extra, "defenses": parsed, "generator": generator}, kind="scenario", name=scenario
        )
    else:
        if settings or parsed or loss is not None:
            raise GradleakError("give settings, defenses and loss to the scenario object itself, not to client_update")
        scenario_obj = scenario
    device = _device_of(model)
    if hasattr(scenario_obj, "server_model"):
        model = scenario_obj.server_model(model)
    return scenario_obj.share(model, images.to(device), labels.to(device))


def defend(
    update: SharedUpdate, *specs: str | Any, model: nn.Module | None = None, generator: torch.Generator | None = None
) -> SharedUpdate:
    """``update`` after the client's post-hoc defenses ``specs`` (in order); the input is untouched.

    DP-SGD acts while the gradient is computed, so it goes to :func:`client_update` instead.
    ``model``, when given, is checked against the update first.

    Example:
        >>> import torch, gradleak
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> u = gradleak.client_update(model, torch.rand(1, 1, 2, 2), [1])
        >>> gradleak.defend(u, "prune:0.5", "fp16").defenses
        ('prune:0.5', 'fp16')
    """
    from gradleak.defenses import parse_defense
    from gradleak.io.update_file import check_update_fits

    if model is not None:
        check_update_fits(update, model)
    for spec in specs:
        defense = parse_defense(spec) if isinstance(spec, str) else spec
        if hasattr(defense, "private_gradient"):
            raise GradleakError(
                f"{defense.name} acts while the client computes its gradient, not on a finished update: "
                "pass it as client_update(..., defenses=[...])"
            )
        update = defense.apply(update, generator=generator)
    return update


def _device_of(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        raise GradleakError("the model has no parameters: there is no update to share") from None
