"""Readers for the datasets' published file formats; each returns uint8 (N, C, H, W) + int64 labels.

Every reader validates what it parses and turns a bad file into a one-line GradleakError that
names the file and says to delete it (it is then downloaded again).
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from gradleak.errors import GradleakError

# ---------------------------------------------------------------------------------------------
# Errors


def corrupt_file(path: Path, detail: str, *, delete: Path | None = None) -> GradleakError:
    """The standard 'this file is bad' error; ``delete`` is what to remove (default: the file)."""
    target = delete or path
    return GradleakError(
        f"{path} is corrupt or truncated ({detail}): delete {target} and retry; "
        "it will be extracted or downloaded again"
    )


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


# ---------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST: IDX files (optionally gzipped)

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dims
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dim


def _open_idx(path: Path) -> io.BufferedIOBase:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _idx_header(head: bytes, path: Path, magic: int) -> tuple[int, ...]:
    ndim = magic & 0xFF
    if len(head) < 4 + 4 * ndim:
        raise corrupt_file(path, f"{len(head)} bytes is shorter than the IDX header")
    got = struct.unpack(">I", head[:4])[0]
    if got != magic:
        raise corrupt_file(path, f"IDX magic number {got}, expected {magic}")
    return struct.unpack(f">{ndim}I", head[4 : 4 + 4 * ndim])


def _check_idx_size(path: Path, dims: tuple[int, ...], size: int) -> None:
    """The IDX data must be exactly as long as its header says."""
    expected = 4 + 4 * len(dims) + math.prod(dims)  # Python ints: 3 dims of up to 2^32 - 1 overflow int64
    if size != expected:
        raise corrupt_file(path, f"{size:,} bytes, the header says {expected:,} ({' x '.join(map(str, dims))} items)")


def idx_count(path: Path, magic: int) -> int:
    """Number of items in an IDX file, from its header (checked against the size of a plain file)."""
    try:
        with _open_idx(path) as f:
            head = f.read(4 + 4 * (magic & 0xFF))
        dims = _idx_header(head, path, magic)
        if path.suffix != ".gz":
            _check_idx_size(path, dims, path.stat().st_size)
    except (OSError, EOFError, zlib.error) as exc:
        raise corrupt_file(path, f"{type(exc).__name__}: {exc}") from exc
    return dims[0]


@functools.lru_cache(maxsize=4)
def _read_idx_cached(key: tuple[str, int, int], magic: int) -> np.ndarray:
    path = Path(key[0])
    try:
        with _open_idx(path) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise corrupt_file(path, f"{type(exc).__name__}: {exc}") from exc
    dims = _idx_header(data, path, magic)
    offset = 4 + 4 * len(dims)
    _check_idx_size(path, dims, len(data))
    array = np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)
    array.flags.writeable = False  # shared through the cache
    return array


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The whole IDX array (uint8, dims from the header), validated against the file size."""
    return _read_idx_cached(_stat_key(path), magic)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100: pickled dicts, read with an unpickler that can build numpy arrays only


