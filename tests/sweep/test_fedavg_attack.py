"""FedAvg: Inverting Gradients recovers a recognisable image from a one-local-step weight change."""

from __future__ import annotations

import pytest

from gradleak.attacks import ATTACKS
from gradleak.experiment import RunConfig, run_experiment


@pytest.mark.skipif("ig" not in ATTACKS, reason="the 'ig' attack (FedAvg unroll) is not registered")
def test_ig_recovers_a_bundled_mnist_image_from_one_local_step(tmp_path, one_thread):
    outcome = run_experiment(
        RunConfig(
            dataset="mnist", split="test", indices=[0], data_root=str(tmp_path / "no-data"), download=False,
            attack="ig", scenario="fedavg", local_steps=1, local_lr=1e-4, iterations=500,
            tv_weight=1e-4, clamp=True, out=str(tmp_path / "run"), quiet=True,
        )
    )
    m = outcome.metrics
    assert m["scenario"] == "fedavg" and m["attack"] == "ig"
    # recognisable: well above a blank or noise guess (~5-10 dB), structurally close
    assert m["psnr"] >= 25.0, m
    assert m["ssim"] >= 0.8, m
    assert m["label_accuracy"] == 1.0
