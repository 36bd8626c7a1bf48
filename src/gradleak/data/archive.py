"""Safe extraction of dataset tarballs: checked member by member, into a temp dir, then moved."""

from __future__ import annotations

import posixpath
import re
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from gradleak.errors import GradleakError

_HAS_FILTER = hasattr(tarfile, "data_filter")  # Python 3.12, 3.11.4+, 3.10.12+
_DRIVE = re.compile(r"^[A-Za-z]:")
_FilterError: type[Exception] = getattr(tarfile, "FilterError", tarfile.TarError)


def _unsafe_reason(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` must not be extracted, or None when it is a plain file/dir inside the dest."""
    name = member.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "absolute path"
    if ".." in parts:
        return "'..' in path"
    if member.isdev() or member.isfifo():
        return "device or fifo"
    if member.issym() or member.islnk():
        target = member.linkname.replace("\\", "/")
        if target.startswith("/") or _DRIVE.match(target):
            return f"link to absolute path {member.linkname!r}"
        # Symlinks resolve against the member's folder; hard links against the archive root.
        base = posixpath.dirname(name) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            return f"link pointing outside the archive ({member.linkname!r})"
    elif not (member.isfile() or member.isdir()):
        return "unsupported member type"
    return None


def _corrupt(archive: Path, exc: BaseException) -> GradleakError:
    return GradleakError(
        f"could not extract {archive}: it is corrupt or truncated ({type(exc).__name__}: {exc}); "
        f"delete it ({archive}) and retry"
    )


def safe_extract(archive: Path, dest_dir: Path, top: str) -> Path:
    """Extract ``archive`` (tar, any compression) so that ``dest_dir/top`` appears atomically.

    Every member is checked first (no absolute paths, no ``..``, no links leaving the archive, no
    device files) and extracted with tarfile's ``data`` filter where available, into a temp dir
    inside ``dest_dir`` that is renamed into place at the end; on any failure nothing is left.
    """
    final = dest_dir / top
    if final.exists():
        raise GradleakError(
            f"{final} exists but is incomplete or unreadable: delete it and retry "
            f"(it will be extracted again from {archive})"
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest_dir, prefix=f".{top}.extract-"))
    try:
        try:
            with tarfile.open(archive, mode="r:*") as tar:
                # One pass (iterate + extract): a gzip stream is not decompressed twice.
                for member in tar:
                    reason = _unsafe_reason(member)
                    if reason is not None:
                        raise GradleakError(
                            f"refusing to extract {archive}: member {member.name!r} is unsafe "
                            f"({reason}); delete the file and download it again from the "
                            "official source"
                        )
                    if _HAS_FILTER:
                        tar.extract(member, tmp, filter="data")
                    else:  # pragma: no cover - old Pythons; our checks above still apply
                        tar.extract(member, tmp)
        except GradleakError:
            raise
        except _FilterError as exc:  # data filter caught something our checks did not
            raise GradleakError(
                f"refusing to extract {archive}: {exc}; delete the file and download it again"
            ) from exc
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise _corrupt(archive, exc) from exc
        extracted = tmp / top
        if not extracted.is_dir():
            raise GradleakError(
                f"{archive} does not contain the folder {top}/: it is not the expected archive; "
                f"delete it ({archive}) and retry"
            )
        extracted.replace(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
