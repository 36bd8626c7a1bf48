"""Safe tar extraction: traversal, links, devices, corrupt and truncated archives."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from gradleak.data.archive import safe_extract
from gradleak.errors import GradleakError

from .conftest import write_tar


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_good_archive_extracted_into_place(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    write_tar(archive, {"top/x.txt": b"x", "top/sub/y.txt": b"y"})
    dest = tmp_path / "dest"
    assert safe_extract(archive, dest, "top") == dest / "top"
    assert (dest / "top" / "sub" / "y.txt").read_bytes() == b"y"
    assert _leftovers(dest) == ["top"]


def test_dotdot_member_refused_and_nothing_written_outside(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    write_tar(archive, {"top/ok.txt": b"ok", "../evil": b"pwned", "top/../../evil2": b"pwned"})
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(GradleakError, match=r"refusing to extract .*evil.tar.gz: member '\.\./evil' is unsafe"):
        safe_extract(archive, dest, "top")
    assert not (tmp_path / "deep" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not (tmp_path / "evil2").exists()
    assert _leftovers(dest) == []  # the temp folder is gone and nothing moved into place


@pytest.mark.parametrize(
    "member",
    [
        pytest.param(("/etc/evil", tarfile.REGTYPE, ""), id="absolute"),
        pytest.param(("top/link", tarfile.SYMTYPE, "../../outside"), id="symlink-out"),
        pytest.param(("top/link", tarfile.SYMTYPE, "/etc/passwd"), id="symlink-abs"),
        pytest.param(("top/hard", tarfile.LNKTYPE, "../outside"), id="hardlink-out"),
        pytest.param(("top/dev", tarfile.CHRTYPE, ""), id="device"),
    ],
)
def test_unsafe_members_refused(tmp_path: Path, member: tuple[str, bytes, str]) -> None:
    name, kind, target = member
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("top/ok.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"ok"))
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = target
        tar.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    dest = tmp_path / "dest"
    with pytest.raises(GradleakError, match="refusing to extract.*unsafe"):
        safe_extract(archive, dest, "top")
    assert _leftovers(dest) == []


def test_internal_symlink_allowed(tmp_path: Path) -> None:
    archive = tmp_path / "ok.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("top/a.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"a"))
        link = tarfile.TarInfo("top/sub/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "../a.txt"
        tar.addfile(link)
    safe_extract(archive, tmp_path / "dest", "top")
    assert (tmp_path / "dest" / "top" / "sub" / "link").read_bytes() == b"a"


def test_corrupted_archive(tmp_path: Path) -> None:
    archive = tmp_path / "junk.tar.gz"
    archive.write_bytes(b"this is not a tarball at all" * 20)
    with pytest.raises(GradleakError, match=rf"could not extract {archive}: it is corrupt or truncated.*delete it"):
        safe_extract(archive, tmp_path / "dest", "top")
    assert _leftovers(tmp_path / "dest") == []


@pytest.mark.parametrize("mode,suffix", [("w:gz", "tar.gz"), ("w", "tar")])
def test_truncated_archive(tmp_path: Path, mode: str, suffix: str) -> None:
    archive = tmp_path / f"cut.{suffix}"
    noise = np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    write_tar(archive, {"top/big.bin": noise, "top/b.txt": b"b"}, mode=mode)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(GradleakError, match="corrupt or truncated.*delete it"):
        safe_extract(archive, tmp_path / "dest", "top")
    assert _leftovers(tmp_path / "dest") == []


def test_archive_without_expected_folder(tmp_path: Path) -> None:
    archive = tmp_path / "other.tar.gz"
    write_tar(archive, {"something/x": b"x"})
    with pytest.raises(GradleakError, match="does not contain the folder top/"):
        safe_extract(archive, tmp_path / "dest", "top")
    assert _leftovers(tmp_path / "dest") == []


def test_existing_incomplete_folder_not_overwritten(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    write_tar(archive, {"top/x.txt": b"x"})
    (tmp_path / "dest" / "top").mkdir(parents=True)
    (tmp_path / "dest" / "top" / "mine.txt").write_text("keep")
    with pytest.raises(GradleakError, match="exists but is incomplete.*delete it"):
        safe_extract(archive, tmp_path / "dest", "top")
    assert (tmp_path / "dest" / "top" / "mine.txt").read_text() == "keep"
