"""``layerwise``: one image through a chain of layers that ends in a biased Linear head.

For one image the head's input ``h`` is exact from the head's weight and bias gradients
(:func:`~gradleak.attacks.analytic.head_features`), and so is the gradient of the loss
with respect to it, ``c = Wᵀ ∂L/∂b`` (for any loss: ``∂L/∂b`` is ``∂L/∂logits``). What is left
is the image ``x`` with ``features(x) = h`` and ``∂⟨features(x), c⟩/∂θ`` equal to every sent
parameter gradient of the layers before the head (R-GAP's observation, Zhu & Blaschko 2021: each
layer's weight gradient adds equations). ReLU and max pooling make this objective piecewise, and a
quasi-Newton method stalls at its kinks (gradient matching through a ReLU ConvNet with BatchNorm
plateaus near 13 dB). So the attack solves it by *active sets*: in each round the ReLU masks
and max-pooling choices are frozen at the current image's, which makes the objective smooth
(masks and gathers are linear; a squared penalty keeps the image inside the frozen pattern),
L-BFGS-B (float64, box [0, 1]) descends it, and the next round takes the new image's pattern.

It applies when the model's forward is a chain (every operation takes the previous one's output;
``nn.Sequential`` or a module whose ``forward`` calls its children one after another, with
reshapes/flattens between them), traceable by ``torch.fx``, ending in a biased ``nn.Linear``
whose weight and bias gradients are sent, and the update is one image's gradient (or a one-step
FedAvg change). A residual connection, a branch or a batch is not this attack. BatchNorm runs in
the mode the update states (batch statistics in train mode); frozen parameters add no equations.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from gradleak.scenarios import FedSGD
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(64, 3))
    >>> secret = torch.rand(1, 3, 4, 4)
    >>> result = LayerwiseInversion(iterations=100).run(net, FedSGD().share(net, secret, torch.tensor([1])))
    >>> bool((result.images - secret).abs().max() < 1e-3), int(result.labels[0])
    (True, 1)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from gradleak.attacks.analytic import head_features
from gradleak.attacks.base import ATTACKS, AttackContext, BaseAttack, as_gradient
from gradleak.attacks.labels import restore_batch_labels
from gradleak.errors import GradleakError
from gradleak.objective import ClientForward, Loss, relative_update_error, sent_parameters
from gradleak.types import AttackResult, SharedUpdate, StepReport

_RELU_FUNCTIONS = (F.relu, torch.relu)


@dataclass
class LayerChain:
    """A model's forward as a chain: the traced graph, and its Linear head's name."""

    graph: torch.fx.GraphModule
    head: str


def trace_chain(model: nn.Module) -> LayerChain | str:
    """The model's forward traced as a chain of operations ending in a biased Linear head, or why not."""
    try:
        traced = torch.fx.symbolic_trace(model)
    except Exception as error:  # noqa: BLE001 - any tracing failure means "not a plain chain"
        return f"its forward cannot be traced as a chain of layers ({type(error).__name__})"
    previous = None
    computed = []
    for node in traced.graph.nodes:
        if node.op == "placeholder":
            if previous is not None:
                return "the model takes more than one input"
            previous = node
            continue
        if node.op == "get_attr":
            return f"its forward uses a parameter or buffer outside a layer ({node.target})"
        inputs = node.all_input_nodes
        if node.op == "output":
            break
        if len(previous.users) != 1:
            return (f"not a chain of layers: the output of {previous.name} feeds {len(previous.users)} operations "
                    "(a residual or branch)")
        if inputs != [previous]:
            return f"not a chain of layers: {node.name} combines earlier results (a residual or branch)"
        computed.append(node)
        previous = node
    if not computed:
        return "the model has no layers"
    last = computed[-1]
    head = traced.get_submodule(last.target) if last.op == "call_module" else None
    if not isinstance(head, nn.Linear) or head.bias is None:
        return "its output is not a biased Linear layer (the head the chain is solved from)"
    if len(computed) < 2:
        return "the model is a single Linear layer (use linear_input)"
    return LayerChain(traced, str(last.target))


