"""Issue 15/20: each defense declares its family, its level and its published noise model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from gradleak.attacks import noise_model
from gradleak.defenses import DEFENSES, parse_defense
from gradleak.defenses.base import DefenseKind
from gradleak.errors import GradleakError
from gradleak.types import SharedUpdate


def _update(*defenses: str, batch: int = 2) -> SharedUpdate:
    tensors = (torch.tensor([[0.5, -0.25], [0.0, 1.0]]), torch.tensor([0.125, 0.0]))
    return SharedUpdate(tensors=tensors, kind="gradient", batch_size=batch, input_shape=(1, 2, 2),
                        num_classes=2, defenses=defenses)


@pytest.mark.parametrize(
    ("spec", "family", "level"),
    [("gaussian:1e-3", "gaussian", 1e-3), ("laplacian:0.01", "laplacian", 0.01), ("prune:0.3", "prune", 0.3),
     ("fp16", "fp16", None), ("int8", "int8", None), ("dpsgd:clip=1,sigma=0.5", "dpsgd", 0.5)],
)
def test_every_defense_declares_family_level_and_noise(spec, family, level):
    defense = parse_defense(spec)
    assert defense.family == family and defense.level == level
    part = defense.noise_contribution(_update(spec))
    assert part.description  # one line a report can show
    assert part.variances is not None or part.masks is not None


def test_published_model_combines_the_declared_contributions():
    update = _update("gaussian:1e-3", "prune:0.3", "dpsgd:clip=2,sigma=0.1", batch=4)
    model = noise_model(update, source="published")
    # variances add: 1e-3 + (0.1 * 2 / 4)^2
    assert float(model.variances[0]) == pytest.approx(1e-3 + 0.05**2)
    assert model.clip == 2.0
    assert model.masks is not None and model.masks[1].tolist() == [True, False]
    assert "Gaussian noise of variance 0.001" in model.description and "pruning of 0.3" in model.description
    fp16 = noise_model(_update("fp16"), source="published")
    assert float(fp16.variances[0][0, 0]) == pytest.approx(2.0**-22 / 12)  # ulp of 0.5 is 2^-11


def test_a_defense_without_a_declared_noise_model_is_refused_in_one_line():
    @dataclasses.dataclass(frozen=True)
    class Shuffle:
        family = "shuffle"
        level = None

        @property
        def name(self) -> str:
            return "shuffle-test"

        def apply(self, update, *, generator=None):
            return update

    kind = DefenseKind(name="shuffle-test", form="shuffle-test", example="shuffle-test",
                       summary="test only", build=lambda arg: Shuffle())
    DEFENSES.register("shuffle-test", kind)
    try:
        with pytest.raises(GradleakError, match="declares no noise model.*--noise-source estimated") as caught:
            noise_model(_update("shuffle-test"), source="published")
        assert "\n" not in str(caught.value)
    finally:
        DEFENSES._items.pop("shuffle-test", None)
