"""Train the client's model and save it as a checkpoint for ``--weights`` (``gradleak train``).

Leakage is usually shown on a freshly initialised network; federated training attacks a model
part-way through training. This trains one of gradleak's models (plain minibatch Adam or SGD, no
defense: the model the server would send in a later round) and writes a checkpoint whose metadata
(architecture, input shape, class count, dataset, epochs, test accuracy) lets ``--weights`` refuse a
checkpoint that does not fit the run.

Data (shared with :mod:`gradleak.utility`): ``digits`` is scikit-learn's bundled 8x8 handwritten
digits (1,797 images, offline), upsampled to the model's input (1x28x28 for ``lenetmnist``, 3x32x32
for ``lenet``/``resnet18``, 3x64x64 for ``lenet64``), 10 classes, a fixed 80/20 split; any gradleak
dataset (``mnist``, ``cifar10``, ...) uses its real train and test splits (on disk or downloaded).

Example:
    >>> from gradleak.training import TrainConfig, train_model
    >>> result = train_model(TrainConfig(dataset="digits", model="lenetmnist", epochs=1, train_size=64, test_size=32))
    >>> result.metadata["num_classes"], 0.0 <= result.accuracy <= 1.0
    (10, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import torch
from torch import nn

from gradleak.errors import GradleakError

DIGITS = "digits"
OPTIMIZERS = ("adam", "sgd")


@dataclass
class TrainConfig:
    """One training run of a client model."""

    dataset: str = DIGITS
    model: str | None = None  # None: the dataset's default model (lenetmnist for digits)
    epochs: int = 5
    batch_size: int = 32
    lr: float | None = None  # None: 1e-3 for adam, 0.1 for sgd
    optimizer: str = "adam"
    seed: int = 0
    train_size: int = 0  # 0: the whole training split
    test_size: int = 0  # 0: the whole test split
    data_root: str = "./data"
    download: bool = True
    device: str = "cpu"

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1e-3 if self.optimizer == "adam" else 0.1


@dataclass
class TrainResult:
    model: nn.Module
    accuracy: float  # test accuracy after the last epoch
    epoch_accuracy: list[float]
    epoch_loss: list[float]
    seconds: float
    metadata: dict[str, Any]  # what the checkpoint records


def check_train_config(config: TrainConfig) -> None:
    """Refuse bad settings with one line, before any data is loaded."""
    from gradleak.models import MODELS

    if config.epochs < 1:
        raise GradleakError(f"--epochs must be at least 1 (got {config.epochs})")
    if config.batch_size < 1:
        raise GradleakError(f"--batch-size must be at least 1 (got {config.batch_size})")
    if config.optimizer not in OPTIMIZERS:
        raise GradleakError(f"unknown --optimizer {config.optimizer!r}: choose {' or '.join(OPTIMIZERS)}")
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise GradleakError(f"--lr must be positive (got {config.lr})")
    if config.train_size < 0 or config.test_size < 0:
        raise GradleakError("--train-size/--test-size must be >= 0 (0 = all)")
    if config.model is not None:
        MODELS.get(config.model)
    if config.dataset != DIGITS:
        from gradleak.data import DATASETS, get_spec

        try:
            get_spec(config.dataset)
        except GradleakError:
            raise GradleakError(
                f"unknown dataset {config.dataset!r}: choose {DIGITS} (offline, scikit-learn's bundled digits) "
                f"or one of {', '.join(DATASETS.names())}"
            ) from None


def digits_shape(model: str | None) -> tuple[str, int, int]:
    """(model, channels, image size) for training ``model`` on digits: its fixed input, else 3x32x32."""
    from gradleak.models import MODELS

    name = model or "lenetmnist"
    spec = MODELS.get(name)
    if spec.channels is not None and spec.image_size is not None:
        return name, spec.channels, spec.image_size
    return name, 3, 32


def load_training_data(config: TrainConfig) -> tuple[str, str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(model, dataset, train x, train y, test x, test y, classes) for ``config``."""
    from gradleak.models import check_compatible, default_model
    from gradleak.utility import UtilityConfig, digits_subsets, load_split

    if config.dataset == DIGITS:
        model, channels, size = digits_shape(config.model)
        xtr, ytr, xte, yte = digits_subsets(
            channels=channels, image_size=size, train_size=config.train_size, test_size=config.test_size
        )
        return model, DIGITS, xtr, ytr, xte, yte, 10
    from gradleak.data import get_spec

    spec = get_spec(config.dataset)
    model = config.model or default_model(spec.channels, spec.image_size)
    check_compatible(model, channels=spec.channels, image_size=spec.image_size, dataset=spec.name)
    xtr, ytr, xte, yte, _, _, classes = load_split(UtilityConfig(
        dataset=spec.name, train_size=config.train_size, test_size=config.test_size,
        data_root=config.data_root, download=config.download,
    ))
    return model, spec.name, xtr, ytr, xte, yte, classes


