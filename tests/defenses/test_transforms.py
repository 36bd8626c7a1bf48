"""Property tests for the post-hoc defenses: noise, pruning, fp16, int8, and composition."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradleak.defenses import (
    Defense,
    GaussianNoise,
    HalfPrecision,
    Int8Quantization,
    LaplacianNoise,
    Prune,
    apply_defenses,
    parse_defense,
    parse_defenses,
)
from gradleak.defenses.prune import pruned_count
from gradleak.defenses.quantize import int8_roundtrip, int8_scale

from ._helpers import lenet_like_update, make_update

shapes = st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=3).map(tuple)
seeds = st.integers(min_value=0, max_value=2**31 - 1)
magnitudes = st.sampled_from([1e-6, 1e-3, 1.0, 1e3])


def random_tensor(shape, seed, scale=1.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


# --- pruning -----------------------------------------------------------------------------------


@given(shape=shapes, seed=seeds, ratio=st.floats(min_value=0, max_value=1))
def test_prune_reaches_ratio_per_tensor_and_keeps_largest(shape, seed, ratio):
    t = random_tensor(shape, seed)
    other = random_tensor((3,), seed + 1)
    out = Prune(ratio).apply(make_update(t, other))
    for before, after in zip((t, other), out.tensors):
        assert after.shape == before.shape
        zeroed = after == 0
        assert zeroed.sum().item() >= ratio * before.numel() - 1e-9
        assert zeroed.sum().item() == pruned_count(before.numel(), ratio)
        kept = ~zeroed
        # kept entries are unchanged, and every kept magnitude >= every pruned magnitude
        assert torch.equal(after[kept], before[kept])
        if kept.any() and zeroed.any():
            assert before[kept].abs().min() >= before[zeroed].abs().max()


def test_prune_counts_round_up_without_float_error():
    assert pruned_count(10, 0.3) == 3
    assert pruned_count(10, 0.31) == 4
    assert pruned_count(100, 0.01) == 1
    assert pruned_count(5, 1.0) == 5
    assert pruned_count(5, 0.0) == 0


def test_prune_is_per_tensor_not_global():
    big = torch.full((100,), 10.0) + torch.arange(100.0)
    small = torch.tensor([1e-3, 2e-3, 3e-3, 4e-3])
    out = Prune(0.5).apply(make_update(big, small))
    # global pruning would wipe the whole small tensor; per tensor keeps its larger half
    assert torch.equal(out.tensors[1], torch.tensor([0.0, 0.0, 3e-3, 4e-3]))
    assert (out.tensors[0] == 0).sum() == 50


# --- noise -------------------------------------------------------------------------------------


@pytest.mark.parametrize("variance", [1e-4, 1e-2, 1e-1])
def test_gaussian_noise_has_configured_variance_and_zero_mean(variance):
    base = torch.linspace(-1, 1, 1_000_000)
    out = GaussianNoise(variance).apply(
        make_update(base), generator=torch.Generator().manual_seed(1)
    )
    noise = (out.tensors[0] - base).double()
    assert noise.var().item() == pytest.approx(variance, rel=0.02)
    assert abs(noise.mean().item()) < 5 * math.sqrt(variance / noise.numel())


@pytest.mark.parametrize("scale", [1e-3, 1e-2, 1e-1])
def test_laplacian_noise_has_configured_scale(scale):
    base = torch.zeros(1_000_000)
    out = LaplacianNoise(scale).apply(make_update(base), generator=torch.Generator().manual_seed(2))
    noise = out.tensors[0].double()
    assert noise.abs().mean().item() == pytest.approx(scale, rel=0.02)  # mean abs dev = b
    assert noise.var().item() == pytest.approx(2 * scale**2, rel=0.03)  # variance = 2 b^2
    assert abs(noise.mean().item()) < 5 * math.sqrt(2 * scale**2 / noise.numel())
    assert noise.median().abs().item() < 0.01 * scale


@pytest.mark.parametrize("spec", ["gaussian:1e-2", "laplacian:1e-2"])
def test_noise_is_reproducible_with_a_generator(spec):
    defense = parse_defense(spec)
    update = lenet_like_update()
    a = defense.apply(update, generator=torch.Generator().manual_seed(7))
    b = defense.apply(update, generator=torch.Generator().manual_seed(7))
    c = defense.apply(update, generator=torch.Generator().manual_seed(8))
    for x, y, z, t in zip(a.tensors, b.tensors, c.tensors, update.tensors):
        assert torch.equal(x, y)
        assert not torch.equal(x, z)
        assert x.dtype == t.dtype and x.device == t.device and x.shape == t.shape


def test_noise_without_generator_uses_global_rng():
    update = lenet_like_update()
    torch.manual_seed(3)
    a = GaussianNoise(1e-2).apply(update)
    torch.manual_seed(3)
    b = GaussianNoise(1e-2).apply(update)
    assert all(torch.equal(x, y) for x, y in zip(a.tensors, b.tensors))


def test_zero_noise_is_identity():
    update = lenet_like_update()
    for defense in (GaussianNoise(0.0), LaplacianNoise(0.0)):
        out = defense.apply(update, generator=torch.Generator().manual_seed(0))
        assert all(torch.equal(x, y) for x, y in zip(out.tensors, update.tensors))


def test_gaussian_std_is_sqrt_of_variance():
    assert GaussianNoise(1e-2).std == pytest.approx(0.1)


# --- quantisation ------------------------------------------------------------------------------


@given(shape=shapes, seed=seeds, scale=magnitudes)
def test_fp16_equals_half_then_float(shape, seed, scale):
    t = random_tensor(shape, seed, scale)
    out = HalfPrecision().apply(make_update(t)).tensors[0]
    assert out.dtype == torch.float32
    assert torch.equal(out, t.half().float())


@given(shape=shapes, seed=seeds, scale=magnitudes)
def test_int8_error_at_most_half_a_step_on_127_levels(shape, seed, scale):
    t = random_tensor(shape, seed, scale)
    out = Int8Quantization().apply(make_update(t)).tensors[0]
    step = int8_scale(t).item()
    assert out.dtype == torch.float32 and out.shape == t.shape
    assert step == pytest.approx(t.abs().max().item() / 127)
    assert ((out - t).abs() <= step / 2 * (1 + 1e-5)).all()
    codes = out / step
    assert torch.allclose(codes, codes.round(), atol=1e-3)
    assert codes.round().abs().max().item() <= 127
    assert len(torch.unique(codes.round())) <= 255
    # the largest magnitude is represented exactly (up to float rounding)
    i = t.abs().argmax()
    assert out.reshape(-1)[i].item() == pytest.approx(t.reshape(-1)[i].item(), rel=1e-6)


def test_int8_of_zeros_and_empty_tensors():
    assert torch.equal(int8_roundtrip(torch.zeros(4)), torch.zeros(4))
    assert int8_roundtrip(torch.zeros(0)).shape == (0,)


def test_int8_scale_is_per_tensor():
    big, small = torch.tensor([127.0, -64.0]), torch.tensor([1.27e-3, -6.4e-4])
    out = Int8Quantization().apply(make_update(big, small))
    assert torch.equal(out.tensors[0], big)
    assert torch.allclose(out.tensors[1], small, rtol=1e-5, atol=0)  # a global scale zeroes it


# --- composition and bookkeeping ---------------------------------------------------------------

ALL_POST_HOC = ["gaussian:1e-3", "laplacian:1e-3", "prune:0.3", "fp16", "int8"]


@pytest.mark.parametrize("spec", ALL_POST_HOC)
def test_apply_never_mutates_the_original_update(spec):
    update = lenet_like_update()
    copies = [t.clone() for t in update.tensors]
    out = parse_defense(spec).apply(update, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(t, c) for t, c in zip(update.tensors, copies))
    assert update.defenses == ()
    assert out.defenses == (parse_defense(spec).name,)
    assert all(o.data_ptr() != t.data_ptr() for o, t in zip(out.tensors, update.tensors))
    assert (out.kind, out.batch_size, out.input_shape, out.num_classes) == (
        update.kind,
        update.batch_size,
        update.input_shape,
        update.num_classes,
    )


@pytest.mark.parametrize("spec", ALL_POST_HOC)
def test_every_defense_satisfies_the_protocol(spec):
    assert isinstance(parse_defense(spec), Defense)


def test_defenses_compose_in_order_and_record_names():
    update = lenet_like_update()
    defenses = parse_defenses(["gaussian:1e-3", "prune:0.3", "int8"])
    gen = torch.Generator().manual_seed(5)
    out = apply_defenses(update, defenses, generator=gen)
    assert out.defenses == ("gaussian:0.001", "prune:0.3", "int8")

    gen = torch.Generator().manual_seed(5)
    step = GaussianNoise(1e-3).apply(update, generator=gen)
    step = Prune(0.3).apply(step, generator=gen)
    step = Int8Quantization().apply(step, generator=gen)
    assert all(torch.equal(a, b) for a, b in zip(out.tensors, step.tensors))

    # order matters: pruning last leaves exact zeros, pruning before noise does not
    noisy_last = apply_defenses(update, parse_defenses(["prune:0.5", "gaussian:1e-2"]))
    pruned_last = apply_defenses(update, parse_defenses(["gaussian:1e-2", "prune:0.5"]))
    assert (pruned_last.tensors[0] == 0).float().mean() >= 0.5
    assert (noisy_last.tensors[0] == 0).float().mean() < 0.5
    assert noisy_last.defenses == ("prune:0.5", "gaussian:0.01")


def test_apply_defenses_appends_to_existing_record():
    update = make_update(torch.ones(3), defenses=("fp16",))
    out = apply_defenses(update, [Prune(0.5)])
    assert out.defenses == ("fp16", "prune:0.5")
    assert apply_defenses(update, []) is update


@settings(max_examples=30)
@given(specs=st.lists(st.sampled_from(ALL_POST_HOC), max_size=4), seed=seeds)
def test_any_chain_keeps_shapes_and_records_every_step(specs, seed):
    update = lenet_like_update()
    out = apply_defenses(
        update, parse_defenses(specs), generator=torch.Generator().manual_seed(seed)
    )
    assert out.defenses == tuple(parse_defense(s).name for s in specs)
    assert [t.shape for t in out.tensors] == [t.shape for t in update.tensors]
    assert all(torch.isfinite(t).all() for t in out.tensors)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("generator_device", ["cpu", "cuda"])
def test_noise_lands_on_the_tensors_device(generator_device):
    update = make_update(torch.zeros(1000, device="cuda"))
    out = GaussianNoise(1e-2).apply(
        update, generator=torch.Generator(device=generator_device).manual_seed(0)
    )
    assert out.tensors[0].device.type == "cuda"
    again = GaussianNoise(1e-2).apply(
        update, generator=torch.Generator(device=generator_device).manual_seed(0)
    )
    assert torch.equal(out.tensors[0], again.tensors[0])
