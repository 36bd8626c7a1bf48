"""The private batch of a run: bundled or dataset images by index, or the user's image files,
with their labels checked against the class count."""

from __future__ import annotations

from typing import Any

import torch

from gradleak.errors import GradleakError
from gradleak.experiment.config import RunConfig
from gradleak.experiment.model import check_checkpoint_labels


def load_private_batch(config: RunConfig, spec: Any, checkpoint: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(images, labels, number of classes) of the run's private batch; bad input is one GradleakError line."""
    from gradleak.data import load_image_files, load_samples, num_classes

    if config.tile_bundled and config.images:
        raise GradleakError("--tile-bundled tiles the bundled test images: drop it with --image")
    if config.tile_bundled:
        from gradleak.data.public import load_tiled

        if config.split != "test":
            raise GradleakError(f"--tile-bundled uses the bundled test images: add --split test (got --split {config.split})")
        images, dataset_labels = load_tiled(spec.name, config.indices)
        classes = config.num_classes or (checkpoint and checkpoint.num_classes) or spec.num_classes
        if config.labels and len(config.labels) != len(config.indices):
            raise GradleakError(
                f"{len(config.indices)} index(es) but {len(config.labels)} --label value(s): give one label per image or none"
            )
        labels_list = list(config.labels) if config.labels else [int(x) for x in dataset_labels]
    elif config.images:
        classes = config.num_classes or (checkpoint and checkpoint.num_classes) or spec.num_classes
        labels_list = list(config.labels) if config.labels else [0] * len(config.images)
        if len(labels_list) != len(config.images):
            raise GradleakError(
                f"{len(config.images)} --image path(s) but {len(labels_list)} --label value(s): give one label per image"
            )
        images = load_image_files(config.images, spec)
    else:
        if not config.indices:
            raise GradleakError("no sample chosen: give --index N, --indices N M … or --image PATH")
        if config.labels and len(config.labels) != len(config.indices):
            raise GradleakError(
                f"{len(config.indices)} index(es) but {len(config.labels)} --label value(s): give one label per image or none"
            )
        images, dataset_labels = load_samples(
            spec.name, config.indices, split=config.split, root=config.data_root, download=config.download
        )
        classes = config.num_classes or (checkpoint and checkpoint.num_classes) or num_classes(
            spec.name, root=config.data_root, split=config.split, download=config.download
        )
        labels_list = list(config.labels) if config.labels else [int(x) for x in dataset_labels]
        if checkpoint is not None and not config.labels:
            check_checkpoint_labels(checkpoint, labels_list, config.indices, classes, spec.name)
    if classes < 2:
        raise GradleakError(f"--num-classes must be at least 2 (got {classes})")
    for label in labels_list:
        if not 0 <= label < classes:
            raise GradleakError(f"--label {label} is out of range: with {classes} classes use 0..{classes - 1}")
    labels = torch.tensor(labels_list, dtype=torch.long)
    return images, labels, classes
