"""Un-mixing large batches at the Linear head in bounded memory (issue 21).

``--tile-bundled --indices 0..255`` on CIFAR-100 asked for 40 GB in ``jacfwd`` (a 10,100 x 25,600
Jacobian and its intermediates). Above ``DENSE_UNKNOWNS`` unknowns the Levenberg-Marquardt steps
are now solved matrix-free (conjugate gradients on Jacobian-vector products): memory linear in the
batch. These tests run that path on a real head gradient and check it never forms a Jacobian.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradleak.attacks import unmix

REPO = Path(__file__).resolve().parents[2]


def _head_gradient(batch: int, features: int = 768, classes: int = 100, seed: int = 0):
    torch.manual_seed(seed)
    head = torch.nn.Linear(features, classes).double()
    torch.nn.init.uniform_(head.weight, -0.5, 0.5)
    h = torch.rand(batch, features, dtype=torch.float64)
    y = torch.randperm(classes)[:batch] if batch <= classes else torch.randint(0, classes, (batch,))
    loss = torch.nn.functional.cross_entropy(head(h), y)
    gw, gb = torch.autograd.grad(loss, [head.weight, head.bias])
    return gw, gb, head.weight.detach(), head.bias.detach(), h, y


def test_a_batch_of_34_is_solved_without_forming_the_jacobian(monkeypatch: pytest.MonkeyPatch) -> None:
    # 34 samples, 40 classes, 64 features: 34 x 34 = 1,156 unknowns, the matrix-free path, kept small for speed
    gw, gb, weight, bias, h, y = _head_gradient(34, features=64, classes=40)
    assert 34 * 34 > unmix.DENSE_UNKNOWNS

    def no_jacobian(*args, **kwargs):
        raise AssertionError("formed a dense Jacobian")

    monkeypatch.setattr(unmix, "jacfwd", no_jacobian)
    found = unmix.unmix_linear_head(gw, gb, weight, bias, y)
    error = (found.features - h).norm() / h.norm()
    assert found.residual < 1e-4 and error < 1e-3, (found.residual, float(error))


@pytest.mark.slow
def test_a_batch_of_256_head_solve_fits_in_1_5_gib() -> None:
    """The case of the issue (256 CIFAR-100 samples, 100 classes) under an address-space limit."""
    limit = int(1.5 * 2**30)
    code = f"""
import resource, sys, torch
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
torch.set_num_threads(1)
sys.path.insert(0, {str(REPO)!r})
from tests.attacks.test_unmix_large_batches import _head_gradient
from gradleak.attacks.unmix import unmix_linear_head
gw, gb, weight, bias, h, y = _head_gradient(256)
found = unmix_linear_head(gw, gb, weight, bias, y, iterations=3)
print("residual", found.residual)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) < 0.5  # more samples than classes: an approximation, refined below



def test_wrong_label_multisets_are_screened_with_a_short_solve(monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeated label of a class the model already predicts: the right multiset comes late among
    the candidates (CIFAR-100 test images 0..15: the 17th). Each wrong one used to get the full
    100-step solve (17 x 27 s, issue 21); now each gets a short screening solve and only the best
    one the full budget."""
    torch.manual_seed(3)
    head = torch.nn.Linear(64, 40).double()
    h = torch.rand(12, 64, dtype=torch.float64)
    y = torch.randperm(40)[:12]
    y[11] = y[3]  # one label twice, of a class the model favours
    with torch.no_grad():
        head.bias[y[3]] += 1.5
    loss = torch.nn.functional.cross_entropy(head(h), y)
    gw, gb = torch.autograd.grad(loss, [head.weight, head.bias])
    signal = gb * 12  # the bias gradient's signal: negative where a class is surely present
    assert unmix.label_candidates(signal, 12).index(sorted(y.tolist())) >= 5  # the case above
    budgets: list[int] = []
    solve = unmix.unmix_linear_head

    def counted(*args, iterations: int = 100, **kwargs):
        budgets.append(iterations)
        return solve(*args, iterations=iterations, **kwargs)

    monkeypatch.setattr(unmix, "unmix_linear_head", counted)
    found = unmix.solve_linear_head(gw, gb, head.weight.detach(), head.bias.detach(), signal, 12)
    assert sorted(found.labels.tolist()) == sorted(y.tolist()) and found.residual < 1e-5
    assert sum(budgets) <= 12 * len(budgets) + 100, budgets
