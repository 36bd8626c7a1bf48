"""Utility cost of a defense: train the model under it and measure test accuracy.

Every minibatch step is a FedSGD round with one client: the client computes its (defended)
gradient exactly as the attack experiments do (:meth:`gradleak.scenarios.FedSGD.share` with the
parsed defenses, DP-SGD included) and the server applies it with SGD. The undefended run uses the
same seed, initial weights and minibatch order, so the accuracy difference is the defense's cost.

Datasets: ``digits`` is scikit-learn's bundled 8x8 handwritten digits (1,797 images, installed
with scikit-learn, so it works offline), upsampled to 24x24 and padded to 1x28x28 like MNIST, split
80/20 with a fixed permutation; any gradleak dataset (``mnist``, ``cifar10``, ...) uses its full
train and test splits (on disk, or downloaded when allowed), optionally subsampled.

Example:
    >>> from gradleak.utility import UtilityConfig, train_under_defense
    >>> r = train_under_defense(UtilityConfig(dataset="digits", epochs=1, train_size=200, test_size=100))
    >>> 0.0 <= r.accuracy <= 1.0
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from gradleak.errors import GradleakError
from gradleak.train_loop import evaluate  # noqa: F401 - importable from here as before

DIGITS = "digits"
_DIGITS_TEST_FRACTION = 0.2


@dataclass
class UtilityConfig:
    """One training run under (possibly no) defense."""

    dataset: str = DIGITS
    model: str | None = None  # None: the dataset's default model
    defenses: list[str] = field(default_factory=list)
    epochs: int = 5
    batch_size: int = 16
    lr: float = 0.1
    momentum: float = 0.0
    seed: int = 0
    train_size: int = 0  # 0: the whole training split (a fixed random subset otherwise)
    test_size: int = 0  # 0: the whole test split
    data_root: str = "./data"
    download: bool = False
    device: str = "cpu"


@dataclass
class UtilityResult:
    accuracy: float  # test accuracy after the last epoch
    epoch_accuracy: list[float]
    epoch_loss: list[float]  # mean (undefended) training loss per epoch
    train_size: int
    test_size: int
    seconds: float
    model: str
    defenses: list[str]
    config: dict[str, Any]
    dp_epsilon: float | None = None  # with DP-SGD: ε of the whole training run at dp_delta
    dp_delta: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_NOT_IN_ID = {"data_root", "download", "device"}


def utility_identity(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that determine a utility run's result (for stable sweep ids)."""
    return {k: v for k, v in config.items() if k not in _NOT_IN_ID}


def check_utility_config(config: UtilityConfig, *, where: str = "") -> None:
    """Refuse bad settings with one line (prefixed with ``where`` when given)."""
    from gradleak.defenses import parse_defenses
    from gradleak.models import MODELS

    try:
        _check(config)
        parse_defenses(config.defenses)
        if config.model is not None:
            MODELS.get(config.model)
    except GradleakError as error:
        raise GradleakError(f"{where}: {error}" if where else str(error)) from None


def _check(config: UtilityConfig) -> None:
    if config.epochs < 1:
        raise GradleakError(f"epochs must be at least 1 (got {config.epochs})")
    if config.batch_size < 1:
        raise GradleakError(f"batch size must be at least 1 (got {config.batch_size})")
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise GradleakError(f"lr must be positive (got {config.lr})")
    if not 0 <= config.momentum < 1:
        raise GradleakError(f"momentum must be in [0, 1) (got {config.momentum})")
    if config.train_size < 0 or config.test_size < 0:
        raise GradleakError("train/test size must be >= 0 (0 = all)")
    if config.dataset != DIGITS:
        from gradleak.data import DATASETS

        if config.dataset not in DATASETS:
            raise GradleakError(
                f"unknown dataset {config.dataset!r}: choose {DIGITS} (offline, scikit-learn) "
                f"or one of {', '.join(DATASETS.names())}"
            )


# --------------------------------------------------------------------------- data


def load_digits_28(*, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as (N, 1, 28, 28) floats in [0, 1]: train x, train y, test x, test y.

    The 80/20 split uses a fixed permutation (``seed``) so every run sees the same test set.
    """
    return load_digits_images(channels=1, image_size=28, seed=seed)


def load_digits_images(*, channels: int = 1, image_size: int = 28, seed: int = 0) -> tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]:
    """scikit-learn's digits as (N, channels, image_size, image_size) floats in [0, 1].

    Upsampled to ``image_size - 4`` and padded by 2 (MNIST's layout: 24x24 in 28x28; 28x28 in
    32x32), grey replicated to every channel, so one offline dataset fits every model. The 80/20
    split uses a fixed permutation (``seed``) so every run sees the same test set.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise GradleakError(
            "--dataset digits needs scikit-learn (its bundled digits): pip install scikit-learn "
            "(or gradleak[utility]), or use a gradleak dataset such as --dataset mnist"
        ) from None
    import torch.nn.functional as F

    if image_size < 8:
        raise GradleakError(f"digits images need a size of at least 8 (got {image_size})")
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N,1,8,8)
    images = F.interpolate(images, size=(image_size - 4, image_size - 4), mode="bilinear", align_corners=False)
    images = F.pad(images, (2, 2, 2, 2)).clamp(0, 1).expand(-1, channels, -1, -1).contiguous()
    labels = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = round(len(labels) * _DIGITS_TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test]


