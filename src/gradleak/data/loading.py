"""Public loading API: full dataset on disk, else bundled test samples, else download, else a
one-line error that says how to get the files by hand or how to work offline."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from pathlib import Path

import torch

from gradleak.data.backends import BACKENDS, Backend, Unavailable
from gradleak.data.bundled import (
    BUNDLED_COUNT,
    BUNDLED_SPLIT,
    bundled_samples,
    has_bundled,
    load_bundled,
)
from gradleak.data.images import to_float_tensor
from gradleak.data.specs import PUBLISHED_SIZES, DatasetSpec, check_split, get_spec
from gradleak.errors import GradleakError


def _offline_hint(spec: DatasetSpec) -> str:
    if bundled_samples(spec.name):
        return (
            f"or work offline with --split {BUNDLED_SPLIT} --index 0..{BUNDLED_COUNT - 1} "
            "(bundled samples) or --image PATH"
        )
    return "or use your own picture with --image PATH"


def _unavailable_message(spec: DatasetSpec, split: str, root: Path, exc: Unavailable) -> str:
    where = root.resolve()
    if exc.download_enabled:
        per_url: dict[str, list[str]] = {}
        for url, reason in exc.tried:
            reasons = per_url.setdefault(url, [])
            if reason not in reasons:
                reasons.append(reason)
        tried = "; ".join(f"{url} ({' / '.join(r)})" for url, r in per_url.items())
        status = f"the download failed: tried {tried}"
    else:
        status = "downloading is disabled (--no-download)"
    manual = "; ".join(
        f"download {n.remote.filename} from {' or '.join(n.remote.urls)} and place it at "
        f"{n.dest.resolve()}"
        for n in exc.needed
    )
    return (
        f"{spec.title} {split} split is not available under {where} and {status}. "
        f"To install it by hand: {manual}; {_offline_hint(spec)}"
    )


def _not_bundled(spec: DatasetSpec, split: str, indices: list[int]) -> str:
    """The first clause of the error for indices that neither the bundled samples nor the disk hold:
    the bundled range (the offline fix) comes first, the download details after it."""
    bundled = {index for index, _, _ in bundled_samples(spec.name)}
    if split != BUNDLED_SPLIT or not bundled:
        return ""
    missing = ", ".join(str(i) for i in indices if i not in bundled)
    return (
        f"--index {missing} is not bundled (bundled: {spec.name} test images 0..{BUNDLED_COUNT - 1}, "
        f"offline) and not on disk: use --index 0..{BUNDLED_COUNT - 1}, or get the full split. "
    )


def _prepare(backend: Backend, spec: DatasetSpec, split: str, root: Path, download: bool) -> None:
    try:
        backend.prepare(root, split, download)
    except Unavailable as exc:
        raise GradleakError(_unavailable_message(spec, split, root, exc)) from None


def _as_indices(indices: Sequence[int]) -> list[int]:
    try:
        out = [operator.index(i) for i in indices]
    except TypeError:
        raise GradleakError(f"--index must be whole numbers (got {list(indices)!r})") from None
    if not out:
        raise GradleakError("no --index given: pass at least one sample index")
    return out


def _check_range(spec: DatasetSpec, split: str, indices: list[int], size: int) -> None:
    for i in indices:
        if not 0 <= i < size:
            raise GradleakError(
                f"--index {i} is out of range: {spec.name} {split} has {size} images "
                f"(0..{size - 1})"
            )


def _start(name: str, split: str, root: str | Path) -> tuple[DatasetSpec, Backend, Path]:
    spec = get_spec(name)
    check_split(spec, split)
    return spec, BACKENDS[spec.name], Path(root).expanduser()


def load_samples(
    name: str,
    indices: Sequence[int],
    *,
    split: str = "train",
    root: str | Path = "./data",
    download: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, C, H, W) float32 in [0,1] (like ToTensor, no normalisation) and labels (B,) int64.

    Order: the full dataset under ``root``; else the bundled PNGs for test indices 0..19; else a
    download (when ``download``); else a GradleakError explaining how to get the files.
    """
    spec, backend, root_path = _start(name, split, root)
    wanted = _as_indices(indices)
    if backend.is_local(root_path, split):
        _prepare(backend, spec, split, root_path, download=False)  # verify/extract only
    elif split == BUNDLED_SPLIT and has_bundled(spec.name, wanted):
        images, labels = load_bundled(spec, wanted)
        return to_float_tensor(images), torch.from_numpy(labels)
    else:
        # Refuse an impossible index before downloading hundreds of MB.
        _check_range(spec, split, wanted, PUBLISHED_SIZES[spec.name][split])
        try:
            _prepare(backend, spec, split, root_path, download)
        except GradleakError as error:
            raise GradleakError(_not_bundled(spec, split, wanted) + str(error)) from None
    _check_range(spec, split, wanted, backend.count(root_path, split))
    images, labels = backend.read(root_path, split, wanted)
    return to_float_tensor(images), torch.from_numpy(labels.copy())


def dataset_size(
    name: str, *, split: str = "train", root: str | Path = "./data", download: bool = True
) -> int:
    """Number of samples in a split. A test split served by the bundled samples reports its
    published size (indices >= 20 then need the full dataset)."""
    spec, backend, root_path = _start(name, split, root)
    if backend.is_local(root_path, split):
        _prepare(backend, spec, split, root_path, download=False)
        return backend.count(root_path, split)
    if split == BUNDLED_SPLIT and bundled_samples(spec.name):
        return PUBLISHED_SIZES[spec.name][split]
    _prepare(backend, spec, split, root_path, download)
    return backend.count(root_path, split)


def num_classes(
    name: str, *, root: str | Path = "./data", split: str = "train", download: bool = True
) -> int:
    """Number of classes; for LFW the number of people found on disk (downloading if needed),
    for the others the spec's value (no disk access)."""
    spec, backend, root_path = _start(name, split, root)
    if spec.name != "lfw":
        return spec.num_classes
    _prepare(backend, spec, split, root_path, download and not backend.is_local(root_path, split))
    return backend.num_classes(root_path)
