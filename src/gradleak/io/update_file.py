"""A shared update on disk: its tensors in safetensors, its description as validated JSON metadata.

Never pickle: a captured update is untrusted input. The file names its format and version, and
every field is checked on reading, so a damaged or foreign file is one clear error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from gradleak.errors import GradleakError
from gradleak.io.files import atomic_write
from gradleak.io.tensor_file import read_safetensors_header
from gradleak.types import SharedUpdate

FORMAT = "gradleak.update"
VERSION = 1
_WHAT = "update file"


def save_update(update: SharedUpdate, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``update`` to ``path`` (safetensors tensors plus JSON metadata), atomically.

    Refuses an existing file unless ``overwrite``.
    """
    from safetensors.torch import save

    path = Path(path)
    if path.exists() and not overwrite:
        raise GradleakError(f"{path} already exists: choose another path or pass overwrite=True")
    if not path.parent.is_dir():
        raise GradleakError(f"cannot write {path}: folder {path.parent} does not exist")
    tensors = {f"update.{i:05d}": t.detach().cpu().contiguous() for i, t in enumerate(update.tensors)}
    if update.known_labels is not None:
        tensors["known_labels"] = update.known_labels.detach().cpu().to(torch.int64).contiguous()
    description = {
        "kind": update.kind,
        "batch_size": update.batch_size,
        "input_shape": list(update.input_shape),
        "num_classes": update.num_classes,
        "local_steps": update.local_steps,
        "local_lr": update.local_lr,
        "defenses": list(update.defenses),
        "clients": update.clients,
        "parameter_names": list(update.parameter_names) if update.parameter_names is not None else None,
        "training": update.training,
        "local_batch_size": update.local_batch_size,
        "tensors": len(update.tensors),
    }
    metadata = {"format": FORMAT, "version": str(VERSION), "update": json.dumps(description)}
    data = save(tensors, metadata=metadata)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return path


def load_update(path: str | Path, *, model: torch.nn.Module | None = None) -> SharedUpdate:
    """Read an update written by :func:`save_update`; with ``model``, check it fits that model.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from gradleak.types import SharedUpdate
        >>> update = SharedUpdate((torch.ones(2, 3), torch.zeros(2)), "gradient", 1, (3,), 2)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "u.safetensors"
        >>> _ = save_update(update, path)
        >>> load_update(path).tensors[0].shape
        torch.Size([2, 3])
    """
    from safetensors.torch import load

    path = Path(path)
    header, _ = read_safetensors_header(path, what=_WHAT)
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise GradleakError(
            f"{_WHAT} {path} is a safetensors file but not a gradleak update (no 'format: {FORMAT}' metadata): "
            "write it with gradleak.save_update"
        )
    if meta.get("version") != str(VERSION):
        raise GradleakError(f"{_WHAT} {path} has format version {meta.get('version')!r}; this gradleak reads version {VERSION}")
    try:
        description = json.loads(meta.get("update", ""))
    except (json.JSONDecodeError, RecursionError):
        raise GradleakError(f"{_WHAT} {path} has damaged metadata (the 'update' entry is not JSON)") from None
    fields = _validated(description, path)
    names = [n for n in header if n != "__metadata__"]
    expected = [f"update.{i:05d}" for i in range(fields["tensors"])]
    extra = sorted(set(names) - set(expected) - {"known_labels"})
    missing = [n for n in expected if n not in names]
    if missing or extra:
        problem = f"missing tensor {missing[0]!r}" if missing else f"unexpected tensor {extra[0]!r}"
        raise GradleakError(f"{_WHAT} {path} is damaged: {problem} (metadata says {fields['tensors']} tensors)")
    try:
        tensors = load(path.read_bytes())
    except Exception as error:  # the library's own errors for anything the header check missed
        raise GradleakError(f"{_WHAT} {path} could not be read: {error}") from None
    shared = tuple(tensors[n] for n in expected)
    for name, t in zip(expected, shared):
        if not t.is_floating_point():
            raise GradleakError(f"{_WHAT} {path}: tensor {name!r} is {t.dtype}, an update holds floating-point values")
    known = tensors.get("known_labels")
    update = SharedUpdate(
        tensors=shared,
        kind=fields["kind"],
        batch_size=fields["batch_size"],
        input_shape=tuple(fields["input_shape"]),
        num_classes=fields["num_classes"],
        local_steps=fields["local_steps"],
        local_lr=fields["local_lr"],
        known_labels=known,
        defenses=tuple(fields["defenses"]),
        clients=fields["clients"],
        parameter_names=tuple(fields["parameter_names"]) if fields["parameter_names"] is not None else None,
        training=fields["training"],
        local_batch_size=fields["local_batch_size"],
    )
    if model is not None:
        check_update_fits(update, model, source=str(path))
    return update


