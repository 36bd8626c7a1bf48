"""``layerwise``: a ReLU ConvNet with BatchNorm (train mode) on a real CIFAR-10 image, and where it does not apply."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradleak.attacks import ATTACKS, Auto, LayerwiseInversion
from gradleak.attacks.auto import explain
from gradleak.attacks.image_scale import scale_sensitivity, undetermined_scale
from gradleak.data import load_samples
from gradleak.errors import GradleakError
from gradleak.metrics import score_batch
from gradleak.scenarios import FedSGD


def convnet_bn(channels: int = 32) -> nn.Module:
    """A small chain: conv, BatchNorm, ReLU, max pooling, Linear head (random init, train mode)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(channels * 16 * 16, 10),
    ).train()


class ConvNetWithHead(nn.Module):
    """A chain written as a module whose forward calls its children in turn (flatten in between)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(8 * 16 * 16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((torch.relu(self.conv(x)) + x).flatten(1))


@pytest.fixture(scope="module")
def cifar_image() -> tuple[torch.Tensor, torch.Tensor]:
    return load_samples("cifar10", [3], split="test")


def test_relu_convnet_with_batchnorm_on_a_real_image(cifar_image):
    images, labels = cifar_image
    net = convnet_bn()
    update = FedSGD().share(net, images, labels)
    result = LayerwiseInversion().run(net, update)
    score = score_batch(result.images, images, true_labels=labels, recovered_labels=result.labels, indices=[3])
    # how close the structure is, up to the scale this update does not determine
    scale = float((result.images * images).sum() / (result.images**2).sum())
    structure = score_batch((scale * result.images).clamp(0, 1), images, true_labels=labels, recovered_labels=labels,
                            indices=[3]).per_image[0]
    # measured 33.4 dB up to scale and 26.8 dB as sent (image 3's brightest pixel is 0.918, the prior
    # says 0.973), 12 s; the active-set version reached 20.8 dB here
    assert structure.psnr > 31.0
    assert result.extras["scale_undetermined"] and "set by the prior: brightest pixel 0.973" in result.stop_reason
    assert abs(float(result.images.max()) - 0.973) < 1e-3
    assert score.per_image[0].psnr > 25.0
    assert int(result.labels[0]) == int(labels[0])
    assert result.extras["relative_gradient_error"] < 1e-3


def test_the_scale_of_an_image_is_not_in_a_train_mode_batchnorm_update(cifar_image):
    images, labels = cifar_image
    net = convnet_bn(8)
    update = FedSGD().share(net, images, labels)
    assert scale_sensitivity(net, update, images, labels) < 1e-5  # only BatchNorm's eps sees it
    assert not undetermined_scale(net, update, images, labels, fit_error=0.0)
    assert undetermined_scale(net, update, 0.7 * images, labels, fit_error=1e-3)
    net.eval()  # running statistics: the scale is in the update
    update = FedSGD().share(net, images, labels)
    assert scale_sensitivity(net, update, images, labels) > 1e-3
    assert not undetermined_scale(net, update, images, labels, fit_error=1e-3)


def test_a_module_whose_forward_calls_its_children_is_a_chain(cifar_image):
    images, labels = cifar_image
    net = ConvNetWithHead().train()
    update = FedSGD().share(net, images, labels)
    applies = {a.attack: a for a in explain(net, update)}
    assert applies["layerwise"].applies
    assert Auto().plan(net, update)[0] == "layerwise"


def test_frozen_layers_add_no_equations_but_the_attack_still_runs(cifar_image):
    images, labels = cifar_image
    net = convnet_bn(8)
    net[0].weight.requires_grad_(False)
    update = FedSGD().share(net, images, labels)
    assert update.parameter_names is not None and "0.weight" not in update.parameter_names
    result = LayerwiseInversion(iterations=20).run(net, update)
    assert result.images.shape == images.shape


def test_a_residual_connection_does_not_apply_in_one_line(cifar_image):
    images, labels = cifar_image
    net = Residual()
    update = FedSGD().share(net, images, labels)
    with pytest.raises(GradleakError, match="does not apply: not a chain of layers.*residual") as error:
        LayerwiseInversion().check(update, net)
    assert "\n" not in str(error.value)
    assert Auto().plan(net, update)[0] == "ig"


def test_a_batch_does_not_apply(cifar_image):
    images, labels = load_samples("cifar10", [3, 4], split="test")
    net = convnet_bn(8)
    update = FedSGD().share(net, images, labels)
    with pytest.raises(GradleakError, match="a batch of 2 mixes the head's rows"):
        LayerwiseInversion().check(update, net)


def test_registered():
    assert ATTACKS.get("layerwise") is LayerwiseInversion
