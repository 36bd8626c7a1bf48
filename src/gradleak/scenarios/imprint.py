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
from typing import Any, ClassVar

import torch
from torch import nn

from gradleak.errors import GradleakError
from gradleak.scenarios.base import SCENARIOS
from gradleak.scenarios.fedsgd import FedSGD
from gradleak.scenarios.secagg import SecAgg
from gradleak.types import SharedUpdate

DEFAULT_BINS = 1024


@dataclass
class Imprint:
    """A malicious server: :meth:`server_model` modifies the model; :meth:`share` is the client."""

    run_settings: ClassVar[tuple[str, ...]] = ("bins", "clients")
    label_settings: ClassVar[tuple[str, ...]] = ("bins", "clients")
    default_attack: ClassVar[str | None] = "imprint"  # the malicious server reads its own block

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

    @classmethod
    def from_run(cls, settings: dict[str, Any], *, defenses: Sequence[Any], generator: torch.Generator | None,
                 context: Any = None) -> Imprint:
        """``context`` holds ``dataset``, ``image_shape`` and ``device``: the server places its bins
        on public images of that dataset's kind."""
        from gradleak.data.public import public_images

        bins, clients = settings.get("bins"), settings.get("clients")
        return cls(
            bins=DEFAULT_BINS if bins is None else bins, clients=1 if clients is None else clients, seed=settings["seed"],
            public_images=public_images(context["dataset"], context["image_shape"]).to(context["device"]),
            defenses=defenses, generator=generator,
        )

    @classmethod
    def validate(cls, settings: dict[str, Any]) -> None:
        """Refuse impossible settings before any data is read."""
        if settings.get("bins") is not None and settings["bins"] < 2:
            raise GradleakError(f"--bins must be at least 2 (got {settings['bins']}): try --bins {DEFAULT_BINS}")
        if settings.get("clients") is not None and settings["clients"] < 1:
            raise GradleakError(f"--clients must be at least 1 (got {settings['clients']})")

    @classmethod
    def label(cls, settings: dict[str, Any]) -> str:
        """``imprint:bins=N`` (``,clients=K`` with several clients)."""
        params = [f"bins={settings.get('bins') or DEFAULT_BINS}"]
        if (settings.get("clients") or 1) > 1:
            params.append(f"clients={settings['clients']}")
        return "imprint:" + ",".join(params)

    def _client(self) -> Any:
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


SCENARIOS.register("imprint", Imprint)
