"""The client's forward model: (model, images, targets) → the update the client would send.

One place for what both sides compute: the scenarios call it with the private data to build a
:class:`~gradleak.types.SharedUpdate`, every attack calls it with candidate images (with
``create_graph=True``) to compare against the shared one. It covers

* the loss: DLG's soft-label cross entropy by default, or a user's ``loss(logits, targets)``
  where ``targets`` are (B, K) class probabilities (one-hot for known labels; ``F.cross_entropy``
  accepts them as they are);
* FedSGD: the batch-mean gradient; DP-SGD's per-example clipping (``clip``) of it;
* FedAvg: ``local_steps`` SGD steps with ``local_lr`` (full batch, or consecutive mini-batches
  of ``local_batch_size``, step ``s`` using mini-batch ``s mod n``), differentiable through the
  unroll for the attacks, sharing the weight change;
* the forward mode: BatchNorm with batch statistics (``training=True``) or running ones
  (``False``); ``None`` keeps the model's own mode;
* which parameters are sent: ``parameter_names`` (``None``: all, in ``model.parameters()`` order;
  frozen parameters are not sent by the scenarios).

Example:
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.ReLU(), nn.Linear(5, 3))
    >>> forward = ClientForward(net)
    >>> grads = forward.gradient(torch.rand(2, 3, 2, 2), one_hot(torch.tensor([0, 2]), 3))
    >>> [tuple(g.shape) for g in grads]
    [(5, 12), (5,), (3, 5), (3,)]
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from gradleak.errors import GradleakError

if TYPE_CHECKING:
    from gradleak.types import SharedUpdate

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_TINY = 1e-12


def cross_entropy_for_soft_labels(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Batch-mean cross entropy against one-hot or soft targets, as DLG's ``cross_entropy_for_onehot``."""
    return torch.mean(torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1))


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B,) class indices → (B, K) float32 one-hot targets."""
    return F.one_hot(labels.long(), num_classes).to(torch.float32)


def trainable_parameter_names(model: nn.Module) -> tuple[str, ...] | None:
    """Names of the parameters a client sends (those that require grad); ``None`` when that is all."""
    named = list(model.named_parameters())
    sent = tuple(n for n, p in named if p.requires_grad)
    if not sent:
        raise GradleakError("every parameter of the model is frozen: a client would send nothing")
    return None if len(sent) == len(named) else sent


def sent_parameters(model: nn.Module, names: Sequence[str] | None) -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs an update covers, in its order (``None``: all of them)."""
    named = list(model.named_parameters())
    if names is None:
        return named
    lookup = dict(named)
    unknown = [n for n in names if n not in lookup]
    if unknown:
        raise GradleakError(
            f"the update names parameters the model does not have ({', '.join(unknown[:3])}"
            f"{', ...' if len(unknown) > 3 else ''}): attack it with the model the client trained"
        )
    return [(n, lookup[n]) for n in names]


