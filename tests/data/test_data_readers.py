"""Each dataset read from its true on-disk format: pixels, labels, shapes, and bad files."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from gradleak.data import dataset_size, load_samples, num_classes
from gradleak.data.readers import RestrictedUnpickler, restricted_load
from gradleak.errors import GradleakError

from .conftest import LFW_PEOPLE, CifarFixture, Split, make_idx_dataset


def _expect(x: torch.Tensor, y: torch.Tensor, truth: Split, idx: list[int]) -> None:
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x, torch.from_numpy(truth.images[idx]).float() / 255)
    assert y.tolist() == truth.labels[idx].tolist()


# ---------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST


def test_mnist_gz_pixels_labels_and_size(mnist_dataset) -> None:
    root, truth = mnist_dataset
    x, y = load_samples("mnist", [4, 0, 2], root=root, download=False)
    assert x.shape == (3, 1, 28, 28)
    _expect(x, y, truth["train"], [4, 0, 2])
    assert dataset_size("mnist", root=root, download=False) == 5
    # A present test split wins over the bundled samples.
    x, y = load_samples("mnist", [1], split="test", root=root, download=False)
    _expect(x, y, truth["test"], [1])
    assert dataset_size("mnist", split="test", root=root, download=False) == 4
    # The checksum is recorded once, next to the file.
    assert (root / "MNIST" / "raw" / ".train-images-idx3-ubyte.gz.verified").is_file()


def test_fashionmnist_decompressed_files_accepted(tmp_path: Path) -> None:
    truth = make_idx_dataset(tmp_path, "FashionMNIST", {"train": 3}, gz=False)
    x, y = load_samples("fashionmnist", [2, 1], root=tmp_path, download=False)
    _expect(x, y, truth["train"], [2, 1])


def test_index_out_of_range_names_the_size(mnist_dataset) -> None:
    root, _ = mnist_dataset
    with pytest.raises(GradleakError, match=r"--index 5 is out of range: mnist train has 5 images \(0\.\.4\)"):
        load_samples("mnist", [0, 5], root=root, download=False)
    with pytest.raises(GradleakError, match="--index -1 is out of range"):
        load_samples("mnist", [-1], root=root, download=False)


def test_idx_bad_magic_and_truncation(mnist_dataset) -> None:
    root, _ = mnist_dataset
    raw = root / "MNIST" / "raw"
    # Replace the verified .gz by decompressed files (no checksum) that are broken.
    data = gzip.decompress((raw / "train-images-idx3-ubyte.gz").read_bytes())
    for p in raw.glob("train-images*"):
        p.unlink()
    plain = raw / "train-images-idx3-ubyte"
    plain.write_bytes(data[:-100])
    with pytest.raises(GradleakError, match=r"train-images-idx3-ubyte is corrupt or truncated .*delete"):
        load_samples("mnist", [0], root=root, download=False)
    plain.write_bytes(b"\x00\x00\x08\x01" + data[4:])
    with pytest.raises(GradleakError, match="magic number 2049, expected 2051"):
        load_samples("mnist", [0], root=root, download=False)


def test_truncated_gzip_is_a_clear_error(tmp_path: Path, trust) -> None:
    make_idx_dataset(tmp_path, "MNIST", {"train": 3})
    gz = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-30])
    for p in gz.parent.iterdir():
        trust("mnist", p)  # checksums match: the reader itself must catch the truncation
    with pytest.raises(GradleakError, match=rf"{gz.name} is corrupt or truncated.*delete"):
        load_samples("mnist", [0], root=tmp_path, download=False)


def test_checksum_mismatch_on_existing_file(mnist_dataset) -> None:
    root, _ = mnist_dataset
    labels = root / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x00"))
    with pytest.raises(GradleakError) as info:
        load_samples("mnist", [0], root=root, download=False)
    msg = str(info.value)
    assert f"checksum mismatch for {labels}" in msg and "expected md5" in msg and "got md5" in msg
    assert "delete it" in msg


def test_different_roots_do_not_share_state(tmp_path: Path) -> None:
    # Same file names, different contents (decompressed: no checksum to override).
    a = make_idx_dataset(tmp_path / "a", "MNIST", {"train": 2}, gz=False, seed=1)
    b = make_idx_dataset(tmp_path / "b", "MNIST", {"train": 2}, gz=False, seed=2)
    xa, ya = load_samples("mnist", [0], root=tmp_path / "a", download=False)
    xb, yb = load_samples("mnist", [0], root=tmp_path / "b", download=False)
    _expect(xa, ya, a["train"], [0])
    _expect(xb, yb, b["train"], [0])


# ---------------------------------------------------------------------------------------------
# CIFAR


def test_cifar100_tarball_verified_extracted_and_read(cifar100_dataset: CifarFixture) -> None:
    f = cifar100_dataset
    x, y = load_samples("cifar100", [6, 0], root=f.root, download=False)
    assert x.shape == (2, 3, 32, 32)
    _expect(x, y, f.truth["train"], [6, 0])
    assert sorted(p.name for p in (f.root / "cifar-100-python").iterdir() if not p.name.startswith(".")) == [
        "meta", "test", "train"]
    assert dataset_size("cifar100", split="test", root=f.root, download=False) == 5
    x, y = load_samples("cifar100", [3], split="test", root=f.root, download=False)
    _expect(x, y, f.truth["test"], [3])
    # No temp folders left behind by the extraction.
    assert not [p for p in f.root.iterdir() if "extract" in p.name]


def test_cifar100_member_checksum_checked_before_unpickling(cifar100_dataset: CifarFixture) -> None:
    f = cifar100_dataset
    load_samples("cifar100", [0], root=f.root, download=False)
    member = f.root / "cifar-100-python" / "train"
    content = bytearray(f.members["train"])
    content[-40] ^= 0xFF  # one flipped pixel byte: still a valid pickle, wrong checksum
    member.write_bytes(bytes(content))
    os.utime(member, ns=(1, 1))  # a new mtime: the verified marker must not excuse it
    with pytest.raises(GradleakError, match=rf"checksum mismatch for {member}.*delete"):
        load_samples("cifar100", [0], root=f.root, download=False)


def test_cifar10_batches_in_order(cifar10_dataset: CifarFixture) -> None:
    f = cifar10_dataset
    assert dataset_size("cifar10", root=f.root, download=False) == 15
    x, y = load_samples("cifar10", [14, 7, 0], root=f.root, download=False)
    _expect(x, y, f.truth["train"], [14, 7, 0])
    x, y = load_samples("cifar10", [3], split="test", root=f.root, download=False)
    _expect(x, y, f.truth["test"], [3])


def test_cifar_evil_pickle_refused_and_not_executed(cifar100_dataset: CifarFixture, trust_member,
                                                    tmp_path: Path) -> None:
    f = cifar100_dataset
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps({"data": Evil(), "fine_labels": [1]}, protocol=2)
    folder = f.root / "cifar-100-python"
    folder.mkdir()
    for name, content in f.members.items():
        (folder / name).write_bytes(content)
    (folder / "train").write_bytes(payload)
    trust_member("cifar100", "train", payload)  # checksum passes: the unpickler must stop it
    with pytest.raises(GradleakError, match=r"refusing to load .*train.*'(posix|nt|os)\.system' is forbidden"):
        load_samples("cifar100", [0], root=f.root, download=False)
    assert not marker.exists()


def test_restricted_unpickler_allows_only_numpy_array_globals(tmp_path: Path) -> None:
    import io

    ok = pickle.dumps({"a": np.arange(3, dtype=np.uint8), "b": [b"x", "y", 1]}, protocol=2)
    # Python 3 protocol 2 writes bytes via _codecs.encode, which the published files never use.
    with pytest.raises(pickle.UnpicklingError, match="_codecs.encode"):
        RestrictedUnpickler(io.BytesIO(ok), encoding="latin1").load()
    for proto in (2, 4):
        bad = pickle.dumps(shutil.rmtree, protocol=proto)
        with pytest.raises(pickle.UnpicklingError, match="forbidden"):
            RestrictedUnpickler(io.BytesIO(bad)).load()
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x80\x02}q\x00(U\x04data")
    with pytest.raises(GradleakError, match="corrupt or truncated"):
        restricted_load(junk)


# ---------------------------------------------------------------------------------------------
# SVHN and LFW


def test_svhn_mat_pixels_and_label_10_is_0(svhn_dataset) -> None:
    root, truth = svhn_dataset
    assert dataset_size("svhn", split="test", root=root, download=False) == 6
    x, y = load_samples("svhn", [0, 3, 4], split="test", root=root, download=False)
    assert x.shape == (3, 3, 32, 32)
    _expect(x, y, truth, [0, 3, 4])
    assert y.tolist() == [0, 0, 9]


def test_lfw_people_order_and_resize(lfw_dataset: Path) -> None:
    root = lfw_dataset
    # People sorted by name, files by name: Alice_0001, Alice_0002, Bob_0001, Carl_0001.
    assert dataset_size("lfw", root=root, download=False) == 4
    assert num_classes("lfw", root=root, download=False) == 3
    x, y = load_samples("lfw", [0, 1, 2, 3], root=root, download=False)
    assert x.shape == (4, 3, 64, 64) and y.tolist() == [0, 0, 1, 2]
    expected = [LFW_PEOPLE["Alice_Adams"][0], LFW_PEOPLE["Alice_Adams"][1],
                LFW_PEOPLE["Bob_Brown"][0], LFW_PEOPLE["Carl_Curtis"][0]]
    means = (x.mean(dim=(2, 3)) * 255).tolist()
    for got, want in zip(means, expected):
        assert np.allclose(got, want, atol=6)
    assert (root / "lfw-py" / "lfw_funneled" / "Bob_Brown" / "Bob_Brown_0001.jpg").is_file()


def test_lfw_corrupt_tarball_is_a_clear_error(lfw_dataset: Path, trust) -> None:
    tarball = lfw_dataset / "lfw-py" / "lfw-funneled.tgz"
    tarball.write_bytes(tarball.read_bytes()[: len(tarball.read_bytes()) // 2])
    trust("lfw", tarball)  # checksum matches the truncated file: extraction must catch it
    with pytest.raises(GradleakError, match=rf"could not extract {tarball}.*corrupt or truncated.*delete"):
        load_samples("lfw", [0], root=lfw_dataset, download=False)
    assert not (lfw_dataset / "lfw-py" / "lfw_funneled").exists()
    assert [p.name for p in (lfw_dataset / "lfw-py").iterdir() if not p.name.startswith(".lfw-")] == [
        "lfw-funneled.tgz"]
    assert not [p for p in (lfw_dataset / "lfw-py").iterdir() if "extract" in p.name]


@pytest.mark.parametrize("gz", [False, True])
def test_idx_header_with_huge_dimensions(mnist_dataset, trust, gz: bool) -> None:
    # A header claiming 4294967295 x 4294967295 x 4294967295 images: the size used to overflow
    # int64 and print as negative.
    root, _ = mnist_dataset
    raw = root / "MNIST" / "raw"
    data = gzip.decompress((raw / "train-images-idx3-ubyte.gz").read_bytes())
    for p in raw.glob("train-images*"):
        p.unlink()
    huge = struct.pack(">IIII", 2051, 2**32 - 1, 2**32 - 1, 2**32 - 1) + data[16:]
    target = raw / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    target.write_bytes(gzip.compress(huge) if gz else huge)
    if gz:  # the labels claim as many: the count agrees, reading must catch the header
        labels = raw / "train-labels-idx1-ubyte.gz"
        labels.write_bytes(gzip.compress(struct.pack(">II", 2049, 2**32 - 1) + gzip.decompress(labels.read_bytes())[8:]))
        trust("mnist", target)  # checksums match: the reader itself must catch the header
        trust("mnist", labels)
    with pytest.raises(GradleakError) as info:
        load_samples("mnist", [0], root=root, download=False)
    message = str(info.value)
    assert message.startswith(str(target))
    claimed = f"{16 + (2**32 - 1) ** 3:,}"
    assert f"the header says {claimed} (4294967295 x 4294967295 x 4294967295 items)" in message
    assert "corrupt or truncated" in message and "delete" in message and "says -" not in message
