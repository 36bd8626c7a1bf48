"""Fit the MAP attack's image prior to natural images by maximum likelihood (issue 20).

    python benchmarks/fit_image_prior.py

The prior of ``gradleak.attacks.posterior`` is p(x) ∝ exp(−λ_L·TV(luma) − λ_C·TV(chroma)), with
TV the smooth total variation summed over neighbour differences, luma the channel mean and chroma
the red and blue differences from it. Each term is (up to its smoothing) homogeneous of degree 1,
so its normaliser scales as λ^(−d) with d the component's dimension (H·W for luma, 2·H·W for
chroma), and the maximum-likelihood rate over N images is λ = N·d / Σ TV(x_i). Fitted on the
**fit set**: the bundled CIFAR-10 and CIFAR-100 test images 0-19 and the 16 photos of
``benchmarks/photos/TUNING`` (56 natural images from three sources); the same fit on the 15
held-out photos is printed as a check, not used. Prints λ_L and λ_C per set and pooled, and the
``MapInversion`` settings they give (``tv_weight`` = λ_L / 3, ``chroma_weight`` = λ_C / tv_weight).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from defended_photos import load_photo, photo_names  # noqa: E402

from gradleak.attacks.posterior import MapInversion, prior_terms  # noqa: E402
from gradleak.data import load_samples  # noqa: E402


def rates(images: torch.Tensor, smoothing: float) -> tuple[float, float]:
    """Maximum-likelihood (λ_L, λ_C) of the prior on ``images`` (N, 3, H, W)."""
    luma_tv, chroma_tv = prior_terms(images, smoothing)
    pixels = images.shape[0] * images.shape[2] * images.shape[3]
    return pixels / float(luma_tv), 2 * pixels / float(chroma_tv)


def main() -> None:
    smoothing = MapInversion().smoothing
    sets = {
        f"{name} test 0-19": load_samples(name, list(range(20)), split="test", download=False, root="/nonexistent")[0]
        for name in ("cifar10", "cifar100")
    }
    sets["photos, tuning (16)"] = torch.cat([load_photo(n) for n in photo_names(tuning=True)])
    fit = torch.cat(list(sets.values()))
    held_out = torch.cat([load_photo(n) for n in photo_names(tuning=False)])
    print("| images | n | λ_L (luma) | λ_C (chroma) | λ_C / λ_L |")
    print("|---|---|---|---|---|")
    for name, images in [*sets.items(), ("**fit set, pooled**", fit), ("held-out photos (check only)", held_out)]:
        luma, chroma = rates(images, smoothing)
        print(f"| {name} | {images.shape[0]} | {luma:.2f} | {chroma:.2f} | {chroma / luma:.2f} |")
    luma, chroma = rates(fit, smoothing)
    print(f"\nMapInversion(tv_weight={luma / 3:.2f}, chroma_weight={chroma / (luma / 3):.2f})")


if __name__ == "__main__":
    main()
