"""Secure aggregation: the server sees only the aggregate of several clients' updates.

With secure aggregation (Bonawitz et al. 2017) the clients' pairwise masks cancel in the sum, so
the server learns ``Σ_k u_k`` and nothing about any single ``u_k``. Here each of ``clients``
clients holds its own batch (the private images given to the run, split into equal consecutive
client batches: client ``k`` holds images ``k·b … (k+1)·b − 1`` with ``b = B / clients``), computes
a FedSGD gradient of its batch's mean loss (each applying the configured defenses itself), and
the server divides the sum by the number of clients, which it knows: with equal batches that is
the mean weighted by batch size, i.e. what one client with all ``B`` images would share (up to
BatchNorm statistics, which are per client). Attacks therefore treat it as one batch of ``B``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.scenarios.base import SCENARIOS
from gradleak.scenarios.fedsgd import FedSGD
from gradleak.types import SharedUpdate


@dataclass
class SecAgg:
    """``clients`` FedSGD clients, each with an equal share of the batch; the server sees their mean."""

    run_settings: ClassVar[tuple[str, ...]] = ("clients",)
    label_settings: ClassVar[tuple[str, ...]] = ("clients",)
    default_attack: ClassVar[str | None] = None
    DEFAULT_CLIENTS: ClassVar[int] = 2

    clients: int = 2
    defenses: Sequence[Any] = field(default_factory=tuple)
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if self.clients < 1:
            raise GradleakError(f"--clients must be at least 1 (got {self.clients})")

    @classmethod
    def from_run(cls, settings: dict[str, Any], *, defenses: Sequence[Any], generator: torch.Generator | None,
                 context: Any = None) -> SecAgg:
        clients = settings.get("clients")
        return cls(clients=cls.DEFAULT_CLIENTS if clients is None else clients, defenses=defenses, generator=generator)

    @classmethod
    def validate(cls, settings: dict[str, Any]) -> None:
        """Refuse impossible settings before any data is read."""
        if settings.get("clients") is not None and settings["clients"] < 1:
            raise GradleakError(f"--clients must be at least 1 (got {settings['clients']})")

    @classmethod
    def label(cls, settings: dict[str, Any]) -> str:
        """``secagg:clients=K``."""
        return f"secagg:clients={settings.get('clients') or cls.DEFAULT_CLIENTS}"

    def client_batches(self, batch_size: int) -> list[int]:
        """The client that holds each of the ``batch_size`` images (runner-side bookkeeping)."""
        if self.clients > batch_size:
            raise GradleakError(
                f"--clients {self.clients} is larger than the batch of {batch_size} image(s): every client needs "
                f"its own images; give at least {self.clients} (e.g. --indices) or fewer --clients"
            )
        if batch_size % self.clients:
            raise GradleakError(
                f"a batch of {batch_size} images cannot be split evenly among --clients {self.clients}: "
                f"give a multiple of {self.clients} images or a --clients that divides {batch_size}"
            )
        per = batch_size // self.clients
        return [i // per for i in range(batch_size)]

    def share(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> SharedUpdate:
        self.client_batches(images.shape[0])  # refuses a batch that cannot be split evenly
        per = images.shape[0] // self.clients
        client = FedSGD(defenses=self.defenses, generator=self.generator)
        updates = [
            client.share(model, images[k * per : (k + 1) * per], labels[k * per : (k + 1) * per])
            for k in range(self.clients)
        ]
        # The masks cancel in the sum; the server divides by the (known) number of clients.
        total = tuple(torch.stack(parts).sum(dim=0) / self.clients for parts in zip(*(u.tensors for u in updates)))
        first = updates[0]
        return SharedUpdate(
            tensors=total,
            kind="gradient",
            batch_size=images.shape[0],
            input_shape=first.input_shape,
            num_classes=first.num_classes,
            defenses=first.defenses,
            clients=self.clients,
        )


SCENARIOS.register("secagg", SecAgg)
