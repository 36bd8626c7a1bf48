"""Captured updates on disk: a faithful round trip, and one clear line for every bad file."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

import gradleak
from gradleak.errors import GradleakError
from gradleak.models import build_model
from gradleak.types import SharedUpdate


def small_update() -> SharedUpdate:
    torch.manual_seed(0)
    model = build_model("lenetmnist", channels=1, image_size=28, num_classes=10)
    images = torch.rand(2, 1, 28, 28)
    update = gradleak.client_update(model, images, [3, 7], scenario="fedavg", local_steps=2, local_lr=0.05)
    return gradleak.defend(update, "prune:0.2")


def test_round_trip_keeps_every_field_and_value(tmp_path: Path):
    update = small_update()
    path = gradleak.save_update(update, tmp_path / "u.safetensors")
    back = gradleak.load_update(path)
    assert all(torch.equal(a, b) for a, b in zip(update.tensors, back.tensors))
    for field in ("kind", "batch_size", "input_shape", "num_classes", "local_steps", "local_lr", "defenses",
                  "clients", "parameter_names", "training", "local_batch_size"):
        assert getattr(back, field) == getattr(update, field), field


def test_save_never_overwrites_without_asking(tmp_path: Path):
    path = tmp_path / "u.safetensors"
    path.write_text("precious")
    with pytest.raises(GradleakError, match="already exists"):
        gradleak.save_update(small_update(), path)
    assert path.read_text() == "precious"


def _write_raw(path: Path, header: bytes, data: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"abc") and p, "not a safetensors file"),
        (lambda p: p.write_bytes(b"\xff" * 64) and p, "header length"),
        (lambda p: _write_raw(p, b"{not json"), "not valid JSON"),
        (lambda p: _write_raw(p, b"[" * 200_000 + b"]" * 200_000), "not valid JSON"),
        (lambda p: _write_raw(p, json.dumps({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()), "past the end"),
        (lambda p: _write_raw(p, json.dumps({"t": {"dtype": "OBJ", "shape": [1], "data_offsets": [0, 1]}}).encode(), b"x"), "damaged header entry"),
        (lambda p: _write_raw(p, json.dumps({"__metadata__": {"format": "other"}}).encode()), "not a gradleak update"),
    ],
)
def test_bad_files_are_one_clear_error(tmp_path: Path, make, message):
    path = make(tmp_path / "bad.safetensors")
    with pytest.raises(GradleakError, match=message) as error:
        gradleak.load_update(path)
    assert "\n" not in str(error.value)


def test_a_pickle_is_refused_without_running_it(tmp_path: Path):
    path = tmp_path / "u.pt"
    torch.save({"tensors": [torch.ones(2)]}, path)
    with pytest.raises(GradleakError, match="not a safetensors file"):
        gradleak.load_update(path)


def test_damaged_metadata_names_the_field(tmp_path: Path):
    from safetensors.torch import save

    description = {"kind": "gradient", "batch_size": "two", "input_shape": [1, 28, 28], "num_classes": 10,
                   "local_steps": 1, "clients": 1, "tensors": 1}
    data = save({"update.00000": torch.ones(3)}, metadata={"format": "gradleak.update", "version": "1",
                                                          "update": json.dumps(description)})
    path = tmp_path / "u.safetensors"
    path.write_bytes(data)
    with pytest.raises(GradleakError, match="'batch_size' must be a whole number"):
        gradleak.load_update(path)


def test_an_update_for_another_model_is_refused(tmp_path: Path):
    path = gradleak.save_update(small_update(), tmp_path / "u.safetensors")
    other = build_model("lenetmnist", channels=1, image_size=28, num_classes=100)
    with pytest.raises(GradleakError, match="shape .* is it the right model"):
        gradleak.load_update(path, model=other)
