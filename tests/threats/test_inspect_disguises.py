"""``inspect-model`` sees through disguises of the imprint block (issue 21): the same block saved as
full-image convolutions, as 3-D tensors, or with one NaN per matrix went unreported, because only
2-D, all-finite tensors were read. Each disguise is written as a real safetensors file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from gradleak.cli.main import main as gradleak_main
from gradleak.data.public import public_images
from gradleak.models import build_model
from gradleak.scenarios import Imprint

pytestmark = pytest.mark.usefixtures("one_torch_thread")
BINS = 64


def _imprint_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("lenet", channels=3, image_size=32, num_classes=10)
    server = Imprint(bins=BINS, public_images=public_images("cifar10", (3, 32, 32))).server_model(model)
    return {k: v.detach().clone().contiguous() for k, v in server.state_dict().items()}


def _as_convolutions(state):
    state["imprint.linear0.weight"] = state["imprint.linear0.weight"].reshape(BINS, 3, 32, 32).contiguous()
    state["imprint.linear1.weight"] = state["imprint.linear1.weight"].reshape(3072, BINS, 1, 1).contiguous()
    return state


def _as_3d(state):
    state["imprint.linear0.weight"] = state["imprint.linear0.weight"].reshape(BINS, 3, 1024).contiguous()
    state["imprint.linear1.weight"] = state["imprint.linear1.weight"].reshape(3, 1024, BINS).contiguous()
    return state


def _one_nan_each(state):
    for key in ("imprint.linear0.weight", "imprint.linear1.weight"):
        state[key] = state[key].clone()
        state[key].view(-1)[17] = float("nan")
    return state


@pytest.mark.parametrize("disguise", [_as_convolutions, _as_3d, _one_nan_each], ids=["conv", "3d", "nan"])
def test_a_disguised_imprint_block_is_still_flagged(disguise, tmp_path: Path, capsys) -> None:
    path = tmp_path / "server.safetensors"
    save_file(disguise(_imprint_state()), str(path))
    assert gradleak_main(["inspect-model", str(path)]) == 1
    out = capsys.readouterr().out
    assert "imprint.linear0.weight: identical-rows" in out, out
    assert "imprint.linear1.weight: identical-columns" in out, out
    assert "do not train this model" in out


def test_the_honest_model_stays_clean_in_every_reading(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    state = build_model("lenet", channels=3, image_size=32, num_classes=10).state_dict()
    path = tmp_path / "honest.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    assert gradleak_main(["inspect-model", str(path)]) == 0, capsys.readouterr().out
