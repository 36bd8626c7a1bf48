"""The public API as a researcher uses it: their model, their data, their loss, their defense."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import gradleak
from gradleak.data import load_samples
from gradleak.errors import GradleakError
from gradleak.models import build_model
from tests.conftest import REPO, subprocess_env


@pytest.fixture(scope="module")
def lenet_and_image() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("lenet", channels=3, image_size=32, num_classes=100)
    images, labels = load_samples("cifar100", [3], split="test")
    return model, images, labels


def test_round_trip_reconstructs_a_real_image(lenet_and_image):
    model, images, labels = lenet_and_image
    update = gradleak.client_update(model, images, labels)
    result = gradleak.reconstruct(model, update, attack="auto")
    score = gradleak.score(result, images, labels)
    assert score.psnr > 30 and score.label_accuracy == 1.0


def test_fedavg_weight_change_with_local_steps(lenet_and_image):
    model, images, labels = lenet_and_image
    update = gradleak.client_update(model, images, labels, scenario="fedavg", local_steps=3, local_lr=0.01)
    assert update.kind == "weight_delta" and update.local_steps == 3 and update.local_lr == 0.01
    one = gradleak.client_update(model, images, labels, scenario="fedavg", local_steps=1, local_lr=0.01)
    grad = gradleak.client_update(model, images, labels)
    assert torch.allclose(one.tensors[-1], -0.01 * grad.tensors[-1], atol=1e-7)


def test_user_loss_gives_the_same_gradient_as_cross_entropy(lenet_and_image):
    model, images, labels = lenet_and_image
    default = gradleak.client_update(model, images, labels)
    user = gradleak.client_update(model, images, labels, loss=nn.CrossEntropyLoss())
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(default.tensors, user.tensors))
    doubled = gradleak.client_update(model, images, labels, loss=lambda logits, t: 2 * nn.functional.cross_entropy(logits, t))
    assert torch.allclose(doubled.tensors[0], 2 * default.tensors[0], atol=1e-6)


def test_frozen_parameters_are_not_sent(lenet_and_image):
    model, images, labels = lenet_and_image
    frozen = build_model("lenet", channels=3, image_size=32, num_classes=100)
    frozen.load_state_dict(model.state_dict())
    first = next(frozen.parameters())
    first.requires_grad_(False)
    update = gradleak.client_update(frozen, images, labels)
    names = [n for n, p in frozen.named_parameters() if p.requires_grad]
    assert update.parameter_names == tuple(names)
    assert len(update.tensors) == len(list(frozen.parameters())) - 1


def test_batchnorm_mode_is_the_scenarios_and_the_model_is_left_as_it_was():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 10))
    model.eval()
    images, labels = load_samples("cifar10", [0, 1], split="test")
    train = gradleak.client_update(model, images, labels, training=True)
    evaluated = gradleak.client_update(model, images, labels, training=False)
    assert train.training is True and evaluated.training is False
    assert not torch.allclose(train.tensors[0], evaluated.tensors[0])
    assert not model.training  # restored


def test_defend_applies_post_hoc_defenses_and_refuses_dpsgd(lenet_and_image):
    model, images, labels = lenet_and_image
    update = gradleak.client_update(model, images, labels)
    pruned = gradleak.defend(update, "prune:0.5", "fp16")
    assert pruned.defenses == ("prune:0.5", "fp16")
    assert float((pruned.tensors[0] == 0).float().mean()) >= 0.5
    assert update.defenses == ()  # untouched
    with pytest.raises(GradleakError, match="client_update"):
        gradleak.defend(update, "dpsgd:clip=1,sigma=0.1")
    private = gradleak.client_update(model, images, labels, defenses=["dpsgd:clip=1,sigma=0.1"],
                                     generator=torch.Generator().manual_seed(0))
    assert private.defenses == ("dpsgd:clip=1.0,sigma=0.1,delta=1e-05",)


def test_unknown_names_and_settings_list_the_valid_ones(lenet_and_image):
    model, images, labels = lenet_and_image
    update = gradleak.client_update(model, images, labels)
    with pytest.raises(GradleakError, match="unknown attack 'magic': choose one of .*auto"):
        gradleak.reconstruct(model, update, attack="magic")
    with pytest.raises(GradleakError, match="attack 'dlg' has no setting 'speed': its settings are .*iterations"):
        gradleak.reconstruct(model, update, attack="dlg", speed=0.1)
    with pytest.raises(GradleakError, match="scenario 'fedsgd' has no setting 'local_steps'"):
        gradleak.client_update(model, images, labels, local_steps=2)
    with pytest.raises(GradleakError, match="one label per image"):
        gradleak.client_update(model, images, torch.tensor([1, 2]))


def test_an_update_that_does_not_fit_the_model_is_refused(lenet_and_image):
    model, images, labels = lenet_and_image
    update = gradleak.client_update(model, images, labels)
    other = build_model("lenet", channels=3, image_size=32, num_classes=10)
    with pytest.raises(GradleakError, match="is it the right model"):
        gradleak.reconstruct(other, update)


def test_score_without_labels_has_no_label_accuracy(lenet_and_image):
    _, images, _ = lenet_and_image
    score = gradleak.score(images.clone(), images)
    assert score.label_accuracy is None and score.psnr == float("inf") or score.psnr > 100


def test_registries_refuse_duplicates_and_list_names():
    assert {"auto", "dlg", "ig"} <= set(gradleak.available("attack"))
    with pytest.raises(GradleakError, match="already registered"):
        gradleak.register_model("lenet", lambda c, s, k: nn.Linear(1, k))
    with pytest.raises(GradleakError, match="unknown kind 'metric'"):
        gradleak.available("metric")


def test_a_registered_model_builds_like_a_builtin():
    name = "tiny-test-mlp"
    if name not in gradleak.available("model"):
        gradleak.register_model(name, lambda c, s, k: nn.Sequential(nn.Flatten(), nn.Linear(c * s * s, k)))
    model = build_model(name, channels=1, image_size=28, num_classes=10)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_import_gradleak_is_cheap():
    code = "import sys, gradleak; gradleak.__version__; print(sorted(m for m in ('torch', 'transformers', 'dask', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"
