"""The settings of one run and what a prepared run holds (typed boundaries of the runner)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gradleak.types import AttackResult, SharedUpdate


@dataclass
class RunConfig:
    """Every setting of one run; written to ``config.json`` as resolved."""

    dataset: str = "cifar100"
    indices: list[int] = field(default_factory=lambda: [25])
    images: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    num_classes: int | None = None
    data_root: str = "./data"
    split: str = "train"
    download: bool = True
    iterations: int = 300
    seed: int = 1234
    model: str | None = None
    weights: str | None = None  # checkpoint to load into the model (None: fresh initialisation)
    weights_sha256: str | None = None  # expected checksum of ``weights`` (None: not checked, only recorded)
    device: str = "auto"
    threads: int | None = None  # torch CPU threads; None: 1 for the LeNets (measured no faster with 2), else all
    attack: str = "dlg"
    tv_weight: float | None = None  # None: the attack's own default (0 for dlg, 1e-4 for ig)
    clamp: bool | None = None  # None: the attack's own default (off for dlg, on for ig)
    restarts: int | None = None  # None: the attack's own default (ig/auto: 4 at once; dlg/idlg: up to 8 tries); analytic has none
    early_stop: int | None = None  # None: the attack's own default (dlg/idlg: stop after 30 iterations without improvement)
    scenario: str = "fedsgd"
    local_steps: int = 1
    local_lr: float = 1e-4
    clients: int | None = None  # secagg/imprint: clients whose updates are aggregated (None: 2 for secagg, 1 for imprint)
    bins: int | None = None  # imprint: bins of the malicious server's block (None: DEFAULT_BINS)
    tile_bundled: bool = False  # test indices >= 20 are flipped/shifted copies of the bundled 0..19
    defenses: list[str] = field(default_factory=list)
    noise_source: str | None = None  # None: the attack's own default (map/auto: "auto")
    save_history: bool = False
    save_final: bool = False
    save_model: bool = False  # write model.pt: the state dict of the model the client received
    update: str | None = None  # attack this captured update file (no private data, no simulated client)
    reference: list[str] = field(default_factory=list)  # with --update: images to score the reconstructions against
    out: str | None = None
    overwrite: bool = False
    quiet: bool = False


@dataclass
class RunOutcome:
    out_dir: Path
    metrics: dict[str, Any]
    result: AttackResult


@dataclass
class Prepared:
    """A validated experiment, ready to attack. Building it writes nothing."""

    config: RunConfig
    device: torch.device
    model: torch.nn.Module
    images: torch.Tensor | None  # None: a captured update without --reference (nothing to score)
    labels: torch.Tensor | None
    update: SharedUpdate
    attack: Any
    num_classes: int
    model_name: str
    out_dir: Path
    #: the client that holds each private image (secure aggregation); None for one client
    client_of: list[int] | None = None
    checkpoint: Any = None  # gradleak.models.checkpoint.CheckpointInfo when --weights was given

