"""The seed's LFW path (`--dataset lfw --model lenet64 --tv-weight 0.005`) on a real face, offline.

LFW itself cannot be downloaded in the tests, but scikit-image ships 25×25 grayscale LFW faces
(`skimage.data.lfw_subset`). The face is written as an image file and read back by the LFW
loader's own reader (whole image, RGB, bilinear resize to 64×64), so the model sees what
`--dataset lfw` would give it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gradleak.attacks import IDLG
from gradleak.data.images import to_float_tensor
from gradleak.data.readers import read_images_resized
from gradleak.data.specs import get_spec
from gradleak.metrics import psnr
from gradleak.models import build_model
from gradleak.scenarios import FedSGD


def lfw_face(tmp_path: Path, index: int = 0) -> torch.Tensor:
    data = pytest.importorskip("skimage.data")
    faces = data.lfw_subset()  # (200, 25, 25) floats in [0, 1], bundled with scikit-image
    from PIL import Image

    path = tmp_path / f"face_{index}.jpg"
    Image.fromarray((faces[index] * 255).round().astype(np.uint8)).save(path, quality=95)
    spec = get_spec("lfw")
    return to_float_tensor(read_images_resized([path], spec.image_size))


def test_the_lfw_loader_shapes_a_face_as_the_lenet64_expects(tmp_path: Path) -> None:
    face = lfw_face(tmp_path)
    assert face.shape == (1, 3, 64, 64)
    assert torch.equal(face[:, 0], face[:, 1]) and torch.equal(face[:, 1], face[:, 2])  # gray → RGB
    assert 0.05 < float(face.std()) < 0.5  # a real picture, not a flat patch


def test_idlg_with_the_stall_guard_reconstructs_a_real_face_on_lenet64(tmp_path: Path) -> None:
    # Measured (seed 1234, 100 classes): the first N(0, 1) try stalls (gradient distance above its
    # start after 20 steps); the guard restarts it and the second try brings the distance from
    # 2e3 to ~1 in five steps: 12.3 dB at step 25, 13.3 dB at 50 (the start is 5.5-6 dB).
    face = lfw_face(tmp_path)
    torch.manual_seed(1234)
    model = build_model("lenet64", channels=3, image_size=64, num_classes=100)
    update = FedSGD().share(model, face, torch.tensor([3]))
    start = psnr(torch.randn_like(face).clamp(0, 1), face)
    result = IDLG(iterations=30, tv_weight=0.005).run(model, update)
    assert result.labels.tolist() == [3]
    assert [a.reason for a in result.attempts[:-1]] == ["stalled"]
    assert result.losses[-1] < 1e-2 * result.attempts[-1].start_loss
    value = psnr(result.images, face)
    assert value > 11.5 and value > start + 5, (value, start)


def test_gradleak_run_default_attack_recovers_the_face_on_lenet64(tmp_path: Path) -> None:
    # What `gradleak run --dataset lfw --model lenet64` uses (auto): the lenet64's lowest layers are
    # not determined by one gradient, so the analytic walk fits them with its smooth-TV prior
    # (measured: 34.9 dB on this face, 18 s on a loaded machine).
    from gradleak.attacks import Auto

    face = lfw_face(tmp_path, index=1)
    torch.manual_seed(1234)
    model = build_model("lenet64", channels=3, image_size=64, num_classes=100)
    update = FedSGD().share(model, face, torch.tensor([7]))
    result = Auto().run(model, update)
    assert result.labels.tolist() == [7]
    assert psnr(result.images, face) > 25
