"""What each dataset is (shape, classes, splits) and where its files come from (URLs, checksums).

The tables here are plain module-level dicts on purpose: tests replace one entry (e.g. the
checksums of a tiny fixture archive) with ``monkeypatch.setitem`` and the real verification code
then runs on the fixture.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradleak.errors import GradleakError
from gradleak.registry import Registry


@dataclass(frozen=True)
class DatasetSpec:
    """The shape of one dataset's samples, as the models and attacks see them."""

    name: str
    title: str
    channels: int
    image_size: int
    num_classes: int
    splits: tuple[str, ...]


@dataclass(frozen=True)
class Checksum:
    """An expected digest; ``algo`` is a :mod:`hashlib` name ("md5", "sha256")."""

    algo: str
    digest: str


@dataclass(frozen=True)
class Source:
    """One place to download a file from, with the checksum of the file served there."""

    url: str
    checksum: Checksum


@dataclass(frozen=True)
class RemoteFile:
    """A file of a dataset: its name on disk and the mirrors to try, in order."""

    filename: str
    sources: tuple[Source, ...]

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(s.url for s in self.sources)

    @property
    def checksums(self) -> tuple[Checksum, ...]:
        # An existing file may have come from any mirror, so any mirror's checksum accepts it.
        return tuple(dict.fromkeys(s.checksum for s in self.sources))


DATASETS: Registry[DatasetSpec] = Registry("dataset")

for _spec in (
    DatasetSpec("cifar100", "CIFAR-100", 3, 32, 100, ("train", "test")),
    DatasetSpec("cifar10", "CIFAR-10", 3, 32, 10, ("train", "test")),
    DatasetSpec("mnist", "MNIST", 1, 28, 10, ("train", "test")),
    DatasetSpec("fashionmnist", "Fashion-MNIST", 1, 28, 10, ("train", "test")),
    DatasetSpec("svhn", "SVHN", 3, 32, 10, ("train", "test", "extra")),
    # LFW: one class per person; 5749 people in the full funneled set (the real count is read
    # from disk by gradleak.data.num_classes).
    DatasetSpec("lfw", "LFW", 3, 64, 5749, ("train",)),
):
    DATASETS.register(_spec.name, _spec)


def get_spec(name: str) -> DatasetSpec:
    """The spec of dataset ``name`` (case, '-' and '_' ignored: "CIFAR-100" works)."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key in DATASETS:
        return DATASETS.get(key)
    return DATASETS.get(name)  # raises GradleakError listing the choices


# Published sizes: used to refuse an impossible --index before any download, and as the size of
# a test split that is served from the bundled samples.
PUBLISHED_SIZES: dict[str, dict[str, int]] = {
    "cifar100": {"train": 50000, "test": 10000},
    "cifar10": {"train": 50000, "test": 10000},
    "mnist": {"train": 60000, "test": 10000},
    "fashionmnist": {"train": 60000, "test": 10000},
    "svhn": {"train": 73257, "test": 26032, "extra": 531131},
    "lfw": {"train": 13233},
}


def _md5(digest: str) -> Checksum:
    return Checksum("md5", digest)


def _mirrored(filename: str, bases: tuple[str, ...], checksum: Checksum) -> RemoteFile:
    return RemoteFile(filename, tuple(Source(base + filename, checksum) for base in bases))


_MNIST_BASES = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_BASES = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
_CIFAR_BASES = (
    "https://www.cs.toronto.edu/~kriz/",
    "https://cave.cs.toronto.edu/kriz/",
)
_SVHN_BASES = ("http://ufldl.stanford.edu/housenumbers/",)

_IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# dataset -> file name -> where to get it. Keyed by file name so a test can swap one entry.
REMOTE_FILES: dict[str, dict[str, RemoteFile]] = {
    "mnist": {
        n: _mirrored(n, _MNIST_BASES, _md5(d))
        for n, d in zip(
            _IDX_NAMES,
            (
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
        )
    },
    "fashionmnist": {
        n: _mirrored(n, _FASHION_BASES, _md5(d))
        for n, d in zip(
            _IDX_NAMES,
            (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
        )
    },
    "cifar10": {
        "cifar-10-python.tar.gz": _mirrored(
            "cifar-10-python.tar.gz", _CIFAR_BASES, _md5("c58f30108f718f92721af3b95e74349a")
        ),
    },
    "cifar100": {
        "cifar-100-python.tar.gz": _mirrored(
            "cifar-100-python.tar.gz", _CIFAR_BASES, _md5("eb9058c3a382ffc7106e4002c42a8d85")
        ),
    },
    "svhn": {
        n: _mirrored(n, _SVHN_BASES, _md5(d))
        for n, d in (
            ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
            ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
            ("extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7"),
        )
    },
    "lfw": {
        "lfw-funneled.tgz": RemoteFile(
            "lfw-funneled.tgz",
            (
                Source(
                    "http://vis-www.cs.umass.edu/lfw/lfw-funneled.tgz",
                    _md5("1b42dfed7d15c9b2dd63d5e5840c86ad"),
                ),
                # The figshare copy is published with a sha256, not an md5.
                Source(
                    "https://ndownloader.figshare.com/files/5976015",
                    Checksum(
                        "sha256",
                        "b47c8422c8cded889dc5a13418c4bc2abbda121092b3533a83306f90d900100a",
                    ),
                ),
            ),
        ),
    },
}

# Checksums of files inside an archive, verified after extraction and before unpickling.
# (CIFAR-10 is verified through its tarball only.)
MEMBER_CHECKSUMS: dict[str, dict[str, Checksum]] = {
    "cifar100": {
        "train": _md5("16019d7e3df5f24257cddd939b257f8d"),
        "test": _md5("f0ef6b0ae62326f3e7ffdfab6717acfc"),
        "meta": _md5("7973b15100ade9c7d40fb424638fde48"),
    },
}


def check_split(spec: DatasetSpec, split: str) -> None:
    """Refuse a split the dataset does not have, naming the valid ones."""
    if split in spec.splits:
        return
    if spec.name == "lfw":
        raise GradleakError(
            f"lfw has no {split!r} split: LFW is used whole as 'train' "
            f"({PUBLISHED_SIZES['lfw']['train']} images of {spec.num_classes} people); "
            "pass --split train"
        )
    raise GradleakError(
        f"unknown split {split!r} for {spec.name}: choose one of {', '.join(spec.splits)}"
    )
