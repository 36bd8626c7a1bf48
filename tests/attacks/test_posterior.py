"""Issue 9: attacks that stay strong on defended updates (noise models, MAP inversion, auto's choice)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from gradleak.attacks import AnalyticInversion, Auto, MapInversion, noise_model
from gradleak.attacks.noise_model import relative_noise_level
from gradleak.defenses import parse_defenses
from gradleak.errors import GradleakError
from gradleak.metrics import psnr
from gradleak.scenarios import FedSGD


def defended(model, images, labels, *specs: str, seed: int = 7):
    client = FedSGD(defenses=parse_defenses(list(specs)), generator=torch.Generator().manual_seed(seed))
    return client.share(model, images, labels)


def test_map_recovers_a_real_image_from_a_noisy_gradient(bundled, lenet):
    # gaussian:1e-4 on a CIFAR-100 test image: the exact analytic solve falls apart (< 10 dB), the
    # noise-aware MAP inversion keeps a recognisable image (27.7 dB measured on image 0).
    images, labels = bundled("cifar100", [0])
    model = lenet("cifar100")
    update = defended(model, images, labels, "gaussian:1e-4")
    exact = AnalyticInversion().run(model, update)
    assert psnr(exact.images, images) < 12
    result = MapInversion(iterations=600).run(model, update)
    assert psnr(result.images, images) > 24
    assert result.labels.tolist() == labels.tolist()
    assert "Gaussian noise of variance 0.0001" in result.stop_reason
    # it explains the update about down to the noise, not below it (no noise fitting)
    assert 0.5 < result.extras["discrepancy"] < 2.0


def test_map_on_a_pruned_gradient_uses_only_the_entries_sent(bundled, lenet):
    images, labels = bundled("mnist", [3])
    model = lenet("mnist")
    update = defended(model, images, labels, "prune:0.5")
    noise = noise_model(update, source="published")
    assert noise.masks is not None and all(bool((m == (t != 0)).all()) for m, t in zip(noise.masks, update.tensors))
    masked = MapInversion(iterations=800).run(model, update)
    assert psnr(masked.images, images) > 30
    # The same update read as if its zeros were sent values (an exact-gradient noise model): worse.
    exact = noise_model(FedSGD().share(model, images, labels), source="estimated")
    naive = MapInversion(iterations=800, noise=exact).run(model, update)
    assert psnr(masked.images, images) > psnr(naive.images, images) + 5


def test_noise_model_estimated_from_the_update_matches_the_published_one(bundled, lenet):
    images, labels = bundled("cifar100", [2])
    model = lenet("cifar100")
    for spec, variance in (("gaussian:1e-3", 1e-3), ("laplacian:0.01", 2e-4)):
        update = defended(model, images, labels, spec)
        published = float(noise_model(update, source="published").variances[0])
        estimated = float(noise_model(update, source="estimated").variances[0])
        assert published == pytest.approx(variance)
        assert estimated == pytest.approx(variance, rel=0.1), spec
    exact = noise_model(FedSGD().share(model, images, labels), source="estimated")
    assert not exact.perturbed and "no perturbation found" in exact.description
    for spec, word in (("fp16", "fp16 grid"), ("int8", "int8 grid"), ("prune:0.3", "pruned")):
        estimate = noise_model(defended(model, images, labels, spec), source="estimated")
        assert estimate.perturbed and word in estimate.description, spec


def test_dpsgd_noise_model_knows_the_clip_and_the_mean_gradient_noise(bundled, lenet):
    images, labels = bundled("mnist", [0, 1])
    model = lenet("mnist")
    update = defended(model, images, labels, "dpsgd:clip=1,sigma=0.1")
    noise = noise_model(update)
    assert noise.clip == 1.0 and float(noise.variances[0]) == pytest.approx((0.1 * 1 / 2) ** 2)
    assert relative_noise_level(update, noise) > 0


def test_auto_says_what_it_did_on_a_defended_update(bundled, lenet):
    images, labels = bundled("mnist", [5])
    model = lenet("mnist")
    update = defended(model, images, labels, "gaussian:1e-3")
    result = Auto(iterations=300).run(model, update)
    assert psnr(result.images, images) > 20
    assert "the update looks defended" in result.stop_reason and "Gaussian noise" in result.stop_reason
    assert result.extras["auto_choice"] in ("lbfgs_from_analytic", "map") and result.extras["noise_to_signal"] > 0


def test_unknown_noise_source_is_one_clear_error(bundled, lenet):
    images, labels = bundled("mnist", [0])
    model = lenet("mnist")
    with pytest.raises(GradleakError, match="choose one of auto, published, estimated"):
        MapInversion(noise_source="oracle").run(model, FedSGD().share(model, images, labels))


def test_ci_sized_defense_curve():
    # The benchmark's own code on 2 images and 2 levels: gradleak is at least as good as the best
    # reference (DLG, iDLG) on the same defended updates, and leaks (>= 20 dB) at gaussian:1e-4.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import defense_curve

    rows = []
    for spec in ("gaussian:0.0001", "prune:0.3"):  # as the benchmark spells its levels
        for index in (0, 1):
            rows += defense_curve.one_case("mnist", [index], spec, ref_steps=20)
    table = defense_curve.summarise(rows)
    lines = defense_curve.targets_met(table)
    assert lines[0].endswith(": yes"), lines
    by = {(r["defense"], r["method"]): r for r in table}
    assert by[("gaussian:0.0001", "gradleak auto")]["median_psnr"] >= 20
    assert by[("prune:0.3", "gradleak auto")]["median_psnr"] >= 25
    assert "| mnist | 1 | prune:0.3 | gradleak auto | 2 |" in defense_curve.format_table(table)
    json.dumps(rows)  # rows are plain JSON, as the benchmark writes them


def test_noise_source_for_an_attack_without_a_noise_model_is_refused_in_one_line(tmp_path, capsys):
    from gradleak.cli.main import main

    code = main(["run", "--dataset", "mnist", "--split", "test", "--index", "0", "--attack", "dlg",
                 "--noise-source", "estimated", "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--noise-source applies to the map and auto attacks, not dlg" in err
    assert not (tmp_path / "out").exists()
