"""Shared fixtures: no network, one torch thread, and tiny datasets in their TRUE on-disk format.

The dataset builders reuse the writers of ``tests/data/conftest.py`` (IDX, Python-2 CIFAR
pickles, tarballs, JPEGs); the fixtures here make datasets big enough for the README's classic
commands (CIFAR-100 train index 123, MNIST train index 5, LFW index 10) and point the checksum
tables at the fixture files with ``monkeypatch`` so the real verification code runs on them.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

try:  # plain `pytest` from the repo root without an installed package
    import gradleak  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the tests are run
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gradleak.data import download, specs
from gradleak.data.specs import Checksum, RemoteFile, Source
from tests.data.conftest import (
    idx_bytes,
    jpeg_bytes,
    py2_pickle,
    write_tar,
)

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# Environment


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may touch the network: the downloader's urlopen fails the test, sleeps are instant."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(download, "_urlopen", refuse)
    monkeypatch.setattr(download, "_sleep", lambda s: None)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Every test runs torch on one thread: on a busy 2-core machine two OpenMP threads fighting other
    processes make the L-BFGS attacks ~10x slower; one thread keeps the tests fast and stable."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def subprocess_env() -> dict[str, str]:
    """Environment for CLI subprocesses: one thread, no display, and every proxy pointing at a
    closed port so that an accidental download fails fast instead of reaching the network."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        MPLBACKEND="Agg",
        PYTHONDONTWRITEBYTECODE="1",
        http_proxy="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        no_proxy="",
        NO_PROXY="",
    )
    return env


# ---------------------------------------------------------------------------------------------
# Checksum tables


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def trust_file(monkeypatch: pytest.MonkeyPatch, dataset: str, path: Path) -> None:
    """Make the spec table expect this fixture file's md5 on every mirror."""
    old = specs.REMOTE_FILES[dataset][path.name]
    new = RemoteFile(old.filename, tuple(Source(s.url, Checksum("md5", md5_of(path))) for s in old.sources))
    table = dict(specs.REMOTE_FILES[dataset])
    table[path.name] = new
    monkeypatch.setitem(specs.REMOTE_FILES, dataset, table)


def trust_members(monkeypatch: pytest.MonkeyPatch, dataset: str, members: dict[str, bytes]) -> None:
    """Make the member checksum table expect these archive members' md5s."""
    table = dict(specs.MEMBER_CHECKSUMS.get(dataset, {}))
    for name, content in members.items():
        table[name] = Checksum("md5", hashlib.md5(content).hexdigest())
    monkeypatch.setitem(specs.MEMBER_CHECKSUMS, dataset, table)


# ---------------------------------------------------------------------------------------------
# Dataset builders (true on-disk formats)


@dataclass
class FixtureData:
    root: Path
    images: dict[str, np.ndarray]  # split -> uint8 (N, C, H, W)
    labels: dict[str, np.ndarray]  # split -> int64 (N,)
    files: list[Path]  # the files a checksum protects


CIFAR_TRAIN = 130  # >= 124 for --indices 10 25 70 123
CIFAR_TEST = 4
# Solid grey levels at some train indices: a test can tell exactly which sample was used.
CIFAR_SOLID = {10: 30, 25: 110, 70: 190, 123: 250}


