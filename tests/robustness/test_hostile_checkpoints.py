"""Hostile ``--weights`` files (issue 21): one line each, bounded memory, no hang, no traceback.

Fixtures are written in the real formats (safetensors bytes, ``torch.save``), a real FIFO and
``/dev/zero``. The memory cases run in a subprocess under ``RLIMIT_AS`` (3 GiB): before the fixes
they ended in a MemoryError traceback or the OOM killer; now the refusal comes before allocation.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as safetensors_bytes

from gradleak.cli.main import main as gradleak_main
from gradleak.models import build_model

from .limited import assert_one_line, run_limited

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RUN = ["run", "--dataset", "mnist", "--split", "test", "--index", "0", "--iters", "5", "--quiet"]


def _lenet_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model("lenetmnist", channels=1, image_size=28, num_classes=10).state_dict()


def one_line(argv: list[str], tmp_path: Path, capsys, *needles: str) -> str:
    out = tmp_path / "run-out"
    code = gradleak_main([*argv, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1, captured.err
    for needle in needles:
        assert needle in captured.err, (needle, captured.err)
    assert not out.exists()
    return captured.err


def test_deeply_nested_safetensors_header(tmp_path: Path, capsys) -> None:
    header = b'{"a":' * 200_000 + b"1" + b"}" * 200_000
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    one_line([*RUN, "--weights", str(path)], tmp_path, capsys, "deep.safetensors", "nested")


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
def test_float8_checkpoint_loads_as_float32(dtype: torch.dtype, tmp_path: Path, capsys) -> None:
    path = tmp_path / "f8.safetensors"
    path.write_bytes(safetensors_bytes({k: v.to(dtype) for k, v in _lenet_state().items()}))
    out = tmp_path / "run"
    assert gradleak_main([*RUN, "--weights", str(path), "--out", str(out)]) == 0, capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["weights_format"] == "safetensors"
    assert gradleak_main(["inspect-model", str(path)]) == 0
    assert "no findings" in capsys.readouterr().out


def test_float8_with_nan_is_one_line(tmp_path: Path, capsys) -> None:
    state = {k: v.to(torch.float8_e4m3fn) for k, v in _lenet_state().items()}
    key = next(iter(state))
    state[key] = state[key].float().fill_(float("nan")).to(torch.float8_e4m3fn)
    path = tmp_path / "nan.safetensors"
    path.write_bytes(safetensors_bytes(state))
    one_line([*RUN, "--weights", str(path)], tmp_path, capsys, "non-finite values", key)


def test_dev_zero_and_a_fifo_are_refused_without_reading(tmp_path: Path, capsys) -> None:
    one_line([*RUN, "--weights", "/dev/zero"], tmp_path, capsys, "/dev/zero is not a regular file")
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    done = threading.Event()

    def unblock() -> None:  # were the FIFO opened, this write would let the test go on instead of hanging
        if not done.wait(20):
            with open(fifo, "wb") as f:
                f.write(b"x")

    threading.Thread(target=unblock, daemon=True).start()
    one_line([*RUN, "--weights", str(fifo)], tmp_path, capsys, "pipe.pt is not a regular file")
    done.set()


def test_grid_weights_dev_zero_dry_run_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    config.write_text('[grid]\ndatasets = ["mnist"]\nweights = ["/dev/zero"]\n[run]\nsplit = "test"\n')
    done = run_limited(["sweep", str(config), "--dry-run", "--out", str(tmp_path / "s")])
    assert_one_line(done, "/dev/zero is not a regular file")


def test_metadata_claiming_a_billion_classes_is_refused_before_building(tmp_path: Path) -> None:
    meta = {"format": "gradleak.checkpoint", "format_version": "1", "architecture": "lenetmnist",
            "channels": "1", "image_size": "28", "num_classes": str(10**9)}
    path = tmp_path / "liar.safetensors"
    path.write_bytes(safetensors_bytes(_lenet_state(), metadata=meta))
    done = run_limited([*RUN, "--weights", str(path), "--out", str(tmp_path / "run")])
    assert_one_line(done, "does not fit model lenetmnist", "1000000000")


def test_a_billion_classes_on_the_command_line_is_an_estimate_not_an_allocation(tmp_path: Path) -> None:
    done = run_limited([*RUN, "--num-classes", str(10**9), "--label", "3", "--out", str(tmp_path / "run")])
    assert_one_line(done, "needs about", "TiB of memory", "--num-classes")


def test_metadata_escape_sequences_never_reach_the_terminal(tmp_path: Path, capsys) -> None:
    meta = {"format": "gradleak.checkpoint", "architecture": "lenetmnist", "dataset": "\x1b[2J\x1b[31mpwned\x07\r",
            "\x1b]0;title\x07": "x"}
    path = tmp_path / "ansi.safetensors"
    path.write_bytes(safetensors_bytes(_lenet_state(), metadata=meta))
    from gradleak.models.checkpoint import read_checkpoint

    _, info = read_checkpoint(path)
    assert all(ch.isprintable() for k, v in info.metadata.items() for ch in f"{k}{v}")
    assert "pwned" in info.describe() and "\x1b" not in info.describe()
    out = tmp_path / "run"
    assert gradleak_main([*RUN, "--weights", str(path), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err and "\x07" not in captured.out + captured.err


def test_a_write_killed_mid_way_leaves_no_partial_file_behind(tmp_path: Path) -> None:
    from gradleak.models.checkpoint import save_checkpoint

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".m.safetensors.partial-{dead.stdout.strip()}-abc123"  # what kill -9 mid-write leaves
    stale.write_bytes(b"half a checkpoint")
    live = tmp_path / f".m.safetensors.partial-{os.getpid()}-def456"  # a writer still at work: kept
    live.write_bytes(b"in progress")
    save_checkpoint(tmp_path / "m.safetensors", build_model("lenetmnist", channels=1, image_size=28, num_classes=10),
                    {"architecture": "lenetmnist"})
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.safetensors", live.name])
