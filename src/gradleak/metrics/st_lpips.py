"""ST-LPIPS (shift-tolerant LPIPS, Ghildyal & Liu, ECCV 2022): a learned perceptual distance.

The network is gradleak's own (the package's modules import torchvision); its weights are the
AlexNet-based ``alex_shift_tolerant.pth`` of the installed ``stlpips-pytorch`` package (the
``perceptual`` extra: ``pip install 'gradleak[perceptual]'``), checked against its sha256 and read
with ``torch.load(weights_only=True)``. Lower is more similar; 0 for identical images. Named
ST-LPIPS, not LPIPS: its values are not comparable with LPIPS proper.

The network: scale the input ([-1, 1]) per channel; five AlexNet convolutions, each downsampling
done by a blur (binomial 3×3, reflect-padded, stride 2) after a stride-1 max pool; at each of the
five ReLU outputs, unit-normalise the features over channels, square their difference, weight the
channels (a learned 1×1 convolution), average over space; sum the five.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gradleak.errors import GradleakError

PACKAGE = "stlpips_pytorch"
WEIGHTS = ("weights", "vST0.0", "alex_shift_tolerant.pth")
WEIGHTS_SHA256 = "b356b382f96010f77d085ee8343ecd9fd322d0a56e8de2b2d0549fafcad8b9ee"  # stlpips-pytorch 0.0.2
INSTALL = "pip install 'gradleak[perceptual]' (the stlpips-pytorch package, weights only)"
# (conv name, stride-1 max pool and blur downsampling before it, blur after it) per feature stage
_STAGES = (
    ("net.slice1.0", None, "net.slice1.1"),
    ("net.slice2.5", "net.slice2.4", None),
    ("net.slice3.9", "net.slice3.8", None),
    ("net.slice4.11", None, None),
    ("net.slice5.13", None, None),
)
_PADDING = {"net.slice1.0": 2, "net.slice2.5": 2, "net.slice3.9": 1, "net.slice4.11": 1, "net.slice5.13": 1}


def weights_path() -> Path | None:
    """The installed package's weight file (found without importing the package), or None."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*WEIGHTS)
    return path if path.is_file() else None


def available() -> bool:
    """Whether ST-LPIPS can be computed here (the ``perceptual`` extra is installed)."""
    return weights_path() is not None


class STLPIPS(nn.Module):
    """The shift-tolerant LPIPS network over a state dict of the published weights.

    Example (needs the ``perceptual`` extra):
        >>> import torch
        >>> metric = STLPIPS.pretrained() if available() else None
        >>> x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> metric is None or bool((metric(x, x) == 0).all())
        True
    """

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.weights = {name: tensor.float() for name, tensor in state.items()}

    @classmethod
    def pretrained(cls) -> STLPIPS:
        return _pretrained()

    def _blur(self, x: torch.Tensor, name: str) -> torch.Tensor:
        x = F.pad(x, (2, 2, 2, 2), mode="reflect")  # "pad more": filter size − 1 on each side
        return F.conv2d(x, self.weights[f"{name}.filt"], stride=2, groups=x.shape[1])

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        w = self.weights
        x = (x - w["scaling_layer.shift"]) / w["scaling_layer.scale"]
        out = []
        for conv, blur_before, blur_after in _STAGES:
            if blur_before is not None:
                x = self._blur(F.max_pool2d(x, kernel_size=3, stride=1), blur_before)
            x = F.conv2d(x, w[f"{conv}.weight"], w[f"{conv}.bias"], padding=_PADDING[conv])
            if blur_after is not None:
                x = self._blur(x, blur_after)
            x = F.relu(x)
            out.append(x)
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distance per image of two (B, C, H, W) batches in [0, 1] (grey images are repeated to RGB)."""
        a, b = (_rgb(t) * 2 - 1 for t in (a, b))
        total = torch.zeros(a.shape[0], dtype=a.dtype, device=a.device)
        for k, (fa, fb) in enumerate(zip(self.features(a), self.features(b))):
            diff = (_unit(fa) - _unit(fb)) ** 2
            total = total + F.conv2d(diff, self.weights[f"lin{k}.model.1.weight"]).mean(dim=(1, 2, 3))
        return total


def _unit(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return features / (torch.sqrt((features**2).sum(dim=1, keepdim=True)) + eps)


def _rgb(images: torch.Tensor) -> torch.Tensor:
    images = images.detach().float().cpu()
    if images.dim() == 3:
        images = images.unsqueeze(0)
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


@functools.lru_cache(maxsize=1)
def _pretrained() -> STLPIPS:
    path = weights_path()
    if path is None:
        raise GradleakError(f"ST-LPIPS needs its published weights: {INSTALL}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise GradleakError(
            f"ST-LPIPS weights at {path} have sha256 {digest[:16]}…, not the published {WEIGHTS_SHA256[:16]}…: "
            f"reinstall stlpips-pytorch==0.0.2 ({INSTALL})"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = STLPIPS(state)
    model.eval()
    return model


def st_lpips(reconstructions: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """ST-LPIPS of each reconstruction against its target (same order), in [0, 1] images."""
    with torch.no_grad():
        return [float(v) for v in _pretrained()(reconstructions, targets)]
