"""The model, the clients' data and their local training (plain SGD or Opacus DP-SGD)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10


class Net(nn.Module):
    """A small sigmoid CNN (the DLG paper's LeNet shape): three 5x5 convolutions, one Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, 12, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=2), nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=1), nn.Sigmoid(),
        )
        self.head = nn.Linear(12 * 8 * 8, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x).flatten(1))


def initial_model(seed: int) -> Net:
    """The server's initial model (uniform init in [-0.5, 0.5], as in DLG)."""
    torch.manual_seed(seed)
    model = Net()
    with torch.no_grad():
        for param in model.parameters():
            param.uniform_(-0.5, 0.5)
    return model


def client_images(partition_id: int, num_partitions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The client's private data: the bundled CIFAR-10 test images i with i % num_partitions == partition_id."""
    from PIL import Image

    from gradleak.data.bundled import bundled_samples

    mine = [s for s in bundled_samples("cifar10") if s[0] % num_partitions == partition_id]
    pixels = [np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255 for _, _, path in mine]
    images = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor([label for _, label, _ in mine])


def round_batch(images: torch.Tensor, labels: torch.Tensor, server_round: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples the client trains on in ``server_round`` (a new slice of its data each round)."""
    start = ((server_round - 1) * batch_size) % len(images)
    index = torch.arange(start, start + batch_size) % len(images)
    return images[index], labels[index]


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, lr: float, local_steps: int,
          batch_size: int, noise_multiplier: float, max_grad_norm: float, seed: int) -> float:
    """Local SGD on (images, labels); with ``noise_multiplier > 0`` through Opacus's PrivacyEngine."""
    torch.set_num_threads(1)  # clients share the machine's cores with each other and the server
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, labels), batch_size=batch_size, shuffle=False
    )
    if noise_multiplier > 0:
        from opacus import PrivacyEngine

        engine = PrivacyEngine(accountant="rdp")
        model, optimizer, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm, poisson_sampling=False,
            noise_generator=torch.Generator().manual_seed(seed),
        )
    loss = torch.zeros(())
    steps = 0
    while steps < local_steps:
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            steps += 1
            if steps == local_steps:
                break
    return float(loss.detach())


def save_truth(folder: str, server_round: int, node_id: int, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Simulation only: keep the private batch beside the run so that the audit can score it."""
    from safetensors.torch import save_file

    Path(folder).mkdir(parents=True, exist_ok=True)
    save_file({"images": images.contiguous(), "labels": labels.contiguous()},
              str(Path(folder) / f"round-{server_round:03d}-node-{node_id}.safetensors"))


def load_truth(folder: str, server_round: int, client: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    from safetensors.torch import load_file

    path = Path(folder) / f"round-{server_round:03d}-node-{client}.safetensors"
    if not path.is_file():
        return None
    tensors = load_file(str(path))
    return tensors["images"], tensors["labels"]
