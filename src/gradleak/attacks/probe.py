"""What the server can learn about a model's structure by running it once: which layer sees the
raw input, which produces the output. Used by the model-specific closed-form attacks to decide
whether they apply (they then verify their result against the shared update anyway).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 3))
    >>> probe = probe_model(net, (3, 2, 2))
    >>> type(probe.first.module).__name__, probe.first.sees_raw_input, probe.first.name
    ('Linear', True, '1')
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Call:
    """One call of a module with parameters during the probe forward pass."""

    name: str  # the module's name in ``model.named_modules()``
    module: nn.Module
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    sees_raw_input: bool  # its input is the model's input (up to a reshape), untouched
    gives_output: bool  # its output is the model's output (up to a reshape)


@dataclass
class Probe:
    calls: list[Call]  # modules with their own parameters, in the order they ran

    @property
    def first(self) -> Call | None:
        return self.calls[0] if self.calls else None

    @property
    def last(self) -> Call | None:
        return self.calls[-1] if self.calls else None


def probe_model(model: nn.Module, input_shape: tuple[int, ...], *, training: bool | None = None) -> Probe:
    """Run a copy of ``model`` on two random inputs of ``input_shape`` and record its parameterised modules."""
    net = copy.deepcopy(model).cpu().float()
    if training is not None:
        net.train(training)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand((2, *input_shape), generator=generator)
    records: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []
    names = {id(m): n for n, m in net.named_modules()}
    hooks = []
    for module in net.modules():
        if any(True for _ in module.parameters(recurse=False)):
            def hook(m: nn.Module, inputs: tuple, output: object) -> None:
                if inputs and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
                    records.append((names[id(m)], m, inputs[0].detach(), output.detach()))
            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = net(x)
    finally:
        for handle in hooks:
            handle.remove()
    flat_x = x.reshape(2, -1)
    calls = []
    for name, module, inp, output in records:
        raw = inp.numel() == x.numel() and torch.equal(inp.reshape(2, -1), flat_x)
        gives = isinstance(out, torch.Tensor) and output.numel() == out.numel() and torch.equal(output.reshape(out.shape), out)
        calls.append(Call(name, dict(model.named_modules())[name], tuple(inp.shape), tuple(output.shape), raw, gives))
    return Probe(calls)
