"""The tensors of a checkpoint, read a slice at a time: memory bounded by a chunk, not the file.

``inspect-model`` on a 1.6 GB checkpoint used 8 GB (issue 21): the whole file was loaded, then
each tensor copied to float64. A :class:`CheckpointTensors` knows every tensor's name, shape and
dtype from the file's index and reads rows on demand: safetensors by positioned reads of only
the bytes asked for (its header checked first), a torch zip checkpoint memory-mapped
(``torch.load(weights_only=True, mmap=True)``: pages are read as rows are touched). Nothing is
unpickled beyond what ``weights_only`` allows.

Example:
    >>> import torch
    >>> source = CheckpointTensors.of({"w": torch.arange(6.0).reshape(3, 2)})
    >>> source.names(), source.shape("w"), source.is_float("w")
    (['w'], (3, 2), True)
    >>> source.rows("w", 1, 3).tolist()
    [[2.0, 3.0], [4.0, 5.0]]
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gradleak.errors import GradleakError
from gradleak.io.tensor_file import read_safetensors_header

_CHECKPOINT_KINDS = "give a checkpoint (.pt, .pth, .safetensors)"


class CheckpointTensors:
    """Named tensors: shapes and dtypes up front, their rows (slices of dimension 0) on demand."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], floats: dict[str, bool], reader: Any, description: str) -> None:
        self._shapes, self._floats, self._reader = shapes, floats, reader
        self.description = description  # e.g. "model.safetensors (12 tensors)"

    @classmethod
    def of(cls, state: Mapping[str, torch.Tensor]) -> CheckpointTensors:
        """Tensors already in memory (a model's state dict)."""
        tensors = dict(state)
        return cls({n: tuple(t.shape) for n, t in tensors.items()}, {n: t.is_floating_point() for n, t in tensors.items()},
                   lambda name, start, stop: tensors[name][start:stop], f"{len(tensors)} tensors")

    @classmethod
    def open(cls, path: str | Path) -> CheckpointTensors:
        """A checkpoint file: safetensors, or a torch state dict readable with ``weights_only=True``."""
        path = Path(path)
        if not path.exists():
            raise GradleakError(f"model file {path} does not exist: {_CHECKPOINT_KINDS}")
        if not path.is_file():
            raise GradleakError(f"{path} is not a file: {_CHECKPOINT_KINDS}")
        with path.open("rb") as f:
            head = f.read(9)
        if path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{"):
            return _open_safetensors(path)
        return _open_torch(path)

    def __len__(self) -> int:
        return len(self._shapes)

    def names(self) -> list[str]:
        """In the file's order (for a state dict: layer order)."""
        return list(self._shapes)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def is_float(self, name: str) -> bool:
        return self._floats[name]

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """``tensor[start:stop]`` (a 0-D tensor whole), read from the file now."""
        if not self._shapes[name]:
            return self._reader(name, None, None)
        return self._reader(name, start, stop)

    def tensor(self, name: str) -> torch.Tensor:
        return self.rows(name, 0, self._shapes[name][0] if self._shapes[name] else 0)


# safetensors dtype names and their torch dtypes (float8 too: such checkpoints exist and are read).
_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64, "I32": torch.int32,
    "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


def _open_safetensors(path: Path) -> CheckpointTensors:
    """Read rows with positioned reads of exactly their bytes: no mapping, no whole tensor. (The
    library's ``pread`` backend reads a whole tensor per slice: 0.36 s for 16 rows of 160 MB.)"""
    header, _ = read_safetensors_header(path, what="model file", dtypes=set(_DTYPES))
    with path.open("rb") as f:
        data_start = 8 + struct.unpack("<Q", f.read(8))[0]
    entries = {name: entry for name, entry in header.items() if name != "__metadata__"}
    names = sorted(entries, key=lambda n: entries[n]["data_offsets"][0])  # the file's order
    shapes = {n: tuple(entries[n]["shape"]) for n in names}
    for name in names:
        start, end = entries[name]["data_offsets"]
        itemsize = torch.empty((), dtype=_DTYPES[entries[name]["dtype"]]).element_size()
        if end - start != math.prod(shapes[name]) * itemsize:
            raise GradleakError(f"model file {path} is damaged: tensor {name!r} has {end - start} bytes for shape "
                                f"{list(shapes[name])}: give an intact checkpoint")

    def read(name: str, first: int | None, stop: int | None) -> torch.Tensor:
        entry, shape = entries[name], shapes[name]
        dtype = _DTYPES[entry["dtype"]]
        row = math.prod(shape[1:]) * torch.empty((), dtype=dtype).element_size()
        first, stop = (0, shape[0] if shape else 1) if first is None else (first, stop)
        buffer = bytearray(row * (stop - first) if shape else entry["data_offsets"][1] - entry["data_offsets"][0])
        with path.open("rb") as f:
            f.seek(data_start + entry["data_offsets"][0] + first * row)
            if f.readinto(buffer) != len(buffer):
                raise GradleakError(f"model file {path} is truncated: tensor {name!r} ends early")
        values = torch.frombuffer(buffer, dtype=dtype) if buffer else torch.empty(0, dtype=dtype)
        return values.reshape((stop - first, *shape[1:]) if shape else ())

    floats = {n: _DTYPES[entries[n]["dtype"]].is_floating_point for n in names}
    return CheckpointTensors(shapes, floats, read, f"{path} ({len(names)} tensors)")


def _open_torch(path: Path) -> CheckpointTensors:
    try:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            # The legacy (non-zip) torch format cannot be mapped: read it whole, as before.
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - pickle errors, zip errors, disallowed globals
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise GradleakError(
            f"{path} is neither a safetensors file nor a torch checkpoint loadable with weights_only=True "
            f"({first[:160]}): save the model's state_dict with torch.save or safetensors"
        ) from None
    tensors = _flatten(loaded)
    if not tensors:
        raise GradleakError(f"{path} holds no tensors: give a saved state_dict")
    source = CheckpointTensors.of(tensors)
    source.description = f"{path} ({len(tensors)} tensors)"
    return source


def _flatten(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten a (nested) state dict: {"state_dict": {...}} and {"model": {...}} are common."""
    if isinstance(obj, torch.Tensor):
        return {prefix or "tensor": obj}
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, (torch.Tensor, Mapping)):
                out.update(_flatten(value, name))
    return out


__all__ = ["CheckpointTensors"]
