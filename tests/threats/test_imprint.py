"""The malicious server (imprint block, Fowl et al. 2022): whole batches of real bundled images
come back in closed form, for any model behind the block; bad settings get one-line errors."""

from __future__ import annotations

import time

import pytest
import torch

from gradleak.attacks import ImprintAttack
from gradleak.cli.main import main as gradleak_main
from gradleak.data import load_samples
from gradleak.data.public import load_tiled, public_dataset_for, public_images
from gradleak.errors import GradleakError
from gradleak.experiment import RunConfig, prepare, run_experiment
from gradleak.metrics import match_reconstructions, psnr
from gradleak.models import build_model
from gradleak.models.imprint import find_imprint_blocks
from gradleak.scenarios import FedSGD, Imprint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _share_at_30db(recon: torch.Tensor, targets: torch.Tensor) -> float:
    order = match_reconstructions(recon, targets)
    return sum(psnr(recon[order[i]], targets[i]) >= 30.0 for i in range(len(targets))) / len(targets)


def _attack(model_name: str, images: torch.Tensor, labels: torch.Tensor, bins: int, seed: int = 1234):
    torch.manual_seed(seed)
    model = build_model(model_name, channels=3, image_size=32, num_classes=100)
    scenario = Imprint(bins=bins, seed=seed, public_images=public_images("cifar100", (3, 32, 32)))
    server_model = scenario.server_model(model)
    update = scenario.share(server_model, images, labels)
    return ImprintAttack().run(server_model, update), server_model


@pytest.mark.parametrize("model_name", ["lenet", "resnet18"])
def test_batch_of_8_real_images_comes_back_at_30db(model_name):
    images, labels = load_samples("cifar100", list(range(8)), split="test", download=False, root="/nonexistent")
    result, _ = _attack(model_name, images, labels, bins=1024)
    assert _share_at_30db(result.images, images) >= 0.9
    assert result.images.shape == images.shape


def test_batch_of_64_with_256_bins_meets_the_target_quickly():
    images, labels = load_tiled("cifar100", list(range(64)))
    start = time.perf_counter()
    result, _ = _attack("lenet", images, labels, bins=256)
    assert time.perf_counter() - start < 10.0
    assert _share_at_30db(result.images, images) >= 0.6


def test_batch_of_256_with_4096_bins():
    images, labels = load_tiled("cifar100", list(range(256)))
    result, _ = _attack("lenet", images, labels, bins=4096)
    assert _share_at_30db(result.images, images) >= 0.85  # measured 94% over four such batches


def test_an_image_alone_in_its_bin_is_exact_and_the_block_keeps_the_model_working():
    images, labels = load_samples("cifar100", [3], split="test", download=False, root="/nonexistent")
    result, server_model = _attack("lenet", images, labels, bins=64)
    assert psnr(result.images, images) > 60
    # The residual read-out changes the client's input by ~1e-3 per pixel: predictions unchanged.
    plain = server_model.model
    assert torch.allclose(server_model(images), plain(images), atol=1e-2)


def test_public_images_are_not_the_private_dataset():
    assert public_dataset_for("cifar100", 3) == "cifar10"
    assert public_dataset_for("cifar10", 3) == "cifar100"
    assert public_dataset_for("mnist", 1) == "fashionmnist"
    pub = public_images("lfw", (3, 64, 64))
    assert pub.shape == (40, 3, 64, 64) and 0 <= float(pub.min()) and float(pub.max()) <= 1


def test_tiled_batches_are_distinct_variants_of_the_bundled_images():
    images, labels = load_tiled("cifar100", [3, 23, 43])
    base, base_labels = load_samples("cifar100", [3], split="test", download=False, root="/nonexistent")
    assert torch.equal(images[0], base[0]) and torch.equal(images[1], base[0].flip(-1))
    assert not torch.equal(images[2], images[0]) and labels.tolist() == [int(base_labels[0])] * 3


def test_cli_imprint_run_defaults_to_the_imprint_attack(tmp_path, capsys):
    code = gradleak_main([
        "run", "--dataset", "cifar100", "--split", "test", "--indices", *map(str, range(8)),
        "--scenario", "imprint", "--out", str(tmp_path / "run"), "--quiet",
    ])
    out = capsys.readouterr().out
    assert code == 0
    assert "images >= 30 dB: " in out
    recovered = int(out.split("images >= 30 dB: ")[1].split("/")[0])
    assert recovered >= 8 * 0.9


def test_imprint_defeats_secure_aggregation(tmp_path):
    images, labels = load_samples("cifar100", list(range(8)), split="test", download=False, root="/nonexistent")
    outcome = run_experiment(RunConfig(
        dataset="cifar100", split="test", indices=list(range(8)), scenario="imprint", clients=4, attack="auto",
        out=str(tmp_path / "run"), quiet=True, download=False,
    ))
    m = outcome.metrics
    assert m["attack"] == "imprint" and m["clients"] == 4
    assert sum(p["psnr"] >= 30 for p in m["per_image"]) >= 0.9 * 8
    assert [p["client"] for p in m["per_image"]] == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--scenario", "imprint", "--bins", "0"], "--bins must be at least 2 (got 0)"),
        (["--attack", "imprint"], "attack 'imprint' needs a server-modified model with an imprint block"),
        (["--bins", "8"], "--bins applies to --scenario imprint"),
    ],
)
def test_bad_imprint_settings_are_one_line_errors(argv, message, tmp_path, capsys):
    code = gradleak_main(["run", "--dataset", "cifar100", "--split", "test", "--index", "0",
                          "--out", str(tmp_path / "x"), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_the_imprint_attack_refuses_an_honest_model():
    torch.manual_seed(0)
    model = build_model("lenet", channels=3, image_size=32, num_classes=100)
    update = FedSGD().share(model, torch.rand(2, 3, 32, 32), torch.tensor([1, 2]))
    assert not find_imprint_blocks(model)
    with pytest.raises(GradleakError, match="has none: use --scenario imprint"):
        ImprintAttack().check(update, model)


def test_prepare_resolves_auto_to_imprint_for_the_malicious_server(tmp_path):
    prepared = prepare(RunConfig(dataset="cifar100", split="test", indices=[0, 1], scenario="imprint",
                                 attack="auto", bins=64, out=str(tmp_path / "p"), download=False))
    assert prepared.attack.name == "imprint" and prepared.config.attack == "imprint"
    assert find_imprint_blocks(prepared.model)[0][1].bins == 64
