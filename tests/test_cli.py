"""The command line as a user meets it: the README's classic ``python main.py`` commands, the
``gradleak run`` demo, output folders, and one-line errors that never show a traceback.

Every run is tiny (a few iterations) and offline: datasets are fixture files in their true on-disk
format under ``tmp_path`` (see ``tests/conftest.py``) or the bundled test images.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradleak.cli.main import DEMO_INDEX, classic_main
from gradleak.cli.main import main as gradleak_main
from gradleak.data import bundled_samples, download
from tests.conftest import (
    CIFAR_SOLID,
    REPO,
    FixtureData,
    build_mnist,
    subprocess_env,
    write_image,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FINAL_LINE = re.compile(r"^Final MSE=\d+\.\d{6} PSNR=(-?\d+\.\d{2}|inf) dB$", re.MULTILINE)
METRIC_KEYS = {"mse", "psnr", "ssim", "label_accuracy", "iterations", "seconds", "per_image"}
PER_IMAGE_KEYS = {"index", "label", "recovered_label", "mse", "psnr", "ssim"}
SIZE = {"cifar100": 32, "mnist": 28, "lfw": 64}


# ---------------------------------------------------------------------------------------------
# helpers


def run_classic(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = classic_main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse errors exit (with one line) instead of returning
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def png(path: Path) -> np.ndarray:
    """The picture at ``path`` as an array (also proves it is a PNG PIL can open)."""
    assert path.is_file(), f"{path.name} was not written"
    with Image.open(path) as img:
        assert img.format == "PNG", path
        img.load()
        return np.asarray(img)


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes); {} when it does not exist."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def check_run(out: Path, stdout: str, *, dataset: str, model: str, iters: int, batch: int,
              history: bool, final: bool) -> dict:
    """Everything a finished run promises; returns metrics.json."""
    assert FINAL_LINE.search(stdout), stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert len(metrics["per_image"]) == batch
    for item in metrics["per_image"]:
        assert PER_IMAGE_KEYS <= set(item)
    assert 1 <= metrics["iterations"] <= iters
    if metrics.get("stop_reason") == "max_iterations":
        assert metrics["iterations"] == iters
    assert metrics["seconds"] >= 0
    assert 0.0 <= metrics["label_accuracy"] <= 1.0

    # metrics.txt: the classic five lines, agreeing with metrics.json and the printed line.
    lines = (out / "metrics.txt").read_text().splitlines()
    assert lines[:5] == [
        f"dataset={dataset}",
        f"model={model}",
        f"iterations={metrics['iterations']}",
        f"MSE={metrics['mse']:.6f}",
        f"PSNR={metrics['psnr']:.2f} dB",
    ]
    assert f"Final MSE={metrics['mse']:.6f} PSNR={metrics['psnr']:.2f} dB" in stdout

    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == dataset
    assert config["model"] == model
    assert config["iterations"] == iters

    # one step (a closed-form solve, or --iters 1) has nothing to plot over iterations: no empty axes
    several = metrics["iterations"] > 1
    assert (out / "curves.png").is_file() == several
    if several:
        png(out / "curves.png")
    assert (out / "history.png").is_file() == (history and several)
    if history and several:
        png(out / "history.png")
    size = SIZE[dataset]
    names = [("recon.png", "target.png")] if batch == 1 else [
        (f"recon_{i}.png", f"target_{i}.png") for i in range(batch)
    ]
    for recon, target in names:
        assert (out / recon).is_file() == final
        assert (out / target).is_file() == final
        if final:
            for name in (recon, target):
                assert png(out / name).shape[:2] == (size, size), name
    if batch > 1:
        assert not (out / "recon.png").exists()
    # No staging folders left beside the output.
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name]
    return metrics


def check_error(code: int, out: str, err: str, *needles: str) -> None:
    """A user error: non-zero exit, exactly one stderr line naming the problem, no traceback."""
    assert code != 0
    assert "Traceback" not in err and "Traceback" not in out
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    assert "error:" in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert "Final MSE" not in out


class Background:
    """CLI subprocesses started together when this module's first test starts, so that their
    interpreter start-ups (torch, torchmetrics: seconds each) overlap the in-process tests on the
    second core; each subprocess test then only collects its result."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.folders: dict[str, Path] = {}
        self.truth: dict[str, object] = {}

    def folder(self, name: str) -> Path:
        path = self.base / name
        path.mkdir()
        self.folders[name] = path
        return path

    def start(self, name: str, args: list[str], cwd: Path) -> None:
        self.procs[name] = subprocess.Popen(
            args, cwd=cwd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )

    def result(self, name: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        proc = self.procs[name]
        stdout, stderr = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def gradleak_script() -> str | None:
    """The installed ``gradleak`` console script (next to this Python first)."""
    beside = Path(sys.executable).with_name("gradleak")
    if beside.is_file():
        return str(beside)
    return shutil.which("gradleak")


# ---------------------------------------------------------------------------------------------
# The README's classic commands, with tiny --iters and fixture datasets


def test_classic_cifar100_index_25(cifar100_data: FixtureData, tmp_path: Path, capsys) -> None:
    # python main.py --dataset cifar100 --index 25 --iters 300 --save-history --save-final
    out = tmp_path / "run"
    code, stdout, err = run_classic(
        ["--dataset", "cifar100", "--index", 25, "--iters", 2, "--save-history", "--save-final",
         "--data-root", cifar100_data.root, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    metrics = check_run(out, stdout, dataset="cifar100", model="lenet", iters=2, batch=1,
                        history=True, final=True)
    assert metrics["attack"] == "dlg"  # the classic entry point runs the original DLG
    assert metrics["per_image"][0]["index"] == 25
    assert metrics["per_image"][0]["label"] == cifar100_data.labels["train"][25]
    # The private image really is train sample 25, pixel for pixel.
    target = png(out / "target.png").transpose(2, 0, 1)
    assert np.array_equal(target, cifar100_data.images["train"][25])
    assert (target == CIFAR_SOLID[25]).all()


def test_classic_mnist_lenetmnist_tv(mnist_data: FixtureData, tmp_path: Path, capsys) -> None:
    # python main.py --dataset mnist --model lenetmnist --index 5 --iters 1200 --save-history
    #   --save-final --tv-weight 0.005
    out = tmp_path / "run"
    code, stdout, err = run_classic(
        ["--dataset", "mnist", "--model", "lenetmnist", "--index", 5, "--iters", 2,
         "--save-history", "--save-final", "--tv-weight", 0.005,
         "--data-root", mnist_data.root, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    metrics = check_run(out, stdout, dataset="mnist", model="lenetmnist", iters=2, batch=1,
                        history=True, final=True)
    assert metrics["per_image"][0]["label"] == mnist_data.labels["train"][5]
    assert np.array_equal(png(out / "target.png"), mnist_data.images["train"][5][0])
    config = json.loads((out / "config.json").read_text())
    assert config["tv_weight"] == 0.005 and config["indices"] == [5] and config["split"] == "train"


def test_classic_cifar100_lenet_tv(cifar100_data: FixtureData, tmp_path: Path, capsys) -> None:
    # python main.py --dataset cifar100 --model lenet --index 25 --iters 1200 --tv-weight 0.005
    #   --save-history --save-final
    out = tmp_path / "run"
    code, stdout, err = run_classic(
        ["--dataset", "cifar100", "--model", "lenet", "--index", 25, "--iters", 2,
         "--tv-weight", 0.005, "--save-history", "--save-final",
         "--data-root", cifar100_data.root, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    check_run(out, stdout, dataset="cifar100", model="lenet", iters=2, batch=1, history=True,
              final=True)
    assert json.loads((out / "config.json").read_text())["tv_weight"] == 0.005


def test_classic_lfw_lenet64(lfw_data, tmp_path: Path, capsys) -> None:
    # python main.py --dataset lfw --model lenet64 --index 10 --iters 1500 --tv-weight 0.005
    #   --save-history --save-final
    data, colours = lfw_data
    out = tmp_path / "run"
    code, stdout, err = run_classic(
        ["--dataset", "lfw", "--model", "lenet64", "--index", 10, "--iters", 2,
         "--tv-weight", 0.005, "--save-history", "--save-final",
         "--data-root", data.root, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    metrics = check_run(out, stdout, dataset="lfw", model="lenet64", iters=2, batch=1,
                        history=True, final=True)
    # Sample 10 is the 4th person's 2nd photo: label 3 of 4 classes, and its colour.
    assert metrics["per_image"][0]["label"] == 3
    assert json.loads((out / "config.json").read_text())["num_classes"] == 4
    target = png(out / "target.png").reshape(-1, 3).mean(axis=0)
    assert np.abs(target - np.asarray(colours[10])).max() < 12


def test_classic_cifar100_batch_indices(cifar100_data: FixtureData, tmp_path: Path, capsys) -> None:
    # python main.py --dataset cifar100 --indices 10 25 70 123 --iters 800 --tv-weight 0.003 --save-final
    out = tmp_path / "run"
    indices = [10, 25, 70, 123]
    code, stdout, err = run_classic(
        ["--dataset", "cifar100", "--indices", *indices, "--iters", 2, "--tv-weight", 0.003,
         "--save-final", "--data-root", cifar100_data.root, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    metrics = check_run(out, stdout, dataset="cifar100", model="lenet", iters=2, batch=4,
                        history=False, final=True)
    assert [s["index"] for s in metrics["per_image"]] == indices
    assert [s["label"] for s in metrics["per_image"]] == [
        int(cifar100_data.labels["train"][i]) for i in indices
    ]
    for i, index in enumerate(indices):  # target_<i> is the i-th requested sample
        assert (png(out / f"target_{i}.png") == CIFAR_SOLID[index]).all()
    assert metrics["batch_size"] == 4
    assert metrics["mse"] == pytest.approx(np.mean([s["mse"] for s in metrics["per_image"]]))


def test_classic_own_image(tmp_path: Path, data_root: Path, capsys) -> None:
    # python main.py --dataset cifar100 --image path/to/your.jpg --label 0 --num-classes 100
    #   --iters 600 --save-final
    photo = write_image(tmp_path / "your.jpg", (64, 48), (200, 40, 90), fmt="JPEG")
    out = tmp_path / "run"
    code, stdout, err = run_classic(
        ["--dataset", "cifar100", "--image", photo, "--label", 0, "--num-classes", 100,
         "--iters", 2, "--save-final", "--data-root", data_root, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    metrics = check_run(out, stdout, dataset="cifar100", model="lenet", iters=2, batch=1,
                        history=False, final=True)
    assert metrics["per_image"][0]["label"] == 0
    target = png(out / "target.png").reshape(-1, 3).mean(axis=0)
    assert np.abs(target - np.asarray([200, 40, 90])).max() < 8  # resized, not garbled
    config = json.loads((out / "config.json").read_text())
    assert config["num_classes"] == 100 and config["images"] == [str(photo)]
    assert files(data_root) == {}  # no dataset was needed or fetched


# ---------------------------------------------------------------------------------------------
# Real processes: `python main.py` from the repo root and the `gradleak` console script


SUBPROCESS_ERRORS = {
    "unknown-dataset": (["--dataset", "imagenet", "--index", "1"], ["unknown dataset 'imagenet'", "cifar100"]),
    "not-an-image": (["--image", "{tmp}/holiday.txt", "--label", "0"], ["holiday.txt", "not an image"]),
    "dataset-absent": (
        ["--dataset", "mnist", "--index", "3", "--no-download", "--data-root", "{tmp}/data"],
        ["MNIST train split is not available", "--no-download"],
    ),
}


@pytest.fixture(scope="module", autouse=True)
def background(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    bg = Background(tmp_path_factory.mktemp("cli-processes"))
    # The README's MNIST command. The fixture is decompressed IDX (torchvision accepts that
    # layout too; only the .gz files carry a checksum), so the child needs no patched table.
    folder = bg.folder("main-py")
    _, images, labels = build_mnist(folder / "data", gz=False)
    bg.truth["main-py"] = (images["train"][5][0], int(labels["train"][5]))
    bg.start("main-py", [
        sys.executable, "main.py", "--dataset", "mnist", "--model", "lenetmnist", "--index", "5",
        "--iters", "2", "--save-history", "--save-final", "--tv-weight", "0.005",
        "--data-root", str(folder / "data"), "--no-download", "--out", str(folder / "run"), "--quiet",
    ], cwd=REPO)
    script = gradleak_script()
    if script is not None:  # `gradleak run` and nothing else but an output folder
        folder = bg.folder("demo")
        bg.start("demo", [script, "run", "--iters", "2", "--out", str(folder / "run")], cwd=folder)
    for name, (args, _) in SUBPROCESS_ERRORS.items():
        folder = bg.folder(name)
        (folder / "data").mkdir()
        (folder / "holiday.txt").write_text("this is not a picture\n")
        bg.truth[name] = files(folder)
        argv = [a.replace("{tmp}", str(folder)) for a in args]
        bg.start(name, [sys.executable, "main.py", *argv, "--iters", "2", "--out", str(folder / "run"),
                        "--quiet"], cwd=REPO)
    yield bg
    bg.stop()


def test_main_py_in_a_real_process_from_repo_root(background: Background) -> None:
    # python main.py --dataset mnist --model lenetmnist --index 5 --iters 1200 --save-history
    #   --save-final --tv-weight 0.005
    proc = background.result("main-py")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = background.folders["main-py"] / "run"
    metrics = check_run(out, proc.stdout, dataset="mnist", model="lenetmnist", iters=2, batch=1,
                        history=True, final=True)
    image, label = background.truth["main-py"]
    assert metrics["per_image"][0]["label"] == label
    assert np.array_equal(png(out / "target.png"), image)


def test_gradleak_run_without_flags_is_the_bundled_demo(background: Background) -> None:
    """``gradleak run`` (console script) with no data flags: the offline demo, announced."""
    if "demo" not in background.procs:
        pytest.skip("the gradleak console script is not installed")
    proc = background.result("demo")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "demo" in proc.stdout
    assert FINAL_LINE.search(proc.stdout)
    folder = background.folders["demo"]
    metrics = json.loads((folder / "run" / "metrics.json").read_text())
    assert metrics["dataset"] == "cifar100"
    assert [s["index"] for s in metrics["per_image"]] == [DEMO_INDEX]
    bundled = {index: label for index, label, _ in bundled_samples("cifar100")}
    assert metrics["per_image"][0]["label"] == bundled[DEMO_INDEX]
    assert json.loads((folder / "run" / "config.json").read_text())["split"] == "test"
    png(folder / "run" / "comparison.png")
    # solved in closed form: no empty curves.png, and the run says why
    assert not (folder / "run" / "curves.png").exists() and "no curves.png" in proc.stdout
    assert sorted(p.name for p in folder.iterdir()) == ["run"]  # nothing downloaded into ./data


@pytest.mark.parametrize("name", list(SUBPROCESS_ERRORS))
def test_errors_in_a_real_process_have_no_traceback(name: str, background: Background) -> None:
    proc = background.result(name)
    check_error(proc.returncode, proc.stdout, proc.stderr, "main.py: error:", *SUBPROCESS_ERRORS[name][1])
    folder = background.folders[name]
    assert files(folder) == background.truth[name]  # nothing written
    assert not (folder / "run").exists()


@pytest.mark.parametrize("dataset", ["cifar100", "mnist"])
def test_bundled_test_split_offline(dataset: str, tmp_path: Path, data_root: Path, capsys) -> None:
    out = tmp_path / "run"
    code, stdout, err = run_classic(
        ["--dataset", dataset, "--split", "test", "--index", 0, "--no-download", "--iters", 2,
         "--save-final", "--data-root", data_root, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    model = "lenet" if dataset == "cifar100" else "lenetmnist"
    metrics = check_run(out, stdout, dataset=dataset, model=model, iters=2, batch=1,
                        history=False, final=True)
    (index, label, path), *_ = bundled_samples(dataset)
    assert index == 0 and metrics["per_image"][0]["label"] == label
    with Image.open(path) as bundled:
        expected = np.asarray(bundled.convert("L" if dataset == "mnist" else "RGB"))
    assert np.array_equal(png(out / "target.png"), expected)
    assert files(data_root) == {}


def test_two_images_form_a_batch(tmp_path: Path, data_root: Path, capsys) -> None:
    a = write_image(tmp_path / "a.png", (32, 32), (250, 10, 10))
    b = write_image(tmp_path / "b.jpg", (40, 60), (10, 10, 250), fmt="JPEG")
    out = tmp_path / "run"
    code, stdout, err = run_classic(
        ["--dataset", "cifar100", "--image", a, b, "--label", 3, 7, "--iters", 2, "--save-final",
         "--data-root", data_root, "--out", out, "--quiet"], capsys)
    assert code == 0, err
    metrics = check_run(out, stdout, dataset="cifar100", model="lenet", iters=2, batch=2,
                        history=False, final=True)
    assert [s["label"] for s in metrics["per_image"]] == [3, 7]
    assert png(out / "target_0.png")[..., 0].mean() > 200  # red first, as given
    assert png(out / "target_1.png")[..., 2].mean() > 200  # then blue


# ---------------------------------------------------------------------------------------------
# Output folders


def _bundled_args(out: Path, data_root: Path) -> list:
    return ["--dataset", "cifar100", "--split", "test", "--index", 1, "--no-download",
            "--iters", 2, "--save-final", "--data-root", data_root, "--out", out, "--quiet"]


def test_existing_output_folder_is_refused_then_overwritten(tmp_path: Path, data_root: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text('{"precious": true}\n')
    (out / "notes.txt").write_bytes(b"my notes\x00\x01")
    before = files(out)

    code, stdout, err = run_classic(_bundled_args(out, data_root), capsys)
    check_error(code, stdout, err, str(out), "not empty", "--overwrite")
    assert files(out) == before  # byte for byte untouched

    code, stdout, err = run_classic([*_bundled_args(out, data_root), "--overwrite"], capsys)
    assert code == 0, err
    check_run(out, stdout, dataset="cifar100", model="lenet", iters=2, batch=1, history=False,
              final=True)
    assert (out / "notes.txt").read_bytes() == before["notes.txt"]  # unrelated files kept
    assert "precious" not in (out / "metrics.json").read_text()


def test_empty_existing_output_folder_is_used(tmp_path: Path, data_root: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    code, stdout, err = run_classic(_bundled_args(out, data_root), capsys)
    assert code == 0, err
    assert FINAL_LINE.search(stdout)
    assert (out / "recon.png").is_file()


class _Interrupted:
    """A test attack that is interrupted (Ctrl-C) half way."""

    name = "test-interrupted"

    def __init__(self, **settings: object) -> None:
        pass

    def check(self, update: object, *args: object) -> None:
        pass

    def run(self, model: object, update: object, **kwargs: object) -> object:
        raise KeyboardInterrupt


def test_interrupted_run_leaves_no_output_folder(tmp_path: Path, data_root: Path, capsys,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from gradleak.attacks import ATTACKS

    monkeypatch.setitem(ATTACKS._items, _Interrupted.name, _Interrupted)
    out = tmp_path / "run"
    code, stdout, err = run_classic([*_bundled_args(out, data_root), "--attack", _Interrupted.name], capsys)
    assert code == 130
    assert "Final MSE" not in stdout
    assert err.count("\n") == 1 and "Traceback" not in err and "interrupted" in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no partial folder either


# ---------------------------------------------------------------------------------------------
# Errors: one line, no traceback, nothing written


def _expect_nothing_written(tmp_path: Path, before: dict[str, bytes]) -> None:
    assert files(tmp_path) == before
    assert not (tmp_path / "run").exists()


def test_gradleak_run_error_in_process(tmp_path: Path, capsys) -> None:
    code = gradleak_main(["run", "--model", "vgg", "--iters", "2", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("gradleak run: error:")
    assert "unknown model 'vgg'" in err
    assert not (tmp_path / "run").exists()


def _error_case(tmp_path: Path, capsys, args: list, *needles: str) -> None:
    before = files(tmp_path)
    iters = [] if "--iters" in args else ["--iters", 2]
    code, out, err = run_classic([*args, *iters, "--out", tmp_path / "run", "--quiet"], capsys)
    check_error(code, out, err, "main.py: error:", *needles)
    _expect_nothing_written(tmp_path, before)


def test_error_unknown_model(tmp_path: Path, capsys) -> None:
    _error_case(tmp_path, capsys, ["--dataset", "cifar100", "--model", "vgg16"],
                "unknown model 'vgg16'", "lenet")


def test_error_index_out_of_range_before_any_download(tmp_path: Path, data_root: Path, capsys) -> None:
    # Refused from the published size: nothing is downloaded for an impossible index.
    _error_case(tmp_path, capsys, ["--dataset", "cifar100", "--index", 50000, "--data-root", data_root],
                "--index 50000", "out of range", "50000 images")


def test_error_index_out_of_range_of_the_data_on_disk(cifar100_data: FixtureData, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    code, stdout, err = run_classic(
        ["--dataset", "cifar100", "--indices", 3, 130, "--iters", 2, "--data-root", cifar100_data.root,
         "--out", out, "--quiet"], capsys)
    check_error(code, stdout, err, "--index 130", "out of range", "130 images")
    assert not out.exists()


def test_error_bundled_test_index_out_of_range(tmp_path: Path, data_root: Path, capsys) -> None:
    _error_case(tmp_path, capsys, ["--dataset", "mnist", "--split", "test", "--index", 10000,
                                   "--no-download", "--data-root", data_root],
                "--index 10000", "10000 images")


def test_error_image_missing(tmp_path: Path, capsys) -> None:
    _error_case(tmp_path, capsys, ["--image", tmp_path / "nope.jpg", "--label", 0],
                "nope.jpg", "does not exist")


def test_error_image_not_an_image(tmp_path: Path, capsys) -> None:
    text = tmp_path / "cat.png"  # the name says PNG, the content does not
    text.write_text("meow\n")
    _error_case(tmp_path, capsys, ["--image", text, "--label", 0], "cat.png", "not an image")


@pytest.mark.parametrize("extra", [[], ["--num-classes", 10]], ids=["dataset-classes", "num-classes"])
def test_error_label_out_of_range(extra: list, tmp_path: Path, capsys) -> None:
    photo = write_image(tmp_path / "p.png", (32, 32))
    limit = extra[1] if extra else 100
    _error_case(tmp_path, capsys, ["--dataset", "cifar100", "--image", photo, "--label", limit, *extra],
                f"--label {limit}", f"0..{limit - 1}")


def test_error_label_count_mismatch(tmp_path: Path, capsys) -> None:
    photo = write_image(tmp_path / "p.png", (32, 32))
    _error_case(tmp_path, capsys, ["--image", photo, "--label", 1, 2], "1 --image", "2 --label")


@pytest.mark.parametrize("iters", [0, -5])
def test_error_iters_not_positive(iters: int, tmp_path: Path, data_root: Path, capsys) -> None:
    _error_case(tmp_path, capsys, ["--dataset", "cifar100", "--split", "test", "--index", 0,
                                   "--no-download", "--data-root", data_root, "--iters", iters],
                f"--iters must be at least 1 (got {iters})")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--attack", "ig", "--restarts", 0], "--restarts must be at least 1 (got 0)"),
        (["--attack", "dlg", "--restarts", 0], "--restarts must be at least 1 (got 0)"),
        (["--attack", "analytic", "--restarts", 2], "--restarts applies to the dlg, idlg, ig, auto and spear attacks, not analytic"),
    ],
)
def test_error_restarts(extra: list, message: str, tmp_path: Path, data_root: Path, capsys) -> None:
    _error_case(tmp_path, capsys, ["--dataset", "cifar100", "--split", "test", "--index", 0,
                                   "--no-download", "--data-root", data_root, *extra], message)


def test_error_output_not_writable(tmp_path: Path, data_root: Path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write to a read-only folder (root)")
        out = locked / "run"
        code, stdout, err = run_classic(_bundled_args(out, data_root), capsys)
        check_error(code, stdout, err, "cannot write", str(locked))
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_error_output_inside_a_file(tmp_path: Path, data_root: Path, capsys) -> None:
    # Unwritable for every user, root included: the --out "folder" would live inside a file.
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder\n")
    out = blocker / "run"
    code, stdout, err = run_classic(_bundled_args(out, data_root), capsys)
    check_error(code, stdout, err, str(blocker))
    assert blocker.read_text() == "not a folder\n"


def test_error_output_is_a_file(tmp_path: Path, data_root: Path, capsys) -> None:
    out = tmp_path / "run.png"
    out.write_bytes(b"\x89PNG keep me")
    code, stdout, err = run_classic(_bundled_args(out, data_root), capsys)
    check_error(code, stdout, err, str(out), "is a file")
    assert out.read_bytes() == b"\x89PNG keep me"


@pytest.mark.parametrize(
    ("dataset", "title"), [("cifar100", "CIFAR-100"), ("mnist", "MNIST"), ("lfw", "LFW")]
)
def test_error_dataset_absent_and_download_disabled(dataset: str, title: str, tmp_path: Path,
                                                     data_root: Path, capsys) -> None:
    _error_case(tmp_path, capsys, ["--dataset", dataset, "--index", 3, "--split", "train",
                                   "--no-download", "--data-root", data_root],
                f"{title} train split is not available", "--no-download", str(data_root.resolve()))
    assert files(data_root) == {}


def test_error_dataset_absent_and_no_network(tmp_path: Path, data_root: Path, capsys,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def offline(request: object, timeout: float | None = None) -> object:
        asked.append(getattr(request, "full_url", str(request)))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(download, "_urlopen", offline)
    before = files(tmp_path)
    code, out, err = run_classic(["--dataset", "cifar100", "--index", 25, "--iters", 2,
                                  "--data-root", data_root, "--out", tmp_path / "run", "--quiet"], capsys)
    # The attempts are announced as they happen (one "downloading" line each); the failure
    # itself is one error line, last, with what was tried and how to install by hand.
    *notices, error = err.splitlines()
    assert all(line.startswith("gradleak: downloading ") for line in notices), notices
    check_error(code, out, error + "\n", "main.py: error:", "CIFAR-100 train split is not available",
                "download failed", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                "Temporary failure in name resolution", "place it at", str(data_root.resolve()))
    assert "Traceback" not in err
    assert asked and all(url.endswith("cifar-100-python.tar.gz") for url in asked)
    _expect_nothing_written(tmp_path, before)
    assert files(data_root) == {}  # no partial download left behind


def test_error_checksum_mismatch_cifar(cifar100_data: FixtureData, tmp_path: Path, capsys) -> None:
    tarball = cifar100_data.files[0]
    with open(tarball, "ab") as f:  # a truncated/corrupted download: bytes differ
        f.write(b"garbage")
    out = tmp_path / "run"
    code, stdout, err = run_classic(
        ["--dataset", "cifar100", "--index", 25, "--iters", 2, "--no-download",
         "--data-root", cifar100_data.root, "--out", out, "--quiet"], capsys)
    check_error(code, stdout, err, "checksum mismatch", str(tarball), "delete it")
    assert not out.exists()
    assert not (cifar100_data.root / "cifar-100-python").exists()  # nothing unpickled or extracted


def test_error_checksum_mismatch_mnist(mnist_data: FixtureData, tmp_path: Path, capsys) -> None:
    labels = next(p for p in mnist_data.files if p.name == "train-labels-idx1-ubyte.gz")
    labels.write_bytes(labels.read_bytes()[:-3])  # truncated
    out = tmp_path / "run"
    code, stdout, err = run_classic(
        ["--dataset", "mnist", "--index", 5, "--iters", 2, "--data-root", mnist_data.root,
         "--out", out, "--quiet"], capsys)
    check_error(code, stdout, err, "checksum mismatch", str(labels), "delete it")
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_error_cuda_without_cuda(tmp_path: Path, data_root: Path, capsys) -> None:
    _error_case(tmp_path, capsys, ["--dataset", "cifar100", "--split", "test", "--index", 0,
                                   "--no-download", "--data-root", data_root, "--device", "cuda"],
                "--device cuda", "CUDA is not available")


def test_error_model_does_not_fit_dataset(tmp_path: Path, capsys) -> None:
    _error_case(tmp_path, capsys, ["--dataset", "mnist", "--model", "lenet"],
                "'lenet'", "mnist", "--model lenetmnist")


def test_error_index_and_indices_together(tmp_path: Path, capsys) -> None:
    _error_case(tmp_path, capsys, ["--index", 1, "--indices", 2, 3], "--index", "--indices")


def test_error_unknown_flag_is_one_line(tmp_path: Path, capsys) -> None:
    _error_case(tmp_path, capsys, ["--dataset", "cifar100", "--itres", 5], "--itres")


def test_batch_larger_than_the_class_count(tmp_path: Path, capsys) -> None:
    # gradleak run --dataset mnist --split test --indices 0 1 ... 10 --iters 20: 11 images, 10
    # classes (labels 7 2 1 0 4 1 4 9 5 9 0). The head's gradient has only 10 rows; un-mixing it
    # used to crash ("The expanded size of the tensor (11) must match the existing size (10)").
    out = tmp_path / "b11"
    code = gradleak_main(["run", "--dataset", "mnist", "--split", "test", "--indices", *map(str, range(11)),
                          "--iters", "20", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["batch_size"] == 11
    assert metrics["label_accuracy"] >= 10 / 11  # repeated labels restored by their counts
    # measured 22.8 dB (Inverting Gradients alone with 20 steps: 5.3 dB)
    assert metrics["psnr"] > 15


@pytest.mark.parametrize("below", [False, True])
def test_error_out_is_a_dangling_symlink(tmp_path: Path, capsys, below: bool) -> None:
    # Refused before the attack (it used to fail only when the results were moved into place).
    link = tmp_path / "results"
    link.symlink_to(tmp_path / "gone")
    out = link / "run1" if below else link
    code, stdout, err = run_classic(["--dataset", "mnist", "--split", "test", "--index", 0, "--iters", 2,
                                     "--out", out, "--quiet"], capsys)
    check_error(code, stdout, err, "main.py: error:", f"{link} is a symbolic link to {tmp_path / 'gone'}",
                "which does not exist", "choose another --out")
    assert "Final MSE" not in stdout
    assert not (tmp_path / "gone").exists() and link.is_symlink()


def test_duplicate_indices_get_a_note(tmp_path: Path, capsys) -> None:
    code, out, err = run_classic(["--dataset", "mnist", "--split", "test", "--indices", 4, 0, 4, "--attack", "dlg",
                                  "--iters", 1, "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    assert "note: --indices repeats 4 (2 times): the batch of 3 holds those images more than once" in out
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["batch_size"] == 3  # kept as given
    code, out, _ = run_classic(["--dataset", "mnist", "--split", "test", "--indices", 4, 0, "--attack", "dlg",
                                "--iters", 1, "--out", tmp_path / "run2"], capsys)
    assert code == 0 and "repeats" not in out
