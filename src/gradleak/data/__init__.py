"""Datasets: specs, torchvision-compatible on-disk readers, safe downloads and bundled samples.

Example:
    >>> from gradleak.data import get_spec, load_samples
    >>> get_spec("mnist").image_size
    28
    >>> x, y = load_samples("mnist", [0], split="test", root="/nonexistent", download=False)
    >>> tuple(x.shape), int(y[0])
    ((1, 1, 28, 28), 7)
"""

from __future__ import annotations

from gradleak.data.bundled import bundled_samples
from gradleak.data.images import load_image_files
from gradleak.data.loading import dataset_size, load_samples, num_classes
from gradleak.data.specs import DATASETS, DatasetSpec, get_spec

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "bundled_samples",
    "dataset_size",
    "get_spec",
    "load_image_files",
    "load_samples",
    "num_classes",
]
