"""Attacking a captured update: a file of gradient tensors from a real system, no private data.

``gradleak run --update captured.safetensors --model …`` builds the server's model for the
update's input shape and class count, checks that the update fits it, and attacks. Without
``--reference`` there is nothing to score against: the run writes the reconstructions and a
``metrics.json`` without ground-truth scores. ``--reference IMAGES`` (with ``--label`` if known)
scores them after matching.
"""

from __future__ import annotations

from typing import Any

import torch

from gradleak.errors import GradleakError


def captured_inputs(config: Any) -> tuple[Any, Any, torch.Tensor | None, torch.Tensor | None]:
    """(update, dataset-like spec for the update's input, reference images or None, labels or None)."""
    from gradleak.data.specs import DatasetSpec
    from gradleak.io.update_file import load_update

    if not config.model:
        raise GradleakError(
            "--update needs the server's model: add --model NAME or --model path/to/file.py:factory"
        )
    if config.defenses:
        raise GradleakError("--defense applies to a simulated client; a captured update was already shared: drop --defense")
    if config.scenario != "fedsgd" or config.local_steps != 1:
        raise GradleakError(
            "--scenario/--local-steps describe a simulated client; a captured update states its own kind, steps and "
            "learning rate: drop them"
        )
    update = load_update(config.update)
    shape = tuple(update.input_shape)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise GradleakError(
            f"--update {config.update}: its samples have shape {shape}; gradleak run attacks square images (C, N, N); "
            "use the Python API (gradleak.reconstruct) for other inputs"
        )
    spec = DatasetSpec("captured", "captured update", shape[0], shape[1], update.num_classes, ("test",))
    images = labels = None
    if config.reference:
        from gradleak.data import load_image_files

        images = load_image_files(config.reference, spec)
        if images.shape[0] != update.batch_size:
            raise GradleakError(
                f"--reference gives {images.shape[0]} image(s) but the update is of a batch of {update.batch_size}: "
                "give one reference image per private sample"
            )
    if config.labels:
        if not config.reference:
            raise GradleakError("--label with --update scores the recovered labels: give --reference IMAGES too")
        if len(config.labels) != update.batch_size:
            raise GradleakError(f"give one --label per reference image ({update.batch_size}), got {len(config.labels)}")
        for label in config.labels:
            if not 0 <= label < update.num_classes:
                raise GradleakError(f"--label {label} is out of range: the update has {update.num_classes} classes")
        labels = torch.tensor(config.labels, dtype=torch.long)
    return update, spec, images, labels
