"""Fixtures for gradleak.data tests: tiny datasets written in each dataset's TRUE on-disk format.

Nothing here (or in the tests) may touch the network: an autouse fixture replaces the
downloader's ``_urlopen`` with one that fails the test.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

try:  # plain `pytest` from the repo root without an installed package
    import gradleak  # noqa: F401
except ImportError:  # pragma: no cover - depends on how the tests are run
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from gradleak.data import download, specs
from gradleak.data.specs import Checksum, RemoteFile, Source


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def trust(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, Path], None]:
    """``trust(dataset, path)``: make the spec table expect this fixture file's md5 (all mirrors)."""

    def _trust(dataset: str, path: Path) -> None:
        old = specs.REMOTE_FILES[dataset][path.name]
        new = RemoteFile(
            old.filename,
            tuple(Source(s.url, Checksum("md5", md5_of(path))) for s in old.sources),
        )
        table = dict(specs.REMOTE_FILES[dataset])
        table[path.name] = new
        monkeypatch.setitem(specs.REMOTE_FILES, dataset, table)

    return _trust


@pytest.fixture
def trust_member(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str, bytes], None]:
    """``trust_member(dataset, member, content)``: expect this content's md5 for an archive member."""

    def _trust(dataset: str, member: str, content: bytes) -> None:
        table = dict(specs.MEMBER_CHECKSUMS.get(dataset, {}))
        table[member] = Checksum("md5", hashlib.md5(content).hexdigest())
        monkeypatch.setitem(specs.MEMBER_CHECKSUMS, dataset, table)

    return _trust


# ---------------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@dataclass
class Split:
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)


