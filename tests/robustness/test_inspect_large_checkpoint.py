"""``inspect-model`` on a large checkpoint in bounded memory (issue 21: a 1.6 GB file took 8 GB).

A 330 MB checkpoint (two honest 160 MB weights and a small imprint layer) is written in each real
format ``inspect-model`` reads, then checked in a subprocess whose address space may grow by only
1.5x the file's size beyond what the interpreter held after its imports. Loading the file whole
and copying a weight to float64 needs more than twice the file; reading it a chunk of rows at a
time (safetensors by ``pread``, a torch zip checkpoint memory-mapped) fits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.robustness.limited import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHILD = """
import resource, sys
from gradleak.cli.main import main
import gradleak.inspect, safetensors.torch  # what inspect-model imports: part of the baseline
size = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
limit = size + int(float(sys.argv[2]) * __import__("os").path.getsize(sys.argv[1]))
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
code = main(["inspect-model", sys.argv[1]])
print("max RSS MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
sys.exit(code)
"""


def _state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    trap = torch.rand(1, 3072, generator=generator).expand(64, 3072).contiguous()  # rows differ only in bias
    return {
        "0.trap.weight": trap,
        "0.trap.bias": torch.linspace(0, 1, 64),
        "1.encoder.weight": torch.randn(20_000, 2048, generator=generator),
        "2.decoder.weight": torch.randn(2048, 20_000, generator=generator),
    }


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_330_mb_checkpoint_is_inspected_within_1_5x_its_size(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"large{suffix}"
    state = _state()
    if suffix == ".pt":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    del state
    assert path.stat().st_size > 300 * 2**20
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), "1.5"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 1, (done.stdout[-2000:], done.stderr[-2000:])  # 1: a finding
    assert "0.trap.weight: identical-rows" in done.stdout and "Traceback" not in done.stderr, done.stdout
    assert "1 finding(s)" in done.stdout, done.stdout  # the honest random weights are clean
