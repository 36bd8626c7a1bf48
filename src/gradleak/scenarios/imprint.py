"""The malicious server of "Robbing the Fed" (Fowl et al. 2022): it sends an imprinted model.

The server puts an imprint block (:mod:`gradleak.models.imprint`) in front of the client's model
and sends that; the clients train it as usual (FedSGD, or ``clients`` clients under secure
aggregation, which does not help: each image still lands in its own bin of the summed gradient).
The bins sit at quantiles of the block's statistic on *public* images the server holds
(:func:`gradleak.data.public.public_images`), never the client's batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.types import SharedUpdate

DEFAULT_BINS = 1024


@dataclass
class Imprint:
    """A malicious server: :meth:`server_model` modifies the model; :meth:`share` is the client."""

    bins: int = DEFAULT_BINS
    public_images: torch.Tensor | None = None
    statistic: str = "random"
    seed: int = 0
    clients: int = 1
    defenses: Sequence[Any] = field(default_factory=tuple)
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if self.bins < 2:
            raise GradleakError(f"--bins must be at least 2 (got {self.bins}): try --bins {DEFAULT_BINS}")
        if self.clients < 1:
            raise GradleakError(f"--clients must be at least 1 (got {self.clients})")

    def _client(self) -> Any:
        from gradleak.scenarios import FedSGD
        from gradleak.scenarios.secagg import SecAgg

        if self.clients > 1:
            return SecAgg(clients=self.clients, defenses=self.defenses, generator=self.generator)
        return FedSGD(defenses=self.defenses, generator=self.generator)

    def client_batches(self, batch_size: int) -> list[int]:
        client = self._client()
        return client.client_batches(batch_size) if hasattr(client, "client_batches") else [0] * batch_size

    def server_model(self, model: nn.Module) -> nn.Module:
        """What the server sends instead of ``model``: the imprint block in front of it."""
        from gradleak.models.imprint import imprint_model

        if self.public_images is None:
            raise GradleakError("the imprint scenario needs public images to place its bins")
        return imprint_model(
            model, tuple(self.public_images.shape[1:]), self.bins,
            public_images=self.public_images, statistic=self.statistic, seed=self.seed,
        )

    def share(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> SharedUpdate:
        """The client's update on the model it received (call :meth:`server_model` first)."""
        return self._client().share(model, images, labels)
