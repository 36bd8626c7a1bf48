"""gradleak's public Python API: your model, your data or captured update, your defense.

Everything here is also reachable as ``gradleak.<name>`` (imported lazily). A quick tour:

Example:
    >>> import torch, gradleak
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> images, labels = torch.rand(1, 3, 2, 2), torch.tensor([2])
    >>> update = gradleak.client_update(model, images, labels)   # what the client would send
    >>> update.kind, update.batch_size, update.num_classes
    ('gradient', 1, 3)
    >>> result = gradleak.reconstruct(model, update, attack="auto")  # only the model and the update
    >>> gradleak.score(result, images, labels).psnr > 60             # the first layer gives it away
    True
"""

from __future__ import annotations

from gradleak.api.attacking import reconstruct, score
from gradleak.api.client import client_update, defend
from gradleak.api.registration import (
    available,
    register_attack,
    register_dataset,
    register_defense,
    register_model,
    register_scenario,
)
from gradleak.io.update_file import load_update, save_update

__all__ = [
    "available",
    "client_update",
    "defend",
    "load_update",
    "reconstruct",
    "register_attack",
    "register_dataset",
    "register_defense",
    "register_model",
    "register_scenario",
    "save_update",
    "score",
]
