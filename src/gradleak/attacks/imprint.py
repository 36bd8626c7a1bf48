"""``imprint``: closed-form recovery of a batch from an imprint block's gradient (Fowl et al. 2022).

The malicious server's block (:mod:`gradleak.models.imprint`) has N units that share one weight
row ``w`` and differ only in their thresholds ``t_i = −b_i``; unit ``i`` fires for the images whose
statistic ``w·x`` exceeds ``t_i``, and every firing unit passes back the same per-image scalar
``g_n``. Sorting the units by threshold, the gradient of unit ``i`` minus that of unit ``i + 1``
holds only the images whose statistic falls between the two thresholds:

    ΔW_i = (1/B) Σ_{n in bin i} g_n x_n,   Δb_i = (1/B) Σ_{n in bin i} g_n,   x = ΔW_i / Δb_i

which is one image exactly when it is alone in its bin (a mixture when several share it). The last
unit's bin is open above, so its own gradient is its difference. No optimisation: one pass over
the block's two gradient tensors, any batch size, any model behind the block, also under secure
aggregation (a mean of clients' gradients is still such a sum).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gradleak.attacks.base import ATTACKS, AttackContext, BaseAttack
from gradleak.attacks.labels import restore_batch_labels
from gradleak.errors import GradleakError
from gradleak.types import AttackResult, SharedUpdate, StepReport


@dataclass
class ImprintAttack(BaseAttack):
    """Read the batch out of the first imprint block's weight and bias gradients."""

    iterations: int = 1  # accepted for a uniform interface; the recovery is one closed-form step
    empty_tolerance: float = 1e-6  # |Δb_i| below this share of the largest counts as an empty bin
    name: str = "imprint"

    def check(self, update: SharedUpdate, model: nn.Module | None = None) -> None:
        from gradleak.models.imprint import find_imprint_blocks

        if model is None or not find_imprint_blocks(model):
            raise GradleakError(
                "attack 'imprint' needs a server-modified model with an imprint block and this model has none: "
                "use --scenario imprint (the malicious server), or another --attack for an honest server"
            )
        if update.kind != "gradient" and update.local_steps != 1:
            raise GradleakError(
                f"attack 'imprint' reads one gradient step but the update is a {update.local_steps}-step FedAvg "
                "change: use --scenario imprint (FedSGD clients)"
            )
        if len(update.tensors) != len(list(model.parameters())):
            raise GradleakError(
                f"the update has {len(update.tensors)} tensors but the model {len(list(model.parameters()))} "
                "parameters: it was not computed on this model"
            )

    def reconstruct(self, model: nn.Module, update: SharedUpdate, context: AttackContext) -> AttackResult:
        from gradleak.models.imprint import find_imprint_blocks

        _, block = find_imprint_blocks(model)[0]
        position = {id(p): i for i, p in enumerate(model.parameters())}
        weight = update.tensors[position[id(block.linear0.weight)]].detach().double().cpu()
        bias = update.tensors[position[id(block.linear0.bias)]].detach().double().cpu()
        images, filled = recover_from_bins(
            weight, bias, block.linear0.bias.detach().cpu(), update.batch_size, tolerance=self.empty_tolerance
        )
        images = images.float().view(update.batch_size, *update.input_shape).clamp(0, 1)
        labels = restore_batch_labels(update)
        if context.observer is not None:
            context.observer(StepReport(iteration=1, loss=0.0, images=images, objective="closed form (no objective)"))
        found = min(filled, update.batch_size)
        return AttackResult(
            images=images,
            labels=labels,
            losses=[0.0],
            iterations=1,
            stop_reason=(
                f"solved in closed form from {block.bins} imprint bins: {filled} non-empty "
                f"for a batch of {update.batch_size}"
                + ("" if filled >= update.batch_size else
                   f" ({update.batch_size - found} fewer than images: some images share a bin and come out mixed)")
            ),
            extras={"imprint_bins": float(block.bins), "imprint_filled_bins": float(filled)},
        )


def recover_from_bins(
    weight_grad: torch.Tensor, bias_grad: torch.Tensor, bias: torch.Tensor, batch_size: int, *, tolerance: float = 1e-6
) -> tuple[torch.Tensor, int]:
    """(batch_size, D) images from an imprint layer's gradients, and how many bins were non-empty.

    ``bias`` is the layer's own bias (``−threshold``): it orders the bins. With more non-empty
    bins than images (rounding) the ``batch_size`` with the largest ``|Δb|`` are kept; with fewer
    (images sharing bins) the strongest mixtures are repeated to fill the batch.
    """
    order = torch.argsort(bias.double(), descending=True)  # ascending thresholds
    dw, db = weight_grad[order], bias_grad[order]
    delta_w = dw.clone()
    delta_b = db.clone()
    delta_w[:-1] -= dw[1:]
    delta_b[:-1] -= db[1:]
    strength = delta_b.abs()
    top = float(strength.max()) if strength.numel() else 0.0
    if not top > 0:
        return torch.full((batch_size, weight_grad.shape[1]), 0.5, dtype=torch.float64), 0
    nonempty = torch.nonzero(strength > tolerance * top).flatten()
    ranked = nonempty[torch.argsort(strength[nonempty], descending=True)]
    chosen = ranked[:batch_size]
    if len(chosen) < batch_size:
        repeats = ranked.repeat((batch_size + len(ranked) - 1) // len(ranked))
        chosen = torch.cat([chosen, repeats[: batch_size - len(chosen)]])
    images = delta_w[chosen] / delta_b[chosen, None]
    return images, int(len(nonempty))


ATTACKS.register("imprint", ImprintAttack)
