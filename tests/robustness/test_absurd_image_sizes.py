"""``--image`` with an absurd aspect ratio (issue 21): a 1x2,000,000 PNG was upscaled until its short
side was 32 (9.5 GB, MemoryError) and a 10⁸x1 image raised OverflowError. Both are refused in one
line before decoding; ordinary photos of any shape still load."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gradleak.data import get_spec, load_image_files

from .limited import assert_one_line, run_limited



def _png(path: Path, width: int, height: int) -> Path:
    """A real grayscale PNG of any size, written row by row (zlib-compressed zeros: a few kB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * width  # filter byte, then mid-grey
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(("width", "height"), [(1, 2_000_000), (100_000_000, 1)])
def test_absurd_aspect_ratio_is_one_line_under_a_memory_limit(width: int, height: int, tmp_path: Path) -> None:
    image = _png(tmp_path / "strip.png", width, height)
    done = run_limited(["run", "--image", str(image), "--dataset", "cifar10", "--out", str(tmp_path / "r"), "--quiet"],
                       limit_gib=2)
    assert_one_line(done)
    assert f"is {width}x{height} pixels" in done.stderr and "crop it" in done.stderr
    assert not (tmp_path / "r").exists()


def test_ordinary_shapes_still_load(tmp_path: Path) -> None:
    spec = get_spec("cifar10")
    paths = []
    for i, (w, h) in enumerate([(640, 480), (32, 32), (40, 3000), (5000, 300)]):
        rgb = (np.arange(w * h * 3) % 251).astype(np.uint8).reshape(h, w, 3)
        Image.fromarray(rgb).save(tmp_path / f"p{i}.png")
        paths.append(tmp_path / f"p{i}.png")
    images = load_image_files(paths, spec)
    assert tuple(images.shape) == (4, 3, 32, 32)
