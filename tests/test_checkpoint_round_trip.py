"""Every checkpoint format ``gradleak train`` writes is read back by every gradleak reader.

Issue 21: ``train --out m.pt`` stored ``torch.__version__`` (a ``TorchVersion`` object, not a
``str``) in the pickle, and the restricted unpickler of ``--weights`` refused gradleak's own file as
"a pickle that would run code". The checkpoint must hold plain types only, and the round trip must
work for ``run --weights``, ``inspect-model`` and a sweep's ``grid.weights``.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickletools
from pathlib import Path

import pytest
import torch

from gradleak.cli.main import main as gradleak_main
from gradleak.models.checkpoint import read_checkpoint

pytest.importorskip("sklearn")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN = ["train", "--dataset", "digits", "--epochs", "1", "--train-size", "256", "--test-size", "64", "--quiet"]


def _globals_in_pickle(path: Path) -> set[str]:
    """The GLOBAL/STACK_GLOBAL names a torch.save zip file's pickle references."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        data = archive.read(name)
    found: set[str] = set()
    strings: list[str] = []
    for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif opcode.name == "STACK_GLOBAL":
            found.add(".".join(strings[-2:]))
        elif opcode.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
    return found


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth"])
def test_every_format_train_writes_is_read_back(suffix: str, tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / f"m{suffix}"
    assert gradleak_main([*TRAIN, "--model", "lenetmnist", "--out", str(ckpt)]) == 0
    capsys.readouterr()
    state, info = read_checkpoint(ckpt)
    assert info.format == ("safetensors" if suffix == ".safetensors" else "torch")
    assert info.metadata["architecture"] == "lenetmnist" and info.metadata["num_classes"] == 10
    assert type(info.metadata["torch_version"]) is str
    if suffix != ".safetensors":
        # Only tensor-rebuilding globals: nothing a weights-only unpickler must refuse.
        assert _globals_in_pickle(ckpt) <= {"torch._utils._rebuild_tensor_v2", "collections.OrderedDict", "torch.FloatStorage"}, \
            _globals_in_pickle(ckpt)
    # run --weights
    out = tmp_path / "run"
    code = gradleak_main(["run", "--weights", str(ckpt), "--dataset", "mnist", "--split", "test", "--index", "0",
                          "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["weights_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert metrics["psnr"] > 40
    # inspect-model: an honestly trained LeNet has no findings
    assert gradleak_main(["inspect-model", str(ckpt)]) == 0
    assert "no findings" in capsys.readouterr().out
    # a sweep's grid.weights plans a run on it
    from gradleak.sweep.grid import parse_plan

    plan = parse_plan(f'[grid]\ndatasets = ["mnist"]\nattacks = ["auto"]\nweights = [{str(ckpt)!r}]\n'
                      '[run]\nsplit = "test"\n', where="t.toml")
    assert [r.config["weights"] for r in plan.runs] == [str(ckpt.resolve())]


def test_a_pt_checkpoint_from_an_earlier_gradleak_still_loads(tmp_path: Path) -> None:
    """Files already written with a TorchVersion in their metadata: a str subclass, harmless, allowed."""
    from torch.torch_version import TorchVersion

    from gradleak.models import build_model

    model = build_model("lenetmnist", channels=1, image_size=28, num_classes=10)
    path = tmp_path / "old.pt"
    torch.save({"state_dict": model.state_dict(),
                "gradleak": {"format": "gradleak.checkpoint", "architecture": "lenetmnist",
                             "torch_version": TorchVersion("2.13.0")}}, path)
    assert "torch.torch_version.TorchVersion" in _globals_in_pickle(path)
    state, info = read_checkpoint(path)
    assert info.architecture == "lenetmnist" and info.metadata["torch_version"] == "2.13.0"
    assert type(info.metadata["torch_version"]) is str
