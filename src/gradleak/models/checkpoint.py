"""Model checkpoints: written by ``gradleak train``, read by ``--weights``, never unpickled.

A checkpoint is untrusted input (a file someone sends you), so reading it never runs code:

* **safetensors** (what ``gradleak train`` writes by default): a JSON header and raw tensor bytes;
  gradleak's metadata (architecture, input shape, class count, dataset, epochs, test accuracy) sits
  in the header's ``__metadata__`` as strings.
* **PyTorch** (``torch.save``, zip or legacy format; written for ``--out *.pt``/``*.pth``): read with
  ``torch.load(weights_only=True)``, whose restricted unpickler refuses any global that is not a
  tensor or plain container, so a pickle with a malicious ``__reduce__`` is rejected, not run.
  Either a bare ``state_dict`` or ``{"state_dict": ..., "gradleak": {metadata}}``.

The file is read once into memory; its sha256 is computed from the same bytes that are parsed, so
the recorded checksum is the checksum of what was loaded. Every problem is one
:class:`~gradleak.errors.GradleakError` line that names the problem and the fix.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from gradleak.models import build_model
    >>> model = build_model("lenetmnist", channels=1, image_size=28, num_classes=10)
    >>> path = Path(tempfile.mkdtemp()) / "m.safetensors"
    >>> digest = save_checkpoint(path, model, {"architecture": "lenetmnist", "channels": 1,
    ...                                        "image_size": 28, "num_classes": 10})
    >>> state, info = read_checkpoint(path)
    >>> info.sha256 == digest, info.architecture, info.num_classes, info.format
    (True, 'lenetmnist', 10, 'safetensors')
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import stat
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.torch_version import TorchVersion

from gradleak.errors import GradleakError
from gradleak.io.tensor_file import MAX_HEADER_BYTES

FORMAT_TAG = "gradleak.checkpoint"
FORMAT_VERSION = "1"
TORCH_SUFFIXES = (".pt", ".pth")
# Metadata keys whose values are numbers (stored as strings in safetensors' header).
_INT_KEYS = ("channels", "image_size", "num_classes", "epochs", "train_size", "test_size", "seed", "batch_size")
_FLOAT_KEYS = ("accuracy", "lr", "seconds")
_TRAIN_HINT = "gradleak train --dataset digits --model MODEL --epochs 5 --out model.safetensors"


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about itself, plus where it came from and its checksum."""

    path: str
    sha256: str
    format: str  # "safetensors" | "torch"
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("architecture")

    @property
    def channels(self) -> int | None:
        return self.metadata.get("channels")

    @property
    def image_size(self) -> int | None:
        return self.metadata.get("image_size")

    @property
    def num_classes(self) -> int | None:
        return self.metadata.get("num_classes")

    def describe(self) -> str:
        """A short human description, e.g. ``lenet, 3×32×32, 10 classes, digits, 5 epochs, 91.2% test accuracy``."""
        m = self.metadata
        parts = [m.get("architecture") or "unknown model"]
        if self.channels and self.image_size:
            parts.append(f"{self.channels}×{self.image_size}×{self.image_size}")
        if self.num_classes:
            parts.append(f"{self.num_classes} classes")
        if m.get("dataset"):
            parts.append(f"trained on {m['dataset']}")
        if m.get("epochs") is not None:
            parts.append(f"{m['epochs']} epoch(s)")
        if m.get("accuracy") is not None:
            parts.append(f"{m['accuracy']:.1%} test accuracy")
        return ", ".join(parts)

    def as_record(self) -> dict[str, Any]:
        """What a run records about its weights (config.json / metrics.json)."""
        return {"weights": self.path, "weights_sha256": self.sha256, "weights_format": self.format,
                "weights_metadata": dict(self.metadata)}


# --------------------------------------------------------------------------- writing


def _metadata_strings(metadata: Mapping[str, Any]) -> dict[str, str]:
    """Metadata as plain ``str`` (not a ``str`` subclass such as ``torch.__version__``'s TorchVersion,
    which a weights-only unpickler, gradleak's own included, refuses as a foreign global)."""
    out = {"format": FORMAT_TAG, "format_version": FORMAT_VERSION}
    for key, value in metadata.items():
        if value is None:
            continue
        out[str(key)] = str(value) if isinstance(value, str) else json.dumps(value)
    return out


