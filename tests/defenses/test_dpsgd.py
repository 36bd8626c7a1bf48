"""DP-SGD: per-example clipping, the private gradient, noise scale and the accountant."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from gradleak.defenses import DPSGD, apply_defenses, clip_per_example, parse_defense
from gradleak.defenses.dpsgd import per_example_norms
from gradleak.errors import GradleakError

from ._helpers import lenet_like_update


def soft_cross_entropy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum target * log_softmax(pred): works for one-hot and soft."""
    return torch.sum(-target * F.log_softmax(pred, dim=-1), dim=-1).mean()


class TinyNet(torch.nn.Module):
    def __init__(self, classes: int = 4, hidden: int = 8) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.fc1 = torch.nn.Linear(2 * 4 * 4, hidden)
        self.fc2 = torch.nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.sigmoid(self.conv(x)).flatten(1)
        return self.fc2(torch.sigmoid(self.fc1(x)))


def batch(b: int = 5, classes: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 1, 4, 4, generator=g)
    labels = torch.randint(0, classes, (b,), generator=g)
    targets = F.one_hot(labels, classes).float()
    targets[0] = torch.softmax(torch.randn(classes, generator=g), dim=0)  # one soft label
    return images, targets


def model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


# --- clipping ----------------------------------------------------------------------------------


@given(
    b=st.integers(min_value=1, max_value=6),
    seed=st.integers(min_value=0, max_value=10_000),
    clip=st.floats(min_value=1e-3, max_value=1e3),
    magnitude=st.sampled_from([1e-4, 1.0, 1e4]),
)
def test_clipped_per_example_norms_are_at_most_clip(b, seed, clip, magnitude):
    g = torch.Generator().manual_seed(seed)
    grads = [torch.randn(b, 3, 2, generator=g) * magnitude, torch.randn(b, 4, generator=g)]
    originals = [x.clone() for x in grads]
    clipped = clip_per_example(grads, clip)
    before, after = per_example_norms(grads), per_example_norms(clipped)
    assert (after <= clip * (1 + 1e-5)).all()
    # examples within the bound are untouched; the others land on the bound
    inside = before <= clip
    assert torch.allclose(after[inside], before[inside])
    assert torch.allclose(after[~inside], torch.full_like(after[~inside], clip), rtol=1e-5)
    # clipping only rescales: each example keeps its direction
    for x, y in zip(grads, clipped):
        ratio = (y.reshape(b, -1) * x.reshape(b, -1)).sum(1)
        assert (ratio >= 0).all()
    assert all(torch.equal(x, o) for x, o in zip(grads, originals))  # inputs not mutated


def test_clip_uses_the_joint_norm_over_all_parameters():
    grads = [torch.tensor([[3.0]]), torch.tensor([[4.0]])]  # joint norm 5
    clipped = clip_per_example(grads, 1.0)
    assert torch.allclose(torch.cat([c.reshape(-1) for c in clipped]), torch.tensor([0.6, 0.8]))


def test_clip_of_a_zero_gradient_stays_zero():
    clipped = clip_per_example([torch.zeros(2, 3)], 1.0)
    assert torch.equal(clipped[0], torch.zeros(2, 3))


# --- private gradient --------------------------------------------------------------------------


def test_no_noise_and_huge_clip_gives_the_ordinary_batch_mean_gradient():
    net = model()
    images, targets = batch()
    net.zero_grad()
    soft_cross_entropy(net(images), targets).backward()
    expected = [p.grad.detach().clone() for p in net.parameters()]

    private = DPSGD(clip=1e6, sigma=0.0).private_gradient(net, soft_cross_entropy, images, targets)
    assert len(private) == len(expected)
    for got, want in zip(private, expected):
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)


def test_private_gradient_without_noise_is_mean_of_clipped_examples():
    net = model()
    images, targets = batch()
    dp = DPSGD(clip=0.05, sigma=0.0)
    per_example = dp.per_example_gradients(net, soft_cross_entropy, images, targets)
    assert per_example_norms(per_example).min() > 0.05  # the clip actually bites
    private = dp.private_gradient(net, soft_cross_entropy, images, targets)
    norm = torch.sqrt(sum(g.pow(2).sum() for g in private))
    assert norm <= 0.05 * (1 + 1e-5)  # mean of vectors of norm <= C
    clipped = clip_per_example(per_example, 0.05)
    for got, c in zip(private, clipped):
        assert torch.allclose(got, c.mean(0), atol=1e-7)


def test_per_example_gradients_match_batches_of_one():
    net = model()
    images, targets = batch(b=3)
    per_example = DPSGD(clip=1.0, sigma=0.0).per_example_gradients(
        net, soft_cross_entropy, images, targets
    )
    for i in range(3):
        net.zero_grad()
        soft_cross_entropy(net(images[i : i + 1]), targets[i : i + 1]).backward()
        for g, p in zip(per_example, net.parameters()):
            assert torch.allclose(g[i], p.grad, atol=1e-6)


