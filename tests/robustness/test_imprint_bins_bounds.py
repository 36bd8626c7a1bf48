"""``--bins`` is bounded (issue 21): 10⁹ bins was an allocation traceback, 100,000 silently took
12.3 GB, and ``inspect-model --bins 0`` silently meant 1024. Each is now one line before any
allocation (run under an address-space limit, so a regression cannot take the machine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradleak.cli.main import main as gradleak_main

REPO = Path(__file__).resolve().parents[2]
RUN = ["run", "--scenario", "imprint", "--dataset", "cifar100", "--split", "test", "--indices", "0", "1", "--quiet"]
INSPECT = ["inspect-model", "--model", "lenet", "--dataset", "cifar100", "--scenario", "imprint"]


def _limited(argv: list[str], env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    limit = 3 * 2**30
    code = (f"import resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
            "from gradleak.cli.main import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120, env=env)


def _one_line(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for needle in needles:
        assert needle in done.stderr, (needle, done.stderr)


@pytest.mark.parametrize("command", ["run", "inspect"])
def test_a_billion_bins_is_one_line(command: str, tmp_path: Path) -> None:
    argv = [*RUN, "--out", str(tmp_path / "r")] if command == "run" else INSPECT
    _one_line(_limited([*argv, "--bins", str(10**9)]), "--bins 1000000000 is more than 65,536")


def test_bins_beyond_the_memory_budget_are_refused_with_the_estimate(tmp_path: Path) -> None:
    # 60,000 bins on CIFAR's 3,072 inputs need ~6.9 GiB over the run: above a 2 GiB budget.
    done = _limited([*RUN, "--bins", "60000", "--out", str(tmp_path / "r")], {"GRADLEAK_MAX_MEMORY": "2G"})
    _one_line(done, "60,000 bins on 3,072 inputs", "needs about 6.9 GiB", "only 2.0 GiB", "fewer --bins")
    assert not (tmp_path / "r").exists()


def test_inspect_bins_zero_is_refused_not_the_default(capsys) -> None:
    assert gradleak_main([*INSPECT, "--bins", "0"]) == 2
    err = capsys.readouterr().err
    assert "--bins must be at least 2 (got 0)" in err and err.count("\n") == 1