def build_cifar100(root: Path, *, solid: dict[int, int] | None = None, seed: int = 100) -> tuple[
    Path, dict[str, bytes], dict[str, np.ndarray], dict[str, np.ndarray]
]:
    """Write ``root/cifar-100-python.tar.gz`` (train 130, test 4, meta), as published."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    solid = CIFAR_SOLID if solid is None else solid
    members: dict[str, bytes] = {}
    images: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    for split, n in (("train", CIFAR_TRAIN), ("test", CIFAR_TEST)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        if split == "train":
            for index, level in solid.items():
                data[index] = level
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        members[split] = py2_pickle(
            {
                b"filenames": [f"img_{i}.png".encode() for i in range(n)],
                b"batch_label": f"{split} batch 1 of 1".encode(),
                b"fine_labels": fine,
                b"coarse_labels": [v // 5 for v in fine],
                b"data": data,
            }
        )
        images[split] = data.reshape(n, 3, 32, 32)
        labels[split] = np.asarray(fine, dtype=np.int64)
    members["meta"] = py2_pickle(
        {
            b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
        }
    )
    tarball = root / "cifar-100-python.tar.gz"
    write_tar(tarball, {f"cifar-100-python/{k}": v for k, v in members.items()})
    return tarball, members, images, labels


def build_mnist(root: Path, *, n_train: int = 8, n_test: int = 3, gz: bool = True,
                seed: int = 28) -> tuple[list[Path], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Write ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``."""
    import gzip

    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    files, images, labels = [], {}, {}
    for split, n in (("train", n_train), ("test", n_test)):
        prefix = "train" if split == "train" else "t10k"
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        for base, data in ((f"{prefix}-images-idx3-ubyte", idx_bytes(x, 2051)),
                           (f"{prefix}-labels-idx1-ubyte", idx_bytes(y, 2049))):
            path = raw / (f"{base}.gz" if gz else base)
            path.write_bytes(gzip.compress(data) if gz else data)
            files.append(path)
        images[split] = x[:, None]
        labels[split] = y.astype(np.int64)
    return files, images, labels


# Four people, three photos each (12 images, index 10 = the last person's second photo).
LFW_PEOPLE = {
    "Ann_Ames": [(200, 30, 30), (30, 200, 30), (30, 30, 200)],
    "Ben_Bell": [(220, 220, 40), (40, 220, 220), (220, 40, 220)],
    "Cid_Cole": [(90, 90, 90), (160, 160, 160), (240, 240, 240)],
    "Dee_Dunn": [(10, 10, 10), (250, 120, 0), (0, 120, 250)],
}


def build_lfw(root: Path) -> tuple[Path, list[tuple[int, int, int]], list[int]]:
    """Write ``root/lfw-py/lfw-funneled.tgz``; returns it with colours and labels in sample order."""
    (root / "lfw-py").mkdir(parents=True, exist_ok=True)
    members, colours, labels = {}, [], []
    for label, person in enumerate(sorted(LFW_PEOPLE)):
        for i, colour in enumerate(LFW_PEOPLE[person], start=1):
            members[f"lfw_funneled/{person}/{person}_{i:04d}.jpg"] = jpeg_bytes(colour, size=80)
            colours.append(colour)
            labels.append(label)
    tarball = root / "lfw-py" / "lfw-funneled.tgz"
    write_tar(tarball, members)
    return tarball, colours, labels


# ---------------------------------------------------------------------------------------------
# Fixtures: trusted datasets under tmp_path/data


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """An empty data root (the dataset fixtures fill it)."""
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def cifar100_data(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> FixtureData:
    tarball, members, images, labels = build_cifar100(data_root)
    trust_file(monkeypatch, "cifar100", tarball)
    trust_members(monkeypatch, "cifar100", members)
    return FixtureData(data_root, images, labels, [tarball])


@pytest.fixture
def mnist_data(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> FixtureData:
    files, images, labels = build_mnist(data_root)
    for path in files:
        trust_file(monkeypatch, "mnist", path)
    return FixtureData(data_root, images, labels, files)


@pytest.fixture
def lfw_data(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FixtureData, list[tuple[int, int, int]]]:
    tarball, colours, labels = build_lfw(data_root)
    trust_file(monkeypatch, "lfw", tarball)
    return FixtureData(data_root, {}, {"train": np.asarray(labels)}, [tarball]), colours


def write_image(path: Path, size: tuple[int, int], colour: tuple[int, int, int] | int = (120, 60, 200),
                fmt: str | None = None) -> Path:
    """A solid-colour picture (any size, any PIL format) for --image."""
    from PIL import Image

    mode = "L" if isinstance(colour, int) else "RGB"
    Image.new(mode, size, colour).save(path, format=fmt)
    return path

