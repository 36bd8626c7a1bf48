"""How much a noisy gradient can reveal at all: bounds for one image behind the DLG LeNet.

    python benchmarks/defense_identifiability.py                 # CIFAR-100 bundled test image 3
    python benchmarks/defense_identifiability.py --dataset mnist --index 0

Around the true image x the shared gradient is g(x) + n, n ~ N(0, σ² I). With J = ∂g/∂x (computed
exactly, one forward-mode column per pixel), any unbiased estimator has
E‖x̂ − x‖² ≥ σ² tr((JᵀJ)⁻¹) (Cramér-Rao); that is the ceiling of an attack *without* an image
prior. With a Gaussian smoothness prior of precision λ DᵀD (D: neighbour differences) the
linearised MAP estimate has error (JᵀJ/σ² + λDᵀD)⁻¹(Jᵀn/σ² + λDᵀD(μ − x)), μ the grey mean; its
expected MSE, minimised over λ *with* the ground truth, is what a quadratic smoothness prior can
reach at best (an edge-preserving TV prior does somewhat better). Prints a table per σ².
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gradleak.data import load_samples  # noqa: E402
from gradleak.models import build_model  # noqa: E402
from gradleak.scenarios import cross_entropy_for_soft_labels, one_hot  # noqa: E402


def gradient_jacobian(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """J = ∂(flattened parameter gradient)/∂(flattened image), float64, by forward-mode columns."""
    model = model.double()
    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}
    targets = one_hot(labels, classes).double()
    shape = images.shape

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return cross_entropy_for_soft_labels(torch.func.functional_call(model, p, (x.view(shape),)), targets)

    def gradient(x: torch.Tensor) -> torch.Tensor:
        g = torch.func.grad(loss)(params, x)
        return torch.cat([g[n].flatten() for n in names])

    x = images.double().flatten()
    column = torch.func.vmap(lambda v: torch.func.jvp(gradient, (x,), (v,))[1])
    basis = torch.eye(x.numel(), dtype=torch.float64)
    return torch.cat([column(basis[k : k + 256]) for k in range(0, x.numel(), 256)]).T


def differences(channels: int, height: int, width: int) -> torch.Tensor:
    """Horizontal and vertical neighbour differences per channel, as a sparse-free dense matrix."""
    rows = []
    n = height * width
    for c in range(channels):
        for i in range(height):
            for j in range(width):
                here = c * n + i * width + j
                if j + 1 < width:
                    rows.append((here, here + 1))
                if i + 1 < height:
                    rows.append((here, here + width))
    d = torch.zeros(len(rows), channels * n, dtype=torch.float64)
    for r, (a, b) in enumerate(rows):
        d[r, a], d[r, b] = -1.0, 1.0
    return d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="cifar100", choices=["cifar100", "mnist"])
    parser.add_argument("--index", type=int, default=3)
    parser.add_argument("--variances", type=float, nargs="+", default=[1e-6, 1e-5, 1e-4, 1e-3, 1e-2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    images, labels = load_samples(args.dataset, [args.index], split="test", download=False, root="/nonexistent")
    classes = 100 if args.dataset == "cifar100" else 10
    torch.manual_seed(1234)  # the weights `gradleak run` uses
    channels, side = images.shape[1], images.shape[2]
    model = build_model("lenet" if channels == 3 else "lenetmnist", channels=channels, image_size=side, num_classes=classes)
    jac = gradient_jacobian(model, images, labels, classes)
    singular = torch.linalg.svdvals(jac)
    x = images.double().flatten()
    n = x.numel()
    print(f"{args.dataset} test image {args.index}: J is {jac.shape[0]} x {n}; singular values "
          f"{float(singular.min()):.3g} .. {float(singular.max()):.3g} (median {float(singular.median()):.3g})")
    jtj = jac.T @ jac
    d = differences(channels, side, side)
    dtd = d.T @ d
    mu = torch.full_like(x, float(x.mean()))
    print("| noise variance | Cramér-Rao PSNR, no prior (dB) | best linearised smoothness-prior MAP (dB) | its λ |")
    print("|---|---|---|---|")
    for variance in args.variances:
        crb = variance * float((1 / singular**2).mean())
        best = (-math.inf, 0.0)
        for lam in (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4):
            precision = lam * dtd + 1e-3 * torch.eye(n, dtype=torch.float64)
            inverse = torch.linalg.inv(jtj / variance + precision)
            bias = inverse @ (precision @ (mu - x))
            var = float(torch.trace(inverse @ jtj @ inverse)) / variance
            mse = (float((bias**2).sum()) + var) / n
            best = max(best, (10 * math.log10(1 / mse), lam))
        print(f"| {variance:g} | {10 * math.log10(1 / crb):.1f} | {best[0]:.1f} | {best[1]:g} |", flush=True)


if __name__ == "__main__":
    main()
