"""What an update can leak, counted before any attack: the table, inspect-model, metrics.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from gradleak.attacks.identifiability import identifiability
from gradleak.cli.main import main as gradleak_main
from gradleak.models import build_model


def test_the_mlp_determines_large_batches_the_lenet_only_one() -> None:
    mlp = build_model("mlp", channels=3, image_size=32, num_classes=10)
    report = identifiability(mlp, (3, 32, 32), 64)
    assert report.exact and report.largest_exact_batch == 500
    assert [row.relu_input for row in report.layers] == [False, True, True]
    lenet = build_model("lenet", channels=3, image_size=32, num_classes=100)
    report = identifiability(lenet, (3, 32, 32), 8)
    assert not report.exact and report.largest_exact_batch == 1
    assert "cannot be recovered exactly" in report.table()


def test_a_layer_whose_gradient_is_not_sent_determines_nothing() -> None:
    mlp = build_model("mlp", channels=1, image_size=28, num_classes=10)
    sent = tuple(n for n, _ in mlp.named_parameters() if not n.startswith("layers.2"))
    report = identifiability(mlp, (1, 28, 28), 4, sent=sent)
    assert report.layers[1].largest_batch == 0 and report.layers[1].note == "gradient not sent"
    assert not report.exact


def test_inspect_model_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    code = gradleak_main(["inspect-model", "--model", "mlp", "--dataset", "cifar10", "--batch-size", "64"])
    out = capsys.readouterr().out
    assert code == 1  # the wide first Linear layer is also flagged, as before
    assert "| layers.2 | linear | 1,000 | 1,000 | 64 |" in out
    assert "a batch of 64 can be recovered exactly from this update: images are determined up to a batch of 500" in out


def test_inspect_model_batch_size_needs_a_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert gradleak_main(["inspect-model", "--batch-size", "4", "model.pt"]) == 2
    assert "--batch-size 4 needs --model NAME" in capsys.readouterr().err


def test_every_run_records_identifiability_and_spear_recovers_the_batch(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = gradleak_main([
        "run", "--dataset", "mnist", "--model", "mlp", "--attack", "auto", "--split", "test", "--tile-bundled",
        "--indices", "0", "1", "2", "--threads", "1", "--out", str(out), "--quiet",
    ])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["identifiability"]["largest_exact_batch"] == 500
    assert metrics["identifiability"]["exact_possible"] is True
    assert metrics["auto_choice"] == "spear" and metrics["psnr"] > 60


def test_ci_sized_benchmark_runs_and_spear_wins() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import exact_batch

    rows = exact_batch.main(["--ci"])
    by_attack = {row["attack"]: row for row in rows}
    assert by_attack["spear"]["exact"] == 1.0
    assert by_attack["ig"]["recovered"] < by_attack["spear"]["recovered"]
