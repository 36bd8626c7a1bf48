"""Output folders: checked before any work, written in a staging folder, moved into place.

A run (image or text) never leaves a half-written folder and never overwrites a non-empty one
without ``overwrite``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gradleak.errors import GradleakError
from gradleak.io.files import current_umask


def check_output_folder(out: Path, *, overwrite: bool, flag: str = "--out") -> Path:
    """Refuse a folder the results could not go to, or a non-empty one without ``overwrite``.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> (folder / "old.txt").write_text("kept")
        4
        >>> check_output_folder(folder, overwrite=False)
        Traceback (most recent call last):
        ...
        gradleak.errors.GradleakError: output folder ... is not empty: choose another --out or pass --overwrite
    """
    out = Path(out)
    dangling = dangling_link(out)
    if dangling is not None:
        raise GradleakError(
            f"{flag} {out}: {dangling} is a symbolic link to {os.readlink(dangling)}, which does not exist: "
            f"create its target folder or choose another {flag}"
        )
    if out.exists() and not out.is_dir():
        raise GradleakError(f"{flag} {out} is a file, not a folder: choose another {flag}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise GradleakError(f"output folder {out} is not empty: choose another {flag} or pass --overwrite")
    parent = existing_parent(out)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GradleakError(f"cannot write to {parent} (for {flag} {out}): choose a writable {flag}")
    return out


def dangling_link(path: Path) -> Path | None:
    """``path`` or its nearest ancestor that is a symbolic link to nothing (the results could not
    be moved there, found only after the work), else None."""
    for candidate in (path, *path.parents):
        if candidate.is_symlink() and not candidate.exists():
            return candidate
    return None


def existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def partial_folders(out: Path) -> list[Path]:
    """Staging folders that an interrupted (killed) write left beside ``out``."""
    out = Path(out)
    return sorted(out.parent.glob(f".{out.name}.partial-*"))


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Yield a staging folder beside ``out``; on success move its contents into ``out``.

    On any failure the staging folder and any parent folders it created are removed and ``out``
    is left as it was; an ``OSError`` becomes one line naming the folder.

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
        >>> with staged_folder(out) as stage:
        ...     _ = (stage / "metrics.txt").write_text("PSNR=30")
        >>> sorted(p.name for p in out.iterdir())
        ['metrics.txt']
    """
    out = Path(out)
    created = _missing_parents(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
        os.chmod(stage, 0o777 & ~current_umask())  # mkdtemp makes 0700
    except OSError as error:
        _remove_created(created)
        raise GradleakError(f"cannot create the output folder {out}: {error.strerror}; choose another --out") from None
    try:
        yield stage
        if out.exists():
            for item in stage.iterdir():
                target = out / item.name
                if target.is_dir():
                    shutil.rmtree(target)
                os.replace(item, target)
            stage.rmdir()
        else:
            os.replace(stage, out)
    except BaseException as error:
        shutil.rmtree(stage, ignore_errors=True)
        _remove_created(created)
        if isinstance(error, OSError):
            raise GradleakError(f"could not write the results to {out}: {error}; nothing was kept") from None
        raise


def _missing_parents(path: Path) -> list[Path]:
    """The ancestors of ``path`` that do not exist yet, deepest first (to undo on failure)."""
    missing = []
    parent = path.absolute().parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    return missing


def _remove_created(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break
