"""Low-level file handling shared by every layer: atomic writes, staged output folders, and
safe reading of untrusted tensor files (safetensors, never pickle).

Example:
    >>> import tempfile, pathlib
    >>> from gradleak.io import write_json
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.json"
    >>> write_json(path, {"psnr": 31.5})
    >>> path.read_text()
    '{\\n  "psnr": 31.5\\n}\\n'
"""

from __future__ import annotations

from gradleak.io.files import atomic_write, current_umask, write_json, write_text
from gradleak.io.staging import staged_folder

__all__ = ["atomic_write", "current_umask", "staged_folder", "write_json", "write_text"]
