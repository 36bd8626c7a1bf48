"""Reading untrusted safetensors files: the header is checked before any tensor is read.

safetensors holds raw tensors and a JSON header, never code. A hostile file can still lie in its
header (an absurd length, deep nesting, offsets past the end, an unknown dtype); each such lie is
one clear error here, before the library reads a byte of data.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from gradleak.errors import GradleakError

MAX_HEADER_BYTES = 100 * 2**20  # the safetensors format's own limit on the header is 100 MB
SAFE_DTYPES = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"}


def read_safetensors_header(path: Path, *, what: str, dtypes: frozenset[str] | set[str] = SAFE_DTYPES) -> tuple[dict[str, Any], int]:
    """The parsed header of a safetensors file and the file's size; ``what`` names the file in errors,
    ``dtypes`` the tensor dtypes accepted."""
    path = Path(path)
    if not path.is_file():
        kind = "does not exist" if not path.exists() else "is not a regular file"
        raise GradleakError(f"{what} {path} {kind}: give the path of a .safetensors file")
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise GradleakError(f"{what} {path} is not a safetensors file (only {size} bytes): write it with gradleak.save_update")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise GradleakError(f"{what} {path} is not a safetensors file (its header length {length} does not fit the file)")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise GradleakError(f"{what} {path} is not a safetensors file (its header is not valid JSON)") from None
    if not isinstance(header, dict):
        raise GradleakError(f"{what} {path} is not a safetensors file (its header is not a JSON object)")
    data_size = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise GradleakError(f"{what} {path} has a damaged header (__metadata__ must map names to strings)")
            continue
        _check_entry(path, what, name, entry, data_size, dtypes)
    return header, size


def _check_entry(path: Path, what: str, name: str, entry: Any, data_size: int, dtypes: frozenset[str] | set[str]) -> None:
    ok = (
        isinstance(entry, dict)
        and entry.get("dtype") in dtypes
        and isinstance(entry.get("shape"), list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in entry["shape"])
        and isinstance(entry.get("data_offsets"), list)
        and len(entry["data_offsets"]) == 2
        and all(isinstance(o, int) and not isinstance(o, bool) for o in entry["data_offsets"])
    )
    if not ok:
        raise GradleakError(f"{what} {path} has a damaged header entry for tensor {name!r} (dtype, shape or offsets)")
    start, end = entry["data_offsets"]
    if not 0 <= start <= end <= data_size:
        raise GradleakError(f"{what} {path} is truncated or damaged: tensor {name!r} lies past the end of the file")