def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, *, device: torch.device | None = None,
                          count: int = 1024, batch: int = 128) -> None:
    """Re-estimate every BatchNorm layer's running statistics with the final weights.

    Why: the running averages (momentum 0.1) trail weights that change every step; for the sigmoid
    ResNets they end up far from the batch statistics, and eval-mode accuracy measured 11% where
    train-mode accuracy was 74% (resnet18, 2 epochs on digits). A cumulative average over ``count``
    training images with the weights fixed removes that lag. Models without BatchNorm are untouched.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return
    saved = [(m.momentum, m.training) for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    was_training = model.training
    model.train()
    with torch.no_grad():
        for i in range(0, min(count, len(images)), batch):
            model(images[i : min(i + batch, count)].to(device or images.device))
    for m, (momentum, training) in zip(layers, saved):
        m.momentum = momentum
        m.train(training)
    model.train(was_training)


def train_model(config: TrainConfig, *, progress: bool = False,
                on_epoch: Callable[[int, float, float], None] | None = None) -> TrainResult:
    """Train ``config.model`` on ``config.dataset``; returns the model, its test accuracy and the
    checkpoint metadata. ``progress`` shows a tqdm bar (stderr); ``on_epoch(epoch, loss, accuracy)``
    is called after each epoch."""
    from gradleak.runtime import resolve_device, seed_everything
    from gradleak.models import build_model
    from gradleak.scenarios import cross_entropy_for_soft_labels, one_hot
    from gradleak.train_loop import train_epochs

    check_train_config(config)
    device = resolve_device(config.device)
    model_name, dataset, xtr, ytr, xte, yte, classes = load_training_data(config)
    channels, size = int(xtr.shape[1]), int(xtr.shape[2])
    seed_everything(config.seed)
    model = build_model(model_name, channels=channels, image_size=size, num_classes=classes).to(device)
    model.train()
    lr = config.learning_rate
    optimizer: torch.optim.Optimizer = (
        torch.optim.Adam(model.parameters(), lr=lr) if config.optimizer == "adam"
        else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    )
    steps = math.ceil(len(ytr) / config.batch_size)
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=config.epochs * steps, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr)

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        # The loss the client's gradient uses (scenarios.FedSGD), so training and attack agree.
        loss = cross_entropy_for_soft_labels(model(x), one_hot(y, classes).to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def stepped(epoch: int, loss: float) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss:.3f}", refresh=False)

    def epoch_done(epoch: int, loss: float, accuracy: float) -> None:
        if bar is not None:
            bar.set_postfix(epoch=epoch, loss=f"{loss:.3f}", acc=f"{accuracy:.1%}")
        if on_epoch is not None:
            on_epoch(epoch, loss, accuracy)

    try:
        loop = train_epochs(
            model, step, (xtr, ytr), (xte, yte), epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
            device=device, diverged=f"with lr {lr}: lower --lr", on_step=stepped, on_epoch=epoch_done,
            before_evaluate=lambda net: recalibrate_batchnorm(net, xtr, device=device),
        )
    finally:
        if bar is not None:
            bar.close()
    epoch_accuracy, epoch_loss = loop.epoch_accuracy, loop.epoch_loss
    model.train()
    seconds = loop.seconds
    from gradleak.version import __version__

    metadata: dict[str, Any] = {
        "architecture": model_name,
        "channels": channels,
        "image_size": size,
        "num_classes": classes,
        "dataset": dataset,
        "epochs": config.epochs,
        "accuracy": round(epoch_accuracy[-1], 6),
        "train_size": int(len(ytr)),
        "test_size": int(len(yte)),
        "optimizer": config.optimizer,
        "lr": lr,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "seconds": round(seconds, 3),
        "gradleak_version": __version__,
        "torch_version": str(torch.__version__),  # a TorchVersion object otherwise
        "created": datetime.now().isoformat(timespec="seconds"),
    }
    return TrainResult(model=model, accuracy=epoch_accuracy[-1], epoch_accuracy=epoch_accuracy,
                       epoch_loss=epoch_loss, seconds=seconds, metadata=metadata)