def test_noise_has_std_sigma_times_clip_over_batch_size():
    torch.manual_seed(0)
    net = torch.nn.Linear(200, 100)  # 20,100 coordinates to estimate the noise std
    images = torch.randn(4, 200)
    targets = F.one_hot(torch.tensor([0, 1, 2, 3]), 100).float()
    clean = DPSGD(clip=0.5, sigma=0.0).private_gradient(net, soft_cross_entropy, images, targets)
    noisy = DPSGD(clip=0.5, sigma=2.0).private_gradient(
        net, soft_cross_entropy, images, targets, generator=torch.Generator().manual_seed(1)
    )
    noise = torch.cat([(n - c).reshape(-1) for n, c in zip(noisy, clean)]).double()
    assert noise.std().item() == pytest.approx(2.0 * 0.5 / 4, rel=0.03)
    assert abs(noise.mean().item()) < 5 * (2.0 * 0.5 / 4) / math.sqrt(noise.numel())


def test_private_gradient_is_reproducible_and_leaves_the_model_alone():
    net = model()
    before = [p.detach().clone() for p in net.parameters()]
    images, targets = batch()
    dp = DPSGD(clip=1.0, sigma=1.0)
    a = dp.private_gradient(
        net, soft_cross_entropy, images, targets, generator=torch.Generator().manual_seed(3)
    )
    b = dp.private_gradient(
        net, soft_cross_entropy, images, targets, generator=torch.Generator().manual_seed(3)
    )
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(not x.requires_grad for x in a)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))
    assert all(p.grad is None for p in net.parameters())


def test_batchnorm_in_training_mode_is_refused():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4), torch.nn.BatchNorm1d(4))
    images, targets = batch()
    with pytest.raises(GradleakError, match="BatchNorm"):
        DPSGD(clip=1.0, sigma=0.0).private_gradient(net, soft_cross_entropy, images, targets)
    net.eval()  # running statistics do not mix examples: allowed
    grads = DPSGD(clip=1.0, sigma=0.0).private_gradient(net, soft_cross_entropy, images, targets)
    assert len(grads) == len(list(net.parameters()))


def test_apply_refuses_with_a_clear_message():
    dp = parse_defense("dpsgd:clip=1,sigma=1")
    assert isinstance(dp, DPSGD)
    with pytest.raises(GradleakError, match="client at gradient time") as info:
        dp.apply(lenet_like_update())
    assert "private_gradient" in str(info.value)
    with pytest.raises(GradleakError, match="gradient time"):
        apply_defenses(lenet_like_update(), [dp])


def test_bad_settings_raise_gradleak_error():
    for kwargs in (
        {"clip": 0.0, "sigma": 1.0},
        {"clip": 1.0, "sigma": -1.0},
        {"clip": 1.0, "sigma": 1.0, "delta": 0.0},
    ):
        with pytest.raises(GradleakError):
            DPSGD(**kwargs)


# --- accountant --------------------------------------------------------------------------------


@pytest.mark.parametrize(("steps", "rate"), [(1, 1.0), (100, 0.01), (300, 0.5)])
def test_epsilon_is_finite_and_decreases_as_sigma_increases(steps, rate):
    pytest.importorskip("dp_accounting")
    sigmas = [0.5, 1.0, 2.0, 4.0, 8.0]
    eps = [DPSGD(clip=1.0, sigma=s).epsilon(steps=steps, sample_rate=rate) for s in sigmas]
    assert all(math.isfinite(e) and e > 0 for e in eps)
    assert all(a > b for a, b in zip(eps, eps[1:]))


def test_epsilon_grows_with_steps_and_shrinks_with_delta():
    pytest.importorskip("dp_accounting")
    dp = DPSGD(clip=1.0, sigma=1.0)
    assert dp.epsilon(steps=100, sample_rate=0.01) < dp.epsilon(steps=1000, sample_rate=0.01)
    loose = DPSGD(clip=1.0, sigma=1.0, delta=1e-3).epsilon(steps=100, sample_rate=0.01)
    assert loose < DPSGD(clip=1.0, sigma=1.0, delta=1e-7).epsilon(steps=100, sample_rate=0.01)


def test_epsilon_edge_cases_need_no_accountant():
    assert DPSGD(clip=1.0, sigma=0.0).epsilon(steps=10, sample_rate=0.1) == math.inf
    assert DPSGD(clip=1.0, sigma=1.0).epsilon(steps=0, sample_rate=0.1) == 0.0
    with pytest.raises(GradleakError, match="sample rate"):
        DPSGD(clip=1.0, sigma=1.0).epsilon(steps=1, sample_rate=0.0)
    with pytest.raises(GradleakError, match="steps"):
        DPSGD(clip=1.0, sigma=1.0).epsilon(steps=-1, sample_rate=0.5)


def test_epsilon_matches_a_known_value():
    pytest.importorskip("dp_accounting")
    # Abadi et al.-style setting: q = 0.01, sigma = 1, 1000 steps, delta = 1e-5 -> eps ~ 2.1
    eps = DPSGD(clip=1.0, sigma=1.0).epsilon(steps=1000, sample_rate=0.01)
    assert 1.5 < eps < 3.0


def test_epsilon_keeps_accountant_warnings_off_the_console(caplog):
    pytest.importorskip("dp_accounting")
    with caplog.at_level("WARNING"):
        DPSGD(clip=1.0, sigma=0.5).epsilon(steps=300, sample_rate=0.5)
    assert not [r for r in caplog.records if r.name == "absl" and r.levelname == "WARNING"]


def test_missing_accountant_tells_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dp_accounting", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "dp_accounting.rdp", None)
    with pytest.raises(GradleakError, match=r"pip install 'gradleak\[dp\]'"):
        DPSGD(clip=1.0, sigma=1.0).epsilon(steps=10, sample_rate=0.1)
