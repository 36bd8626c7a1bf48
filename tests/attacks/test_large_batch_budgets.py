"""The analytic attack's iterative stages stay bounded as the batch grows (issue 21).

A CIFAR-100 batch of 128 did not finish in 20 minutes: the prior fit ran 3 x 400 L-BFGS
iterations at 0.94 s per evaluation and the joint refinement 1,000 at 0.21 s. Each stage now runs
at most budget / (batch x pixels) iterations. Here the budgets are small so that the bound shows on a batch
of 6 in seconds; the attack's iteration count is the evaluations it ran (and its last report).
"""

from __future__ import annotations

import math

import pytest

from gradleak.attacks.analytic import AnalyticInversion
from gradleak.scenarios import FedSGD

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_prior_fit_and_refinement_iterations_shrink_with_the_batch(bundled, lenet) -> None:
    images, labels = bundled("cifar100", [0, 1, 2, 3, 4, 5])
    model = lenet("cifar100")
    update = FedSGD().share(model, images, labels)
    attack = AnalyticInversion(fit_budget=6 * 3072 * 12, refine_budget=6 * 3072 * 20, refine_above=0.0)
    reports = []
    result = attack.run(model, update, observer=reports.append)
    per_stage = math.ceil(1.25 * 12)  # L-BFGS evaluates at most 1.25 x max_iter times
    assert result.extras["layers_fitted_with_prior"] >= 1
    assert result.iterations <= len(attack.prior_weights) * per_stage + math.ceil(1.25 * 20) + 1, result.iterations
    assert reports and reports[-1].iteration == result.iterations
