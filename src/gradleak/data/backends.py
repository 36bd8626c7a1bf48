"""Per-dataset on-disk layouts (torchvision-compatible): what is present, how to get the rest.

A backend never decides between bundled samples and downloading; :mod:`gradleak.data.loading`
does. Layout under ``root``:

- MNIST: ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``; Fashion-MNIST the same
  under ``FashionMNIST/raw``.
- CIFAR: ``cifar-10-python.tar.gz`` -> ``cifar-10-batches-py/``; ``cifar-100-python.tar.gz`` ->
  ``cifar-100-python/``.
- SVHN: ``{train,test,extra}_32x32.mat``.
- LFW: ``lfw-py/lfw-funneled.tgz`` -> ``lfw-py/lfw_funneled/<Person>/<Person>_0001.jpg``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gradleak.data import readers, specs
from gradleak.data.archive import safe_extract
from gradleak.data.download import DownloadFailed, verify_file
from gradleak.data.download import download as download_file
from gradleak.data.specs import RemoteFile
from gradleak.errors import GradleakError


@dataclass(frozen=True)
class Needed:
    """A file that is absent: what it is and where it belongs."""

    remote: RemoteFile
    dest: Path


@dataclass
class Unavailable(Exception):
    """Some files of a split are absent and could not be downloaded (or downloading is off)."""

    needed: list[Needed]
    tried: list[tuple[str, str]] = field(default_factory=list)
    download_enabled: bool = True


class _Fetcher:
    """Collects absent files across a split so that one error lists all of them."""

    def __init__(self, download: bool) -> None:
        self.download = download
        self.needed: list[Needed] = []
        self.tried: list[tuple[str, str]] = []

    def ensure(self, remote: RemoteFile, dest: Path) -> bool:
        """True when ``dest`` is present and verified (downloading it if allowed)."""
        if dest.is_file():
            verify_file(dest, remote.checksums)
            return True
        if self.download:
            try:
                download_file(remote, dest)
                return True
            except DownloadFailed as exc:
                self.tried.extend(exc.tried)
        self.needed.append(Needed(remote, dest))
        return False

    def raise_if_missing(self) -> None:
        if self.needed:
            raise Unavailable(self.needed, self.tried, self.download)


def _remote(name: str, filename: str) -> RemoteFile:
    # Looked up at call time so tests can swap checksums with monkeypatch.setitem.
    return specs.REMOTE_FILES[name][filename]


class Backend(ABC):
    """How one dataset lives on disk."""

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    def is_local(self, root: Path, split: str) -> bool:
        """Whether the split can be read without the network (possibly after a local extract)."""

    @abstractmethod
    def prepare(self, root: Path, split: str, download: bool) -> None:
        """Verify, download and extract what the split needs; :class:`Unavailable` if absent."""

    @abstractmethod
    def count(self, root: Path, split: str) -> int:
        """Number of samples in a prepared split."""

    @abstractmethod
    def read(self, root: Path, split: str, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (B, C, H, W) images and int64 labels of a prepared split."""

    def num_classes(self, root: Path) -> int:
        return specs.DATASETS.get(self.name).num_classes


# ---------------------------------------------------------------------------------------------