def per_example_norms(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """L2 norm of each example's gradient over all parameters jointly, shape (B,).

    ``grads`` holds one tensor per parameter, each with the batch as its first dimension.
    """
    if not grads:
        raise ValueError("per_example_norms needs at least one gradient tensor")
    batch = grads[0].shape[0]
    squares = sum(g.reshape(batch, -1).pow(2).sum(dim=1) for g in grads)
    return torch.as_tensor(squares).sqrt()


def clip_per_example(grads: Sequence[torch.Tensor], clip: float) -> tuple[torch.Tensor, ...]:
    """Scale each example's gradient so that its joint L2 norm is at most ``clip``.

    Example ``i`` is multiplied by ``min(1, clip / ||g_i||)``, the norm taken over all
    parameters together (flat clipping, as in Abadi et al. and Opacus); gradients already
    within the bound are unchanged. Returns new tensors; the inputs are not modified.
    """
    if not clip > 0:
        raise ValueError(f"clip must be positive (got {clip})")
    norms = per_example_norms(grads)
    factors = (clip / norms.clamp_min(_TINY)).clamp(max=1.0)
    return tuple(g * factors.reshape(-1, *([1] * (g.dim() - 1))).to(g.dtype) for g in grads)


def has_training_batchnorm(model: nn.Module, training: bool | None = None) -> bool:
    """Whether a forward in mode ``training`` (``None``: the model's own) mixes the batch in BatchNorm."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return bool(norms) and (training if training is not None else any(m.training for m in norms))


class ClientForward:
    """The client's computation on a private copy of ``model``, for any number of candidate inputs.

    The copy runs in mode ``training`` (``None``: as the model is); BatchNorm in training mode uses
    the batch's statistics without updating running ones, so the many forward passes of an attack
    leave no trace and can run under ``torch.func.vmap``. ``parameter_names`` says which parameters
    the update covers; the others are held fixed.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        parameter_names: Sequence[str] | None = None,
        training: bool | None = None,
        loss: Loss | None = None,
    ) -> None:
        self.loss: Loss = loss or cross_entropy_for_soft_labels
        self.net = copy.deepcopy(model)
        if training is not None:
            self.net.train(training)
        for module in self.net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
                module.track_running_stats = False
                module.running_mean = None
                module.running_var = None
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.names = [n for n, _ in sent_parameters(self.net, parameter_names)]
        self.weights = tuple(dict(self.net.named_parameters())[n].detach() for n in self.names)
        self.training = training

    @classmethod
    def of(cls, model: nn.Module, update: SharedUpdate, *, loss: Loss | None = None) -> ClientForward:
        """The forward model behind ``update`` (its parameters and forward mode)."""
        return cls(model, parameter_names=update.parameter_names, training=update.training, loss=loss)

    def logits(self, images: torch.Tensor, weights: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """The model's output for ``images`` with the sent parameters set to ``weights`` (default: the model's).

        Attention runs in its plain (math) form: the fused CPU kernels have no second derivative,
        which every gradient-matching attack needs.
        """
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.MATH]):
            if weights is None:
                return self.net(images)
            return torch.func.functional_call(self.net, dict(zip(self.names, weights)), (images,))

    def loss_at(self, weights: Sequence[torch.Tensor], images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.loss(self.logits(images, weights), targets)

    def gradient(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        *,
        weights: Sequence[torch.Tensor] | None = None,
        create_graph: bool = False,
        clip: float | None = None,
        functional: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """The batch-mean gradient of the loss w.r.t. the sent parameters.

        ``clip``: DP-SGD's per-example clipping (without its noise). ``create_graph``: the result
        stays differentiable in ``images`` (and ``weights``). ``functional``: computed with
        ``torch.func.grad``, for use inside ``torch.func`` transforms (``vmap``, ``grad``).
        """
        weights = tuple(self.weights if weights is None else weights)
        if clip is not None:
            return self._clipped_gradient(images, targets, weights, clip)
        if functional:
            return torch.func.grad(self.loss_at)(weights, images, targets)
        leaves = tuple(w if w.requires_grad else w.detach().requires_grad_(True) for w in weights)
        with torch.enable_grad():
            loss = self.loss_at(leaves, images, targets)
            grads = torch.autograd.grad(loss, leaves, create_graph=create_graph, allow_unused=True)
        return tuple(torch.zeros_like(w) if g is None else g for g, w in zip(grads, leaves))

    def per_example_gradients(
        self, images: torch.Tensor, targets: torch.Tensor, weights: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Unclipped per-example gradients, one (B, *parameter shape) tensor per sent parameter
        (``vmap`` of ``grad`` of a batch of one; differentiable in ``images``)."""
        if has_training_batchnorm(self.net):
            raise GradleakError(
                "DP-SGD needs per-example gradients, which BatchNorm in training mode mixes "
                "across the batch: use a model without BatchNorm or put it in eval mode"
            )
        weights = tuple(self.weights if weights is None else weights)

        def loss_of_one(w: tuple[torch.Tensor, ...], image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return self.loss_at(w, image.unsqueeze(0), target.unsqueeze(0))

        return torch.func.vmap(torch.func.grad(loss_of_one), in_dims=(None, 0, 0), randomness="different")(
            weights, images, targets
        )

    def _clipped_gradient(
        self, images: torch.Tensor, targets: torch.Tensor, weights: tuple[torch.Tensor, ...], clip: float
    ) -> tuple[torch.Tensor, ...]:
        clipped = clip_per_example(self.per_example_gradients(images, targets, weights), clip)
        return tuple(g.sum(dim=0) / images.shape[0] for g in clipped)

    def weight_change(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        *,
        local_steps: int,
        local_lr: float,
        local_batch_size: int | None = None,
        create_graph: bool = False,
        functional: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """FedAvg: the sent parameters after ``local_steps`` SGD steps minus before (see the module doc)."""
        batch = images.shape[0]
        size = batch if local_batch_size is None else max(1, min(local_batch_size, batch))
        chunks = [(i, min(i + size, batch)) for i in range(0, batch, size)]
        weights = self.weights
        for step in range(local_steps):
            lo, hi = chunks[step % len(chunks)]
            grads = self.gradient(
                images[lo:hi], targets[lo:hi], weights=weights, create_graph=create_graph, functional=functional
            )
            weights = tuple(w - local_lr * g for w, g in zip(weights, grads))
            if not (create_graph or functional):
                weights = tuple(w.detach() for w in weights)
        return tuple(w - p for w, p in zip(weights, self.weights))

    def update(
        self, images: torch.Tensor, targets: torch.Tensor, like: SharedUpdate, *, create_graph: bool = False,
        clip: float | None = None, functional: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """What the client would send for ``images``, of the same kind as ``like`` (gradient or weight change)."""
        if like.kind == "gradient":
            return self.gradient(images, targets, create_graph=create_graph, clip=clip, functional=functional)
        if not like.local_lr:
            raise GradleakError("a FedAvg weight change needs the client's learning rate (--local-lr)")
        return self.weight_change(
            images, targets, local_steps=like.local_steps, local_lr=float(like.local_lr),
            local_batch_size=like.local_batch_size, create_graph=create_graph, functional=functional,
        )


def relative_update_error(
    model: nn.Module, update: SharedUpdate, images: torch.Tensor, labels: torch.Tensor, *, loss: Loss | None = None
) -> float:
    """‖u(x̂, ŷ) − u‖² / ‖u‖²: how well a candidate explains the shared update (no ground truth)."""
    forward = ClientForward.of(model, update, loss=loss)
    device = forward.weights[0].device if forward.weights else images.device
    targets = one_hot(labels.to(device), update.num_classes)
    predicted = forward.update(images.to(device), targets, update)
    num = sum(float(((g - s.to(device)) ** 2).sum()) for g, s in zip(predicted, update.tensors))
    den = sum(float((s**2).sum()) for s in update.tensors)
    return num / max(den, 1e-30)