def digits_subsets(
    *, channels: int, image_size: int, train_size: int, test_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`load_digits_images`, each split cut to a fixed random subset of ``train_size`` /
    ``test_size`` images (0: the whole split)."""
    xtr, ytr, xte, yte = load_digits_images(channels=channels, image_size=image_size)
    if train_size:
        keep = _subset(len(ytr), train_size, 1)
        xtr, ytr = xtr[keep], ytr[keep]
    if test_size:
        keep = _subset(len(yte), test_size, 2)
        xte, yte = xte[keep], yte[keep]
    return xtr, ytr, xte, yte


def _subset(n: int, size: int, seed: int) -> list[int]:
    if size <= 0 or size >= n:
        return list(range(n))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size]
    return sorted(int(i) for i in order)


def load_split(config: UtilityConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, int, int]:
    """Train x, y, test x, y and (channels, image size, classes) for ``config.dataset``."""
    if config.dataset == DIGITS:
        xtr, ytr, xte, yte = digits_subsets(
            channels=1, image_size=28, train_size=config.train_size, test_size=config.test_size
        )
        return xtr, ytr, xte, yte, 1, 28, 10
    from gradleak.data import dataset_size, get_spec, load_samples, num_classes

    spec = get_spec(config.dataset)
    root, download = config.data_root, config.download
    out: list[torch.Tensor] = []
    for split, size, salt in (("train", config.train_size, 1), ("test", config.test_size, 2)):
        n = dataset_size(spec.name, split=split, root=root, download=download)
        out.extend(load_samples(spec.name, _subset(n, size, salt), split=split, root=root, download=download))
    classes = num_classes(spec.name, split="train", root=root, download=download)
    return out[0], out[1].long(), out[2], out[3].long(), spec.channels, spec.image_size, classes


# --------------------------------------------------------------------------- training


def train_under_defense(config: UtilityConfig, *, data: tuple | None = None, progress: Any = None) -> UtilityResult:
    """Train ``config.model`` for ``config.epochs`` epochs of defended FedSGD; test accuracy.

    ``data`` (the output of :func:`load_split`) may be passed to share loaded data between runs.
    ``progress(epoch, accuracy)`` is called after each epoch when given.
    """
    from gradleak.defenses import parse_defenses
    from gradleak.runtime import resolve_device, seed_everything
    from gradleak.models import MODELS, build_model, check_compatible, default_model
    from gradleak.scenarios import FedSGD, cross_entropy_for_soft_labels, one_hot
    from gradleak.train_loop import train_epochs

    check_utility_config(config)
    defenses = parse_defenses(config.defenses)
    device = resolve_device(config.device)
    xtr, ytr, xte, yte, channels, size, classes = data if data is not None else load_split(config)
    model_name = config.model or default_model(channels, size)
    MODELS.get(model_name)
    check_compatible(model_name, channels=channels, image_size=size, dataset=config.dataset)

    seed_everything(config.seed)
    model = build_model(model_name, channels=channels, image_size=size, num_classes=classes).to(device)
    model.train()
    client = FedSGD(defenses=defenses, generator=torch.Generator().manual_seed(config.seed + 1))
    params = list(model.parameters())
    velocity = [torch.zeros_like(p) for p in params]

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        with torch.no_grad():
            loss = float(cross_entropy_for_soft_labels(model(x), one_hot(y, classes).to(device)))
        update = client.share(model, x, y)
        with torch.no_grad():
            for p, g, v in zip(params, update.tensors, velocity):
                g = g.to(p.device, p.dtype)
                if config.momentum:
                    v.mul_(config.momentum).add_(g)
                    g = v
                p.sub_(config.lr * g)
        return loss

    loop = train_epochs(
        model, step, (xtr, ytr), (xte, yte), epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
        device=device, diverged=f"with lr {config.lr} under {', '.join(config.defenses) or 'no defense'}: lower lr",
        on_epoch=None if progress is None else lambda epoch, _loss, accuracy: progress(epoch, accuracy),
    )
    dp = next((d for d in defenses if hasattr(d, "epsilon")), None)
    dp_epsilon = None
    if dp is not None:
        # Shuffled fixed-size minibatches, accounted as Poisson sampling at q = batch / N (the usual
        # approximation in DP-SGD papers and libraries).
        steps = config.epochs * math.ceil(len(ytr) / config.batch_size)
        dp_epsilon = dp.epsilon(steps=steps, sample_rate=min(1.0, config.batch_size / len(ytr)))
    return UtilityResult(
        accuracy=loop.epoch_accuracy[-1],
        epoch_accuracy=loop.epoch_accuracy,
        epoch_loss=loop.epoch_loss,
        train_size=len(ytr),
        test_size=len(yte),
        seconds=round(loop.seconds, 3),
        model=model_name,
        defenses=[d.name for d in defenses],
        config=asdict(config),
        dp_epsilon=dp_epsilon,
        dp_delta=dp.delta if dp is not None else None,
    )


def compare(config: UtilityConfig, **kwargs: Any) -> tuple[UtilityResult, UtilityResult]:
    """(undefended, defended) results for ``config`` on the same data, seed and batch order."""
    data = load_split(config)
    baseline = train_under_defense(UtilityConfig(**{**asdict(config), "defenses": []}), data=data, **kwargs)
    defended = train_under_defense(config, data=data, **kwargs) if config.defenses else baseline
    return baseline, defended
