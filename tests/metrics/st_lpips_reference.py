"""Image pairs for the ST-LPIPS reference test, and (run by hand) the reference values.

The values in ``st_lpips_reference.json`` were computed once with the original package in its
own environment, never a gradleak dependency::

    python -m venv /tmp/stl
    /tmp/stl/bin/pip install torch==2.14.1 torchvision==0.29.1 stlpips-pytorch==0.0.2
    /tmp/stl/bin/python tests/metrics/st_lpips_reference.py tests/metrics/st_lpips_reference.json

Only ``pairs`` is used by the tests (torch, numpy and Pillow; no gradleak import, so the same
code builds the inputs in both environments).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

SAMPLES = Path(__file__).resolve().parents[2] / "src" / "gradleak" / "data" / "samples"


def bundled(prefix: str, index: int) -> torch.Tensor:
    """Bundled test image ``index`` of ``prefix`` as (3, H, W) in [0, 1] (grey repeated)."""
    from PIL import Image

    path = next(SAMPLES.glob(f"{prefix}_{index:02d}_*.png"))
    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def pairs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Named (a, b) pairs of (1, 3, H, W) images in [0, 1]: deterministic edits of bundled images."""
    c0, c1, c3 = bundled("cifar100", 0), bundled("cifar100", 1), bundled("cifar100", 3)
    m0, m1 = bundled("mnist", 0), bundled("mnist", 1)
    f0 = bundled("fashionMNIST", 0)
    blur = torch.nn.functional.avg_pool2d(f0.unsqueeze(0), 3, stride=1, padding=1, count_include_pad=False)[0]
    out = {
        "cifar100 0, itself": (c0, c0),
        "cifar100 0 vs 1": (c0, c1),
        "cifar100 3, shifted 1 px right": (c3, torch.roll(c3, 1, dims=2)),
        "cifar100 3, flipped left-right": (c3, c3.flip(2)),
        "cifar100 3, darkened x0.7": (c3, c3 * 0.7),
        "cifar100 3, 3-bit quantised": (c3, torch.round(c3 * 7) / 7),
        "mnist 0 vs 1": (m0, m1),
        "fashionmnist 0, 3x3 box blur": (f0, blur),
    }
    return {name: (a.unsqueeze(0), b.unsqueeze(0)) for name, (a, b) in out.items()}


def main(target: str) -> None:
    import stlpips_pytorch.stlpips as stlpips  # the original package (imports torchvision)
    import torchvision

    metric = stlpips.LPIPS(net="alex", variant="shift_tolerant", verbose=False)
    values = {}
    with torch.no_grad():
        for name, (a, b) in pairs().items():
            values[name] = float(metric(a, b, normalize=True).flatten()[0])
    record = {
        "package": "stlpips-pytorch 0.0.2, LPIPS(net='alex', variant='shift_tolerant'), forward(a, b, normalize=True)",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "values": values,
    }
    Path(target).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
