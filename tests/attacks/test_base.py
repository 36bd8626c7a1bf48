"""The base attack owns the shared `run` (check, device, timing, finish) once; plugins that bring
their own `run` keep working."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import gradleak
from gradleak.attacks import ATTACKS
from gradleak.attacks.base import AttackContext, BaseAttack
from gradleak.data import load_samples
from gradleak.errors import GradleakError
from gradleak.types import AttackResult, StepReport


def _mlp_update(batch: int = 1):
    images, labels = load_samples("cifar10", list(range(batch)), split="test")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 16), nn.ReLU(), nn.Linear(16, 10))
    return net, gradleak.client_update(net, images, labels), images, labels


def test_every_built_in_attack_inherits_the_one_run():
    for name in ATTACKS.names():
        attack = ATTACKS.get(name)
        if not attack.__module__.startswith("gradleak."):
            continue  # a plugin registered by another test may bring its own run
        assert issubclass(attack, BaseAttack), f"{name} does not build on BaseAttack"
        assert attack.run is BaseAttack.run, f"{name} repeats the run prologue instead of implementing reconstruct"


@dataclass
class _Overshoot(BaseAttack):
    """Returns images outside [0, 1] that still carry a graph, after reporting one slow step."""

    iterations: int = 1
    pause: float = 0.4
    name: str = "overshoot"
    seen: AttackContext | None = None

    def check(self, update, model=None):
        if update.batch_size > 1:
            raise GradleakError("overshoot takes one image: use a batch of 1")

    def reconstruct(self, model, update, context):
        self.seen = context
        x = (torch.rand(1, *update.input_shape) * 3 - 1).requires_grad_(True)  # pixels in [-1, 2]
        context.observer(StepReport(iteration=1, loss=0.0, images=x.detach()))
        return AttackResult(images=x, labels=torch.tensor([0]), losses=[0.0], iterations=1)


def test_base_run_checks_finishes_and_does_not_count_the_observers_time():
    net, update, _, _ = _mlp_update()
    calls = []

    def slow_observer(report: StepReport) -> None:
        calls.append(report.iteration)
        time.sleep(0.4)

    attack = _Overshoot()
    result = attack.run(net, update, observer=slow_observer)
    assert calls == [1]
    assert result.seconds < 0.3  # the 0.4 s in the observer are the runner's, not the attack's
    assert not result.images.requires_grad and float(result.images.min()) == 0.0 and float(result.images.max()) == 1.0
    assert result.images.device.type == "cpu" and result.labels.device.type == "cpu"
    assert attack.seen is not None and attack.seen.device == next(net.parameters()).device
    _, batch_update, _, _ = _mlp_update(batch=2)
    with pytest.raises(GradleakError, match="overshoot takes one image"):
        attack.run(net, batch_update)


def test_a_subclass_without_reconstruct_says_what_is_missing():
    net, update, _, _ = _mlp_update()
    with pytest.raises(NotImplementedError, match="must implement reconstruct"):
        BaseAttack().run(net, update)


class _OwnRun:
    """A plugin attack with its own `run` (no base class): the registry and `reconstruct` take it."""

    name = "own-run"

    def __init__(self, iterations: int = 1) -> None:
        self.iterations = iterations

    def check(self, update, model=None):
        pass

    def run(self, model, update, *, generator=None, observer=None):
        from gradleak.attacks.linear_input import LinearInputInversion

        return LinearInputInversion().run(model, update, observer=observer)


def test_a_plugin_with_its_own_run_still_works():
    net, update, images, labels = _mlp_update()
    gradleak.register_attack("own-run", _OwnRun)
    try:
        result = gradleak.reconstruct(net, update, attack="own-run")
    finally:
        del ATTACKS._items["own-run"]
    assert gradleak.score(result, images, labels).psnr > 60  # the first Linear layer gives the image away
