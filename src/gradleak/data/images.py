"""User images (``--image``) and uint8 -> float tensor conversion."""

from __future__ import annotations

import warnings
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


def _to_8bit(img: Image, path: Path) -> Image:
    """A high-bit-depth grayscale image scaled to 8 bits by its own depth (``convert("L")`` would clip).

    Pillow opens 16-bit grayscale PNG/TIFF as ``I;16*`` (or ``I``) and float TIFF as ``F``;
    ``convert("L")`` clips those values at 255, so a mid-grey 16-bit image came out white.
    16-bit RGB(A) PNGs are already reduced to 8 bits per channel correctly by Pillow.
    """
    from PIL import Image as PILImage

    mode = img.mode
    if not (mode.startswith("I;16") or mode in ("I", "F")):
        return img
    values = np.asarray(img, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        full = 65535.0
    elif mode == "I" and low >= 0 and high <= 65535:
        full = 65535.0  # 16-bit data held in a 32-bit integer image
    elif mode == "F" and low >= 0 and high <= 1:
        full = 1.0
    else:
        raise GradleakError(
            f"--image {path}: a {'32-bit integer' if mode == 'I' else 'floating-point'} image with values "
            f"{low:g}..{high:g} has no known full scale: save it as an 8- or 16-bit PNG"
        )
    scaled = np.clip(np.rint(values * (255.0 / full)), 0, 255).astype(np.uint8)
    return PILImage.fromarray(scaled)  # 2-D uint8: mode "L"


#: most pixels an image may have after the resize that precedes the centre crop (4096x4096); only an
#: absurd aspect ratio reaches it (a 1x2,000,000 strip would become 32x64,000,000, about 6 GB).
MAX_RESIZED_PIXELS = 4096 * 4096


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after scaling the shorter side to ``size`` (what :func:`resize_center_crop` does)."""
    if width <= height:
        return size, max(size, int(size * height / width))
    return max(size, int(size * width / height)), size


def check_resizable(width: int, height: int, size: int, *, what: str) -> None:
    """Refuse, before decoding or resizing, an image whose resize to ``size`` would be absurdly large."""
    if width < 1 or height < 1:
        raise GradleakError(f"{what} has no pixels ({width}x{height}): give a real image")
    new_w, new_h = resized_size(width, height, size)
    if new_w * new_h > MAX_RESIZED_PIXELS:
        raise GradleakError(
            f"{what} is {width}x{height} pixels: scaling its short side to {size} would make it {new_w}x{new_h} "
            f"({new_w * new_h * 3 / 2**30:.1f} GiB) before the centre crop; crop it to a roughly square image first"
        )


def resize_center_crop(img: Image, size: int) -> Image:
    """Resize so the shorter side is ``size`` then centre-crop to a square (torchvision's
    ``Resize(size)`` + ``CenterCrop(size)``, which is how these datasets' images look)."""
    from PIL import Image as PILImage

    w, h = img.size
    if (w, h) == (size, size):
        return img
    check_resizable(w, h, size, what="the image")
    new_w, new_h = resized_size(w, h, size)
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
            with warnings.catch_warnings():
                # Pillow warns (to stderr) above 89 Mpx and refuses above 179 Mpx; the size check
                # below is the one that bounds memory, so its one line is all the user sees.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                opened = Image.open(path)
            with opened:
                check_resizable(*opened.size, spec.image_size, what=f"--image {raw}")  # before decoding
                opened.load()
                # Phone photos store their rotation in EXIF; apply it so faces are upright.
                picture = _to_8bit(ImageOps.exif_transpose(opened), path)
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
