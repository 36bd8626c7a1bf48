"""Classic DLG reproduction entry point: ``python main.py --dataset cifar100 --index 25 …``.

A thin shim over ``gradleak run`` whose default attack is the original DLG (see README).
"""

import sys
from pathlib import Path

# Works from a plain clone too (before `pip install -e .`).
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from gradleak.cli.main import classic_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(classic_main())