@functools.cache
def _allowed_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    # The published batches were written by Python 2 with numpy.core; numpy 2 writes numpy._core.
    return {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays; refuses every other global.

    A pickle can name any importable callable (e.g. ``os.system``) and call it while loading;
    refusing all globals except the three numpy needs makes loading a downloaded file harmless.
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = _allowed_globals()
        try:
            return allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global '{module}.{name}' is forbidden (only numpy arrays are allowed)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are forbidden")


def restricted_load(path: Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (latin1, as for Python 2 pickles)."""
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        if "forbidden" in str(exc):
            raise GradleakError(
                f"refusing to load {path}: {exc}; a genuine CIFAR file never needs this, so the "
                f"file was tampered with or is not a CIFAR batch: delete it ({path}) and download "
                "it again"
            ) from exc
        raise corrupt_file(path, f"UnpicklingError: {exc}") from exc
    except OSError:
        raise
    except Exception as exc:
        raise corrupt_file(path, f"{type(exc).__name__}: {exc}") from exc


def _get(d: dict[Any, Any], key: str) -> Any:
    # encoding='latin1' gives str keys; accept bytes keys too (encoding='bytes' pickles).
    if key in d:
        return d[key]
    return d.get(key.encode("latin1"))


@functools.lru_cache(maxsize=6)
def _read_cifar_cached(key: tuple[str, int, int], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    path = Path(key[0])
    batch = restricted_load(path)
    if not isinstance(batch, dict):
        raise corrupt_file(path, f"expected a dict, found {type(batch).__name__}")
    data, labels = _get(batch, "data"), _get(batch, label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise corrupt_file(path, "no uint8 'data' matrix")
    if data.shape[1] != 3 * 32 * 32:
        raise corrupt_file(path, f"rows of {data.shape[1]} values, expected 3072")
    if labels is None or len(labels) != data.shape[0]:
        raise corrupt_file(path, f"'{label_key}' missing or not one per image")
    label_array = np.asarray(labels)
    if label_array.dtype.kind not in "iu":
        raise corrupt_file(path, f"'{label_key}' are not integers")
    images = data.reshape(-1, 3, 32, 32)  # rows are channel-major R, G, B planes
    label_array = label_array.astype(np.int64)
    images.flags.writeable = False
    label_array.flags.writeable = False
    return images, label_array


def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch file: images uint8 (N, 3, 32, 32), labels int64 (N,)."""
    return _read_cifar_cached(_stat_key(path), label_key)


# ---------------------------------------------------------------------------------------------
# SVHN: MATLAB files with X (32, 32, 3, N) and y (N, 1), label 10 meaning digit 0


def svhn_count(path: Path) -> int:
    """Number of images in an SVHN .mat file, from its variable table (no pixel data read)."""
    import scipy.io

    try:
        shapes = {name: shape for name, shape, _ in scipy.io.whosmat(str(path))}
    except Exception as exc:
        raise corrupt_file(path, f"{type(exc).__name__}: {exc}") from exc
    shape = shapes.get("X")
    if shape is None or len(shape) != 4 or tuple(shape[:3]) != (32, 32, 3):
        raise corrupt_file(path, f"variable X has shape {shape}, expected (32, 32, 3, N)")
    return int(shape[3])


@functools.lru_cache(maxsize=1)
def _read_svhn_cached(key: tuple[str, int, int]) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    path = Path(key[0])
    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except Exception as exc:
        raise corrupt_file(path, f"{type(exc).__name__}: {exc}") from exc
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise corrupt_file(path, "variable X is not (32, 32, 3, N)")
    if not isinstance(y, np.ndarray) or y.size != x.shape[3]:
        raise corrupt_file(path, "variable y is not one label per image")
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1)).astype(np.uint8, copy=False)
    labels = (y.reshape(-1).astype(np.int64)) % 10  # SVHN stores digit 0 as label 10
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def read_svhn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An SVHN split: images uint8 (N, 3, 32, 32), labels int64 (N,) in 0..9."""
    return _read_svhn_cached(_stat_key(path))


# ---------------------------------------------------------------------------------------------
# LFW: one folder per person of JPEGs


def lfw_index(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """People (sorted folder names = classes) and samples ordered by (person, file name)."""
    people = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    samples: list[tuple[Path, int]] = []
    for label, person in enumerate(people):
        files = sorted(
            f.name
            for f in (folder / person).iterdir()
            if f.suffix.lower() in (".jpg", ".jpeg") and not f.name.startswith(".")
        )
        samples.extend((folder / person / name, label) for name in files)
    return people, samples


def read_images_resized(paths: list[Path], size: int, *, folder: Path | None = None) -> np.ndarray:
    """Whole images resized (not cropped) to size x size RGB: uint8 (N, 3, size, size).

    ``folder`` is what a bad image's error tells the user to delete (the extracted dataset).
    """
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        except (OSError, UnidentifiedImageError) as exc:
            raise corrupt_file(path, f"{type(exc).__name__}: {exc}", delete=folder) from exc
        out[i] = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    return out
