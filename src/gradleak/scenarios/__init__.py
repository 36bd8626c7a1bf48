"""Scenarios: what a federated client computes and shares. Attacks see only the result.

Example:
    >>> import torch
    >>> from gradleak.models import build_model
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = build_model("lenet", channels=3, image_size=32, num_classes=10)
    >>> update = FedSGD().share(model, torch.rand(1, 3, 32, 32), torch.tensor([3]))
    >>> update.kind, update.batch_size, len(update.tensors) == len(list(model.parameters()))
    ('gradient', 1, True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gradleak.errors import GradleakError
from gradleak.registry import Registry
from gradleak.types import SharedUpdate


def cross_entropy_for_soft_labels(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Batch-mean cross entropy against one-hot or soft targets, as DLG's ``cross_entropy_for_onehot``."""
    return torch.mean(torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1))


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels.long(), num_classes).to(torch.float32)


@dataclass
class FedSGD:
    """The client shares the batch-mean gradient of one step (the DLG setting).

    ``defenses`` are applied, in order, to the gradient before it is shared; a DP-SGD defense
    instead replaces how the gradient is computed (per-example clipping and noise).
    """

    defenses: Sequence[Any] = field(default_factory=tuple)
    generator: torch.Generator | None = None
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # (logits, one-hot targets) -> scalar
    training: bool | None = None  # BatchNorm mode of the client's forward (None: the model's own)

    def share(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> SharedUpdate:
        num_classes = _num_classes(model, images)
        targets = one_hot(labels, num_classes).to(images.device)
        loss_fn = self.loss or cross_entropy_for_soft_labels
        names, params = sent_parameters(model)
        post_hoc = [d for d in self.defenses if not hasattr(d, "private_gradient")]
        at_gradient_time = [d for d in self.defenses if hasattr(d, "private_gradient")]
        if len(at_gradient_time) > 1:
            raise GradleakError("give DP-SGD at most once: --defense dpsgd:... appears twice")
        with forward_mode(model, self.training):
            if at_gradient_time:
                if names is not None:
                    raise GradleakError("DP-SGD with frozen parameters is not supported: unfreeze them or drop dpsgd")
                grads = tuple(
                    g.detach()
                    for g in at_gradient_time[0].private_gradient(model, loss_fn, images, targets, generator=self.generator)
                )
            else:
                loss = loss_fn(model(images), targets)
                grads = tuple(g.detach() for g in torch.autograd.grad(loss, params))
        update = SharedUpdate(
            tensors=grads,
            kind="gradient",
            batch_size=images.shape[0],
            input_shape=tuple(images.shape[1:]),  # type: ignore[arg-type]
            num_classes=num_classes,
            defenses=tuple(d.name for d in at_gradient_time),
            parameter_names=names,
            training=self.training,
        )
        for defense in post_hoc:
            update = defense.apply(update, generator=self.generator)
        return update


@dataclass
class FedAvg:
    """The client runs ``local_steps`` of full-batch SGD with ``local_lr`` and shares the weight change.

    As in Inverting Gradients' multi-step setting the server knows the step count and rate.
    """

    local_steps: int = 1
    local_lr: float = 1e-4
    defenses: Sequence[Any] = field(default_factory=tuple)
    generator: torch.Generator | None = None
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # (logits, one-hot targets) -> scalar
    training: bool | None = None  # BatchNorm mode of the client's forward (None: the model's own)

    def __post_init__(self) -> None:
        if self.local_steps < 1:
            raise GradleakError(f"--local-steps must be at least 1 (got {self.local_steps})")
        if not self.local_lr > 0:
            raise GradleakError(f"--local-lr must be positive (got {self.local_lr})")
        if any(hasattr(d, "private_gradient") for d in self.defenses):
            raise GradleakError("DP-SGD is supported with --scenario fedsgd only: drop --defense dpsgd or use fedsgd")

    def share(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> SharedUpdate:
        num_classes = _num_classes(model, images)
        targets = one_hot(labels, num_classes).to(images.device)
        loss_fn = self.loss or cross_entropy_for_soft_labels
        names, sent = sent_parameters(model)
        all_names = [n for n, _ in model.named_parameters()]
        sent_names = names if names is not None else all_names
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        weights = {n: (start[n].clone().requires_grad_(True) if n in sent_names else start[n]) for n in all_names}
        with forward_mode(model, self.training):
            for _ in range(self.local_steps):
                logits = torch.func.functional_call(model, weights, (images,))
                grads = torch.autograd.grad(loss_fn(logits, targets), [weights[n] for n in sent_names])
                for n, g in zip(sent_names, grads):
                    weights[n] = (weights[n] - self.local_lr * g).detach().requires_grad_(True)
        delta = tuple((weights[n] - start[n]).detach() for n in sent_names)
        update = SharedUpdate(
            tensors=delta,
            kind="weight_delta",
            batch_size=images.shape[0],
            input_shape=tuple(images.shape[1:]),  # type: ignore[arg-type]
            num_classes=num_classes,
            local_steps=self.local_steps,
            local_lr=self.local_lr,
            parameter_names=names,
            training=self.training,
        )
        for defense in self.defenses:
            update = defense.apply(update, generator=self.generator)
        return update


def functional_forward(model: nn.Module, weights: Sequence[torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """Run ``model`` with its parameters replaced by ``weights`` (same order as ``parameters()``)."""
    names = [n for n, _ in model.named_parameters()]
    return torch.func.functional_call(model, dict(zip(names, weights)), (images,))


def sent_parameters(model: nn.Module) -> tuple[tuple[str, ...] | None, list[torch.Tensor]]:
    """The parameters a client trains and so sends: their names (``None`` when that is all of
    them, the classic case) and the tensors, in ``named_parameters()`` order."""
    named = list(model.named_parameters())
    sent = [(n, p) for n, p in named if p.requires_grad]
    if not sent:
        raise GradleakError("the model has no trainable parameters (all have requires_grad=False): nothing would be sent")
    names = None if len(sent) == len(named) else tuple(n for n, _ in sent)
    return names, [p for _, p in sent]


@contextlib.contextmanager
def forward_mode(model: nn.Module, training: bool | None) -> Iterator[None]:
    """Run the client's forward in train (batch statistics) or eval mode, then restore the model's."""
    if training is None:
        yield
        return
    before = {m: m.training for m in model.modules()}
    model.train(training)
    try:
        yield
    finally:
        for m, mode in before.items():
            m.training = mode


def _num_classes(model: nn.Module, images: torch.Tensor) -> int:
    # Read from the classifier rather than running a forward pass, which would move BatchNorm stats.
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise GradleakError("the model has no Linear classifier layer: gradleak needs one to count classes")
    return int(linears[-1].out_features)


from gradleak.scenarios.imprint import Imprint  # noqa: E402 - they build on FedSGD above
from gradleak.scenarios.secagg import SecAgg  # noqa: E402

SCENARIOS: Registry[type] = Registry("scenario")
SCENARIOS.register("fedsgd", FedSGD)
SCENARIOS.register("fedavg", FedAvg)
SCENARIOS.register("secagg", SecAgg)
SCENARIOS.register("imprint", Imprint)
