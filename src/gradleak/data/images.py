"""User images (``--image``) and uint8 -> float tensor conversion."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from gradleak.errors import GradleakError

if TYPE_CHECKING:
    from PIL.Image import Image

    from gradleak.data.specs import DatasetSpec


def to_float_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1], exactly as torchvision's ToTensor scales."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255)


def pil_to_uint8(img: Image, channels: int) -> np.ndarray:
    """A PIL image as uint8 (C, H, W): grayscale for 1 channel, RGB for 3."""
    if channels == 1:
        return np.asarray(img.convert("L"), dtype=np.uint8)[None].copy()
    return np.asarray(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1).copy()


def resize_center_crop(img: Image, size: int) -> Image:
    """Resize so the shorter side is ``size`` then centre-crop to a square (torchvision's
    ``Resize(size)`` + ``CenterCrop(size)``, which is how these datasets' images look)."""
    from PIL import Image as PILImage

    w, h = img.size
    if (w, h) == (size, size):
        return img
    if w <= h:
        new_w, new_h = size, max(size, int(size * h / w))
    else:
        new_w, new_h = max(size, int(size * w / h)), size
    img = img.resize((new_w, new_h), PILImage.Resampling.BILINEAR)
    left = round((new_w - size) / 2.0)
    top = round((new_h - size) / 2.0)
    return img.crop((left, top, left + size, top + size))


def load_image_files(paths: Sequence[str | Path], spec: DatasetSpec) -> torch.Tensor:
    """User images as (B, C, H, W) float32 in [0, 1], shaped like ``spec``'s samples.

    Each is resized (shorter side) and centre-cropped to ``spec.image_size``, converted to
    grayscale for 1-channel datasets and RGB otherwise. A missing file or a non-image is a
    GradleakError naming the path.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not paths:
        raise GradleakError("no --image given: pass at least one image file")
    out = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_file():
            what = "is a folder, not an image file" if path.is_dir() else "does not exist"
            raise GradleakError(f"--image {raw}: {path} {what}")
        try:
            with Image.open(path) as opened:
                opened.load()
                # Phone photos store their rotation in EXIF; apply it so faces are upright.
                picture = ImageOps.exif_transpose(opened)
                if picture.mode in ("RGBA", "LA") or (
                    picture.mode == "P" and "transparency" in picture.info
                ):
                    # Composite on white rather than letting convert() turn transparency black.
                    rgba = picture.convert("RGBA")
                    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    picture = Image.alpha_composite(background, rgba)
                picture = resize_center_crop(
                    picture.convert("L" if spec.channels == 1 else "RGB"), spec.image_size
                )
                out.append(pil_to_uint8(picture, spec.channels))
        except UnidentifiedImageError:
            raise GradleakError(
                f"--image {raw}: {path} is not an image PIL can read (PNG, JPEG, ...)"
            ) from None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise GradleakError(f"--image {raw}: cannot read {path} as an image ({exc})") from exc
    return to_float_tensor(np.stack(out))
