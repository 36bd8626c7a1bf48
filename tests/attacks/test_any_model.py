"""Any torch.nn.Module: the client forward model, the attacks on small models of each kind, and
the closed forms auto picks for MLPs and patch-embedding transformers (real bundled images)."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradleak.attacks import ATTACKS, Auto, LinearInputInversion, PatchEmbeddingInversion
from gradleak.attacks.auto import describe, explain
from gradleak.errors import GradleakError
from gradleak.metrics import psnr
from gradleak.objective import ClientForward, one_hot, relative_update_error
from gradleak.scenarios import FedAvg, FedSGD

SHAPE = (3, 20, 24)  # a crop of CIFAR-10 images: not square, not 32x32
CLASSES = 7


def crops(bundled, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = bundled("cifar10", indices)
    return images[:, :, 6:26, 4:28].contiguous(), labels % CLASSES


def conv_net(norm: str) -> nn.Module:
    layers = {
        "batchnorm": lambda c: nn.BatchNorm2d(c),
        "groupnorm": lambda c: nn.GroupNorm(2, c),
        "none": lambda c: nn.Identity(),
    }[norm]
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), layers(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), layers(8), nn.GELU(), nn.Flatten(), nn.Linear(8 * 10 * 12, CLASSES),
    )


class TinyViT(nn.Module):
    """Patch projection (4x4), position embedding with a class-token row first, LayerNorm, GELU MLP."""

    def __init__(self, width: int = 40) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, width, 4, stride=4)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.position = nn.Parameter(torch.randn(1, 31, width) * 0.02)
        self.block = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
        self.head = nn.Linear(width, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1) + self.position
        return self.head(self.block(tokens).mean(dim=1))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 20 * 24, 64), nn.ReLU(), nn.BatchNorm1d(64), nn.Linear(64, CLASSES))


def model_of(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "mlp":
        return mlp().train()
    if kind == "vit":
        return TinyViT()
    if kind == "batchnorm-eval":
        return conv_net("batchnorm").eval()
    if kind == "frozen":
        model = conv_net("groupnorm")
        model[0].weight.requires_grad_(False)
        return model
    return conv_net(kind).train()


KINDS = ["batchnorm", "batchnorm-eval", "groupnorm", "none", "frozen", "mlp", "vit"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_attacks_forward_model_reproduces_the_clients_update(bundled, kind):
    images, labels = crops(bundled, [0, 1])
    model = model_of(kind)
    update = FedSGD().share(model, images, labels)
    assert relative_update_error(model, update, images, labels) < 1e-10
    # the BatchNorm mode matters: the other mode's gradient is a different one
    if kind.startswith("batchnorm") or kind == "mlp":
        flipped = not (model.training if update.training is None else update.training)
        assert relative_update_error(model, dataclasses.replace(update, training=flipped), images, labels) > 1e-3


def test_frozen_parameters_are_not_sent_and_attacks_use_the_rest(bundled):
    images, labels = crops(bundled, [0])
    model = model_of("frozen")
    update = FedSGD().share(model, images, labels)
    assert update.parameter_names is not None and "0.weight" not in update.parameter_names
    assert len(update.tensors) == len(list(model.parameters())) - 1
    result = ATTACKS.get("ig")(iterations=3, restarts=1).run(model, update)
    assert tuple(result.images.shape) == (1, *SHAPE)


def test_an_update_naming_unknown_parameters_is_one_clear_error(bundled):
    images, labels = crops(bundled, [0])
    model = model_of("none")
    update = dataclasses.replace(FedSGD().share(model, images, labels), parameter_names=("missing.weight",))
    with pytest.raises(GradleakError, match="does not have"):
        relative_update_error(model, update, images, labels)


def test_fedavg_with_mini_batches_is_plain_sgd_on_consecutive_chunks(bundled):
    images, labels = crops(bundled, [0, 1, 2])
    model = model_of("groupnorm")
    forward = ClientForward(model)
    targets = one_hot(labels, CLASSES)
    delta = forward.weight_change(images, targets, local_steps=3, local_lr=0.1, local_batch_size=2)
    names = [n for n, _ in model.named_parameters()]
    reference = [p.detach().clone() for p in model.parameters()]
    for lo, hi in ((0, 2), (2, 3), (0, 2)):  # 3 steps over 2 mini-batches: the first comes round again
        leaves = [r.requires_grad_(True) for r in reference]
        logits = torch.func.functional_call(model, dict(zip(names, leaves)), (images[lo:hi],))
        loss = -(targets[lo:hi] * F.log_softmax(logits, -1)).sum(-1).mean()
        reference = [(r - 0.1 * g).detach() for r, g in zip(leaves, torch.autograd.grad(loss, leaves))]
    expected = [r - p.detach() for r, p in zip(reference, model.parameters())]
    assert all(torch.allclose(d, e, atol=1e-6) for d, e in zip(delta, expected))


@pytest.mark.parametrize("kind", ["batchnorm", "batchnorm-eval", "groupnorm", "frozen", "vit"])
@pytest.mark.parametrize("attack", ["dlg", "idlg", "ig", "map", "auto"])
def test_every_attack_runs_on_each_kind_of_model(bundled, kind, attack):
    images, labels = crops(bundled, [3])
    model = model_of(kind)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    update = FedSGD().share(model, images, labels)
    settings = {"dlg": {"iterations": 2, "restarts": 1}, "idlg": {"iterations": 2, "restarts": 1},
                "ig": {"iterations": 3, "restarts": 1}, "map": {"iterations": 4}, "auto": {"iterations": 3, "restarts": 1}}
    result = ATTACKS.get(attack)(**settings[attack]).run(model, update, generator=torch.Generator().manual_seed(0))
    assert tuple(result.images.shape) == (1, *SHAPE)
    assert torch.isfinite(result.images).all() and 0 <= float(result.images.min()) <= float(result.images.max()) <= 1
    # attacks leave the server's model alone (BatchNorm running statistics included)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_auto_solves_an_mlp_in_closed_form_with_a_users_loss(bundled):
    images, labels = crops(bundled, [5])
    model = model_of("mlp").eval()

    def smoothed(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets * 0.9 + 0.1 / CLASSES)

    update = FedSGD().share(model, images, labels)  # default loss: the attack verifies with it
    result = Auto(iterations=2, restarts=1).run(model, update)
    assert psnr(result.images, images) > 60 and result.extras["auto_choice"] == "linear_input"
    assert result.labels.tolist() == labels.tolist()
    client = ClientForward(model, loss=smoothed)
    custom = dataclasses.replace(update, tensors=tuple(g.detach() for g in client.gradient(images, one_hot(labels, CLASSES))))
    with_loss = Auto(iterations=2, restarts=1, loss=smoothed).run(model, custom)
    assert psnr(with_loss.images, images) > 60 and with_loss.extras["relative_gradient_error"] < 1e-10
    # verified with the wrong loss, the same exact image does not explain the update
    assert relative_update_error(model, custom, images, labels) > 1e-4


def test_auto_solves_a_patch_embedding_transformer_in_closed_form(bundled):
    images, labels = crops(bundled, [6])
    model = model_of("vit")
    result = Auto(iterations=2, restarts=1).run(model, FedSGD().share(model, images, labels))
    assert psnr(result.images, images) > 50 and result.extras["auto_choice"] == "patch_embedding"
    assert "position-embedding" in result.stop_reason


def test_auto_says_why_a_closed_form_does_not_apply(bundled):
    images, labels = crops(bundled, [0, 1])
    model = model_of("mlp")
    reasons = {a.attack: a for a in explain(model, FedSGD().share(model, images, labels))}
    assert not reasons["linear_input"].applies and "batch of 2" in reasons["linear_input"].why
    model[1].bias.requires_grad_(False)
    one = FedSGD().share(model.eval(), images[:1], labels[:1])  # BatchNorm1d cannot train on one image
    assert "frozen" in {a.attack: a for a in explain(model, one)}["linear_input"].why
    text = describe(model_of("vit"), FedSGD().share(model_of("vit"), images[:1], labels[:1]))
    assert "+ patch_embedding:" in text and "- linear_input: the first layer is not a Linear layer" in text
    with pytest.raises(GradleakError, match="linear_input' does not fit"):
        LinearInputInversion().run(model_of("vit"), FedSGD().share(model_of("vit"), images[:1], labels[:1]))
    with pytest.raises(GradleakError, match="patch_embedding' does not fit"):
        PatchEmbeddingInversion().check(one, model)


def test_a_one_step_fedavg_change_is_solved_too(bundled):
    images, labels = crops(bundled, [7])
    model = model_of("mlp").eval()
    result = Auto(iterations=2, restarts=1).run(model, FedAvg(local_steps=1, local_lr=0.01).share(model, images, labels))
    assert psnr(result.images, images) > 50


def test_the_own_models_benchmark_runs_small(tmp_path):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "own_models.py"
    spec = importlib.util.spec_from_file_location("own_models_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    rows = module.main(["--images", "1", "--iters", "2", "--restarts", "1", "--batches", "1", "--models", "mlp", "vit",
                        "--attacks", "ig", "auto", "--out", str(tmp_path)])
    by = {(r["model"], r["attack"]): r["psnr"][0] for r in rows}
    assert by[("mlp", "auto")] > 40 and by[("vit", "auto")] > 40
    assert by[("mlp", "auto")] > by[("mlp", "ig")] and by[("vit", "auto")] > by[("vit", "ig")]
    assert (tmp_path / "table.md").read_text().count("\n") == 6 and (tmp_path / "own_models.png").exists()
    again = module.main(["--images", "1", "--iters", "2", "--restarts", "1", "--batches", "1", "--models", "mlp", "vit",
                         "--attacks", "ig", "auto", "--out", str(tmp_path)])
    assert len(again) == len(rows)  # resumed: nothing ran twice
