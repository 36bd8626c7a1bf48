"""Checksummed, atomic, retrying downloads (urllib only) and one-time verification of files.

Tests never touch the network: they replace :data:`_urlopen` (and :data:`_sleep`) with fakes.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradleak.data.specs import Checksum, RemoteFile
from gradleak.errors import GradleakError

# Injection points for tests (monkeypatch these module attributes).
_urlopen: Callable[..., Any] = urllib.request.urlopen
_sleep: Callable[[float], None] = time.sleep

ATTEMPTS = 3  # per mirror
BACKOFF_S = 2.0  # waits 2 s, then 4 s between attempts
TIMEOUT_S = 60.0  # per socket operation, not for the whole file
_CHUNK = 1 << 20
_USER_AGENT = "gradleak/0.1 (+https://github.com; dataset download)"


@dataclass
class DownloadFailed(Exception):
    """Every mirror of a file failed; ``tried`` holds (url, reason) per attempt, in order."""

    filename: str
    tried: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"could not download {self.filename}: " + "; ".join(
            f"{url} ({reason})" for url, reason in self.tried
        )


def file_digests(path: Path, algos: Sequence[str]) -> dict[str, str]:
    """Hex digests of ``path`` for each algorithm, reading the file once."""
    hashers = {a: hashlib.new(a) for a in dict.fromkeys(algos)}
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}


def _marker(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


_SAMPLE = 1 << 20  # bytes hashed at each of the start, middle and end for the marker's check


def _stat_key(path: Path) -> dict[str, int]:
    # ctime and inode cannot be set by copying or by os.utime: a file replaced by one of the same
    # size with its old mtime restored (cp -p, tar, rsync -t), or a marker copied from elsewhere,
    # no longer matches.
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}


def _sample_digest(path: Path) -> str:
    """sha256 of the size and three 1 MiB slices (start, middle, end): a cheap re-check, ~3 MiB read."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for offset in sorted({0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)}):
            f.seek(offset)
            h.update(f.read(_SAMPLE))
    return h.hexdigest()


def _marker_ok(path: Path, accepted: Sequence[Checksum]) -> bool:
    """Whether the marker vouches for ``path`` as it is now (a cache of the full check, not a signature).

    It must match the file's size, mtime, ctime and inode and a fresh digest of three slices of
    it; a planted or stale marker (another file's, an old copy's) fails and the file is hashed in full.
    """
    try:
        data = json.loads(_marker(path).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or {k: data.get(k) for k in ("size", "mtime_ns", "ctime_ns", "inode")} != _stat_key(path):
        return False
    if not any(data.get("algo") == c.algo and data.get("digest") == c.digest for c in accepted):
        return False
    try:
        return data.get("sample") == _sample_digest(path)
    except OSError:
        return False


def _write_marker(path: Path, checksum: Checksum) -> None:
    # Best effort: a read-only data folder just means hashing again next run.
    try:
        _marker(path).write_text(json.dumps({
            **_stat_key(path), "algo": checksum.algo, "digest": checksum.digest, "sample": _sample_digest(path),
        }))
    except OSError:
        pass


def verify_file(path: Path, accepted: Sequence[Checksum]) -> None:
    """Check ``path`` against any of ``accepted``, in full once: a marker file records it (see :func:`_marker_ok`).

    A mismatch is a GradleakError naming the file, expected vs got, and telling to delete it.
    """
    if not accepted or _marker_ok(path, accepted):
        return
    got = file_digests(path, [c.algo for c in accepted])
    for c in accepted:
        if got[c.algo] == c.digest.lower():
            _write_marker(path, c)
            return
    expected = " or ".join(f"{c.algo} {c.digest}" for c in accepted)
    found = ", ".join(f"{a} {d}" for a, d in got.items())
    raise GradleakError(
        f"checksum mismatch for {path}: expected {expected}, got {found}; the file is corrupt, "
        f"truncated or not the published one: delete it ({path}) and retry"
    )


def _fetch_once(url: str, tmp: Path, timeout: float) -> None:
    """Stream ``url`` into ``tmp``; a short body (vs Content-Length) is an error."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with _urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
        expected = None
        headers = getattr(response, "headers", None)
        if headers is not None and headers.get("Content-Length"):
            expected = int(headers["Content-Length"])
        received = 0
        while chunk := response.read(_CHUNK):
            out.write(chunk)
            received += len(chunk)
    if expected is not None and received != expected:
        raise OSError(f"connection closed after {received} of {expected} bytes")


def host_unknown(exc: BaseException) -> bool:
    """Whether the mirror's host name did not resolve (offline, or no DNS): retrying will not help."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return isinstance(reason, socket.gaierror)


def _reason(exc: BaseException) -> str:
    if host_unknown(exc):
        return "host not found: offline?"
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{exc.reason}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def download(remote: RemoteFile, dest: Path, *, attempts: int = ATTEMPTS, timeout: float = TIMEOUT_S,
             quiet: bool = False) -> None:
    """Download ``remote`` to ``dest``: mirrors in order, ``attempts`` tries each with backoff.

    Bytes go to a temp file in ``dest``'s folder, which is verified and then renamed over
    ``dest`` (atomic); a failed or mismatching transfer leaves nothing behind. Raises
    :class:`DownloadFailed` when no mirror delivered a file with the expected checksum.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    failure = DownloadFailed(remote.filename)
    for source in remote.sources:
        for attempt in range(1, attempts + 1):
            if not quiet:
                print(f"gradleak: downloading {source.url} -> {dest}", file=sys.stderr)
            fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                try:
                    _fetch_once(source.url, tmp, timeout)
                except urllib.error.HTTPError as exc:
                    failure.tried.append((source.url, _reason(exc)))
                    if 400 <= exc.code < 500 and exc.code not in (408, 429):
                        break  # the mirror does not have it: retrying will not help
                    if attempt < attempts:
                        _sleep(BACKOFF_S * 2 ** (attempt - 1))
                    continue
                except (OSError, ValueError) as exc:  # URLError, timeouts, resets are OSErrors
                    failure.tried.append((source.url, _reason(exc)))
                    if host_unknown(exc):
                        break  # no name resolution: fail at once, no backoff (an offline machine)
                    if attempt < attempts:
                        _sleep(BACKOFF_S * 2 ** (attempt - 1))
                    continue
                got = file_digests(tmp, [source.checksum.algo])[source.checksum.algo]
                if got != source.checksum.digest.lower():
                    reason = (
                        f"checksum mismatch: expected {source.checksum.algo} "
                        f"{source.checksum.digest}, got {got}"
                    )
                    failure.tried.append((source.url, reason))
                    break  # a wrong file from this mirror: try the next mirror
                os.replace(tmp, dest)
                _write_marker(dest, source.checksum)
                return
            finally:
                # Also on KeyboardInterrupt: never leave a partial file behind.
                if tmp.exists():
                    tmp.unlink()
    raise failure
