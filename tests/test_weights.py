"""Trained models: ``gradleak train`` writes a checkpoint, ``--weights`` loads it safely and checks it.

Checkpoints here are real: trained in the test (a few hundred of scikit-learn's bundled digits, a
second or two) and written by the code users run, or written by ``torch.save`` in PyTorch's own zip
and legacy layouts. Attacks run on real bundled test images and must clear a PSNR bound. Every bad
checkpoint must give one stderr line naming the problem (never a traceback), and a pickle with a
malicious ``__reduce__`` must not run.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import struct
from pathlib import Path

import pytest
import torch

from gradleak.cli.main import classic_main
from gradleak.cli.main import main as gradleak_main
from gradleak.experiment import RunConfig, prepare
from gradleak.models import build_model
from gradleak.models.checkpoint import read_checkpoint, save_checkpoint

pytest.importorskip("sklearn")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# All 1,438 training digits, 2 epochs of Adam: ~0.5 s per LeNet, about 75% test accuracy.
TRAIN = ["--dataset", "digits", "--epochs", "2", "--lr", "3e-3", "--test-size", "100", "--quiet"]


def call(argv: list[object], capsys: pytest.CaptureFixture[str], *, classic: bool = False) -> tuple[int, str, str]:
    try:
        code = (classic_main if classic else gradleak_main)([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2
    assert "Traceback" not in err + out
    assert err.count("\n") == 1 and err.endswith("\n"), repr(err)
    assert "error:" in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert "Final MSE" not in out


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Checkpoints trained by the real CLI: lenetmnist (1x28x28) and lenet (3x32x32), 10 classes."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.set_num_threads(1)
    out = {}
    for model in ("lenetmnist", "lenet"):
        path = folder / f"{model}.safetensors"
        assert gradleak_main(["train", *TRAIN, "--model", model, "--out", str(path)]) == 0
        out[model] = path
    return out


# ---------------------------------------------------------------------------------------------
# gradleak train


def test_train_writes_a_checkpoint_and_prints_accuracy(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sub" / "m.safetensors"
    code, stdout, err = call(["train", *TRAIN, "--model", "lenetmnist", "--epochs", "3", "--out", out], capsys)
    assert code == 0, err
    line = next(line for line in stdout.splitlines() if line.startswith("test accuracy "))
    accuracy = float(line.split()[2].rstrip("%")) / 100
    assert accuracy > 0.5  # 3 epochs on the digits: far above chance (10%)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digest in stdout
    state, info = read_checkpoint(out)
    assert info.format == "safetensors" and info.sha256 == digest
    meta = info.metadata
    assert (meta["architecture"], meta["channels"], meta["image_size"], meta["num_classes"]) == ("lenetmnist", 1, 28, 10)
    assert (meta["dataset"], meta["epochs"], meta["train_size"], meta["test_size"]) == ("digits", 3, 1438, 100)
    assert meta["accuracy"] == pytest.approx(accuracy, abs=0.001)
    assert set(state) == set(build_model("lenetmnist", channels=1, image_size=28, num_classes=10).state_dict())
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name]


def test_train_refuses_to_overwrite_without_the_flag(tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"precious")
    code, stdout, err = call(["train", *TRAIN, "--model", "lenetmnist", "--out", out], capsys)
    one_line_error(code, stdout, err, "already exists", "--overwrite")
    assert out.read_bytes() == b"precious"
    assert "test accuracy" not in stdout  # refused before training
    code, stdout, err = call(["train", *TRAIN, "--model", "lenetmnist", "--out", out, "--overwrite"], capsys)
    assert code == 0, err
    assert read_checkpoint(out)[1].architecture == "lenetmnist"


def test_save_checkpoint_never_clobbers_a_file_that_appears(tmp_path: Path) -> None:
    model = build_model("lenetmnist", channels=1, image_size=28, num_classes=10)
    out = tmp_path / "m.safetensors"
    save_checkpoint(out, model, {"architecture": "lenetmnist"})
    before = out.read_bytes()
    with pytest.raises(Exception, match="already exists"):
        save_checkpoint(out, model, {"architecture": "other"})
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_train_bad_input_is_one_line(tmp_path: Path, capsys) -> None:
    one_line_error(*call(["train", "--epochs", "0", "--out", tmp_path / "m"], capsys), "--epochs must be at least 1")
    one_line_error(*call(["train", "--dataset", "imagenet", "--out", tmp_path / "m"], capsys), "unknown dataset")
    one_line_error(*call(["train", "--model", "vgg", "--out", tmp_path / "m"], capsys), "unknown model")
    one_line_error(*call(["train", "--out", tmp_path], capsys), "is a folder")
    # A real dataset that is not on disk, downloads off: the loader's one line (no network).
    one_line_error(*call(["train", "--dataset", "mnist", "--no-download", "--data-root", tmp_path,
                          "--out", tmp_path / "m"], capsys), "not available")


# ---------------------------------------------------------------------------------------------
# --weights round trip


def test_weights_round_trip_attack_on_a_trained_model(checkpoints: dict[str, Path], tmp_path: Path, capsys) -> None:
    ckpt = checkpoints["lenetmnist"]
    out = tmp_path / "run"
    code, stdout, err = call(["run", "--weights", ckpt, "--dataset", "mnist", "--split", "test", "--index", 0,
                              "--out", out, "--quiet"], capsys)
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert metrics["model"] == "lenetmnist"  # taken from the checkpoint: no --model given
    assert metrics["psnr"] > 40  # the analytic attack inverts the trained LeNet's gradient exactly
    assert metrics["label_accuracy"] == 1.0
    for record in (metrics, config):
        assert record["weights"] == str(ckpt.resolve())
        assert record["weights_sha256"] == digest
        assert record["weights_metadata"]["dataset"] == "digits"
        assert 0.5 < record["weights_metadata"]["accuracy"] <= 1.0
    assert config["num_classes"] == 10


def test_weights_are_really_loaded(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    ckpt = checkpoints["lenet"]
    state, _ = read_checkpoint(ckpt)
    config = RunConfig(dataset="cifar10", split="test", indices=[1], attack="auto", weights=str(ckpt),
                       out=str(tmp_path / "unused"), quiet=True, device="cpu")
    prepared = prepare(config)
    for key, value in prepared.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    fresh = prepare(RunConfig(dataset="cifar10", split="test", indices=[1], attack="auto", num_classes=10,
                              out=str(tmp_path / "unused"), quiet=True, device="cpu"))
    assert not torch.equal(fresh.model.state_dict()["fc.0.weight"], state["fc.0.weight"])
    # The shared gradient differs: the attack really faces the trained model.
    assert not torch.allclose(fresh.update.tensors[-2], prepared.update.tensors[-2])


def test_weights_from_torch_save_in_both_layouts_with_classic_main(tmp_path: Path, capsys) -> None:
    torch.manual_seed(3)
    model = build_model("lenet", channels=3, image_size=32, num_classes=10)
    for name, kwargs in (("zip.pt", {}), ("legacy.pth", {"_use_new_zipfile_serialization": False})):
        path = tmp_path / name
        torch.save(model.state_dict(), path, **kwargs)  # a bare state_dict, as other tools write it
        out = tmp_path / f"run-{name}"
        code, stdout, err = call(["--weights", path, "--dataset", "cifar10", "--split", "test", "--index", 2,
                                  "--attack", "auto", "--out", out, "--quiet"], capsys, classic=True)
        assert code == 0, err
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["weights_format"] == "torch"
        assert metrics["psnr"] > 40, name


def test_weights_sha256_pin(checkpoints: dict[str, Path], tmp_path: Path, capsys) -> None:
    ckpt = checkpoints["lenetmnist"]
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    base = ["run", "--weights", ckpt, "--dataset", "mnist", "--split", "test", "--index", 1, "--quiet"]
    assert call([*base, "--weights-sha256", digest, "--out", tmp_path / "ok"], capsys)[0] == 0
    one_line_error(*call([*base, "--weights-sha256", "0" * 64, "--out", tmp_path / "bad"], capsys),
                   f"has sha256 {digest}", "not the expected")
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------------------------
# Bad checkpoints: one line each, nothing written, no code run


class RunsCode:
    """Unpickling this calls exec(): a checkpoint that would run code when loaded carelessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_malicious_pickle_is_refused_and_never_runs(layout: str, tmp_path: Path, capsys) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    payload = {"fc.0.weight": torch.zeros(10, 768), "hook": RunsCode(marker)}
    torch.save(payload, path, _use_new_zipfile_serialization=(layout == "zip"))
    assert not marker.exists()
    code, stdout, err = call(["run", "--weights", path, "--dataset", "cifar10", "--split", "test", "--index", 0,
                              "--out", tmp_path / "run"], capsys)
    one_line_error(code, stdout, err, "evil.pt", "never executes checkpoint code", "state_dict")
    assert not marker.exists(), "the pickle's code ran"
    assert not (tmp_path / "run").exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _saved(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _truncated(ckpt: Path, tmp_path: Path) -> Path:
    data = ckpt.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: 8 + length + 100])  # header intact, tensors cut off
    return path


