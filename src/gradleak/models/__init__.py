"""Models the client trains, built from the dataset's shape (no hard-coded flatten sizes).

Example:
    >>> import torch
    >>> model = build_model("lenet", channels=3, image_size=32, num_classes=100)
    >>> model(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 100])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.models.convfc import ConvFC
from gradleak.models.mlp import MLP
from gradleak.registry import Registry


class LeNet(nn.Module):
    """The DLG paper's LeNet: three 5×5 sigmoid convolutions (stride 2, 2, 1), 12 channels, one FC.

    Sigmoid (smooth, twice differentiable) is what makes the gradient-matching objective well
    behaved; the FC input size follows from the input size (768 for 32×32, 588 for 28×28).
    """

    def __init__(self, channels: int = 3, image_size: int = 32, num_classes: int = 100) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=1),
            nn.Sigmoid(),
        )
        side = _conv_out(_conv_out(image_size, 2), 2)
        self.fc = nn.Sequential(nn.Linear(12 * side * side, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return self.fc(out.flatten(1))


def _conv_out(size: int, stride: int, kernel: int = 5, padding: int = 2) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, act: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act = act()
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet in the DLG reproduction's style: CIFAR stem, sigmoid activations, global pooling.

    ``strides=False`` keeps full resolution everywhere, like the DLG paper's ResNet-56 variant
    (more leakage, more compute).
    """

    def __init__(
        self,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        *,
        channels: int = 3,
        image_size: int = 32,
        num_classes: int = 100,
        width: int = 64,
        strides: bool = True,
        act: Callable[[], nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        del image_size  # global pooling makes the head independent of the input size
        self.conv1 = nn.Conv2d(channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act = act()
        layers: list[nn.Module] = []
        in_planes = width
        for stage, count in enumerate(blocks):
            planes = width * (2**stage)
            for i in range(count):
                stride = 2 if (strides and stage > 0 and i == 0) else 1
                layers.append(_BasicBlock(in_planes, planes, stride, act))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1)
        return self.fc(out)


def uniform_init_(model: nn.Module, bound: float = 0.5) -> nn.Module:
    """DLG's ``weights_init``: every weight and bias ~ U(-bound, bound), in module order.

    The original applies it with ``net.apply``; we visit modules in the same order so a fixed seed
    gives the original's weights.
    """

    def init(m: nn.Module) -> None:
        weight = getattr(m, "weight", None)
        if isinstance(weight, torch.Tensor):
            weight.data.uniform_(-bound, bound)
        bias = getattr(m, "bias", None)
        if isinstance(bias, torch.Tensor):
            bias.data.uniform_(-bound, bound)

    return model.apply(init)


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model and which inputs it accepts (None = any)."""

    name: str
    description: str
    factory: Callable[[int, int, int], nn.Module]
    channels: int | None = None
    image_size: int | None = None
    uniform_init: bool = True


MODELS: Registry[ModelSpec] = Registry("model")
MODELS.register("lenet", ModelSpec("lenet", "DLG LeNet for 3×32×32 images", lambda c, s, k: LeNet(c, s, k), 3, 32))
MODELS.register("lenetmnist", ModelSpec("lenetmnist", "DLG LeNet for 1×28×28 images", lambda c, s, k: LeNet(c, s, k), 1, 28))
MODELS.register("lenet64", ModelSpec("lenet64", "DLG LeNet for 3×64×64 images (LFW)", lambda c, s, k: LeNet(c, s, k), 3, 64))
MODELS.register(
    "resnet18",
    ModelSpec(
        "resnet18",
        "ResNet-18 with sigmoid activations, DLG-reproduction style (any input)",
        lambda c, s, k: ResNet((2, 2, 2, 2), channels=c, image_size=s, num_classes=k),
        # BatchNorm layers keep their default init: U(-0.5, 0.5) on BN scales breaks training
        # and the original reproduction applies the uniform init to convolutions only.
        uniform_init=False,
    ),
)
MODELS.register(
    "resnet-dlg",
    ModelSpec(
        "resnet-dlg",
        "DLG-paper style deep sigmoid ResNet without strides (width 16, 3 stages of 2 blocks)",
        lambda c, s, k: ResNet((2, 2, 2), channels=c, image_size=s, num_classes=k, width=16, strides=False),
        uniform_init=False,
    ),
)

MODELS.register(
    "mlp",
    ModelSpec(
        "mlp",
        "SPEAR-style MLP: 2 hidden Linear(·, 1000) → ReLU layers (any input; gradleak.models.mlp.MLP for other widths)",
        lambda c, s, k: MLP(c, s, k),
        uniform_init=False,  # PyTorch's default init, as in SPEAR (U(-0.5, 0.5) saturates a 3,072-input layer)
    ),
)
MODELS.register(
    "convfc",
    ModelSpec(
        "convfc",
        "one stride-1 ReLU conv (12 channels) then Linear(·, 1000) → ReLU → Linear (any input)",
        lambda c, s, k: ConvFC(c, s, k),
        uniform_init=False,
    ),
)

# The model each dataset gets when --model is not given.
DEFAULT_MODEL_FOR_SHAPE = {(3, 32): "lenet", (1, 28): "lenetmnist", (3, 64): "lenet64"}


def default_model(channels: int, image_size: int) -> str:
    return DEFAULT_MODEL_FOR_SHAPE.get((channels, image_size), "resnet18")


def check_compatible(name: str, *, channels: int, image_size: int, dataset: str) -> None:
    """Refuse a model whose fixed input shape does not fit the dataset, with the fix."""
    spec = MODELS.get(name)
    if spec.channels is None:
        return
    if (spec.channels, spec.image_size) != (channels, image_size):
        fit = [
            n
            for n in MODELS.names()
            if MODELS.get(n).channels in (None, channels) and MODELS.get(n).image_size in (None, image_size)
        ]
        raise GradleakError(
            f"model {name!r} takes {spec.channels}×{spec.image_size}×{spec.image_size} images but "
            f"{dataset} has {channels}×{image_size}×{image_size}: use --model {' or '.join(fit)}"
        )


def model_skeleton(name: str, *, channels: int, image_size: int, num_classes: int) -> nn.Module:
    """Model ``name`` on the meta device: its parameter names and shapes, no memory, no RNG use."""
    spec = MODELS.get(name)
    if spec.channels is not None and (spec.channels, spec.image_size) != (channels, image_size):
        check_compatible(name, channels=channels, image_size=image_size, dataset="the input")
    if num_classes < 2:
        raise GradleakError(f"--num-classes must be at least 2 (got {num_classes})")
    with torch.device("meta"):
        return spec.factory(channels, image_size, num_classes)


def build_model(name: str, *, channels: int, image_size: int, num_classes: int) -> nn.Module:
    """Build model ``name`` for the given input shape and class count (caller seeds torch first).

    Its size is estimated first (on the meta device), so an absurd class count or input size is
    one line with the estimate, not a multi-terabyte allocation."""
    from gradleak.memory import require_memory

    spec = MODELS.get(name)
    skeleton = model_skeleton(name, channels=channels, image_size=image_size, num_classes=num_classes)
    count = sum(t.numel() for t in skeleton.state_dict().values())
    require_memory(  # the weights and the client's gradient, in float32
        count * 4 * 2, what=f"model {name} ({count:,} parameters for {num_classes} classes, {channels}×{image_size}×{image_size} input)",
        fix="check --num-classes (or the class count in the checkpoint's metadata) and the input size",
    )
    model = spec.factory(channels, image_size, num_classes)
    if spec.uniform_init:
        uniform_init_(model)
    return model
