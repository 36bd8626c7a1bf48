"""gradleak in a subprocess under an address-space limit: a memory test that cannot take the machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_limited(argv: list[str], *, limit_gib: float = 3, env: dict[str, str] | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess:
    limit = int(limit_gib * 2**30)
    code = (f"import resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit})); "
            "from gradleak.cli.main import main; sys.exit(main(sys.argv[1:]))")
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=timeout, env=full_env)


def assert_one_line(done: subprocess.CompletedProcess, *needles: str) -> None:
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    for needle in needles:
        assert needle in done.stderr, (needle, done.stderr)
