"""Opacus DP-SGD (``opacus:noise_multiplier=…,max_grad_norm=…``) against gradleak's own ``dpsgd``.

Same settings must give the same update distribution: identical clipped means (the clipping is
deterministic) and noise of the same variance and shape (a two-sample test on ~15k coordinates).
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from scipy import stats

from gradleak.attacks.noise_model import noise_model
from gradleak.data.bundled import bundled_samples
from gradleak.defenses import DPSGD, OpacusDPSGD, parse_defense, parse_defenses, per_example_norms
from gradleak.errors import GradleakError
from gradleak.models import build_model
from gradleak.scenarios import FedSGD, cross_entropy_for_soft_labels, one_hot

pytest.importorskip("opacus")


def cifar10_batch(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    samples = bundled_samples("cifar10")[:count]
    images = [np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255 for _, _, path in samples]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor([label for _, label, _ in samples])


def lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("lenet", channels=3, image_size=32, num_classes=10)


def gradients(defense, model, x, y, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return list(
        defense.private_gradient(model, cross_entropy_for_soft_labels, x, one_hot(y, 10), generator=generator)
    )


def flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors]).double()


def test_clipping_is_the_same_as_gradleaks_dpsgd_on_real_images():
    model, (x, y) = lenet(), cifar10_batch(4)
    per_example = DPSGD(clip=1.0, sigma=0.0).per_example_gradients(model, cross_entropy_for_soft_labels, x, one_hot(y, 10))
    norms = per_example_norms(per_example)
    clip = float(norms.min()) / 2  # every sample is clipped
    ours = flat(gradients(DPSGD(clip=clip, sigma=0.0), model, x, y, 0))
    theirs = flat(gradients(OpacusDPSGD(noise_multiplier=0.0, max_grad_norm=clip), model, x, y, 0))
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-7)
    # Every clipped sample has norm exactly clip, so the mean has norm at most clip.
    assert float(theirs.norm()) <= clip * (1 + 1e-5)


def test_noise_has_the_same_distribution_as_gradleaks_dpsgd():
    model, (x, y) = lenet(), cifar10_batch(2)
    clip, sigma, batch = 0.05, 0.8, 2
    exact = flat(gradients(DPSGD(clip=clip, sigma=0.0), model, x, y, 0))
    ours = flat(gradients(DPSGD(clip=clip, sigma=sigma), model, x, y, 1)) - exact
    theirs = flat(gradients(OpacusDPSGD(noise_multiplier=sigma, max_grad_norm=clip), model, x, y, 2)) - exact
    expected_std = sigma * clip / batch
    assert ours.numel() > 10_000
    for noise in (ours, theirs):
        assert abs(float(noise.std()) / expected_std - 1) < 0.03
        assert abs(float(noise.mean())) < 4 * expected_std / math.sqrt(noise.numel())
    assert stats.ks_2samp(ours.numpy(), theirs.numpy()).pvalue > 1e-3
    # Variance ratio (F test, two-sided): the same variance.
    ratio = float(ours.var() / theirs.var())
    n = ours.numel() - 1
    assert 2 * min(stats.f.cdf(ratio, n, n), stats.f.sf(ratio, n, n)) > 1e-3


def test_seeded_generator_makes_opacus_noise_reproducible_and_leaves_the_model_alone():
    model, (x, y) = lenet(), cifar10_batch(2)
    before = [p.detach().clone() for p in model.parameters()]
    defense = OpacusDPSGD(noise_multiplier=1.0, max_grad_norm=0.1)
    assert torch.equal(flat(gradients(defense, model, x, y, 5)), flat(gradients(defense, model, x, y, 5)))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())


def test_the_map_attack_reads_it_as_dp_sgd():
    model, (x, y) = lenet(), cifar10_batch(2)
    for spec in ("opacus:noise_multiplier=0.5,max_grad_norm=0.2", "dpsgd:clip=0.2,sigma=0.5"):
        update = FedSGD(defenses=parse_defenses([spec]), generator=torch.Generator().manual_seed(0)).share(model, x, y)
        published = noise_model(update, source="published")
        assert published.clip == pytest.approx(0.2)
        assert all(float(v) == pytest.approx((0.5 * 0.2 / 2) ** 2) for v in published.variances)
        assert "DP-SGD" in published.description


def test_epsilon_from_opacus_agrees_with_dp_accounting():
    pytest.importorskip("dp_accounting")
    for sigma in (0.7, 1.5):
        defense = OpacusDPSGD(noise_multiplier=sigma, max_grad_norm=1.0)
        ours = defense.epsilon_dp_accounting(steps=50, sample_rate=0.05)
        theirs = defense.epsilon(steps=50, sample_rate=0.05)
        assert math.isfinite(theirs) and abs(theirs / ours - 1) < 0.05
    assert OpacusDPSGD(noise_multiplier=0.0, max_grad_norm=1.0).epsilon(steps=3, sample_rate=0.1) == math.inf


@pytest.mark.parametrize(
    "spec, words",
    [
        ("opacus", "missing max_grad_norm and noise_multiplier"),
        ("opacus:noise_multiplier=1", "missing max_grad_norm"),
        ("opacus:noise_multiplier=1,max_grad_norm=0", "max_grad_norm must be > 0"),
        ("opacus:noise_multiplier=-1,max_grad_norm=1", "noise_multiplier must be >= 0"),
        ("opacus:sigma=1,max_grad_norm=1", "unknown key 'sigma'"),
    ],
)
def test_bad_specs_get_one_line(spec, words):
    with pytest.raises(GradleakError, match=words) as error:
        parse_defense(spec)
    assert "\n" not in str(error.value)


def test_apply_and_missing_extra_get_one_line(monkeypatch):
    defense = parse_defense("opacus:noise_multiplier=1,max_grad_norm=1")
    model, (x, y) = lenet(), cifar10_batch(1)
    update = FedSGD().share(model, x, y)
    with pytest.raises(GradleakError, match="at gradient time"):
        defense.apply(update)
    monkeypatch.setitem(sys.modules, "opacus", None)  # as if the extra were not installed
    with pytest.raises(GradleakError, match=r"pip install 'gradleak\[opacus\]'"):
        gradients(defense, model, x, y, 0)
    assert parse_defense(defense.name) == defense  # parsing needs no Opacus


def test_batchnorm_in_training_mode_is_refused_in_one_line():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4 * 30 * 30, 10))
    x, y = cifar10_batch(2)
    with pytest.raises(GradleakError, match="Opacus cannot compute per-sample gradients"):
        gradients(OpacusDPSGD(noise_multiplier=1.0, max_grad_norm=1.0), model, x, y, 0)