def make_idx_dataset(root: Path, folder: str, n: dict[str, int], *, gz: bool = True,
                     seed: int = 0) -> dict[str, Split]:
    """Write {train,t10k}-{images,labels} IDX files under root/folder/raw; returns the truth."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, count in n.items():
        prefix = "train" if split == "train" else "t10k"
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        for base, data in (
            (f"{prefix}-images-idx3-ubyte", idx_bytes(images, 2051)),
            (f"{prefix}-labels-idx1-ubyte", idx_bytes(labels, 2049)),
        ):
            if gz:
                (raw / f"{base}.gz").write_bytes(gzip.compress(data))
            else:
                (raw / base).write_bytes(data)
        out[split] = Split(images[:, None], labels.astype(np.int64))
    return out


@pytest.fixture
def mnist_dataset(tmp_path: Path, trust: Callable[[str, Path], None]) -> tuple[Path, dict[str, Split]]:
    """A trusted gzipped MNIST fixture: 5 train and 4 test images."""
    root = tmp_path / "data"
    truth = make_idx_dataset(root, "MNIST", {"train": 5, "test": 4})
    for p in (root / "MNIST" / "raw").iterdir():
        trust("mnist", p)
    return root, truth


# ---------------------------------------------------------------------------------------------
# CIFAR: Python-2-style pickles (as published) inside a tarball


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes pickles the way the published CIFAR files were written (Python 2 cPickle,
    protocol 2): bytes as BINSTRING and numpy arrays via ``numpy.core.multiarray._reconstruct``."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = getattr(obj, "__module__", None)
        qualname = name or obj.__qualname__
        if module == "numpy._core.multiarray":
            module = "numpy.core.multiarray"
        self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[type(len)] = save_global
    dispatch[type] = save_global


def py2_pickle(obj: Any) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar_batch(rng: np.random.Generator, n: int, label_key: bytes, classes: int) -> tuple[bytes, Split]:
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, classes, size=n)]
    payload = {
        b"batch_label": b"fixture batch",
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        b"data": data,
        label_key: labels,
    }
    if label_key == b"fine_labels":
        payload[b"coarse_labels"] = [v // 5 for v in labels]
    return py2_pickle(payload), Split(data.reshape(n, 3, 32, 32), np.asarray(labels, np.int64))


def write_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> None:
    with tarfile.open(path, mode) as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))


@dataclass
class CifarFixture:
    root: Path
    tarball: Path
    members: dict[str, bytes]
    truth: dict[str, Split]


@pytest.fixture
def cifar100_dataset(tmp_path: Path, trust: Callable[[str, Path], None],
                     trust_member: Callable[[str, str, bytes], None]) -> CifarFixture:
    """A trusted cifar-100-python.tar.gz (train 7, test 5) with member checksums overridden."""
    rng = np.random.default_rng(100)
    root = tmp_path / "data"
    root.mkdir()
    train, train_truth = cifar_batch(rng, 7, b"fine_labels", 100)
    test, test_truth = cifar_batch(rng, 5, b"fine_labels", 100)
    meta = py2_pickle({b"fine_label_names": [f"c{i}".encode() for i in range(100)]})
    members = {"train": train, "test": test, "meta": meta}
    tarball = root / "cifar-100-python.tar.gz"
    write_tar(tarball, {f"cifar-100-python/{k}": v for k, v in members.items()})
    trust("cifar100", tarball)
    for name, content in members.items():
        trust_member("cifar100", name, content)
    return CifarFixture(root, tarball, members, {"train": train_truth, "test": test_truth})


@pytest.fixture
def cifar10_dataset(tmp_path: Path, trust: Callable[[str, Path], None]) -> CifarFixture:
    """A trusted cifar-10-python.tar.gz: five train batches of 3 images, a test batch of 4."""
    rng = np.random.default_rng(10)
    root = tmp_path / "data"
    root.mkdir()
    members, truths = {}, []
    for i in range(1, 6):
        members[f"data_batch_{i}"], t = cifar_batch(rng, 3, b"labels", 10)
        truths.append(t)
    members["test_batch"], test_truth = cifar_batch(rng, 4, b"labels", 10)
    members["batches.meta"] = py2_pickle({b"label_names": [b"airplane"] * 10})
    tarball = root / "cifar-10-python.tar.gz"
    write_tar(tarball, {f"cifar-10-batches-py/{k}": v for k, v in members.items()})
    trust("cifar10", tarball)
    train_truth = Split(np.concatenate([t.images for t in truths]),
                        np.concatenate([t.labels for t in truths]))
    return CifarFixture(root, tarball, members, {"train": train_truth, "test": test_truth})


# ---------------------------------------------------------------------------------------------
# SVHN and LFW


@pytest.fixture
def svhn_dataset(tmp_path: Path, trust: Callable[[str, Path], None]) -> tuple[Path, Split]:
    """A trusted test_32x32.mat with 6 images; labels include 10 (= digit 0)."""
    import scipy.io

    rng = np.random.default_rng(7)
    root = tmp_path / "data"
    root.mkdir()
    x = rng.integers(0, 256, size=(32, 32, 3, 6), dtype=np.uint8)
    y = np.array([[10], [1], [2], [10], [9], [5]], dtype=np.uint8)
    path = root / "test_32x32.mat"
    scipy.io.savemat(str(path), {"X": x, "y": y})
    trust("svhn", path)
    return root, Split(x.transpose(3, 2, 0, 1).copy(), (y[:, 0].astype(np.int64)) % 10)


LFW_PEOPLE = {  # person -> colours of their images (solid colours survive JPEG + resize)
    "Carl_Curtis": [(0, 0, 255)],
    "Alice_Adams": [(255, 0, 0), (0, 255, 0)],
    "Bob_Brown": [(250, 250, 250)],
}


def jpeg_bytes(colour: tuple[int, int, int], size: int = 50) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture
def lfw_dataset(tmp_path: Path, trust: Callable[[str, Path], None]) -> Path:
    """A trusted lfw-py/lfw-funneled.tgz with 3 people / 4 JPEGs; returns root."""
    root = tmp_path / "data"
    (root / "lfw-py").mkdir(parents=True)
    members = {}
    for person, colours in LFW_PEOPLE.items():
        for i, colour in enumerate(colours, start=1):
            members[f"lfw_funneled/{person}/{person}_{i:04d}.jpg"] = jpeg_bytes(colour)
    tarball = root / "lfw-py" / "lfw-funneled.tgz"
    write_tar(tarball, members)
    trust("lfw", tarball)
    return root


# ---------------------------------------------------------------------------------------------
# A fake urlopen


class FakeResponse:
    def __init__(self, body: bytes, *, fail_after: int | None = None, length: int | None = None) -> None:
        self._buf = io.BytesIO(body)
        self._fail_after = fail_after
        self._sent = 0
        self.headers = {"Content-Length": str(length if length is not None else len(body))}

    def read(self, n: int = -1) -> bytes:
        if self._fail_after is not None and self._sent >= self._fail_after:
            raise ConnectionResetError("connection reset by fake peer")
        limit = n if self._fail_after is None else min(n, self._fail_after - self._sent)
        chunk = self._buf.read(limit)
        self._sent += len(chunk)
        return chunk

    def __enter__(self) -> FakeResponse:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.fixture
def fake_net(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., list[str]]]:
    """``fake_net(plan)`` installs a fake urlopen; ``plan`` is a list consumed one call at a time
    of bytes (served), a FakeResponse, or an exception (raised). Returns the list of URLs asked."""

    def install(plan: list[Any]) -> list[str]:
        calls: list[str] = []
        queue = list(plan)

        def fake_urlopen(request: Any, timeout: float | None = None) -> Any:
            calls.append(request.full_url if hasattr(request, "full_url") else str(request))
            if not queue:
                raise AssertionError(f"unexpected extra request {calls[-1]}")
            item = queue.pop(0)
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, bytes):
                return FakeResponse(item)
            return item

        monkeypatch.setattr(download, "_urlopen", fake_urlopen)
        return calls

    yield install
