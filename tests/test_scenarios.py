import torch

from gradleak.models import build_model
from gradleak.scenarios import FedAvg, FedSGD, cross_entropy_for_soft_labels, one_hot


def _setup(batch=2):
    torch.manual_seed(0)
    model = build_model("lenetmnist", channels=1, image_size=28, num_classes=10)
    images = torch.rand(batch, 1, 28, 28)
    labels = torch.tensor([3, 8][:batch])
    return model, images, labels


def test_fedsgd_shares_the_batch_mean_gradient():
    model, images, labels = _setup()
    update = FedSGD().share(model, images, labels)
    per_sample = []
    for i in range(2):
        loss = cross_entropy_for_soft_labels(model(images[i : i + 1]), one_hot(labels[i : i + 1], 10))
        per_sample.append(torch.autograd.grad(loss, list(model.parameters())))
    for shared, a, b in zip(update.tensors, *per_sample):
        assert torch.allclose(shared, (a + b) / 2, atol=1e-6)
    assert update.batch_size == 2 and update.num_classes == 10 and update.input_shape == (1, 28, 28)
    assert update.known_labels is None


def test_fedavg_one_step_is_minus_lr_times_gradient():
    model, images, labels = _setup()
    grad = FedSGD().share(model, images, labels)
    delta = FedAvg(local_steps=1, local_lr=0.1).share(model, images, labels)
    assert delta.kind == "weight_delta" and delta.local_steps == 1
    for g, d in zip(grad.tensors, delta.tensors):
        assert torch.allclose(d, -0.1 * g, atol=1e-6)


def test_fedavg_leaves_the_servers_model_untouched():
    model, images, labels = _setup()
    before = [p.clone() for p in model.parameters()]
    FedAvg(local_steps=3, local_lr=0.5).share(model, images, labels)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