def _other_model(tmp_path: Path) -> Path:
    path = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(4, 3).state_dict(), path)
    return path


def _bare_mnist_lenet(tmp_path: Path) -> Path:
    path = tmp_path / "mnist-lenet.pt"
    torch.save(build_model("lenetmnist", channels=1, image_size=28, num_classes=10).state_dict(), path)
    return path


BAD = {
    "missing file": (lambda c, t: t / "nope.safetensors", ["--dataset", "cifar10"], ["does not exist", "gradleak train"]),
    "a folder": (lambda c, t: t, ["--dataset", "cifar10"], ["is a folder"]),
    "empty file": (lambda c, t: _write(t / "e.pt", b""), ["--dataset", "cifar10"], ["is empty"]),
    "not a checkpoint": (lambda c, t: _write(t / "x.png", b"\x89PNG\r\n\x1a\n" + bytes(64)),
                         ["--dataset", "cifar10"], ["neither a safetensors file nor a PyTorch checkpoint"]),
    "truncated safetensors": (lambda c, t: _truncated(c["lenet"], t), ["--dataset", "cifar10"], ["damaged safetensors"]),
    "not a state dict": (lambda c, t: _saved([torch.zeros(2)], t / "l.pt"), ["--dataset", "cifar10"],
                         ["holds a list, not a state dict"]),
    "another architecture (metadata)": (lambda c, t: c["lenet"], ["--dataset", "cifar10", "--model", "resnet18"],
                                        ["is a lenet checkpoint, not resnet18", "--model lenet"]),
    "another input shape (metadata)": (lambda c, t: c["lenet"], ["--dataset", "mnist"],
                                       ["is for 3×32×32 inputs but mnist has 1×28×28"]),
    "another class count (metadata)": (lambda c, t: c["lenet"], ["--dataset", "cifar10", "--num-classes", "100"],
                                       ["has 10 classes but this run uses 100", "drop --num-classes"]),
    "labels the checkpoint cannot hold": (lambda c, t: c["lenet"], ["--dataset", "cifar100"],
                                          ["label 49", "10 classes (0..9)", "cifar10"]),
    "another architecture (bare state_dict)": (lambda c, t: _other_model(t), ["--dataset", "cifar10"],
                                               ["does not fit model lenet", "missing"]),
    "another input shape (bare state_dict)": (lambda c, t: _bare_mnist_lenet(t), ["--dataset", "cifar10"],
                                              ["does not fit model lenet", "12×1×5×5 in the checkpoint but 12×3×5×5"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_checkpoint_is_one_line(case: str, checkpoints: dict[str, Path], tmp_path: Path, capsys) -> None:
    make, extra, needles = BAD[case]
    path = make(checkpoints, tmp_path)
    out = tmp_path / "run-out"
    code, stdout, err = call(["run", "--weights", path, *extra, "--split", "test", "--index", 0, "--out", out], capsys)
    one_line_error(code, stdout, err, *needles)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# Sweeps: grid.weights


def test_sweep_grid_weights_axis(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    from gradleak.errors import GradleakError
    from gradleak.experiment import run_experiment
    from gradleak.sweep.grid import parse_plan

    ckpt = tmp_path / "mnist.safetensors"
    ckpt.write_bytes(checkpoints["lenetmnist"].read_bytes())
    text = f"""
        [grid]
        datasets = ["mnist", "cifar10"]
        attacks = ["auto"]
        weights = ["none", {str(ckpt)!r}]
        indices = [0]
        [run]
        split = "test"
        iterations = 5
        """
    plan = parse_plan(text, where="t.toml")
    by_weights = {(r.axes["dataset"], r.axes["weights"]): r for r in plan.runs}
    # The 1x28x28 checkpoint is skipped for cifar10 (listed), used for mnist, pinned by sha256.
    assert set(by_weights) == {("mnist", "init"), ("mnist", "mnist.safetensors"), ("cifar10", "init")}
    assert any("mnist.safetensors" in note and "cifar10" in note for note in plan.skipped)
    trained = by_weights[("mnist", "mnist.safetensors")]
    assert trained.config["weights"] == str(ckpt.resolve())
    assert trained.config["weights_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert by_weights[("mnist", "init")].config["weights"] is None
    # Without grid.weights the ids are those of before (the axis adds nothing to an init run's id).
    plain = parse_plan(text.replace(f'weights = ["none", {str(ckpt)!r}]', ""), where="t.toml")
    assert {r.run_id for r in plain.runs} == {by_weights[k].run_id for k in (("mnist", "init"), ("cifar10", "init"))}
    # The planned run executes, on the checkpoint.
    outcome = run_experiment(RunConfig(**{**trained.config, "out": str(tmp_path / "run"), "quiet": True}))
    assert outcome.metrics["weights_sha256"] == trained.config["weights_sha256"] and outcome.metrics["psnr"] > 40
    # A checkpoint that changed after planning is refused by the run, in one line.
    ckpt.write_bytes(checkpoints["lenetmnist"].read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(GradleakError, match="not the expected"):
        prepare(RunConfig(**{**trained.config, "out": str(tmp_path / "run2"), "quiet": True}))
    # A missing checkpoint is a one-line config error naming the key.
    with pytest.raises(GradleakError, match=r"t.toml: grid.weights: --weights .*does not exist"):
        parse_plan(text.replace(str(ckpt), str(tmp_path / "gone.safetensors")), where="t.toml")
    with pytest.raises(GradleakError, match="unknown key 'weights' in \\[run\\]"):
        parse_plan('[grid]\ndatasets = ["mnist"]\n[run]\nweights = "x"\n', where="t.toml")


def test_batchnorm_statistics_are_re_estimated_after_training() -> None:
    from gradleak.training import recalibrate_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Sigmoid())
    images = torch.rand(320, 3, 8, 8) * 2 + 1  # 5 batches of 64: the average of batch means is the mean
    with torch.no_grad():
        features = model[0](images)
    assert not torch.allclose(model[1].running_mean, features.mean(dim=(0, 2, 3)), atol=1e-2)  # stale (zeros)
    recalibrate_batchnorm(model, images, batch=64)
    assert torch.allclose(model[1].running_mean, features.mean(dim=(0, 2, 3)), atol=1e-4)
    assert torch.allclose(model[1].running_var, features.var(dim=(0, 2, 3)), rtol=5e-2)
    assert model[1].momentum == 0.1 and model.training  # settings restored