class IdxBackend(Backend):
    """MNIST and Fashion-MNIST."""

    def __init__(self, name: str, folder: str) -> None:
        super().__init__(name)
        self.folder = folder

    def _raw(self, root: Path) -> Path:
        return root / self.folder / "raw"

    @staticmethod
    def _bases(split: str) -> tuple[str, str]:
        prefix = "train" if split == "train" else "t10k"
        return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"

    def _path(self, root: Path, base: str) -> Path | None:
        # Prefer the .gz (it can be checksum-verified); accept an already-decompressed file.
        for candidate in (self._raw(root) / f"{base}.gz", self._raw(root) / base):
            if candidate.is_file():
                return candidate
        return None

    def is_local(self, root: Path, split: str) -> bool:
        return all(self._path(root, b) is not None for b in self._bases(split))

    def prepare(self, root: Path, split: str, download: bool) -> None:
        fetcher = _Fetcher(download)
        for base in self._bases(split):
            gz = self._raw(root) / f"{base}.gz"
            if gz.is_file() or not (self._raw(root) / base).is_file():
                fetcher.ensure(_remote(self.name, gz.name), gz)
        fetcher.raise_if_missing()

    def _paths(self, root: Path, split: str) -> tuple[Path, Path]:
        images, labels = (self._path(root, b) for b in self._bases(split))
        assert images is not None and labels is not None, "prepare() first"
        return images, labels

    def count(self, root: Path, split: str) -> int:
        images, labels = self._paths(root, split)
        n = readers.idx_count(images, readers.IDX_IMAGES_MAGIC)
        m = readers.idx_count(labels, readers.IDX_LABELS_MAGIC)
        if n != m:
            raise readers.corrupt_file(labels, f"{m} labels for {n} images in {images.name}")
        return n

    def read(self, root: Path, split: str, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        images_path, labels_path = self._paths(root, split)
        images = readers.read_idx(images_path, readers.IDX_IMAGES_MAGIC)
        labels = readers.read_idx(labels_path, readers.IDX_LABELS_MAGIC)
        size = specs.DATASETS.get(self.name).image_size
        if images.shape[1:] != (size, size):
            raise readers.corrupt_file(images_path, f"images are {images.shape[1:]}, not {size}x{size}")
        if labels.shape[0] != images.shape[0]:
            raise readers.corrupt_file(labels_path, f"{labels.shape[0]} labels for {images.shape[0]} images")
        return images[indices][:, None], labels[indices].astype(np.int64)


# ---------------------------------------------------------------------------------------------


class CifarBackend(Backend):
    """CIFAR-10 and CIFAR-100 (python pickles inside a tarball)."""

    def __init__(self, name: str, tarball: str, folder: str, files: dict[str, tuple[str, ...]],
                 label_key: str) -> None:
        super().__init__(name)
        self.tarball = tarball
        self.folder = folder
        self.files = files
        self.label_key = label_key

    def _split_files(self, root: Path, split: str) -> list[Path]:
        return [root / self.folder / f for f in self.files[split]]

    def _extracted(self, root: Path, split: str) -> bool:
        return all(p.is_file() for p in self._split_files(root, split))

    def is_local(self, root: Path, split: str) -> bool:
        return self._extracted(root, split) or (root / self.tarball).is_file()

    def prepare(self, root: Path, split: str, download: bool) -> None:
        if not self._extracted(root, split):
            fetcher = _Fetcher(download)
            tarball = root / self.tarball
            fetcher.ensure(_remote(self.name, self.tarball), tarball)
            fetcher.raise_if_missing()
            safe_extract(tarball, root, self.folder)
            missing = [p.name for p in self._split_files(root, split) if not p.is_file()]
            if missing:
                raise GradleakError(
                    f"{tarball} has no {', '.join(missing)} in {self.folder}/: it is not the "
                    f"published archive; delete {tarball} and {root / self.folder} and retry"
                )
        # Verify members before unpickling anything (CIFAR-10: only its tarball has a checksum).
        members = specs.MEMBER_CHECKSUMS.get(self.name, {})
        for path in self._split_files(root, split):
            if path.name in members:
                verify_file(path, [members[path.name]])

    def count(self, root: Path, split: str) -> int:
        return sum(
            len(readers.read_cifar_batch(p, self.label_key)[1]) for p in self._split_files(root, split)
        )

    def read(self, root: Path, split: str, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        wanted = np.asarray(indices, dtype=np.int64)
        images = np.empty((len(wanted), 3, 32, 32), dtype=np.uint8)
        labels = np.empty(len(wanted), dtype=np.int64)
        start = 0
        for path in self._split_files(root, split):
            if not ((wanted >= start).any()):
                break  # later batches hold no requested index: do not unpickle them
            batch_images, batch_labels = readers.read_cifar_batch(path, self.label_key)
            stop = start + len(batch_labels)
            hit = (wanted >= start) & (wanted < stop)
            images[hit] = batch_images[wanted[hit] - start]
            labels[hit] = batch_labels[wanted[hit] - start]
            start = stop
        return images, labels


# ---------------------------------------------------------------------------------------------


class SvhnBackend(Backend):
    """SVHN cropped digits (MATLAB files)."""

    @staticmethod
    def _file(root: Path, split: str) -> Path:
        return root / f"{split}_32x32.mat"

    def is_local(self, root: Path, split: str) -> bool:
        return self._file(root, split).is_file()

    def prepare(self, root: Path, split: str, download: bool) -> None:
        fetcher = _Fetcher(download)
        path = self._file(root, split)
        fetcher.ensure(_remote(self.name, path.name), path)
        fetcher.raise_if_missing()

    def count(self, root: Path, split: str) -> int:
        return readers.svhn_count(self._file(root, split))

    def read(self, root: Path, split: str, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        images, labels = readers.read_svhn(self._file(root, split))
        return images[indices], labels[indices]


# ---------------------------------------------------------------------------------------------


class LfwBackend(Backend):
    """LFW funneled: one class per person, samples ordered by (person, file name)."""

    TARBALL = "lfw-funneled.tgz"
    FOLDER = "lfw_funneled"

    @staticmethod
    def _base(root: Path) -> Path:
        return root / "lfw-py"

    def _folder(self, root: Path) -> Path:
        return self._base(root) / self.FOLDER

    def is_local(self, root: Path, split: str) -> bool:
        return self._folder(root).is_dir() or (self._base(root) / self.TARBALL).is_file()

    def prepare(self, root: Path, split: str, download: bool) -> None:
        if self._folder(root).is_dir():
            return  # extracted JPEGs carry no checksum; each is validated when decoded
        fetcher = _Fetcher(download)
        tarball = self._base(root) / self.TARBALL
        fetcher.ensure(_remote(self.name, self.TARBALL), tarball)
        fetcher.raise_if_missing()
        safe_extract(tarball, self._base(root), self.FOLDER)

    def _index(self, root: Path) -> tuple[list[str], list[tuple[Path, int]]]:
        folder = self._folder(root)
        people, samples = readers.lfw_index(folder)
        if not samples:
            raise GradleakError(
                f"{folder} holds no person folders with JPEGs: delete it and retry "
                f"(it will be extracted again from {self.TARBALL})"
            )
        return people, samples

    def count(self, root: Path, split: str) -> int:
        return len(self._index(root)[1])

    def num_classes(self, root: Path) -> int:
        return len(self._index(root)[0])

    def read(self, root: Path, split: str, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        samples = self._index(root)[1]
        size = specs.DATASETS.get(self.name).image_size
        chosen = [samples[i] for i in indices]
        images = readers.read_images_resized([p for p, _ in chosen], size, folder=self._folder(root))
        return images, np.asarray([label for _, label in chosen], dtype=np.int64)


BACKENDS: dict[str, Backend] = {
    "mnist": IdxBackend("mnist", "MNIST"),
    "fashionmnist": IdxBackend("fashionmnist", "FashionMNIST"),
    "cifar10": CifarBackend(
        "cifar10",
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        "labels",
    ),
    "cifar100": CifarBackend(
        "cifar100",
        "cifar-100-python.tar.gz",
        "cifar-100-python",
        {"train": ("train",), "test": ("test",)},
        "fine_labels",
    ),
    "svhn": SvhnBackend("svhn"),
    "lfw": LfwBackend("lfw"),
}
