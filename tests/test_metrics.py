import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from gradleak.metrics import label_accuracy, match_reconstructions, mse, psnr, score_batch, ssim


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 32, 32, generator=g)
    noisy = (target + 0.05 * torch.randn(3, 32, 32, generator=g)).clamp(0, 1)
    return noisy, target


def test_psnr_matches_scikit_image(pair):
    rec, tgt = pair
    assert psnr(rec, tgt) == pytest.approx(peak_signal_noise_ratio(tgt.numpy(), rec.numpy(), data_range=1.0), abs=1e-4)


def test_psnr_and_ssim_match_torchmetrics(pair):
    tm = pytest.importorskip("torchmetrics.functional.image")
    rec, tgt = pair
    assert psnr(rec, tgt) == pytest.approx(float(tm.peak_signal_noise_ratio(rec, tgt, data_range=1.0)), abs=1e-3)
    assert ssim(rec, tgt) == pytest.approx(
        float(tm.structural_similarity_index_measure(rec[None], tgt[None], data_range=1.0)), abs=2e-3
    )


def test_ssim_matches_scikit_image(pair):
    rec, tgt = pair
    reference = structural_similarity(
        tgt.numpy(), rec.numpy(), data_range=1.0, channel_axis=0,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    )
    assert ssim(rec, tgt) == pytest.approx(reference, abs=2e-3)


def test_exact_reconstruction_is_infinite_psnr(pair):
    _, tgt = pair
    assert psnr(tgt, tgt) == math.inf
    assert mse(tgt, tgt) == 0


def test_matching_undoes_a_permutation():
    g = torch.Generator().manual_seed(1)
    targets = torch.rand(5, 3, 8, 8, generator=g)
    perm = [3, 0, 4, 1, 2]
    recs = targets[perm] + 0.01
    order = match_reconstructions(recs, targets)
    assert torch.allclose(recs[order], targets + 0.01)


def test_score_batch_scores_after_matching():
    g = torch.Generator().manual_seed(2)
    targets = torch.rand(2, 1, 16, 16, generator=g)
    recs = targets.flip(0)
    score = score_batch(recs, targets, true_labels=torch.tensor([4, 7]), recovered_labels=torch.tensor([7, 4]))
    assert score.order == [1, 0]
    assert all(s.psnr == math.inf for s in score.per_image)
    assert [s.recovered_label for s in score.per_image] == [4, 7]
    assert score.label_accuracy == 1.0


def test_label_accuracy_counts_repeats():
    assert label_accuracy(torch.tensor([1, 1, 2]), torch.tensor([1, 2, 2])) == pytest.approx(2 / 3)
