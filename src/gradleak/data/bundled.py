"""The first 20 test images of CIFAR-100, CIFAR-10, MNIST and Fashion-MNIST, shipped as PNGs.

They let ``--split test --index 0..19`` run offline. Read through importlib.resources so they work
from an installed wheel as well as from a source checkout.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gradleak.data.images import pil_to_uint8
from gradleak.data.specs import DatasetSpec
from gradleak.errors import GradleakError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

# Dataset name -> file name prefix (the files keep foolbox's names).
BUNDLED_PREFIX: dict[str, str] = {
    "cifar100": "cifar100",
    "cifar10": "cifar10",
    "mnist": "mnist",
    "fashionmnist": "fashionMNIST",
}
BUNDLED_SPLIT = "test"
BUNDLED_COUNT = 20

_NAME = re.compile(r"^(?P<prefix>[A-Za-z0-9]+)_(?P<index>\d+)_(?P<label>\d+)\.png$")


def _samples_dir() -> Traversable:
    return resources.files("gradleak.data").joinpath("samples")


def _entries(name: str) -> list[tuple[int, int, Traversable]]:
    prefix = BUNDLED_PREFIX.get(name)
    if prefix is None:
        return []
    found = []
    for item in _samples_dir().iterdir():
        match = _NAME.match(item.name)
        if match and match["prefix"] == prefix:
            found.append((int(match["index"]), int(match["label"]), item))
    return sorted(found, key=lambda t: t[0])


def bundled_samples(name: str) -> list[tuple[int, int, Path]]:
    """(test index, label, path) of the bundled PNGs of dataset ``name``; [] for svhn/lfw."""
    return [(index, label, Path(str(item))) for index, label, item in _entries(name)]


def has_bundled(name: str, indices: Sequence[int]) -> bool:
    """Whether every index is one of the bundled test samples of ``name``."""
    available = {index for index, _, _ in _entries(name)}
    return bool(available) and all(i in available for i in indices)


def load_bundled(spec: DatasetSpec, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Bundled test images uint8 (B, C, H, W) and labels int64 (B,) for ``indices``."""
    from PIL import Image

    by_index = {index: (label, item) for index, label, item in _entries(spec.name)}
    images, labels = [], []
    for i in indices:
        if i not in by_index:
            raise GradleakError(
                f"--index {i} is not among the bundled {spec.name} test samples (0..19)"
            )
        label, item = by_index[i]
        with item.open("rb") as f, Image.open(f) as img:
            array = pil_to_uint8(img, spec.channels)
        if array.shape[1:] != (spec.image_size, spec.image_size):
            raise GradleakError(f"bundled sample {item.name} is {array.shape[1:]}, not "
                                f"{spec.image_size}x{spec.image_size}: the installation is broken")
        images.append(array)
        labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)