def find_layer_chain(model: nn.Module, update: SharedUpdate) -> LayerChain | str:
    """The chain when this attack applies to ``model`` and ``update``, else why not (one phrase)."""
    if as_gradient(update) is None:
        return f"the update is a {update.local_steps}-step FedAvg change, not one gradient"
    if update.batch_size != 1:
        return f"a batch of {update.batch_size} mixes the head's rows (this needs one image)"
    chain = trace_chain(model)
    if isinstance(chain, str):
        return chain
    names = {n for n, _ in sent_parameters(model, update.parameter_names)}
    if f"{chain.head}.weight" not in names or f"{chain.head}.bias" not in names:
        return "the head's weight or bias gradient is not sent (frozen)"
    return chain


class _Pattern:
    """The frozen activation pattern of one round: ReLU masks and max-pooling choices, by layer.

    Empty at the start of a round: the first evaluation records the current image's pattern;
    later ones use it and add the squared amount by which the input leaves it to ``penalty``.
    """

    def __init__(self) -> None:
        self.frozen: dict[str, torch.Tensor] = {}
        self.penalty: list[torch.Tensor] = []
        self.active = False


class _FrozenReLU(nn.Module):
    def __init__(self, key: str, pattern: _Pattern) -> None:
        super().__init__()
        self.key, self.pattern = key, pattern

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pattern.active:
            return torch.relu(x)
        mask = self.pattern.frozen.setdefault(self.key, (x > 0).to(x.dtype))
        self.pattern.penalty.append(((torch.relu(-x) * mask) ** 2).sum() + ((torch.relu(x) * (1 - mask)) ** 2).sum())
        return x * mask


class _FrozenMaxPool(nn.Module):
    def __init__(self, pool: nn.MaxPool2d, key: str, pattern: _Pattern) -> None:
        super().__init__()
        self.pool, self.key, self.pattern = pool, key, pattern

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pattern.active:
            return self.pool(x)
        p = self.pool
        pooled, choice = F.max_pool2d(x, p.kernel_size, p.stride, p.padding, p.dilation, ceil_mode=p.ceil_mode,
                                      return_indices=True)
        choice = self.pattern.frozen.setdefault(self.key, choice)
        picked = x.flatten(2).gather(2, choice.flatten(2)).view_as(choice)
        self.pattern.penalty.append(((pooled - picked) ** 2).sum())
        return picked


def features_with_patterns(chain: LayerChain, pattern: _Pattern) -> torch.fx.GraphModule:
    """The chain up to the head's input, its ReLUs and max pooling able to freeze their pattern."""
    graph = chain.graph
    for node in list(graph.graph.nodes):
        key = f"_frozen_{node.name}"
        if node.op == "call_module" and isinstance(graph.get_submodule(node.target), nn.ReLU):
            graph.add_submodule(key, _FrozenReLU(key, pattern))
            node.target = key
        elif node.op == "call_module" and isinstance(graph.get_submodule(node.target), nn.MaxPool2d):
            graph.add_submodule(key, _FrozenMaxPool(graph.get_submodule(node.target), key, pattern))
            node.target = key
        elif node.op == "call_function" and node.target in _RELU_FUNCTIONS and len(node.args) == 1:
            graph.add_submodule(key, _FrozenReLU(key, pattern))
            node.op, node.target = "call_module", key
        elif node.op == "output":
            head = node.args[0]
            node.args = (head.args[0],)
            graph.graph.erase_node(head)
    graph.graph.lint()
    graph.recompile()
    return graph


