"""The server's model of a run: built by name or from the user's factory, with checked weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gradleak.errors import GradleakError
from gradleak.experiment.config import RunConfig


def read_weights(config: RunConfig) -> tuple[dict[str, torch.Tensor] | None, Any]:
    """(state dict, CheckpointInfo) of ``config.weights``, or (None, None) without it. Read safely:
    safetensors or ``torch.load(weights_only=True)``, never unpickling code."""
    if not config.weights:
        if config.weights_sha256:
            raise GradleakError("--weights-sha256 checks a checkpoint: give it with --weights PATH")
        return None, None
    from gradleak.models.checkpoint import read_checkpoint

    return read_checkpoint(config.weights, expected_sha256=config.weights_sha256)


def check_checkpoint_labels(checkpoint: Any, labels: list[int], indices: list[int], classes: int, dataset: str) -> None:
    """A checkpoint fixes the class count: refuse dataset labels it cannot represent, with the ways out."""
    bad = [(i, label) for i, label in zip(indices, labels) if not 0 <= label < classes]
    if bad:
        index, label = bad[0]
        raise GradleakError(
            f"{dataset} image {index} has label {label} but --weights {Path(checkpoint.path).name} has "
            f"{classes} classes (0..{classes - 1}): attack a dataset with {classes} classes (e.g. cifar10 "
            f"or mnist for a digits checkpoint), give --label in 0..{classes - 1}, or train the checkpoint on {dataset}"
        )


def check_weights(checkpoint: Any, *, model_name: str, spec: Any, classes: int | None) -> None:
    """Check what the checkpoint says it is against the run: model, input shape, classes (when known)."""
    from gradleak.models import MODELS
    from gradleak.models.checkpoint import check_fits
    from gradleak.models.external import is_external

    check_fits(checkpoint, model_name=model_name, channels=spec.channels, image_size=spec.image_size,
               num_classes=classes, dataset=spec.name,
               size_matters=is_external(model_name) or MODELS.get(model_name).image_size is not None)


def build_run_model(model_name: str, *, channels: int, image_size: int, num_classes: int) -> torch.nn.Module:
    """A registered model by name, or the user's ``FILE.py:factory`` / ``module:factory``."""
    from gradleak.models import build_model
    from gradleak.models.external import build_external, is_external

    if is_external(model_name):
        return build_external(model_name, num_classes=num_classes, input_shape=(channels, image_size, image_size))
    return build_model(model_name, channels=channels, image_size=image_size, num_classes=num_classes)

