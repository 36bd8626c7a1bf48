"""Bundled test samples served offline, and user images (--image)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradleak.data import (
    bundled_samples,
    dataset_size,
    get_spec,
    load_image_files,
    load_samples,
)
from gradleak.errors import GradleakError


@pytest.mark.parametrize("name,prefix", [("cifar100", "cifar100"), ("cifar10", "cifar10"),
                                         ("mnist", "mnist"), ("fashionmnist", "fashionMNIST")])
def test_bundled_samples_listed(name: str, prefix: str) -> None:
    samples = bundled_samples(name)
    assert [i for i, _, _ in samples] == list(range(20))
    for index, label, path in samples:
        assert path.name == f"{prefix}_{index:02d}_{label}.png" and path.is_file()


def test_no_bundled_samples_for_svhn_lfw() -> None:
    assert bundled_samples("svhn") == [] and bundled_samples("lfw") == []


def test_bundled_served_offline(tmp_path: Path) -> None:
    root = tmp_path / "nothing-here"
    x, y = load_samples("cifar100", list(range(20)), split="test", root=root, download=True)
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y[0].item() == 49
    assert y.tolist() == [label for _, label, _ in bundled_samples("cifar100")]
    x, y = load_samples("mnist", [0, 19], split="test", root=root)
    assert x.shape == (2, 1, 28, 28) and y.tolist() == [7, 4]
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
    # Pixels are exactly the PNG's, scaled like ToTensor.
    png = np.array(Image.open(bundled_samples("mnist")[0][2]))
    assert torch.equal(x[0, 0], torch.from_numpy(png).float() / 255)
    assert not root.exists()  # nothing written


def test_bundled_split_reports_published_size(tmp_path: Path) -> None:
    assert dataset_size("cifar100", split="test", root=tmp_path, download=False) == 10000
    assert dataset_size("fashionmnist", split="test", root=tmp_path, download=False) == 10000


def test_index_20_needs_the_full_dataset(tmp_path: Path) -> None:
    with pytest.raises(GradleakError, match=r"CIFAR-100 test split is not available.*cifar-100-python\.tar\.gz.*"
                                             r"--split test --index 0\.\.19"):
        load_samples("cifar100", [3, 20], split="test", root=tmp_path, download=False)
    with pytest.raises(GradleakError, match=r"--index 10000 is out of range: cifar100 test has 10000 images"):
        load_samples("cifar100", [10000], split="test", root=tmp_path, download=False)


def test_bundled_not_used_for_train_split(tmp_path: Path) -> None:
    with pytest.raises(GradleakError, match="MNIST train split is not available"):
        load_samples("mnist", [0], split="train", root=tmp_path, download=False)


# ---------------------------------------------------------------------------------------------
# load_image_files


def _upscaled(tmp_path: Path, name: str, mode: str) -> Path:
    src = bundled_samples(name)[0][2]
    out = tmp_path / f"{name}_big.png"
    Image.open(src).convert(mode).resize((100, 60), Image.Resampling.BICUBIC).save(out)
    return out


def test_image_resized_back_to_dataset_shape(tmp_path: Path) -> None:
    big = _upscaled(tmp_path, "cifar100", "RGB")
    x = load_image_files([big, str(big)], get_spec("cifar100"))
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    # The centre crop keeps the middle: it resembles the middle of the original (stretched) image.
    original = np.asarray(Image.open(bundled_samples("cifar100")[0][2]).resize((53, 32)), dtype=np.float32)
    middle = original[:, 10:42].transpose(2, 0, 1) / 255
    assert np.abs(x[0].numpy() - middle).mean() < 0.05


def test_image_grayscale_for_mnist(tmp_path: Path) -> None:
    big = _upscaled(tmp_path, "cifar10", "RGB")  # a colour picture for a 1-channel dataset
    x = load_image_files([big], get_spec("mnist"))
    assert x.shape == (1, 1, 28, 28)
    lfw = load_image_files([big], get_spec("lfw"))
    assert lfw.shape == (1, 3, 64, 64)


def test_image_at_native_size_is_unchanged() -> None:
    _, _, path = bundled_samples("cifar100")[5]
    x = load_image_files([path], get_spec("cifar100"))
    y, _ = load_samples("cifar100", [5], split="test", root="/nonexistent-gradleak", download=False)
    assert torch.equal(x, y)


def test_transparent_png_composited_on_white(tmp_path: Path) -> None:
    path = tmp_path / "clear.png"
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(path)
    x = load_image_files([path], get_spec("cifar10"))
    assert torch.allclose(x, torch.ones_like(x))


def test_missing_and_non_image_paths(tmp_path: Path) -> None:
    spec = get_spec("cifar100")
    missing = tmp_path / "nope.png"
    with pytest.raises(GradleakError, match=rf"--image .*nope.png: {missing} does not exist"):
        load_image_files([missing], spec)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(GradleakError, match=rf"--image .*notes.txt: {text} is not an image"):
        load_image_files([text], spec)
    with pytest.raises(GradleakError, match="is a folder"):
        load_image_files([tmp_path], spec)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(bundled_samples("cifar100")[0][2].read_bytes()[:200])
    with pytest.raises(GradleakError, match=r"cut.png"):
        load_image_files([truncated], spec)


def _write_png16(path: Path, samples: np.ndarray) -> None:
    """A 16-bit-per-sample PNG in its on-disk layout (Pillow writes 16-bit grayscale only)."""
    import struct
    import zlib

    data = np.asarray(samples, dtype=">u2")
    data = data[..., None] if data.ndim == 2 else data
    height, width, channels = data.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    raw = b"".join(b"\x00" + data[y].tobytes() for y in range(height))  # filter 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _ramp16(size: int = 32) -> np.ndarray:
    """A 16-bit ramp over the full range (mean 0.5) with a fine pattern in the low byte."""
    ramp = np.linspace(0, 65535, size * size).reshape(size, size)
    return np.rint(ramp).astype(np.uint16)


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_grayscale_scaled_by_its_depth(tmp_path: Path, dataset: str, suffix: str) -> None:
    # Pillow writes uint16 as a 16-bit grayscale PNG/TIFF ("I;16"): convert("L") used to clip it.
    ramp = _ramp16(28 if dataset == "mnist" else 32)
    path = tmp_path / f"ramp16{suffix}"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I;16")
    x = load_image_files([path], get_spec(dataset))
    expected = torch.from_numpy(ramp / 65535.0).float()
    assert abs(float(x.mean()) - 0.5) < 0.01  # was 0.998 (96% of pixels at 1.0)
    assert float((x - expected).abs().max()) <= 0.5 / 255 + 1e-6  # rounded to the nearest 8-bit level
    assert float((x == 1.0).float().mean()) < 0.01


def test_16bit_rgb_png_matches_its_8bit_version(tmp_path: Path) -> None:
    ramp = _ramp16()
    rgb = np.stack([ramp, ramp[::-1], ramp.T], axis=-1)
    path = tmp_path / "rgb48.png"
    _write_png16(path, rgb)
    x = load_image_files([path], get_spec("cifar10"))
    expected = torch.from_numpy(rgb.transpose(2, 0, 1) / 65535.0).float()
    assert abs(float(x.mean()) - 0.5) < 0.01
    assert float((x - expected).abs().max()) <= 1 / 255 + 1e-6
    gray = load_image_files([path], get_spec("mnist"))  # the same file for a 1-channel dataset
    assert abs(float(gray.mean()) - 0.5) < 0.02


def test_16bit_png_from_raw_layout_grayscale(tmp_path: Path) -> None:
    # The same 16-bit grayscale case written byte by byte (colour type 0, depth 16), not by Pillow.
    path = tmp_path / "gray16.png"
    _write_png16(path, np.full((28, 28), 32768, dtype=np.uint16))
    x = load_image_files([path], get_spec("mnist"))
    assert torch.allclose(x, torch.full_like(x, 128 / 255))


def test_float_image_without_a_full_scale_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "depth.tif"
    Image.fromarray(np.linspace(0, 1000, 32 * 32, dtype=np.float32).reshape(32, 32)).save(path)
    with pytest.raises(GradleakError, match=r"depth.tif.*floating-point.*0\.\.1000.*8- or 16-bit PNG"):
        load_image_files([path], get_spec("cifar10"))