@dataclass
class LayerwiseInversion(BaseAttack):
    """One image from a chain of layers, by active-set gradient matching from the exact head input."""

    iterations: int = 1500  # L-BFGS-B iterations in all
    round_iterations: int = 10  # per frozen activation pattern (ConvNet-BN image 0: 10 beats 25 and 100)
    # weight of leaving the frozen pattern: low enough that the descent can cross into the next
    # pattern (1.0 trapped a 4x4 test image at a 1.5% residual; ConvNet-BN image 0: 0.1 beats 1.0)
    pattern_weight: float = 0.1
    tolerance: float = 1e-12  # stop when the objective (relative squared residuals) is below this
    loss: Loss | None = None  # only to verify the result; the equations hold for any loss
    name: str = "layerwise"

    def _chain(self, model: nn.Module, update: SharedUpdate) -> LayerChain:
        chain = find_layer_chain(model, update)
        if isinstance(chain, str):
            raise GradleakError(f"attack {self.name!r} does not apply: {chain}; use --attack auto or ig")
        return chain

    def check(self, update: SharedUpdate, model: nn.Module | None = None) -> None:
        if self.iterations < 1 or self.round_iterations < 1:
            raise GradleakError(f"--iters must be at least 1 (got {self.iterations})")
        if model is not None:
            self._chain(model, update)

    def reconstruct(self, model: nn.Module, update: SharedUpdate, context: AttackContext) -> AttackResult:
        observer = context.observer  # deterministic (starts from grey): no generator
        gradient = as_gradient(update)
        assert gradient is not None
        client = ClientForward.of(model, gradient, loss=self.loss)
        net = client.net.double().cpu()
        chain = self._chain(net, update)
        sent = dict(zip(client.names, (t.detach().double().cpu() for t in gradient.tensors)))
        head = chain.graph.get_submodule(chain.head)
        g_weight, g_bias = sent.pop(f"{chain.head}.weight"), sent.pop(f"{chain.head}.bias")
        target = head_features(g_weight, g_bias, None).reshape(1, -1)
        cotangent = (g_bias @ head.weight.detach()).reshape(1, -1)  # ∂L/∂(head input)
        pattern = _Pattern()
        features = features_with_patterns(chain, pattern)
        parameters = dict(features.named_parameters())
        matched = [(parameters[n], g) for n, g in sent.items() if n in parameters]
        leaves = [p.requires_grad_(True) for p, _ in matched]
        target_norm = float((target**2).sum())
        gradient_norm = sum(float((g**2).sum()) for _, g in matched) or 1.0
        shape = (1, *update.input_shape)
        last: dict[str, float] = {}

        def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
            x = torch.from_numpy(flat).reshape(shape).requires_grad_(True)
            pattern.penalty.clear()
            h = features(x).reshape(1, -1)
            forward = (((h - target) ** 2).sum() + self.pattern_weight * sum(pattern.penalty)) / target_norm
            total = forward
            if leaves:
                grads = torch.autograd.grad((h * cotangent).sum(), leaves, create_graph=True, allow_unused=True)
                residual = sum(((torch.zeros_like(g) if a is None else a) - g).pow(2).sum()
                               for a, (_, g) in zip(grads, matched))
                total = forward + residual / gradient_norm
            (dx,) = torch.autograd.grad(total, x)
            last["objective"] = float(total.detach())
            return last["objective"], dx.reshape(-1).numpy().copy()

        from scipy.optimize import minimize

        flat = np.full(int(np.prod(shape)), 0.5)
        bounds = [(0.0, 1.0)] * flat.size
        losses: list[float] = []
        done = 0
        with torch.enable_grad():
            while done < self.iterations:
                pattern.frozen.clear()
                pattern.active = True
                step = min(self.round_iterations, self.iterations - done)
                found = minimize(objective, flat, jac=True, method="L-BFGS-B", bounds=bounds,
                                 options={"maxiter": step, "maxcor": 30, "ftol": 0.0, "gtol": 0.0, "maxfun": 2 * step})
                flat, done = found.x, done + max(1, int(found.nit))
                losses.append(last["objective"])
                if observer is not None:
                    image = torch.from_numpy(flat).reshape(shape).float()
                    observer(StepReport(iteration=done, loss=losses[-1], images=image,
                                        objective="active-set residual (relative)"))
                if losses[-1] < self.tolerance:
                    break
        pattern.active = False
        images = torch.from_numpy(flat).reshape(shape).float()
        labels = restore_batch_labels(update)
        images = images.to(context.device)
        error = relative_update_error(model, update, images, labels, loss=self.loss)
        return AttackResult(
            images=images, labels=labels, losses=losses, iterations=done,
            stop_reason=(f"solved layer-wise from the exact head input ({len(losses)} activation patterns, "
                         f"{done} L-BFGS-B iterations); relative gradient error {error:.1e}"),
            extras={"relative_gradient_error": error},
        )


ATTACKS.register("layerwise", LayerwiseInversion)
