"""What the span attack computes once per update: the input spans of the first two attention
layers (and of block 0's attention context, the decoders' cheap screen), their thresholds, and
layer 1's token candidates per position.

Defended updates: the noise standard deviation comes from the noise model the defenses declare
(:func:`gradleak.attacks.noise_model.noise_model`); each span then keeps only directions above the
noise's Marchenko–Pastur edge, and its threshold grows as ``‖noise‖ / weakest kept direction``
(:mod:`gradleak.text.span`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from gradleak.text.client import TextUpdate
from gradleak.text.layer_inputs import LayerInputs, layer_inputs
from gradleak.text.span import InputSpan, input_span, noise_threshold, span_distance


@dataclass
class SpanSetup:
    """The spans and thresholds of one update (``screen``: decoders on an exact gradient only)."""

    inputs: LayerInputs
    span1: InputSpan
    span2: InputSpan
    tau1: float
    tau2: float
    noise_std: float
    noise_description: str
    screen: InputSpan | None = None
    screen_tau: float = 0.0


def noise_std(update: TextUpdate, source: str) -> tuple[float, str]:
    """Per-entry noise standard deviation the update's declared defenses add, and their words."""
    if not update.defenses and source != "estimated":
        return 0.0, "exact gradient"
    from gradleak.attacks.noise_model import noise_model

    model = noise_model(update.as_shared_update(), source="published" if update.defenses else source)
    variance = max((float(v.double().max()) for v in model.variances), default=0.0)
    return math.sqrt(max(variance, 0.0)), model.description


def build_setup(model: Any, update: TextUpdate, *, threshold: float | None, noise_source: str) -> SpanSetup:
    """The spans of ``update`` for ``model``'s family; ``threshold`` overrides the noise-aware ones."""
    inputs = layer_inputs(model)
    std, description = noise_std(update, noise_source)
    spans = [input_span(inputs.projection_gradient(update.tensors, k), noise_std=std) for k in (0, 1)]
    taus = [threshold or noise_threshold(s, std) for s in spans]
    setup = SpanSetup(inputs, spans[0], spans[1], taus[0], taus[1], std, description)
    if std == 0 and inputs.screen_gradient is not None:
        setup.screen = input_span(inputs.screen_gradient(update.tensors))
        setup.screen_tau = threshold or noise_threshold(setup.screen, 0.0)
    return setup


def token_candidates(
    setup: SpanSetup, vocab: int, positions: int, exclude: set[int], device: torch.device
) -> list[torch.Tensor]:
    """Per position ``p < positions``: the token ids whose block-0 input passes the span test,
    best first (the continuous score orders them)."""
    tokens = torch.tensor([v for v in range(vocab) if v not in exclude], device=device)
    out = []
    for p in range(positions):
        d = span_distance(setup.span1.basis, setup.inputs.first_inputs(tokens, torch.full_like(tokens, p)))
        keep = d < setup.tau1
        order = torch.argsort(d[keep])
        out.append(tokens[keep][order])
    return out
