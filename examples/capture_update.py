"""On the client: capture the update a client shares and write it to a file.

    python examples/capture_update.py captured.safetensors

In a real system you would write the update your own training loop sends (a list of gradient
tensors in ``model.named_parameters()`` order) with :func:`gradleak.save_update`.
"""

from __future__ import annotations

import sys

import torch

import gradleak
from gradleak.data import load_samples
from mlp_model import build


def main(path: str) -> None:
    torch.manual_seed(0)
    model = build(10, (3, 32, 32))
    torch.save(model.state_dict(), path + ".weights.pt")  # the server knows the model it sent
    images, labels = load_samples("cifar10", [3], split="test")
    update = gradleak.client_update(model, images, labels)
    gradleak.save_update(update, path)
    print(f"wrote {path}: {len(update.tensors)} tensors, batch {update.batch_size}, label {int(labels[0])}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "captured.safetensors")
