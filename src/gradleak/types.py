"""Typed boundaries between the client (scenario), the attack and the runner.

The split follows breaching: a scenario turns private data into a :class:`SharedUpdate`; an
attack receives only that update and the server's model, never the private data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch


@dataclass(frozen=True)
class SharedUpdate:
    """Everything the client sends to the server, and so everything an attack may use.

    Attributes:
        tensors: one tensor per model parameter, in ``model.parameters()`` order. For
            ``kind="gradient"`` the batch-mean gradient of the loss; for ``kind="weight_delta"``
            the client's parameters after local training minus the parameters it received.
        kind: what ``tensors`` holds.
        batch_size: number of private samples behind the update (known to the server in FedSGD
            and FedAvg, as in the literature).
        input_shape: (channels, height, width) of one sample.
        num_classes: size of the model's output.
        local_steps: local optimisation steps behind a ``weight_delta`` (1 for a gradient).
        local_lr: the client's learning rate for ``weight_delta`` updates.
        known_labels: labels the scenario discloses to the server, if any (usually ``None``).
        defenses: names of the transforms the client applied before sharing.
        clients: how many clients' updates were aggregated into ``tensors`` (secure aggregation:
            the server sees only their batch-size-weighted mean; 1 for a single client).
            ``batch_size`` is then the total over all clients.
        parameter_names: the names (``model.named_parameters()``) of the parameters the tensors
            belong to, in order; ``None`` means every parameter of the model, in order. A model
            with frozen parameters sends only the trainable ones.
        training: the mode the client's forward pass ran in (``True``: BatchNorm uses batch
            statistics, ``False``: running statistics); ``None``: the model's own mode.
        local_batch_size: FedAvg mini-batch size (``None``: full batch each local step).
    """

    tensors: tuple[torch.Tensor, ...]
    kind: Literal["gradient", "weight_delta"]
    batch_size: int
    input_shape: tuple[int, int, int]
    num_classes: int
    local_steps: int = 1
    local_lr: float | None = None
    known_labels: torch.Tensor | None = None
    defenses: tuple[str, ...] = ()
    clients: int = 1
    parameter_names: tuple[str, ...] | None = None
    training: bool | None = None
    local_batch_size: int | None = None

    def replace_tensors(self, tensors: tuple[torch.Tensor, ...], defense: str) -> SharedUpdate:
        """A copy carrying ``tensors`` with ``defense`` appended to :attr:`defenses`."""
        return dataclasses.replace(self, tensors=tuple(tensors), defenses=(*self.defenses, defense))

    def to(self, device: torch.device | str) -> SharedUpdate:
        """This update with its tensors on ``device`` (itself when they already are)."""
        device = torch.device(device)
        if all(t.device == device for t in self.tensors):
            return self
        return dataclasses.replace(self, tensors=tuple(t.to(device) for t in self.tensors))


@dataclass
class StepReport:
    """What an attack reports to an observer after an iteration (no ground truth involved)."""

    iteration: int
    loss: float
    images: torch.Tensor  # current best guess, (B, C, H, W) in [0, 1], detached
    event: str | None = None  # a one-line notice for the user (e.g. "restart 2/8 at iteration 20: stalled …")
    objective: str = "gradient-matching loss"  # what ``loss`` is (the label of its curve)


class StepObserver(Protocol):
    def __call__(self, report: StepReport) -> None: ...


@dataclass
class AttackResult:
    """What an attack returns. Contains no ground truth; the runner scores it afterwards."""

    images: torch.Tensor  # (B, C, H, W) in [0, 1]
    labels: torch.Tensor  # (B,) recovered class indices
    losses: list[float]  # gradient-matching loss per iteration
    iterations: int  # iterations actually run (an attack may stop early)
    seconds: float = 0.0  # wall time of the attack itself (BaseAttack.run measures it)
    stop_reason: str = "max_iterations"
    restarts: int = 1  # tries (a restarting attack's fresh starts + 1; Inverting Gradients' parallel starts)
    snapshots: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    extras: dict[str, float | str | bool] = field(default_factory=dict)  # names, not numeric codes
    attempts: list[Attempt] = field(default_factory=list)  # the tries of a restarting attack, in order


@dataclass
class Attempt:
    """One try of an attack that restarts itself (DLG's stall guard), judged without ground truth.

    ``start`` is the run's iteration count when the try began (its first iteration is ``start + 1``),
    ``iterations`` how many it ran, ``reason`` why it ended (``stalled``, ``diverged``, ``blew up``,
    ``max_iterations``) with ``detail`` saying what was measured, ``start_loss``/``final_loss`` its
    gradient distance at its start and end.
    """

    start: int
    iterations: int
    reason: str
    detail: str
    start_loss: float
    final_loss: float
    init: str


@dataclass(frozen=True)
class NoiseModel:
    """What an attack expects the client's defenses did to each shared value (no ground truth).

    The shared value is modelled as ``mask * (scale(g) + noise)`` with ``g`` the true update and
    ``noise`` zero-mean with per-entry ``variances``.

    Attributes:
        variances: one tensor per shared tensor, broadcastable to it (a 0-d tensor for i.i.d.
            noise, a full tensor for value-dependent rounding such as fp16).
        masks: one bool tensor per shared tensor, ``True`` where the value was sent; ``None``
            when every value was sent (no pruning).
        clip: DP-SGD's per-example clipping norm when the server knows it, else ``None``.
        source: ``"published"`` (from the defenses' declared parameters) or ``"estimated"``
            (from the values of the update itself), or ``"none"``.
        description: one line for ``stop_reason`` and ``metrics.json``.
    """

    variances: tuple[torch.Tensor, ...]
    masks: tuple[torch.Tensor, ...] | None = None
    clip: float | None = None
    source: str = "none"
    description: str = "exact gradient"

    @property
    def perturbed(self) -> bool:
        """Whether the update is expected to differ from the exact gradient at all."""
        return self.masks is not None or self.clip is not None or any(bool((v > 0).any()) for v in self.variances)


@dataclass(frozen=True)
class NoiseContribution:
    """What one defense declares it does to the shared values (its published noise model).

    Each defense returns one from ``noise_contribution(update)``; the noise model adds the
    variances up, intersects the masks and keeps the clipping norm, without knowing the defense.

    Attributes:
        variances: per shared tensor, the variance it adds (broadcastable to the tensor), or ``None``.
        masks: per shared tensor, ``True`` where values were sent (pruning), or ``None``.
        clip: DP-SGD's per-example clipping norm, or ``None``.
        description: one line, e.g. ``"Gaussian noise of variance 0.0001"``.
    """

    variances: tuple[torch.Tensor, ...] | None = None
    masks: tuple[torch.Tensor, ...] | None = None
    clip: float | None = None
    description: str = ""
