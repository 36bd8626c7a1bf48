"""Secure aggregation: the server sees only the mean of the clients' updates; the runner reports
which client each reconstructed image came from."""

from __future__ import annotations

import json

import pytest
import torch

from gradleak.cli.main import main as gradleak_main
from gradleak.models import build_model
from gradleak.scenarios import FedSGD, SecAgg

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_aggregate_is_the_gradient_of_the_whole_batch():
    torch.manual_seed(0)
    model = build_model("lenetmnist", channels=1, image_size=28, num_classes=10)
    images, labels = torch.rand(6, 1, 28, 28), torch.tensor([1, 2, 3, 4, 5, 6])
    aggregate = SecAgg(clients=3).share(model, images, labels)
    union = FedSGD().share(model, images, labels)
    assert aggregate.clients == 3 and aggregate.batch_size == 6
    for a, b in zip(aggregate.tensors, union.tensors):
        assert torch.allclose(a, b, atol=1e-6)
    # ... and no single client's update is in it
    first = FedSGD().share(model, images[:2], labels[:2])
    assert not torch.allclose(aggregate.tensors[-1], first.tensors[-1], atol=1e-4)


def test_cli_secagg_run_reconstructs_and_reports_clients(tmp_path, capsys):
    out = tmp_path / "run"
    code = gradleak_main([
        "run", "--dataset", "mnist", "--split", "test", "--indices", "0", "1", "--scenario", "secagg",
        "--clients", "2", "--iters", "50", "--out", str(out), "--quiet",
    ])
    printed = capsys.readouterr().out
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scenario"] == "secagg" and metrics["clients"] == 2
    assert sorted(p["client"] for p in metrics["per_image"]) == [0, 1]
    assert [c["client"] for c in metrics["per_client"]] == [0, 1]
    # Two real MNIST digits from two clients, summed: both come back (analytic batch inversion).
    assert min(p["psnr"] for p in metrics["per_image"]) >= 30
    assert "client 0: 100% | client 1: 100%" in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--indices", "0", "1", "--scenario", "secagg", "--clients", "3"], "--clients 3 is larger than the batch of 2"),
        (["--indices", "0", "1", "2", "--scenario", "secagg", "--clients", "2"], "cannot be split evenly among --clients 2"),
        (["--indices", "0", "1", "--clients", "2"], "--clients applies to --scenario secagg"),
        (["--indices", "0", "1", "--scenario", "secagg", "--clients", "0"], "--clients must be at least 1"),
    ],
)
def test_bad_secagg_settings_are_one_line_errors(argv, message, tmp_path, capsys):
    code = gradleak_main(["run", "--dataset", "mnist", "--split", "test", "--out", str(tmp_path / "x"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "x").exists()
