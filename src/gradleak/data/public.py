"""Public images a server may hold, and bundled images tiled into large offline batches.

* :func:`public_images`: what a malicious server calibrates its imprint bins on. Never the
  client's data: the bundled test images of a *different* dataset (CIFAR-10 for everything but
  CIFAR-10 itself, which gets CIFAR-100; Fashion-MNIST for MNIST and MNIST for the other
  one-channel sets), with their mirror images, converted to the input's channels and resized.
* :func:`load_tiled`: batches beyond the 20 bundled test images for offline studies of batches up
  to 256: index ``i`` is bundled image ``i % 20`` under variant ``i // 20`` (variant 0 the image
  itself; odd variants mirrored; variants from 2 on also cropped at a shifted window of the
  reflect-padded image). The images are the foolbox copies of the first 20 test images of each
  dataset (see ``samples/ATTRIBUTION.md``); the flips and crops are ours.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from gradleak.data.bundled import BUNDLED_COUNT, load_bundled
from gradleak.data.images import to_float_tensor
from gradleak.data.specs import get_spec
from gradleak.errors import GradleakError

#: crop offsets (dx, dy) of the variants 2, 3 (4, 5), …: a few pixels in each direction
_SHIFTS = [(dx, dy) for r in (1, 2, 3, 4) for dx, dy in ((r, 0), (0, r), (-r, 0), (0, -r), (r, r), (-r, -r), (r, -r), (-r, r))]
PAD = 4


def public_dataset_for(dataset: str, channels: int) -> str:
    """The bundled dataset that plays the server's public data when the client holds ``dataset``."""
    if channels == 1:
        return "fashionmnist" if dataset == "mnist" else "mnist"
    return "cifar100" if dataset == "cifar10" else "cifar10"


def public_images(dataset: str, input_shape: Sequence[int]) -> torch.Tensor:
    """(40, C, H, W) float images in [0, 1]: the public set's 20 bundled images and their mirrors."""
    channels, height, width = (int(s) for s in input_shape)
    name = public_dataset_for(dataset, channels)
    raw, _ = load_bundled(get_spec(name), list(range(BUNDLED_COUNT)))
    images = to_float_tensor(raw)
    if images.shape[1] != channels:
        images = images.mean(dim=1, keepdim=True) if channels == 1 else images.expand(-1, channels, -1, -1)
    if images.shape[2:] != (height, width):
        images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)
    return torch.cat([images, images.flip(-1)]).contiguous()


def tile_variant(image: torch.Tensor, variant: int) -> torch.Tensor:
    """Variant ``variant`` of one (C, H, W) image: mirrored when odd, shifted crop from 2 on."""
    out = image.flip(-1) if variant % 2 else image
    step = variant // 2
    if step == 0:
        return out
    dx, dy = _SHIFTS[(step - 1) % len(_SHIFTS)]
    padded = F.pad(out[None], (PAD, PAD, PAD, PAD), mode="reflect")[0]
    h, w = image.shape[1:]
    return padded[:, PAD + dy : PAD + dy + h, PAD + dx : PAD + dx + w].contiguous()


def max_tiled_index(count: int = BUNDLED_COUNT) -> int:
    return count * 2 * (len(_SHIFTS) + 1) - 1


def load_tiled(dataset: str, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, C, H, W) in [0, 1] and labels for tiled indices (see the module docs)."""
    spec = get_spec(dataset)
    top = max_tiled_index()
    for i in indices:
        if not 0 <= int(i) <= top:
            raise GradleakError(f"--index {i} is out of range for --tile-bundled: use 0..{top}")
    base = sorted({int(i) % BUNDLED_COUNT for i in indices})
    try:
        raw, labels = load_bundled(spec, base)
    except GradleakError:
        raise GradleakError(
            f"--tile-bundled needs bundled test images, which {spec.name} does not have: "
            "use cifar100, cifar10, mnist or fashionmnist"
        ) from None
    by_index = {b: (img, int(lab)) for b, img, lab in zip(base, to_float_tensor(raw), labels)}
    images = [tile_variant(by_index[int(i) % BUNDLED_COUNT][0], int(i) // BUNDLED_COUNT) for i in indices]
    out_labels = [by_index[int(i) % BUNDLED_COUNT][1] for i in indices]
    return torch.stack(images), torch.tensor(out_labels, dtype=torch.long)
