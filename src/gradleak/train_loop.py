"""The one epoch/step loop behind ``gradleak train`` (:mod:`gradleak.training`) and the utility
of a defense (:mod:`gradleak.utility`): shuffled minibatches, a step, a divergence check and the
test accuracy after every epoch. What a step does (an optimiser step, or a defended FedSGD round)
is the caller's.

Example:
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> x, y = torch.rand(40, 1, 2, 2), torch.randint(0, 2, (40,))
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> def step(images, labels):
    ...     loss = nn.functional.cross_entropy(net(images), labels)
    ...     optimizer.zero_grad(); loss.backward(); optimizer.step()
    ...     return float(loss.detach())
    >>> result = train_epochs(net, step, (x, y), (x, y), epochs=2, batch_size=8, seed=0, device=torch.device("cpu"))
    >>> len(result.epoch_loss), len(result.epoch_accuracy)
    (2, 2)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.errors import GradleakError

#: one minibatch step: (images, labels) on the device → the minibatch's loss before the step
Step = Callable[[torch.Tensor, torch.Tensor], float]


@dataclass
class LoopResult:
    epoch_loss: list[float]  # mean minibatch loss per epoch (before each step)
    epoch_accuracy: list[float]  # test accuracy after each epoch
    seconds: float


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch: int = 512) -> float:
    """Accuracy of ``model`` (in eval mode, restored afterwards) on ``images``/``labels``."""
    was_training = model.training
    model.eval()
    correct = 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(labels), batch):
            pred = model(images[i : i + batch].to(device)).argmax(dim=1).cpu()
            correct += int((pred == labels[i : i + batch]).sum())
    model.train(was_training)
    return correct / max(1, len(labels))


def train_epochs(
    model: nn.Module,
    step: Step,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    diverged: str = "lower the learning rate",
    before_evaluate: Callable[[nn.Module], None] | None = None,
    on_step: Callable[[int, float], None] | None = None,
    on_epoch: Callable[[int, float, float], None] | None = None,
) -> LoopResult:
    """Run ``epochs`` epochs of ``step`` over shuffled minibatches of ``train``.

    The minibatch order comes from its own generator (``seed + 2``), so runs that differ only in
    their step (a defense) see the same batches. After each epoch: non-finite weights are one
    GradleakError line ("training diverged … in epoch N …: ``diverged``"), then
    ``before_evaluate(model)`` (e.g. re-estimating BatchNorm statistics), the test accuracy, and
    ``on_epoch(epoch, mean loss, accuracy)``; ``on_step(epoch, loss)`` follows every step.
    """
    images, labels = train
    order_generator = torch.Generator().manual_seed(seed + 2)
    epoch_loss: list[float] = []
    epoch_accuracy: list[float] = []
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(labels), generator=order_generator)
        losses = []
        for i in range(0, len(order), batch_size):
            batch = order[i : i + batch_size]
            losses.append(step(images[batch].to(device), labels[batch].to(device)))
            if on_step is not None:
                on_step(epoch, losses[-1])
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise GradleakError(f"training diverged (non-finite weights) in epoch {epoch} {diverged}")
        epoch_loss.append(sum(losses) / max(1, len(losses)))
        if before_evaluate is not None:
            before_evaluate(model)
        epoch_accuracy.append(evaluate(model, *test))
        if on_epoch is not None:
            on_epoch(epoch, epoch_loss[-1], epoch_accuracy[-1])
    return LoopResult(epoch_loss=epoch_loss, epoch_accuracy=epoch_accuracy, seconds=time.perf_counter() - start)
