"""Utility cost: training under a defense on scikit-learn's bundled digits."""

from __future__ import annotations

import pytest

from gradleak.errors import GradleakError

pytest.importorskip("sklearn")

from gradleak.utility import (
    UtilityConfig,
    compare,
    load_digits_28,
    load_split,
    train_under_defense,
)


@pytest.fixture(scope="module")
def digits():
    return load_split(UtilityConfig())


def test_digits_look_like_mnist():
    xtr, ytr, xte, yte = load_digits_28()
    assert xtr.shape[1:] == (1, 28, 28) and xte.shape[1:] == (1, 28, 28)
    assert len(ytr) + len(yte) == 1797 and len(yte) == 359
    assert float(xtr.min()) >= 0.0 and float(xtr.max()) <= 1.0
    assert float(xtr[:, :, :2].abs().max()) == 0.0  # padded border, like MNIST
    assert sorted(set(ytr.tolist())) == list(range(10))


def test_training_beats_chance_quickly(digits, one_thread):
    result = train_under_defense(UtilityConfig(epochs=3), data=digits)
    assert result.model == "lenetmnist" and result.train_size == 1438 and result.test_size == 359
    assert result.accuracy > 0.4  # chance is 0.1
    assert len(result.epoch_accuracy) == 3 and result.epoch_loss[-1] < result.epoch_loss[0]


def test_strong_noise_costs_accuracy(digits, one_thread):
    baseline = train_under_defense(UtilityConfig(epochs=3), data=digits)
    noisy = train_under_defense(UtilityConfig(epochs=3, defenses=["gaussian:1e-1"]), data=digits)
    assert noisy.defenses == ["gaussian:0.1"]
    assert noisy.accuracy < baseline.accuracy


def test_same_seed_same_run_and_a_no_op_defense_changes_nothing(digits, one_thread):
    a = train_under_defense(UtilityConfig(epochs=1, train_size=300, test_size=100), data=digits)
    b = train_under_defense(UtilityConfig(epochs=1, train_size=300, test_size=100, defenses=["prune:0"]), data=digits)
    assert a.epoch_accuracy == b.epoch_accuracy and a.epoch_loss == b.epoch_loss


def test_every_defense_kind_trains(digits, one_thread):
    for spec in ("laplacian:1e-2", "fp16", "int8", "prune:0.5", "dpsgd:clip=1.0,sigma=0.5"):
        r = train_under_defense(UtilityConfig(epochs=1, train_size=64, test_size=50, defenses=[spec]), data=digits)
        assert 0.0 <= r.accuracy <= 1.0


def test_compare_returns_baseline_and_defended(one_thread):
    base, defended = compare(UtilityConfig(epochs=1, train_size=200, test_size=100, defenses=["gaussian:1e-2"]))
    assert base.defenses == [] and defended.defenses == ["gaussian:0.01"]
    assert base.test_size == defended.test_size == 100


@pytest.mark.parametrize(
    "config, needle",
    [
        (UtilityConfig(epochs=0), "epochs must be at least 1"),
        (UtilityConfig(lr=-1.0), "lr must be positive"),
        (UtilityConfig(dataset="imagenet"), "unknown dataset 'imagenet'"),
        (UtilityConfig(model="vgg"), "unknown model 'vgg'"),
        (UtilityConfig(defenses=["noise:1"]), "bad defense 'noise:1'"),
        (UtilityConfig(model="lenet"), "takes 3×32×32 images"),
    ],
)
def test_bad_settings(config, needle):
    with pytest.raises(GradleakError, match=needle):
        train_under_defense(config)


def test_dpsgd_training_reports_epsilon(digits):
    pytest.importorskip("dp_accounting")
    small = dict(train_size=300, test_size=100, batch_size=30)
    weak = train_under_defense(UtilityConfig(epochs=1, defenses=["dpsgd:clip=1,sigma=0.8"], **small), data=digits)
    strong = train_under_defense(UtilityConfig(epochs=1, defenses=["dpsgd:clip=1,sigma=2"], **small), data=digits)
    assert weak.dp_delta == 1e-5 and 0 < strong.dp_epsilon < weak.dp_epsilon  # more noise, less leakage
    assert train_under_defense(UtilityConfig(epochs=1, **small), data=digits).dp_epsilon is None