def checkpoint_bytes(model: nn.Module, metadata: Mapping[str, Any], *, fmt: str = "safetensors") -> bytes:
    """The checkpoint file's content for ``model``'s state (parameters and buffers) and ``metadata``."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    strings = _metadata_strings(metadata)
    if fmt == "safetensors":
        from safetensors.torch import save

        return save(state, metadata=strings)
    if fmt == "torch":
        buffer = io.BytesIO()
        torch.save({"state_dict": state, "gradleak": strings}, buffer)
        return buffer.getvalue()
    raise ValueError(f"unknown checkpoint format {fmt!r}")


def format_for_path(path: str | Path) -> str:
    """``torch`` for ``*.pt``/``*.pth``, else ``safetensors``."""
    return "torch" if Path(path).suffix.lower() in TORCH_SUFFIXES else "safetensors"


def check_writable(path: str | Path, *, overwrite: bool) -> Path:
    """Refuse an existing file (unless ``overwrite``), a folder, or an unwritable place; before any work."""
    path = Path(path)
    if path.is_dir():
        raise GradleakError(f"--out {path} is a folder: give a file name, e.g. {path / 'model.safetensors'}")
    if path.exists() and not overwrite:
        raise GradleakError(f"checkpoint {path} already exists: choose another --out or pass --overwrite")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise GradleakError(f"cannot write to {parent} (for --out {path}): choose a writable --out")
    return path


def save_checkpoint(path: str | Path, model: nn.Module, metadata: Mapping[str, Any], *,
                    overwrite: bool = False, fmt: str | None = None) -> str:
    """Write ``model``'s checkpoint atomically; returns its sha256.

    The bytes go to a temporary file in the same folder, are flushed to disk, and only then take
    the final name: without ``overwrite`` by a hard link, which fails if the name exists (so a file
    that appeared meanwhile is not clobbered either); with it by an atomic rename. An interrupted
    write leaves no partial checkpoint.
    """
    path = check_writable(path, overwrite=overwrite)
    data = checkpoint_bytes(model, metadata, fmt=fmt or format_for_path(path))
    created = []
    parent = path.absolute().parent
    while not parent.exists():
        created.append(parent)
        parent = parent.parent
    try:
        path.absolute().parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_partials(path)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.partial-{os.getpid()}-", dir=path.absolute().parent)
    except OSError as error:
        raise GradleakError(f"cannot create {path}: {error.strerror}; choose another --out") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise GradleakError(f"checkpoint {path} already exists: choose another --out or pass --overwrite") from None
            except OSError:  # a file system without hard links: fall back to a checked rename
                if path.exists():
                    raise GradleakError(f"checkpoint {path} already exists: choose another --out or pass --overwrite") from None
                os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break
        if isinstance(error, OSError):
            raise GradleakError(f"could not write checkpoint {path}: {error}; nothing was kept") from None
        raise
    tmp.unlink(missing_ok=True)
    return hashlib.sha256(data).hexdigest()


def _remove_dead_partials(path: Path) -> None:
    """Delete the temporary files of writes to ``path`` whose process died (kill -9 mid-write);
    a live writer's file (its pid in the name) is left alone."""
    for partial in path.absolute().parent.glob(f".{path.name}.partial-*"):
        pid = partial.name.removeprefix(f".{path.name}.partial-").split("-", 1)[0]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            partial.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours (PermissionError)
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- reading


def _read_bytes(path: Path) -> bytes:
    """The file's bytes; only a regular file, and only when it fits in memory (checked before reading:
    ``/dev/zero`` never ends and a FIFO blocks the open until someone writes)."""
    from gradleak.memory import require_memory

    try:
        status = path.stat()
        if stat.S_ISDIR(status.st_mode):
            raise IsADirectoryError
        if not stat.S_ISREG(status.st_mode):
            raise GradleakError(f"--weights {path} is not a regular file (a device, pipe or socket): "
                                "give a checkpoint file written by gradleak train or torch.save")
        # The bytes, and about as much again for the tensors parsed from them.
        require_memory(2 * status.st_size, what=f"reading --weights {path} ({status.st_size:,} bytes)",
                       fix="is it really a checkpoint? give a smaller file or free memory")
        with path.open("rb") as handle:
            return handle.read(status.st_size)
    except FileNotFoundError:
        raise GradleakError(f"--weights {path} does not exist: give a checkpoint file (make one with {_TRAIN_HINT})") from None
    except IsADirectoryError:
        raise GradleakError(f"--weights {path} is a folder, not a checkpoint file: give the .safetensors/.pt file") from None
    except OSError as error:
        raise GradleakError(f"cannot read --weights {path}: {error.strerror}") from None


