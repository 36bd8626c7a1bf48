"""The runner (``gradleak.experiment``): a real DLG success, batch results paired with the right
private image, output folders that appear whole or not at all, and a reproducible seed."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradleak.attacks import ATTACKS
from gradleak.errors import GradleakError
from gradleak.experiment import RunConfig, execute, prepare, run_experiment
from gradleak.types import AttackResult, StepReport
from tests.conftest import CIFAR_SOLID, FixtureData

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def bundled_mnist(tmp_path: Path, **overrides: object) -> RunConfig:
    """Bundled MNIST test image 0 (a 7): offline, no data root needed."""
    settings: dict[str, object] = {
        "dataset": "mnist", "split": "test", "indices": [0], "data_root": str(tmp_path / "no-data"),
        "download": False, "attack": "dlg", "seed": 1234, "out": str(tmp_path / "run"), "quiet": True,
    }
    settings.update(overrides)
    return RunConfig(**settings)  # type: ignore[arg-type]


def test_dlg_reconstructs_a_bundled_mnist_digit(tmp_path: Path) -> None:
    """The paper's claim, end to end: DLG (L-BFGS, no clamp) recovers the private digit and its
    label from one shared gradient. About 60 dB after 20 iterations, ~77 dB after 30."""
    outcome = run_experiment(bundled_mnist(tmp_path, iterations=30, save_final=True))
    metrics = outcome.metrics
    assert metrics["psnr"] > 30, metrics
    assert metrics["label_accuracy"] == 1.0
    assert metrics["per_image"][0]["label"] == metrics["per_image"][0]["recovered_label"] == 7
    assert metrics["ssim"] > 0.99
    recon = png(outcome.out_dir / "recon.png").astype(int)
    target = png(outcome.out_dir / "target.png").astype(int)
    assert recon.shape == target.shape == (28, 28)
    assert np.abs(recon - target).max() <= 2  # the same picture, to a grey level or two
    saved = json.loads((outcome.out_dir / "metrics.json").read_text())
    assert saved["psnr"] == pytest.approx(metrics["psnr"])


def test_same_seed_same_reconstruction(tmp_path: Path) -> None:
    first = run_experiment(bundled_mnist(tmp_path, iterations=3, save_final=True, out=str(tmp_path / "a")))
    second = run_experiment(bundled_mnist(tmp_path, iterations=3, save_final=True, out=str(tmp_path / "b")))
    assert (first.out_dir / "recon.png").read_bytes() == (second.out_dir / "recon.png").read_bytes()
    assert first.metrics["mse"] == second.metrics["mse"]


def test_prepare_writes_nothing_and_resolves_the_config(tmp_path: Path) -> None:
    prepared = prepare(bundled_mnist(tmp_path, iterations=1))
    assert not (tmp_path / "run").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert prepared.model_name == "lenetmnist" and prepared.num_classes == 10
    outcome = execute(prepared)
    config = json.loads((outcome.out_dir / "config.json").read_text())
    assert config["model"] == "lenetmnist"  # resolved from "fits the dataset"
    assert config["device"] == "cpu" and config["num_classes"] == 10 and config["labels"] == [7]
    assert config["seed"] == 1234 and config["split"] == "test" and config["indices"] == [0]


# ---------------------------------------------------------------------------------------------
# Batches: reconstructions come back in any order; the runner must pair them with their targets.


class PermutedConstants:
    """A stand-in attack that never looks at the private data: it returns its OWN constant solid
    grey images, in a fixed order that is a permutation of the private batch's order, each with
    its own label. Levels are 1, 2 and 3 grey levels off the fixture's solid samples at indices
    10, 25, 70 (30, 110, 190), so each pairing has a distinct, known error."""

    name = "test-permuted-constants"
    LEVELS = (193, 31, 112)  # near 190 (index 70), 30 (index 10), 110 (index 25)
    LABELS = (7, 8, 9)

    def __init__(self, **settings: object) -> None:
        self.settings = settings

    def check(self, update: object, *args: object) -> None:
        pass

    def run(self, model: object, update, *, generator: object = None, observer=None) -> AttackResult:
        channels, height, width = update.input_shape
        images = torch.stack([torch.full((channels, height, width), v / 255) for v in self.LEVELS])
        if observer is not None:
            observer(StepReport(iteration=1, loss=0.25, images=images))
        return AttackResult(images=images, labels=torch.tensor(self.LABELS), losses=[0.25],
                            iterations=1, seconds=0.0)


@pytest.fixture
def permuted_attack(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(ATTACKS._items, PermutedConstants.name, PermutedConstants)
    return PermutedConstants.name


def test_batch_outputs_pair_each_target_with_its_reconstruction(
    cifar100_data: FixtureData, permuted_attack: str, tmp_path: Path
) -> None:
    indices = [10, 25, 70]
    config = RunConfig(dataset="cifar100", indices=indices, data_root=str(cifar100_data.root),
                       download=False, iterations=1, attack=permuted_attack, save_final=True,
                       out=str(tmp_path / "run"), quiet=True)
    outcome = execute(prepare(config))
    out = outcome.out_dir
    # target_i is the i-th requested sample; recon_i the attack's image closest to it.
    expected_recon = {0: 31, 1: 112, 2: 193}
    expected_label = {0: 8, 1: 9, 2: 7}
    off_by = {0: 1, 1: 2, 2: 3}
    metrics = json.loads((out / "metrics.json").read_text())
    true_labels = [int(cifar100_data.labels["train"][i]) for i in indices]
    for i, index in enumerate(indices):
        assert (png(out / f"target_{i}.png") == CIFAR_SOLID[index]).all()
        assert (png(out / f"recon_{i}.png") == expected_recon[i]).all()
        item = metrics["per_image"][i]
        assert item["index"] == index
        assert item["label"] == true_labels[i]
        assert item["recovered_label"] == expected_label[i]
        assert item["mse"] == pytest.approx((off_by[i] / 255) ** 2, rel=1e-4)
        assert item["psnr"] == pytest.approx(20 * math.log10(255 / off_by[i]), abs=1e-3)
    assert metrics["mse"] == pytest.approx(np.mean([(k / 255) ** 2 for k in (1, 2, 3)]), rel=1e-4)
    recovered = Counter(PermutedConstants.LABELS) & Counter(true_labels)
    assert metrics["label_accuracy"] == pytest.approx(sum(recovered.values()) / 3)
    # one step (iterations=1): nothing to plot over iterations, so no curves.png with empty axes
    assert (out / "comparison.png").is_file() and not (out / "curves.png").exists()


# ---------------------------------------------------------------------------------------------
# Output folders: whole or not at all


def _fail_while_writing(monkeypatch: pytest.MonkeyPatch) -> None:
    import gradleak.figures

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gradleak.figures, "save_comparison", disk_full)  # written by every scored run


def test_failure_while_writing_leaves_no_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prepared = prepare(bundled_mnist(tmp_path, iterations=1, save_final=True))
    _fail_while_writing(monkeypatch)
    with pytest.raises(GradleakError, match="could not write the results to .*No space left.*nothing was kept"):
        execute(prepared)
    assert list(tmp_path.iterdir()) == []  # neither run/ nor a hidden staging folder


def test_failure_while_overwriting_keeps_previous_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.txt").write_text("dataset=mnist\nPSNR=77.00 dB\n")
    (out / "recon.png").write_bytes(b"previous picture")
    prepared = prepare(bundled_mnist(tmp_path, iterations=1, save_final=True, overwrite=True))
    _fail_while_writing(monkeypatch)
    with pytest.raises(GradleakError, match="No space left"):
        execute(prepared)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert sorted(p.name for p in out.iterdir()) == ["metrics.txt", "recon.png"]
    assert (out / "recon.png").read_bytes() == b"previous picture"


def test_non_empty_output_refused_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    with pytest.raises(GradleakError, match="not empty"):
        prepare(bundled_mnist(tmp_path, iterations=1))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_dpsgd_run_reports_epsilon_for_its_release(tmp_path: Path) -> None:
    pytest.importorskip("dp_accounting")
    outcome = run_experiment(bundled_mnist(tmp_path, iterations=2, defenses=["dpsgd:clip=1,sigma=1"]))
    metrics = outcome.metrics
    # one gradient of 1 image out of MNIST's 10,000 test images, noise multiplier 1
    assert metrics["dp_sample_rate"] == pytest.approx(1 / 10000)
    assert 0 < metrics["dp_epsilon"] < 5 and metrics["dp_delta"] == 1e-5
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["dp_epsilon"] == metrics["dp_epsilon"]


def test_restarts_reach_the_attack(tmp_path: Path) -> None:
    prepared = prepare(bundled_mnist(tmp_path, attack="ig", iterations=2, restarts=2))
    assert prepared.attack.restarts == 2  # type: ignore[attr-defined]
    assert execute(prepared).result.restarts == 2


class InterruptedAttack:
    """Reports 3 of its 10 steps, then the user presses Ctrl-C."""

    name = "test-interrupted"

    def __init__(self, **settings: object) -> None:
        self.settings = settings

    def check(self, update: object, *args: object) -> None:
        pass

    def run(self, model: object, update, *, generator: object = None, observer=None) -> AttackResult:
        images = torch.zeros(update.batch_size, *update.input_shape)
        for step in (1, 2, 3):
            observer(StepReport(iteration=step, loss=1.0 / step, images=images))
        raise KeyboardInterrupt


def test_ctrl_c_leaves_the_progress_bar_where_it_stopped(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(ATTACKS._items, InterruptedAttack.name, InterruptedAttack)
    config = bundled_mnist(tmp_path, attack=InterruptedAttack.name, iterations=10, quiet=False)
    prepared = prepare(config)
    with pytest.raises(KeyboardInterrupt):
        execute(prepared)
    err = capsys.readouterr().err
    last = err.replace("\r", "\n").strip().splitlines()[-1]
    assert "3/10" in last and "100%" not in err  # it used to redraw as 3/3, 100%
    assert not (tmp_path / "run").exists()


def test_an_attack_that_stops_early_still_ends_its_bar(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(ATTACKS._items, PermutedConstants.name, PermutedConstants)
    config = bundled_mnist(tmp_path, attack=PermutedConstants.name, iterations=10, quiet=False)
    config.indices = [0, 1, 2]
    execute(prepare(config))
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "100%" in last and "1/1" in last
