"""Sweeps accept the secagg and imprint scenarios (their parameters on the scenario axis); the
malicious-server batch-size configs expand and their runs execute."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradleak.errors import GradleakError
from gradleak.report.sweep_report import summarise
from gradleak.sweep.grid import load_plan, parse_plan

REPO = Path(__file__).resolve().parents[2]

GRID = """
[grid]
datasets = ["cifar100"]
attacks = ["imprint", "auto"]
scenarios = ["imprint", "secagg", "fedsgd"]
batch_sizes = [1, 4]
bins = [64, 256]
clients = [2]
[run]
split = "test"
tile_bundled = true
"""


def test_scenario_axis_carries_clients_and_bins():
    plan = parse_plan(GRID)
    labels = {r.axes["scenario"] for r in plan.runs}
    # clients applies to secagg and imprint (the malicious server under secure aggregation)
    assert labels == {"imprint:bins=64,clients=2", "imprint:bins=256,clients=2", "secagg:clients=2", "fedsgd"}
    secagg = [r for r in plan.runs if r.config["scenario"] == "secagg"]
    assert {r.config["clients"] for r in secagg} == {2} and all(r.config["bins"] is None for r in secagg)
    assert all(r.axes["batch_size"] == 4 for r in secagg)  # batch 1 cannot be split: skipped
    assert any("cannot be split evenly" in s for s in plan.skipped)
    fedsgd = [r for r in plan.runs if r.config["scenario"] == "fedsgd"]
    assert all(r.config["clients"] is None and r.config["bins"] is None for r in fedsgd)
    assert len({r.run_id for r in plan.runs}) == len(plan.runs)


def test_bad_bins_in_a_sweep_is_one_line():
    with pytest.raises(GradleakError, match="grid.bins must be >= 2"):
        parse_plan('[grid]\ndatasets = ["cifar100"]\nscenarios = ["imprint"]\nbins = [0]\n')


@pytest.mark.parametrize("name", ["imprint_batch", "imprint_batch_small"])
def test_the_imprint_batch_configs_expand(name):
    plan = load_plan(REPO / "configs" / f"{name}.toml")
    sizes = {r.axes["batch_size"] for r in plan.runs}
    assert min(sizes) == 1 and max(sizes) == 256
    assert len({r.axes["bins"] for r in plan.runs}) >= 2
    assert all(r.config["tile_bundled"] for r in plan.runs)
    if name.endswith("_small"):
        assert len(plan.runs) <= 20


def test_imprint_runs_execute_and_summarise_by_bins(tmp_path):
    from gradleak.experiment import RunConfig, run_experiment

    plan = parse_plan(
        '[grid]\ndatasets = ["cifar100"]\nattacks = ["imprint"]\nscenarios = ["imprint"]\nbatch_sizes = [8]\n'
        'bins = [64, 1024]\nindices = [0]\n[run]\nsplit = "test"\ntile_bundled = true\nsave_final = false\n'
    )
    records = []
    for run in plan.runs:
        metrics = run_experiment(RunConfig(**{**run.config, "out": str(tmp_path / run.run_id), "quiet": True})).metrics
        success = sum(p["psnr"] >= 30 for p in metrics["per_image"]) / len(metrics["per_image"])
        records.append({**run.axes, "status": "done", "psnr": metrics["psnr"], "success": success})
    summary = summarise(records)
    assert [g["scenario"] for g in summary] == ["imprint:bins=64", "imprint:bins=1024"]  # numeric order
    assert summary[1]["success_rate"] >= 0.9
