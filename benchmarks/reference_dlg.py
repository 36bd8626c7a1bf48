"""A reference implementation of the original DLG loop, written from the paper's description.

Kept independent of gradleak's own code on purpose (its own LeNet, init and loop), so the benchmark
compares against the original algorithm rather than against ourselves:
LeNet with sigmoid, three 5×5 convs (stride 2, 2, 1), 12 channels, FC; weights U(−0.5, 0.5); the
client's gradient of one-hot cross entropy; dummy data then dummy label logits ~ N(0, 1); L-BFGS
with PyTorch defaults (lr 1); squared-L2 gradient distance; no clamp; 300 steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class ReferenceLeNet(nn.Module):
    def __init__(self, channels: int, side: int, classes: int) -> None:
        super().__init__()
        act = nn.Sigmoid
        self.body = nn.Sequential(
            nn.Conv2d(channels, 12, kernel_size=5, padding=5 // 2, stride=2), act(),
            nn.Conv2d(12, 12, kernel_size=5, padding=5 // 2, stride=2), act(),
            nn.Conv2d(12, 12, kernel_size=5, padding=5 // 2, stride=1), act(),
        )
        with torch.no_grad():  # the FC size follows from the input (no RNG drawn)
            feat = self.body(torch.zeros(1, channels, side, side)).numel()
        self.fc = nn.Sequential(nn.Linear(feat, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return self.fc(out.view(out.size(0), -1))


def weights_init(m: nn.Module) -> None:
    if hasattr(m, "weight"):
        m.weight.data.uniform_(-0.5, 0.5)
    if hasattr(m, "bias"):
        m.bias.data.uniform_(-0.5, 0.5)


def cross_entropy_for_onehot(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.mean(torch.sum(-target * F.log_softmax(pred, dim=-1), 1))


def build_reference(channels: int, side: int, classes: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = ReferenceLeNet(channels, side, classes)
    net.apply(weights_init)
    return net


def run_reference_dlg(
    net: nn.Module,
    gt_data: torch.Tensor,
    gt_label: torch.Tensor,
    classes: int,
    *,
    steps: int = 300,
    reached: Callable[[torch.Tensor], bool],
) -> dict[str, float | int | None]:
    """The original loop. ``reached(dummy)`` is the oracle (ground-truth PSNR ≥ 30 dB), called after
    each step with the clock stopped, so the reported time-to-30 dB favours the reference."""
    onehot = F.one_hot(gt_label, classes).float()
    pred = net(gt_data)
    y = cross_entropy_for_onehot(pred, onehot)
    original_dy_dx = [g.detach().clone() for g in torch.autograd.grad(y, net.parameters())]
    dummy_data = torch.randn(gt_data.size()).requires_grad_(True)
    dummy_label = torch.randn(onehot.size()).requires_grad_(True)
    optimizer = torch.optim.LBFGS([dummy_data, dummy_label])
    closures = 0

    def closure() -> torch.Tensor:
        nonlocal closures
        closures += 1
        optimizer.zero_grad()
        dummy_pred = net(dummy_data)
        dummy_onehot_label = F.softmax(dummy_label, dim=-1)
        dummy_loss = cross_entropy_for_onehot(dummy_pred, dummy_onehot_label)
        dummy_dy_dx = torch.autograd.grad(dummy_loss, net.parameters(), create_graph=True)
        grad_diff = 0
        for gx, gy in zip(dummy_dy_dx, original_dy_dx):
            grad_diff += ((gx - gy) ** 2).sum()
        grad_diff.backward()
        return grad_diff

    elapsed = 0.0
    first: float | None = None
    first_step: int | None = None
    for step in range(steps):
        start = time.perf_counter()
        optimizer.step(closure)
        elapsed += time.perf_counter() - start
        if first is None and reached(dummy_data.detach()):
            first, first_step = elapsed, step + 1
            break  # oracle stop: the reference is credited the moment it first reaches 30 dB
    return {
        "seconds_to_30db": first,
        "step_to_30db": first_step,
        "total_seconds": elapsed,
        "closures": closures,
        "dummy": dummy_data.detach(),  # type: ignore[dict-item]
        "labels": dummy_label.detach().argmax(dim=-1).tolist(),
    }


def run_reference_on_shared(
    net: nn.Module,
    shared: list[torch.Tensor],
    shape: tuple[int, ...],
    classes: int,
    *,
    steps: int = 300,
    idlg: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The original DLG loop (or iDLG's: label from the sign of the last layer's gradient, image
    only) against a gradient the client already shared, e.g. a defended one; returns the dummy.

    The same squared-L2 distance, L-BFGS defaults and N(0, 1) dummies as :func:`run_reference_dlg`.
    A non-finite distance ends the loop (the original would keep stepping on NaN).
    """
    batch = shape[0]
    dummy_data = torch.randn(shape, generator=generator).requires_grad_(True)
    if idlg:
        # iDLG: the true class's row of the last weight gradient is the one with a negative sum.
        label = torch.argmin(torch.sum(shared[-2], dim=-1)).view(1).repeat(batch)
        dummy_target = F.one_hot(label, classes).float()
        variables = [dummy_data]
    else:
        dummy_label = torch.randn((batch, classes), generator=generator).requires_grad_(True)
        variables = [dummy_data, dummy_label]
    optimizer = torch.optim.LBFGS(variables)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        target = dummy_target if idlg else F.softmax(dummy_label, dim=-1)
        dummy_loss = cross_entropy_for_onehot(net(dummy_data), target)
        dummy_dy_dx = torch.autograd.grad(dummy_loss, net.parameters(), create_graph=True)
        grad_diff = 0
        for gx, gy in zip(dummy_dy_dx, shared):
            grad_diff += ((gx - gy) ** 2).sum()
        grad_diff.backward()
        return grad_diff

    for _ in range(steps):
        loss = optimizer.step(closure)
        if not torch.isfinite(loss):
            break
    return dummy_data.detach()
