"""Shared helpers for the sweep tests: tiny configs on bundled MNIST test images."""

from __future__ import annotations

import pytest
import torch

TINY_TOML = """
[sweep]
name = "tiny"
success_psnr = 30.0

[grid]
datasets = ["mnist"]
attacks = ["idlg"]
defenses = ["none", "gaussian:1e-1"]
indices = [0, 1]

[run]
split = "test"
iterations = {iterations}
download = false
data_root = "/nonexistent-gradleak-data"
"""


def tiny_toml(iterations: int = 4, extra: str = "") -> str:
    return TINY_TOML.format(iterations=iterations) + extra


@pytest.fixture
def one_thread():
    """Torch on one thread (as in a sweep worker): fast and steady on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: multi-process Dask tests (seconds to a minute)")
