"""Images as files: tensors to PNG at native resolution, batches side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gradleak.io.files import atomic_write


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W, 3) or (H, W) uint8."""
    array = (image.detach().float().cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return array[0] if array.shape[0] == 1 else np.transpose(array, (1, 2, 0))


def save_image(path: Path, image: torch.Tensor) -> None:
    """Save one (C, H, W) image at its native resolution as PNG."""
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(to_numpy_image(image)).save(tmp, format="PNG"))


def tile(images: torch.Tensor) -> torch.Tensor:
    """Put a batch (B, C, H, W) side by side into one (C, H, B·W + gaps) image."""
    if images.dim() == 3:
        return images
    gap = torch.ones(images.shape[1], images.shape[2], 1)
    parts: list[torch.Tensor] = []
    for i, image in enumerate(images):
        if i:
            parts.append(gap)
        parts.append(image.cpu())
    return torch.cat(parts, dim=2)
