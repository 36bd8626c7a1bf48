"""ST-LPIPS: gradleak's own network on the published weights agrees with the original package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gradleak.errors import GradleakError
from gradleak.metrics import score_batch
from gradleak.metrics import st_lpips as perceptual
from tests.metrics.st_lpips_reference import pairs

REFERENCE = json.loads((Path(__file__).with_name("st_lpips_reference.json")).read_text())

needs_weights = pytest.mark.skipif(
    not perceptual.available(), reason="the perceptual extra (stlpips-pytorch) is not installed"
)


@needs_weights
def test_matches_the_original_package_on_real_image_pairs() -> None:
    values = {name: perceptual.st_lpips(b, a)[0] for name, (a, b) in pairs().items()}
    assert set(values) == set(REFERENCE["values"])
    for name, expected in REFERENCE["values"].items():
        assert values[name] == pytest.approx(expected, rel=1e-4, abs=1e-6), name
    # what a user reads from it: a 1-px shift is nearly nothing, another image is far
    assert values["cifar100 3, shifted 1 px right"] < 0.05 < values["cifar100 0 vs 1"]


@needs_weights
def test_scores_carry_st_lpips_per_image_and_for_the_batch() -> None:
    a, b = pairs()["cifar100 0 vs 1"]
    targets = torch.cat([a, a])
    score = score_batch(torch.cat([a, b]), targets, true_labels=torch.tensor([1, 1]),
                        recovered_labels=torch.tensor([1, 1]))
    assert score.per_image[0].st_lpips == 0.0
    assert score.st_lpips == pytest.approx(REFERENCE["values"]["cifar100 0 vs 1"] / 2, rel=1e-4)


def test_missing_or_altered_weights_are_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    perceptual._pretrained.cache_clear()
    monkeypatch.setattr(perceptual, "weights_path", lambda: None)
    with pytest.raises(GradleakError, match=r"^ST-LPIPS needs its published weights: pip install 'gradleak\[perceptual\]'"):
        perceptual.st_lpips(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
    fake = tmp_path / "alex_shift_tolerant.pth"
    torch.save({"scaling_layer.shift": torch.zeros(1, 3, 1, 1)}, fake)
    monkeypatch.setattr(perceptual, "weights_path", lambda: fake)
    with pytest.raises(GradleakError, match=r"have sha256 .* not the published .*reinstall stlpips-pytorch==0.0.2"):
        perceptual.st_lpips(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))
    perceptual._pretrained.cache_clear()
