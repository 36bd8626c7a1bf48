import pytest
import torch

from gradleak.errors import GradleakError
from gradleak.models import LeNet, MODELS, build_model, check_compatible


@pytest.mark.parametrize(
    "name,channels,size,classes,fc_in",
    [("lenet", 3, 32, 100, 768), ("lenetmnist", 1, 28, 10, 588), ("lenet64", 3, 64, 5749, 3072)],
)
def test_lenet_sizes_follow_the_dataset(name, channels, size, classes, fc_in):
    model = build_model(name, channels=channels, image_size=size, num_classes=classes)
    assert model.fc[0].in_features == fc_in
    assert model(torch.rand(2, channels, size, size)).shape == (2, classes)


@pytest.mark.parametrize("name", ["resnet18", "resnet-dlg"])
def test_resnets_take_any_input(name):
    model = build_model(name, channels=1, image_size=28, num_classes=10)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_uniform_init_is_the_originals_and_seeded():
    torch.manual_seed(1234)
    a = build_model("lenet", channels=3, image_size=32, num_classes=100)
    torch.manual_seed(1234)
    b = build_model("lenet", channels=3, image_size=32, num_classes=100)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
        assert p.min() >= -0.5 and p.max() <= 0.5
    # all activations are sigmoids, as DLG requires a twice-differentiable model
    assert all(not isinstance(m, torch.nn.ReLU) for m in a.modules())
    assert isinstance(a, LeNet)


def test_incompatible_model_is_refused_with_the_fix():
    with pytest.raises(GradleakError, match=r"lenet.*3×32×32.*mnist has 1×28×28.*--model lenetmnist"):
        check_compatible("lenet", channels=1, image_size=28, dataset="mnist")


def test_unknown_model_lists_choices():
    with pytest.raises(GradleakError, match="unknown model 'vgg': choose one of lenet, lenetmnist"):
        MODELS.get("vgg")


def test_registry_refuses_duplicates():
    with pytest.raises(GradleakError, match="already registered: choose another name"):
        MODELS.register("lenet", MODELS.get("lenet"))
