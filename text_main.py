"""Shim: ``python text_main.py --sentence "…"`` is ``gradleak text --sentence "…"``."""

import sys
from pathlib import Path

_SRC = Path(__file__).resolve().parent / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from gradleak.cli.text_command import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
