"""On the server: attack a captured update file, knowing only the model it sent.

    python examples/capture_update.py captured.safetensors       # make one
    python examples/attack_captured_update.py captured.safetensors
    # the same from the command line:
    gradleak run --update captured.safetensors --model examples/mlp_model.py:build --weights captured.safetensors.weights.pt
"""

from __future__ import annotations

import sys

import torch

import gradleak
from mlp_model import build


def main(path: str) -> torch.Tensor:
    update = gradleak.load_update(path)  # validated: a damaged or foreign file is one clear error
    model = build(update.num_classes, update.input_shape)
    model.load_state_dict(torch.load(path + ".weights.pt", weights_only=True))
    result = gradleak.reconstruct(model, update, attack="auto")
    print(f"recovered label(s) {result.labels.tolist()} in {result.seconds:.2f} s | {result.stop_reason}")
    return result.images


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "captured.safetensors")
