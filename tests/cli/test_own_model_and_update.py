"""``gradleak run`` with the user's own model file and with a captured update, as a user runs it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch

import gradleak
from gradleak.cli.main import main as gradleak_main
from gradleak.data import load_samples

MODEL_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn

    class SigmoidNet(nn.Module):
        # A LeNet-like net of the user's own: Conv2d -> Sigmoid twice, then a linear head.
        def __init__(self, channels, size, classes):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(channels, 8, 5, stride=2, padding=2), nn.Sigmoid(),
                                      nn.Conv2d(8, 8, 5, stride=1, padding=2), nn.Sigmoid())
            self.head = nn.Linear(8 * (size // 2) ** 2, classes)

        def forward(self, x):
            return self.head(self.body(x).flatten(1))

    def build(num_classes, input_shape):
        torch.manual_seed(3)
        return SigmoidNet(input_shape[0], input_shape[1], num_classes)

    def broken(num_classes, input_shape):
        return {}[num_classes]

    def nothing(num_classes, input_shape):
        return "a model"
    """
)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "mymodels.py"
    path.write_text(MODEL_FILE)
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = gradleak_main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_own_model_file_reconstructs_a_bundled_image(model_file: Path, tmp_path: Path, capsys):
    code, out, err = run(["run", "--model", f"{model_file}:build", "--dataset", "cifar10", "--split", "test",
                          "--index", "4", "--out", tmp_path / "r", "--quiet"], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["model"] == f"{model_file}:build"
    assert metrics["psnr"] > 30


@pytest.mark.parametrize(
    "spec, message",
    [
        ("{dir}/missing.py:build", "missing.py does not exist"),
        ("{dir}/mymodels.py:nope", "has no 'nope'; callables there: .*build"),
        ("{dir}/mymodels.py:broken", "the factory raised KeyError: 10 \\(mymodels.py line \\d+\\)"),
        ("{dir}/mymodels.py:nothing", "the factory returned 'str', not a torch.nn.Module"),
        ("{dir}/syntax.py:build", "syntax.py line 1: syntax error"),
        ("no_such_package.models:build", "no module named 'no_such_package'"),
        ("{dir}/mymodels.py:", "write FILE.py:FACTORY"),
    ],
)
def test_every_bad_model_file_is_one_line(model_file: Path, tmp_path: Path, capsys, spec: str, message: str):
    (tmp_path / "syntax.py").write_text("def build(:\n")
    code, out, err = run(["run", "--model", spec.format(dir=tmp_path), "--dataset", "cifar10", "--split", "test",
                          "--index", "0", "--out", tmp_path / "r", "--quiet"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    import re

    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "r").exists()


@pytest.fixture
def captured(model_file: Path, tmp_path: Path) -> tuple[Path, Path, int]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("mymodels_for_capture", model_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build(10, (3, 32, 32))
    images, labels = load_samples("cifar10", [6], split="test")
    update = gradleak.client_update(model, images, labels)
    path = gradleak.save_update(update, tmp_path / "captured.safetensors")
    reference = tmp_path / "private.png"
    from PIL import Image

    Image.fromarray((images[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(reference)
    return path, reference, int(labels[0])


def test_captured_update_without_private_data(captured, model_file: Path, tmp_path: Path, capsys):
    path, _, label = captured
    code, out, err = run(["run", "--update", path, "--model", f"{model_file}:build", "--out", tmp_path / "r", "--quiet"], capsys)
    assert code == 0, err
    assert "not scored" in out
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["scored"] is False and "psnr" not in metrics
    assert metrics["recovered_labels"] == [label]
    assert (tmp_path / "r" / "recon.png").is_file()


def test_captured_update_scored_against_reference(captured, model_file: Path, tmp_path: Path, capsys):
    path, reference, label = captured
    code, out, err = run(["run", "--update", path, "--model", f"{model_file}:build", "--reference", reference,
                          "--label", label, "--out", tmp_path / "r", "--quiet"], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["psnr"] > 30 and metrics["label_accuracy"] == 1.0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--index", "3"], "holds no private data: drop --index"),
        (["--defense", "fp16"], "drop --defense"),
        (["--model", "lenet"], "holds 4 tensors but the model has 8|is it the right model"),
    ],
)
def test_captured_update_misuse_is_one_line(captured, model_file: Path, tmp_path: Path, capsys, extra, message):
    path, _, _ = captured
    argv = ["run", "--update", path, "--out", tmp_path / "r", "--quiet"]
    argv += extra if "--model" in extra else ["--model", f"{model_file}:build", *extra]
    code, out, err = run(argv, capsys)
    import re

    assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(message, err), err


def test_a_torch_pickle_given_as_update_is_refused(model_file: Path, tmp_path: Path, capsys):
    pickle = tmp_path / "update.pt"
    torch.save([torch.ones(3)], pickle)
    code, out, err = run(["run", "--update", pickle, "--model", f"{model_file}:build", "--quiet"], capsys)
    assert code == 2 and "not a safetensors file" in err and len(err.strip().splitlines()) == 1
