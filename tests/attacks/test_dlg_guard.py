"""DLG's stall guard (issue 10): a try judged not converging, from the gradient distance and the
dummy image alone, is restarted from a fresh draw within the same iteration budget."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from gradleak.attacks import DLG
from gradleak.experiment import RunConfig, run_experiment
from gradleak.metrics import psnr
from gradleak.scenarios import FedSGD
from gradleak.types import SharedUpdate


def _share(bundled, lenet, dataset: str, index: int):
    images, labels = bundled(dataset, [index])
    model = lenet(dataset)
    return images, labels, model, FedSGD().share(model, images, labels)


def test_a_stalled_cifar100_run_is_restarted_and_then_succeeds(bundled, lenet):
    # Bundled CIFAR-100 test image 16, seed 1234: the original DLG creeps (its gradient distance
    # falls 10x in 20 steps, 2,500x by step 300, where successful runs fall 1e8x) and ends at 7.0 dB.
    # The guard gives that try up after 20 steps and the next one reconstructs the image inside
    # the same 80-step budget.
    images, labels, model, update = _share(bundled, lenet, "cifar100", 16)
    result = DLG(iterations=80).run(model, update)
    first = result.attempts[0]
    assert first.reason == "stalled" and first.iterations == 20, result.attempts
    assert first.final_loss > 0.01 * first.start_loss
    assert len(result.attempts) >= 2 and result.restarts == len(result.attempts)
    assert result.iterations == 80 == sum(a.iterations for a in result.attempts)
    assert psnr(result.images, images) > 30
    assert result.labels.tolist() == labels.tolist()


def test_restarts_1_is_the_single_try_original(bundled, lenet):
    # The same image with --restarts 1: exactly one try, run to the end, and it fails as the
    # original does; its first 20 steps are the guarded run's first try, step for step.
    images, _, model, update = _share(bundled, lenet, "cifar100", 16)
    state = torch.get_rng_state()  # both draw their start from here, as the original script does
    single = DLG(iterations=30, restarts=1).run(model, update)
    assert len(single.attempts) == 1 and single.attempts[0].reason == "max_iterations"
    assert single.iterations == 30 and single.stop_reason == "max_iterations"
    assert psnr(single.images, images) < 10
    torch.set_rng_state(state)
    guarded = DLG(iterations=30).run(model, update)
    assert guarded.attempts[0].iterations == 20
    assert guarded.losses[:20] == single.losses[:20]


def test_a_blown_up_mnist_run_is_restarted(bundled, lenet):
    # Bundled MNIST test image 14: the original's first L-BFGS step throws pixels past 1e3 and the
    # run never recovers (2.9 dB after 1200 steps); the guard notices at once.
    images, labels, model, update = _share(bundled, lenet, "mnist", 14)
    result = DLG(iterations=60).run(model, update)
    assert result.attempts[0].reason == "blew up" and "pixel" in result.attempts[0].detail
    assert psnr(result.images, images) > 30


def test_every_try_diverging_ends_diverged_with_finite_images(bundled, lenet):
    images, labels, model, update = _share(bundled, lenet, "mnist", 0)
    broken = SharedUpdate(
        tensors=tuple(t * float("inf") for t in update.tensors), kind="gradient", batch_size=1,
        input_shape=update.input_shape, num_classes=10,
    )
    result = DLG(iterations=20, restarts=3).run(model, broken)
    assert [a.reason for a in result.attempts] == ["diverged"] * 3
    assert result.stop_reason.startswith("diverged after 3 tries")
    assert torch.isfinite(result.images).all()


def test_a_warm_start_is_a_single_try(bundled, lenet):
    images, _, model, update = _share(bundled, lenet, "mnist", 14)
    result = DLG(iterations=3, init=torch.full_like(images, 0.5)).run(model, update)
    assert len(result.attempts) == 1 and result.attempts[0].init == "warm start"


def test_metrics_json_and_curves_record_the_restarts(tmp_path: Path, capsys):
    config = RunConfig(
        dataset="mnist", split="test", indices=[14], data_root=str(tmp_path / "no-data"), download=False,
        attack="dlg", iterations=40, out=str(tmp_path / "run"), quiet=True,
    )
    outcome = run_experiment(config)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["tries"] == len(metrics["attempts"]) >= 2
    assert metrics["attempts"][0]["reason"] == "blew up" and metrics["attempts"][0]["start"] == 0
    assert metrics["attempts"][1]["start"] == metrics["attempts"][0]["iterations"]
    assert sum(a["iterations"] for a in metrics["attempts"]) == metrics["iterations"] == 40
    assert all(math.isfinite(a["start_loss"]) for a in metrics["attempts"])
    assert metrics["psnr"] > 30 and outcome.metrics["psnr"] == metrics["psnr"]
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0
    single = run_experiment(RunConfig(**{**config.__dict__, "restarts": 1, "out": str(tmp_path / "one")}))
    assert single.metrics["tries"] == 1 and len(single.metrics["attempts"]) == 1
    assert single.metrics["psnr"] < 10


def test_the_classic_script_uses_the_guard_and_accepts_restarts_1(tmp_path: Path, capsys):
    from gradleak.cli.main import classic_main

    base = ["--dataset", "cifar100", "--split", "test", "--index", "2", "--no-download",
            "--data-root", str(tmp_path / "none"), "--iters", "6", "--quiet"]
    assert classic_main([*base, "--out", str(tmp_path / "guarded")]) == 0
    out = capsys.readouterr().out
    config = json.loads((tmp_path / "guarded" / "config.json").read_text())
    metrics = json.loads((tmp_path / "guarded" / "metrics.json").read_text())
    assert config["attack"] == "dlg" and config["attack_settings"]["restarts"] == 8
    # Image 2 with seed 1234: the original's fourth step throws a pixel to ~1e5; the guard restarts it.
    assert metrics["attempts"][0]["reason"] == "blew up" and metrics["tries"] == 2
    assert "after 2 tries (1 restart(s): blew up at 4)" in out
    assert classic_main([*base, "--restarts", "1", "--out", str(tmp_path / "single")]) == 0
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert single["tries"] == 1 and [a["reason"] for a in single["attempts"]] == ["max_iterations"]
