"""The analytic conv solve on updates that carry nothing (issue 21): a run, never an OverflowError.

``--defense prune:1`` zeroes every gradient entry, and integer, boolean or huge (x1e30) checkpoint
weights saturate the sigmoids so that the conv gradients vanish; balancing the blocks of the
least-squares system by 1/norm then overflowed (``OverflowError`` at ``analytic.py``). A block that
carries nothing now drops out and the run finishes with its metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gradleak.cli.main import main as gradleak_main
from gradleak.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RUN = ["run", "--dataset", "mnist", "--split", "test", "--index", "0", "--iters", "5", "--quiet"]


def _finished(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    code = gradleak_main([*argv, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err + captured.out
    return json.loads((out / "metrics.json").read_text())


def test_prune_everything_is_one_line_not_a_traceback(tmp_path: Path, capsys) -> None:
    # An all-zero update carries nothing to invert: refused in one line (it was an OverflowError).
    code = gradleak_main([*RUN, "--defense", "prune:1", "--attack", "analytic", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "every value of the shared update is zero" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["int", "bool", "huge"])
def test_degenerate_checkpoint_weights_run(kind: str, tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    state = build_model("lenetmnist", channels=1, image_size=28, num_classes=10).state_dict()
    convert = {"int": lambda v: v.round().to(torch.int64), "bool": lambda v: v > 0, "huge": lambda v: v * 1e30}[kind]
    path = tmp_path / f"{kind}.pt"
    torch.save({k: convert(v) for k, v in state.items()}, path)
    metrics = _finished([*RUN, "--weights", str(path)], tmp_path / "run", capsys)
    assert metrics["weights_format"] == "torch"
