"""``gradleak inspect-model``: a client's check of a received model. It flags the imprint
server's model (saved by ``gradleak run --save-model``) and passes honest models."""

from __future__ import annotations

import pytest
import torch

from gradleak.cli.main import main as gradleak_main
from gradleak.data.public import public_images
from gradleak.inspect import inspect_model, inspect_state
from gradleak.models import build_model
from gradleak.scenarios import Imprint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, **kwargs)


@pytest.mark.parametrize(
    "name, shape",
    [("lenet", (3, 32)), ("lenetmnist", (1, 28)), ("resnet18", (3, 32)), ("resnet-dlg", (3, 32))],
)
def test_clean_models_have_no_findings(name, shape):
    assert inspect_model(_model(name, channels=shape[0], image_size=shape[1], num_classes=100)) == []


def test_a_trained_looking_clean_model_passes(tmp_path):
    model = _model("lenet", channels=3, image_size=32, num_classes=10)
    with torch.no_grad():
        model.fc[0].weight.mul_(0.01)  # any scale, any values: full rank
    assert inspect_model(model) == []


def test_the_imprint_model_is_flagged_by_kind():
    model = Imprint(bins=128, public_images=public_images("cifar100", (3, 32, 32))).server_model(
        _model("resnet18", channels=3, image_size=32, num_classes=100)
    )
    kinds = {(f.tensor, f.kind) for f in inspect_model(model)}
    assert ("imprint.linear0.weight", "identical-rows") in kinds
    assert ("imprint.linear1.weight", "identical-columns") in kinds


def test_scaled_or_perturbed_binning_layers_and_a_huge_first_linear_are_flagged():
    w = torch.randn(1, 3072)
    scaled = torch.linspace(-2, 2, 600)[:, None] * w  # rows differ only in scale (and sign)
    state = {"0.weight": scaled, "0.bias": torch.zeros(600), "1.weight": torch.randn(10, 600)}
    assert [f.kind for f in inspect_state(state)] == ["rank-one", "huge-first-linear"]
    torch.manual_seed(0)
    perturbed = w + 1e-3 * w.abs().mean() * torch.randn(128, 3072)  # evades the exact checks
    assert [f.kind for f in inspect_state({"weight": perturbed})] == ["near-identical-rows"]


def test_cli_flags_the_saved_server_model_and_passes_a_clean_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert gradleak_main(["run", "--dataset", "cifar100", "--split", "test", "--indices", "0", "1",
                          "--scenario", "imprint", "--bins", "64", "--save-model", "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert gradleak_main(["inspect-model", str(run / "model.pt")]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("imprint.linear0.weight: identical-rows: all 64 rows")
    assert "finding(s)" in lines[-1]

    clean = tmp_path / "clean.pt"
    torch.save(_model("lenet", channels=3, image_size=32, num_classes=100).state_dict(), clean)
    assert gradleak_main(["inspect-model", str(clean)]) == 0
    assert capsys.readouterr().out.startswith("no findings")


def test_cli_reads_safetensors(tmp_path, capsys):
    safetensors = pytest.importorskip("safetensors.torch")
    path = tmp_path / "clean.safetensors"
    state = _model("lenet", channels=3, image_size=32, num_classes=100).state_dict()
    safetensors.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    assert gradleak_main(["inspect-model", str(path)]) == 0


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_cli_refuses_files_that_are_not_weights(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    pickled = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(2), "trap": _Payload()}, pickled)
    for path, message in ((text, "neither a safetensors file nor a torch checkpoint"),
                          (pickled, "weights_only=True"),
                          (tmp_path / "missing.pt", "does not exist")):
        assert gradleak_main(["inspect-model", str(path)]) == 2
        captured = capsys.readouterr()
        assert captured.err.count("\n") == 1 and message in captured.err and "code ran" not in captured.out


def test_a_trained_model_has_no_findings():
    """Training (scikit-learn's bundled digits, offline) does not make rows look alike."""
    from gradleak.utility import evaluate, load_digits_28

    xtr, ytr, xte, yte = load_digits_28(seed=0)
    model = _model("lenetmnist", channels=1, image_size=28, num_classes=10)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(4):
        for start in range(0, len(xtr), 32):
            loss = torch.nn.functional.cross_entropy(model(xtr[start:start + 32]), ytr[start:start + 32].long())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    assert evaluate(model, xte, yte.long()) > 0.5  # it did learn
    assert inspect_model(model) == []
