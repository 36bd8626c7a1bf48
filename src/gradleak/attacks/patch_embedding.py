"""``patch_embedding``: one image out of a vision transformer's patch embedding, in closed form.

A ViT-style model cuts the image into patches x_p with a convolution whose kernel equals its
stride (the patch projection, tokens t_p = W x_p + b) and adds a learned position embedding right
after it (t_p + e_p). For one image the gradient of e_p is the error δ_p that reaches token p, so

    ∂L/∂W = Σ_p δ_p x_pᵀ = Δᵀ X,        ∂L/∂b = Σ_p δ_p,        Δ = ∂L/∂e (P × D rows),

a linear system in the patches X with a known matrix Δᵀ. With an embedding width D ≥ P patches
and Δ of full rank it has one solution (least squares, float64). The bias relation checks that the
position embedding really is added right after the projection (a class-token row, if present, is
recognised by it), and the result is verified against the whole update like every candidate.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from gradleak.scenarios import FedSGD
    >>> class TinyViT(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.patch = nn.Conv2d(3, 24, 4, stride=4)
    ...         self.pos = nn.Parameter(torch.randn(1, 16, 24) * 0.02)
    ...         self.mix = nn.Sequential(nn.LayerNorm(24), nn.Linear(24, 24), nn.GELU())
    ...         self.head = nn.Linear(24, 5)
    ...     def forward(self, x):
    ...         tokens = self.patch(x).flatten(2).transpose(1, 2) + self.pos
    ...         return self.head(self.mix(tokens).mean(dim=1))
    >>> _ = torch.manual_seed(0)
    >>> net, secret = TinyViT(), torch.rand(1, 3, 16, 16)
    >>> result = PatchEmbeddingInversion().run(net, FedSGD().share(net, secret, torch.tensor([1])))
    >>> bool((result.images - secret).abs().max() < 1e-3)
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gradleak.attacks.base import ATTACKS
from gradleak.attacks.closed_form import ClosedForm, one_image_first_layer
from gradleak.objective import sent_parameters
from gradleak.types import SharedUpdate

_BIAS_MATCH = 1e-3  # relative mismatch of Σ_p δ_p and ∂L/∂b below which the position rows are accepted


@dataclass
class PatchSystem:
    """The linear system of the module doc, found in a model and its update."""

    deltas: torch.Tensor  # (P, D) ∂L/∂(position embedding) rows of the patches, float64
    g_weight: torch.Tensor  # (D, C·k·k) float64
    grid: tuple[int, int]  # patches per column and per row
    kernel: tuple[int, int]
    channels: int


def find_patch_system(model: nn.Module, update: SharedUpdate) -> PatchSystem | str:
    """The patch system when this attack applies, else why not."""
    found = one_image_first_layer(
        model, update, nn.Conv2d, batch_problem="sums the position-embedding gradient over images",
        missing="the first layer is not a convolution (no patch projection)",
    )
    if isinstance(found, str):
        return found
    first, gradient = found
    conv = first.module
    if not first.sees_raw_input or conv.kernel_size != conv.stride or conv.padding not in ((0, 0), "valid"):
        return "the first convolution is not a patch projection (kernel = stride, no padding) on the raw image"
    if conv.groups != 1 or conv.dilation != (1, 1):
        return "the patch projection uses groups or dilation"
    grid = (first.output_shape[2], first.output_shape[3])
    patches, width = grid[0] * grid[1], conv.out_channels
    if width < patches:
        return f"the embedding width {width} is below the {patches} patches: the system is underdetermined"
    sent = sent_parameters(model, update.parameter_names)
    position = {id(p): i for i, (_, p) in enumerate(sent)}
    if id(conv.weight) not in position:
        return "the patch projection's weight gradient is not shared (frozen)"
    tensors = [t.detach().double().cpu() for t in gradient.tensors]
    g_bias = tensors[position[id(conv.bias)]] if conv.bias is not None and id(conv.bias) in position else None
    for i, (_, parameter) in enumerate(sent):
        rows = parameter.detach().reshape(-1, width).shape[0] if parameter.numel() % width == 0 else 0
        if parameter.shape[-1] != width or rows not in (patches, patches + 1):
            continue
        table = tensors[i].reshape(rows, width)
        for offset in range(rows - patches + 1):  # a class-token row may come first or last
            deltas = table[offset : offset + patches]
            if g_bias is not None:
                mismatch = float((deltas.sum(dim=0) - g_bias).norm() / g_bias.norm().clamp_min(1e-300))
                if mismatch > _BIAS_MATCH:
                    continue
            rank = int(torch.linalg.matrix_rank(deltas))
            if rank < patches:
                return (
                    f"the position-embedding gradient has rank {rank} for {patches} patches: the patches are "
                    "not determined (does every patch reach the output?)"
                )
            return PatchSystem(
                deltas=deltas, g_weight=tensors[position[id(conv.weight)]].reshape(width, -1), grid=grid,
                kernel=conv.kernel_size, channels=conv.in_channels,  # type: ignore[arg-type]
            )
    return "no shared position embedding added right after the patch projection (one row per patch)"


@dataclass
class PatchEmbeddingInversion(ClosedForm):
    """One image from a ViT-style patch projection and position embedding (see the module doc)."""

    name: str = "patch_embedding"

    def find(self, model: nn.Module, update: SharedUpdate) -> PatchSystem | str:
        return find_patch_system(model, update)

    def solve(self, found: object, update: SharedUpdate) -> tuple[torch.Tensor, str]:
        system = found
        assert isinstance(system, PatchSystem)
        # G = Δᵀ X: least squares for X (P × C·k·k).
        patches = torch.linalg.lstsq(system.deltas.T, system.g_weight).solution
        (rows, cols), (kh, kw), c = system.grid, system.kernel, system.channels
        image = patches.reshape(rows, cols, c, kh, kw).permute(2, 0, 3, 1, 4).reshape(c, rows * kh, cols * kw)
        height, width = update.input_shape[1], update.input_shape[2]
        images = torch.zeros((1, *update.input_shape), dtype=torch.float64)
        images[0, :, : rows * kh, : cols * kw] = image  # pixels past the last full patch reach no gradient
        covered = "" if (rows * kh, cols * kw) == (height, width) else f"; {height}x{width} pixels, patches cover {rows * kh}x{cols * kw}"
        return images, (
            "solved: patches from the patch projection's weight gradient and the position-embedding "
            f"gradient ({rows * cols} patches, least squares){covered}"
        )


ATTACKS.register("patch_embedding", PatchEmbeddingInversion)
