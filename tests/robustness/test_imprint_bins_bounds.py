"""``--bins`` is bounded (issue 21): 10⁹ bins was an allocation traceback, 100,000 silently took
12.3 GB, and ``inspect-model --bins 0`` silently meant 1024. Each is now one line before any
allocation (run under an address-space limit, so a regression cannot take the machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradleak.cli.main import main as gradleak_main

from .limited import assert_one_line, run_limited

RUN = ["run", "--scenario", "imprint", "--dataset", "cifar100", "--split", "test", "--indices", "0", "1", "--quiet"]
INSPECT = ["inspect-model", "--model", "lenet", "--dataset", "cifar100", "--scenario", "imprint"]


@pytest.mark.parametrize("command", ["run", "inspect"])
def test_a_billion_bins_isassert_one_line(command: str, tmp_path: Path) -> None:
    argv = [*RUN, "--out", str(tmp_path / "r")] if command == "run" else INSPECT
    assert_one_line(run_limited([*argv, "--bins", str(10**9)]), "--bins 1000000000 is more than 65,536")


def test_bins_beyond_the_memory_budget_are_refused_with_the_estimate(tmp_path: Path) -> None:
    # 60,000 bins on CIFAR's 3,072 inputs need ~6.9 GiB over the run: above a 2 GiB budget.
    done = run_limited([*RUN, "--bins", "60000", "--out", str(tmp_path / "r")], env={"GRADLEAK_MAX_MEMORY": "2G"})
    assert_one_line(done, "60,000 bins on 3,072 inputs", "needs about 6.9 GiB", "only 2.0 GiB", "fewer --bins")
    assert not (tmp_path / "r").exists()


def test_inspect_bins_zero_is_refused_not_the_default(capsys) -> None:
    assert gradleak_main([*INSPECT, "--bins", "0"]) == 2
    err = capsys.readouterr().err
    assert "--bins must be at least 2 (got 0)" in err and err.count("\n") == 1