def check_update_fits(update: SharedUpdate, model: torch.nn.Module, *, source: str = "the update") -> None:
    """One clear error when the update's tensors do not match the model's (sent) parameters."""
    named = dict(model.named_parameters())
    if update.parameter_names is not None:
        unknown = [n for n in update.parameter_names if n not in named]
        if unknown:
            raise GradleakError(f"{source} names parameter {unknown[0]!r}, which the model does not have: is it the right model?")
        params = [(n, named[n]) for n in update.parameter_names]
    else:
        params = list(named.items())
    if len(params) != len(update.tensors):
        raise GradleakError(
            f"{source} holds {len(update.tensors)} tensors but the model has {len(params)} parameters: "
            "is it the right model?"
        )
    for (name, p), t in zip(params, update.tensors):
        if tuple(p.shape) != tuple(t.shape):
            raise GradleakError(
                f"{source}: tensor for {name!r} has shape {tuple(t.shape)} but the model's parameter has "
                f"{tuple(p.shape)}: is it the right model?"
            )


def _validated(d: Any, path: Path) -> dict[str, Any]:
    def bad(field: str, want: str) -> GradleakError:
        return GradleakError(f"{_WHAT} {path} has damaged metadata: {field!r} must be {want}")

    if not isinstance(d, dict):
        raise bad("update", "a JSON object")

    def integer(field: str, minimum: int) -> int:
        value = d.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise bad(field, f"a whole number >= {minimum}")
        return value

    out: dict[str, Any] = {}
    if d.get("kind") not in ("gradient", "weight_delta"):
        raise bad("kind", "'gradient' or 'weight_delta'")
    out["kind"] = d["kind"]
    out["batch_size"] = integer("batch_size", 1)
    out["num_classes"] = integer("num_classes", 2)
    out["local_steps"] = integer("local_steps", 1)
    out["clients"] = integer("clients", 1)
    out["tensors"] = integer("tensors", 1)
    shape = d.get("input_shape")
    if not isinstance(shape, list) or not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise bad("input_shape", "a list of positive whole numbers")
    out["input_shape"] = shape
    lr = d.get("local_lr")
    if lr is not None and (not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0):
        raise bad("local_lr", "a positive number or null")
    out["local_lr"] = float(lr) if lr is not None else None
    defenses = d.get("defenses", [])
    if not isinstance(defenses, list) or not all(isinstance(s, str) for s in defenses):
        raise bad("defenses", "a list of defense specs")
    out["defenses"] = defenses
    names = d.get("parameter_names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(s, str) for s in names) or len(names) != out["tensors"]):
        raise bad("parameter_names", "null or one parameter name per tensor")
    out["parameter_names"] = names
    training = d.get("training")
    if training is not None and not isinstance(training, bool):
        raise bad("training", "true, false or null")
    out["training"] = training
    local_batch = d.get("local_batch_size")
    if local_batch is not None:
        out["local_batch_size"] = integer("local_batch_size", 1)
    else:
        out["local_batch_size"] = None
    return out
