"""Downloads with a fake network: retries, mirrors, atomic writes, checksums, one-time verification."""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
from pathlib import Path

import pytest

from gradleak.data import download as dl
from gradleak.data import load_samples
from gradleak.data.specs import Checksum, RemoteFile, Source
from gradleak.errors import GradleakError

from .conftest import FakeResponse, make_idx_dataset

BODY = b"dataset bytes " * 1000


def _remote(body: bytes = BODY, urls: tuple[str, ...] = ("https://a.example/f.bin", "https://b.example/f.bin"),
            algo: str = "md5") -> RemoteFile:
    digest = hashlib.new(algo, body).hexdigest()
    return RemoteFile("f.bin", tuple(Source(u, Checksum(algo, digest)) for u in urls))


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_retried_then_succeeds_with_backoff(tmp_path: Path, fake_net, monkeypatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(dl, "_sleep", sleeps.append)
    calls = fake_net([urllib.error.URLError("timed out"), ConnectionResetError("reset"), BODY])
    dest = tmp_path / "sub" / "f.bin"
    dl.download(_remote(), dest, quiet=True)
    assert dest.read_bytes() == BODY
    assert calls == ["https://a.example/f.bin"] * 3
    assert sleeps == [2.0, 4.0]
    assert _files(dest.parent) == [".f.bin.verified", "f.bin"]


def test_failing_stream_leaves_no_partial_file(tmp_path: Path, fake_net) -> None:
    broken = [FakeResponse(BODY, fail_after=5000) for _ in range(6)]
    calls = fake_net(broken)
    dest = tmp_path / "f.bin"
    with pytest.raises(dl.DownloadFailed) as info:
        dl.download(_remote(), dest, quiet=True)
    assert len(calls) == 6  # 3 attempts on each of 2 mirrors
    assert "connection reset by fake peer" in str(info.value)
    assert _files(tmp_path) == []  # neither dest nor a .part temp file


def test_short_body_is_retried(tmp_path: Path, fake_net) -> None:
    fake_net([FakeResponse(BODY[:100], length=len(BODY)), BODY])
    dl.download(_remote(), tmp_path / "f.bin", quiet=True)
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_checksum_mismatch_moves_to_next_mirror(tmp_path: Path, fake_net) -> None:
    calls = fake_net([b"an html error page", BODY])
    dl.download(_remote(), tmp_path / "f.bin", quiet=True)
    assert calls == ["https://a.example/f.bin", "https://b.example/f.bin"]
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_http_404_not_retried(tmp_path: Path, fake_net) -> None:
    not_found = urllib.error.HTTPError("https://a.example/f.bin", 404, "Not Found", {}, None)  # type: ignore[arg-type]
    calls = fake_net([not_found, BODY])
    dl.download(_remote(), tmp_path / "f.bin", quiet=True)
    assert len(calls) == 2


def test_sha256_mirror(tmp_path: Path, fake_net) -> None:
    fake_net([BODY])
    dl.download(_remote(algo="sha256", urls=("https://c.example/x",)), tmp_path / "f.bin", quiet=True)
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_verify_file_hashes_once_then_uses_marker(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(BODY)
    remote = _remote()
    hashed: list[Path] = []
    real = dl.file_digests
    monkeypatch.setattr(dl, "file_digests", lambda p, a: (hashed.append(p), real(p, a))[1])
    dl.verify_file(path, remote.checksums)
    dl.verify_file(path, remote.checksums)
    assert hashed == [path]
    path.write_bytes(BODY[:-1] + b"?")  # same size, new content and mtime
    with pytest.raises(GradleakError) as info:
        dl.verify_file(path, remote.checksums)
    msg = str(info.value)
    assert f"checksum mismatch for {path}" in msg
    assert f"expected md5 {hashlib.md5(BODY).hexdigest()}" in msg
    assert f"got md5 {hashlib.md5(path.read_bytes()).hexdigest()}" in msg
    assert "delete it" in msg


def test_load_samples_downloads_missing_mnist(tmp_path: Path, fake_net, trust, monkeypatch) -> None:
    # Build the files elsewhere, trust their checksums, then serve them from the fake network.
    source = tmp_path / "server"
    truth = make_idx_dataset(source, "MNIST", {"train": 3})
    served = {}
    for p in (source / "MNIST" / "raw").iterdir():
        trust("mnist", p)
        served[p.name] = p.read_bytes()

    def fake_urlopen(request, timeout=None):  # type: ignore[no-untyped-def]
        assert request.full_url.startswith("https://ossci-datasets.s3.amazonaws.com/mnist/")
        return FakeResponse(served[request.full_url.rsplit("/", 1)[1]])

    monkeypatch.setattr(dl, "_urlopen", fake_urlopen)
    root = tmp_path / "data"
    _, y = load_samples("mnist", [2], root=root)
    assert y.tolist() == [int(truth["train"].labels[2])]
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir() if not p.name.startswith(".")) == [
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_unavailable_message_lists_urls_place_and_offline_hint(tmp_path: Path, fake_net) -> None:
    calls = fake_net([urllib.error.URLError("Name or service not known")] * 12)
    root = tmp_path / "data"
    with pytest.raises(GradleakError) as info:
        load_samples("mnist", [25], split="test", root=root)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("--index 25 is not bundled (bundled: mnist test images 0..19, offline)")
    assert f"MNIST test split is not available under {root.resolve()}" in msg
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz (Name or service not known)" in msg
    assert "http://yann.lecun.com/exdb/mnist/t10k-labels-idx1-ubyte.gz" in msg
    assert f"place it at {root.resolve()}/MNIST/raw/t10k-images-idx3-ubyte.gz" in msg
    assert "--split test --index 0..19" in msg and "--image" in msg
    assert len(calls) == 12  # 2 files x 2 mirrors x 3 attempts
    assert not [p for p in (root / "MNIST" / "raw").iterdir()]  # no partial files


def test_no_download_message_and_svhn_hint(tmp_path: Path) -> None:
    with pytest.raises(GradleakError) as info:
        load_samples("svhn", [0], split="extra", root=tmp_path, download=False)
    msg = str(info.value)
    assert "downloading is disabled" in msg
    assert "download extra_32x32.mat from http://ufldl.stanford.edu/housenumbers/extra_32x32.mat" in msg
    assert f"place it at {tmp_path.resolve()}/extra_32x32.mat" in msg
    assert "--index 0..19" not in msg and "--image" in msg


def test_impossible_index_refused_before_download(tmp_path: Path) -> None:
    # The autouse guard fails the test if the network is touched.
    with pytest.raises(GradleakError, match=r"--index 60000 is out of range: mnist train has 60000 images \(0\.\.59999\)"):
        load_samples("mnist", [60000], root=tmp_path)


def test_cifar_tarball_downloaded_verified_extracted(tmp_path: Path, cifar100_dataset, monkeypatch) -> None:
    f = cifar100_dataset
    body = f.tarball.read_bytes()
    shutil.rmtree(f.root)
    root = tmp_path / "fresh"
    calls: list[str] = []

    def fake_urlopen(request, timeout=None):  # type: ignore[no-untyped-def]
        calls.append(request.full_url)
        if "www.cs.toronto.edu" in request.full_url:
            raise urllib.error.HTTPError(request.full_url, 404, "Not Found", {}, None)  # type: ignore[arg-type]
        return FakeResponse(body)

    monkeypatch.setattr(dl, "_urlopen", fake_urlopen)
    load_samples("cifar100", [1], split="test", root=root, download=True)
    assert calls == []  # test index < 20: the bundled samples answer, no download
    _, y = load_samples("cifar100", [4], root=root)
    assert calls == ["https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                     "https://cave.cs.toronto.edu/kriz/cifar-100-python.tar.gz"]
    assert y.tolist() == [int(f.truth["train"].labels[4])]
    assert (root / "cifar-100-python" / "train").is_file()


def _verified_file(tmp_path: Path, body: bytes) -> tuple[Path, Checksum]:
    path = tmp_path / "f.bin"
    path.write_bytes(body)
    checksum = Checksum("sha256", hashlib.sha256(body).hexdigest())
    dl.verify_file(path, [checksum])
    assert (tmp_path / ".f.bin.verified").is_file()
    return path, checksum


def test_marker_does_not_excuse_a_same_size_file_with_its_old_mtime(tmp_path: Path) -> None:
    body = bytes(range(256)) * 20000  # 5 MB: three sampled slices and unsampled stretches
    path, checksum = _verified_file(tmp_path, body)
    stat = path.stat()
    marker = (tmp_path / ".f.bin.verified").read_bytes()
    bad = bytearray(body)
    bad[len(body) // 4] ^= 0xFF  # outside the sampled slices
    path.write_bytes(bytes(bad))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as cp -p / tar / rsync -t leave it
    (tmp_path / ".f.bin.verified").write_bytes(marker)  # the old marker, planted back
    with pytest.raises(GradleakError, match=rf"checksum mismatch for {path}"):
        dl.verify_file(path, [checksum])


def test_a_marker_copied_from_another_folder_is_not_trusted(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    _, checksum = _verified_file(good, BODY)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy2(good / ".f.bin.verified", other / ".f.bin.verified")
    (other / "f.bin").write_bytes(b"X" * len(BODY))  # same size, wrong bytes
    os.utime(other / "f.bin", ns=((good / "f.bin").stat().st_atime_ns, (good / "f.bin").stat().st_mtime_ns))
    with pytest.raises(GradleakError, match="checksum mismatch"):
        dl.verify_file(other / "f.bin", [checksum])


def test_a_valid_marker_still_skips_the_full_hash(tmp_path: Path, monkeypatch) -> None:
    path, checksum = _verified_file(tmp_path, BODY)
    calls: list[Path] = []
    monkeypatch.setattr(dl, "file_digests", lambda p, algos: calls.append(p) or {})
    dl.verify_file(path, [checksum])
    assert calls == []
