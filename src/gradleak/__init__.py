"""gradleak: show, measure and defend against gradient leakage in federated learning.

Importing the package is cheap: heavy optional dependencies (transformers, dask) are imported
only by the sub-modules that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from gradleak.errors import GradleakError

__all__ = ["GradleakError", "__version__"]