def _safetensors_header(data: bytes, path: Path) -> dict[str, Any] | None:
    """The parsed header if ``data`` is laid out as safetensors (u64 LE length, then JSON), else None."""
    if len(data) < 10:
        return None
    (length,) = struct.unpack("<Q", data[:8])
    if not 2 <= length <= len(data) - 8 or data[8:9] != b"{":
        return None
    if length > MAX_HEADER_BYTES:
        return None
    try:
        header = json.loads(data[8 : 8 + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    except RecursionError:  # a header nested thousands of levels deep: no real file is
        raise GradleakError(f"--weights {path} is a damaged safetensors file (its JSON header is nested absurdly deep): "
                            "copy it again or re-create it with gradleak train") from None
    return header if isinstance(header, dict) else None


def _looks_like_torch(data: bytes) -> bool:
    # torch.save's zip format (default since 1.6) or the legacy pickle format (protocol 2+).
    return data[:4] == b"PK\x03\x04" or data[:1] == b"\x80"


def _parse_metadata(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        if key in ("format", "format_version"):
            continue
        key = _printable(str(key))
        if isinstance(value, str):  # the file's text reaches the terminal: no escape sequences
            value = _printable(value)
        if isinstance(value, str) and (key in _INT_KEYS or key in _FLOAT_KEYS):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                continue
        if key in _INT_KEYS and not (isinstance(value, int) and not isinstance(value, bool)):
            continue
        if key in _FLOAT_KEYS and not isinstance(value, (int, float)):
            continue
        out[str(key)] = value
    return out


def _printable(text: str) -> str:
    """``text`` without control characters (ANSI escapes, carriage returns, bells) from a file."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def read_checkpoint(path: str | Path, *, expected_sha256: str | None = None) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    """Read a checkpoint (safetensors or ``torch.load(weights_only=True)``) without running any code.

    Returns the state dict and a :class:`CheckpointInfo`. ``expected_sha256`` (hex), when given,
    must match the file's checksum.
    """
    path = Path(path)
    data = _read_bytes(path)
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256.strip().lower():
        raise GradleakError(
            f"--weights {path} has sha256 {digest}, not the expected {expected_sha256}: "
            "the file changed or is not the checkpoint you meant; give the right file or drop --weights-sha256"
        )
    if not data:
        raise GradleakError(f"--weights {path} is empty: give a checkpoint written by {_TRAIN_HINT}")
    header = _safetensors_header(data, path)
    if header is None and len(data) >= 9 and data[8:9] == b"{" and struct.unpack("<Q", data[:8])[0] > len(data) - 8:
        raise GradleakError(f"--weights {path} is a truncated safetensors file (its header says it is longer): "
                            "copy it again or re-create it with gradleak train")
    if header is not None:
        state, metadata = _load_safetensors(path, data, header)
        fmt = "safetensors"
    elif _looks_like_torch(data):
        state, metadata = _load_torch(path, data)
        fmt = "torch"
    else:
        raise GradleakError(
            f"--weights {path} is neither a safetensors file nor a PyTorch checkpoint: give a file written by "
            f"{_TRAIN_HINT} or by torch.save(model.state_dict(), PATH)"
        )
    if not state:
        raise GradleakError(f"--weights {path} holds no tensors: give a checkpoint of a model's state_dict")
    return state, CheckpointInfo(path=str(path.resolve()), sha256=digest, format=fmt, metadata=_parse_metadata(metadata))


def _load_safetensors(path: Path, data: bytes, header: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        from safetensors.torch import load
    except ImportError:  # pragma: no cover - a declared dependency
        raise GradleakError("reading .safetensors checkpoints needs safetensors: pip install safetensors") from None
    try:
        state = load(data)
    except Exception as error:  # safetensors raises its own SafetensorError (and others) on corrupt files
        raise GradleakError(
            f"--weights {path} is a damaged safetensors file ({' '.join(str(error).split())[:160]}): "
            "copy it again or re-create it with gradleak train"
        ) from None
    metadata = header.get("__metadata__")
    return state, dict(metadata) if isinstance(metadata, dict) else {}


def _load_torch(path: Path, data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it was not written with
            warnings.simplefilter("ignore")
            # TorchVersion: a str subclass that gradleak before issue 21 wrote into .pt metadata.
            with torch.serialization.safe_globals([TorchVersion]):
                obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = " ".join(str(error).split())
        if "Unsupported global" in reason or "weights_only" in reason.lower():
            raise GradleakError(
                f"--weights {path} is a pickle that would run code or build objects other than tensors "
                "when loaded; gradleak never executes checkpoint code (torch.load weights_only=True): "
                "re-save only the weights, e.g. torch.save(model.state_dict(), PATH), or use safetensors"
            ) from None
        raise GradleakError(f"--weights {path} is not a readable PyTorch checkpoint ({reason[:160]}): "
                            "copy it again or re-save it with torch.save(model.state_dict(), PATH)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError) as error:
        reason = " ".join(str(error).split())[:160]
        raise GradleakError(f"--weights {path} is a damaged PyTorch checkpoint ({reason}): "
                            "copy it again or re-save it with torch.save(model.state_dict(), PATH)") from None
    metadata: dict[str, Any] = {}
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        raw = obj.get("gradleak")
        metadata = {str(k): str(v) if isinstance(v, str) else v for k, v in raw.items()} if isinstance(raw, Mapping) else {}
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise GradleakError(
            f"--weights {path} holds a {type(obj).__name__}, not a state dict of named tensors: "
            "save the model's weights with torch.save(model.state_dict(), PATH)"
        )
    return dict(obj), metadata


# --------------------------------------------------------------------------- validating and loading


def _shape(shape: torch.Size | tuple[int, ...]) -> str:
    return "×".join(str(s) for s in shape) or "scalar"


def check_fits(info: CheckpointInfo, *, model_name: str, channels: int, image_size: int, num_classes: int | None,
               dataset: str, size_matters: bool = True) -> None:
    """Compare what the checkpoint says it is with the run's model, input shape and class count
    (``num_classes`` None: not checked yet). Checkpoints without metadata are checked by
    :func:`load_into` (names and shapes) instead."""
    name = Path(info.path).name
    if info.architecture is not None and info.architecture != model_name:
        raise GradleakError(
            f"--weights {name} is a {info.architecture} checkpoint, not {model_name}: drop --model "
            f"(the checkpoint's model is used) or pass --model {info.architecture}"
        )
    if info.channels is not None and info.image_size is not None and (
        info.channels != channels or (size_matters and info.image_size != image_size)
    ):
        want = f"{info.channels}×{info.image_size}×{info.image_size}"
        raise GradleakError(
            f"--weights {name} is for {want} inputs but {dataset} has {channels}×{image_size}×{image_size}: "
            f"attack {want} images or train a checkpoint for {dataset} with gradleak train --dataset {dataset} "
            f"(or --dataset digits --model {_model_for(channels, image_size)})"
        )
    if num_classes is not None and info.num_classes is not None and info.num_classes != num_classes:
        raise GradleakError(
            f"--weights {name} has {info.num_classes} classes but this run uses {num_classes}: drop --num-classes "
            f"(the checkpoint's count is used) or train a checkpoint with {num_classes} classes"
        )


def _model_for(channels: int, image_size: int) -> str:
    from gradleak.models import default_model

    return default_model(channels, image_size)


def check_state_fits(model: nn.Module, state: Mapping[str, torch.Tensor], info: CheckpointInfo, *,
                     model_name: str) -> None:
    """Every name and shape of ``state`` against ``model`` (a meta-device skeleton will do, so a
    checkpoint whose metadata claims 10⁹ classes is refused before that model is allocated)."""
    name = Path(info.path).name
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        details = []
        if wrong:
            k, theirs, ours = wrong[0]
            details.append(f"{k} is {_shape(theirs)} in the checkpoint but {_shape(ours)} in {model_name}"
                           + (f" (and {len(wrong) - 1} more shapes differ)" if len(wrong) > 1 else ""))
        if missing:
            details.append(f"{len(missing)} tensor(s) of {model_name} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unknown tensor(s) (e.g. {unexpected[0]})")
        raise GradleakError(
            f"--weights {name} does not fit model {model_name}: {'; '.join(details)}: it was saved for another "
            "architecture, input shape or class count; pass the matching --model/--num-classes or train one "
            f"with gradleak train --model {model_name}"
        )


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], info: CheckpointInfo, *, model_name: str) -> None:
    """Copy ``state`` into ``model`` after checking every name and shape (one line on a mismatch).

    Tensors take the model's dtypes first (float8/bfloat16/integer checkpoints load as float32),
    then are checked for non-finite values."""
    check_state_fits(model, state, info, model_name=model_name)
    own = model.state_dict()
    converted = {k: v.to(own[k].dtype) for k, v in state.items()}
    for key, tensor in converted.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise GradleakError(f"--weights {Path(info.path).name} holds non-finite values in {key} (as "
                                f"{str(own[key].dtype).removeprefix('torch.')}): the training diverged; re-train it")
    model.load_state_dict(converted, strict=True)
