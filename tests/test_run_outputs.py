"""What a single run shows: one iteration count everywhere, curves and histories that show what
happened (or a line saying why there are none), a defined batch PSNR, names instead of codes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import gradleak.figures as report
from gradleak.cli.main import classic_main
from gradleak.cli.main import main as gradleak_main
from gradleak.figures import history_frames

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def curves(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The data handed to save_curves (the figure is still written)."""
    seen: dict[str, Any] = {}
    real = report.save_curves

    def record(path: Path, **kwargs: Any) -> None:
        seen.update(kwargs)
        real(path, **kwargs)

    monkeypatch.setattr(report, "save_curves", record)
    return seen


def _metrics(out: Path) -> dict[str, Any]:
    return json.loads((out / "metrics.json").read_text())


def test_closed_form_run_says_why_it_has_no_curves_or_history(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert gradleak_main(["run", "--out", str(out), "--save-history", "--quiet"]) == 0
    assert not (out / "curves.png").exists() and not (out / "history.png").exists()
    assert gradleak_main(["run", "--out", str(tmp_path / "loud"), "--save-history"]) == 0
    printed = capsys.readouterr().out
    assert "note: no curves.png: attack 'auto' finished in one step (solved in closed form)" in printed
    assert "note: --save-history does not apply" in printed
    metrics = _metrics(out)
    assert metrics["iterations"] == 1 and "iterations=1 " in printed
    assert metrics["auto_choice"] == "analytic" and "sigmoid conv net" in metrics["auto_reason"]
    assert metrics["tries"] == 1 and "restarts" not in metrics
    assert isinstance(metrics["solver_iterations"], int)


def test_dlg_stops_once_converged_and_its_figures_end_at_the_result(tmp_path: Path, capsys, curves) -> None:
    out = tmp_path / "mnist"
    code = classic_main(["--dataset", "mnist", "--split", "test", "--index", "0", "--iters", "300",
                         "--save-history", "--out", str(out)])
    assert code == 0
    metrics = _metrics(out)
    assert metrics["stop_reason"] == "converged" and metrics["iterations"] < 150, metrics["stop_reason"]
    assert metrics["psnr"] >= 30
    assert curves["iterations"][-1] == metrics["iterations"]  # the curve's x axis ends where the run did
    assert set(curves["objectives"]) == {"gradient distance Σ‖g′ − g‖²"}
    assert (out / "history.png").is_file() and (out / "curves.png").is_file()
    assert metrics["tries"] == 1
    # --early-stop 0: the whole budget, as the original
    full = tmp_path / "full"
    assert classic_main(["--dataset", "mnist", "--split", "test", "--index", "0", "--iters", "50",
                         "--early-stop", "0", "--quiet", "--out", str(full)]) == 0
    assert _metrics(full)["iterations"] == 50


def test_map_curve_is_its_posterior_energy_on_the_iterations_it_ran(tmp_path: Path, curves) -> None:
    out = tmp_path / "map"
    assert gradleak_main(["run", "--dataset", "mnist", "--split", "test", "--index", "0", "--attack", "map",
                          "--defense", "gaussian:1e-4", "--iters", "45", "--quiet", "--out", str(out)]) == 0
    metrics = _metrics(out)
    assert curves["iterations"][-1] == metrics["iterations"] >= 45  # not the number of reports
    assert len(curves["iterations"]) < metrics["iterations"]
    assert set(curves["objectives"]) == {"posterior energy"}


def test_batch_psnr_is_defined_and_both_values_are_given(tmp_path: Path, capsys) -> None:
    out = tmp_path / "batch"
    assert classic_main(["--dataset", "mnist", "--split", "test", "--indices", "0", "1", "--iters", "2",
                         "--out", str(out)]) == 0
    metrics = _metrics(out)
    per_image = [p["psnr"] for p in metrics["per_image"]]
    assert metrics["psnr"] == pytest.approx(sum(per_image) / 2)
    assert metrics["psnr_of_batch_mse"] == pytest.approx(10 * math.log10(1 / metrics["mse"]))
    text = (out / "metrics.txt").read_text()
    assert "PSNR above: mean of the per-image PSNRs" in text
    assert f"PSNR of the batch MSE={metrics['psnr_of_batch_mse']:.2f} dB" in text
    assert f"PSNR of the batch MSE: {metrics['psnr_of_batch_mse']:.2f} dB" in capsys.readouterr().out


def test_history_keeps_the_last_frame_and_leaves_out_repeats() -> None:
    # 120 snapshots of a run that converged early (MNIST-like): a few distinct frames, then repeats
    snaps = [(10 * i, torch.full((1, 4, 4), min(i, 6) / 10)) for i in range(120)]
    snaps.append((1195, torch.full((1, 4, 4), 0.6)))
    kept = history_frames(snaps)
    assert [i for i, _ in kept] == [0, 10, 20, 30, 40, 50, 60, 1195]
    changing = [(i, torch.full((1, 2, 2), i / 200)) for i in range(120)]
    kept = history_frames(changing)
    assert len(kept) == 30 and kept[0][0] == 0 and kept[-1][0] == 119
