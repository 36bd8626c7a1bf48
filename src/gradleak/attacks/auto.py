"""``auto``: the fastest attack that succeeds on what was shared, judged without ground truth.

1. If the update is a gradient (or a one-step FedAvg change, which is −η·gradient) and the model is
   a ``(Conv2d → Sigmoid)* → Linear`` net, solve it analytically (a batch is un-mixed at the head
   first; layers the gradient does not determine get a TV prior). Accept the result when the
   gradient it implies matches the shared one (relative error below ``accept_error``).
2. When the analytic result does not explain the gradient and the update looks defended (its
   noise model, published or estimated from the update, expects noise, rounding or pruned
   entries), run the noise-aware MAP inversion (:mod:`gradleak.attacks.posterior`) and iDLG's
   L-BFGS from the analytic start; keep the candidate with the lower posterior energy under that
   noise model (fitting the noise itself is not rewarded; still no ground truth).
3. When it does not explain an exact-looking gradient, refine it: iDLG's L-BFGS and Inverting
   Gradients, both warm-started from it; keep the candidate whose implied gradient is closer to
   the shared one.
4. Otherwise (a deep/ReLU/BatchNorm model, a multi-step FedAvg change) run Inverting Gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gradleak.attacks.analytic import AnalyticInversion, relative_gradient_error, sigmoid_conv_layers
from gradleak.attacks.base import ATTACKS
from gradleak.attacks.dlg import DLG
from gradleak.attacks.ig import InvertingGradients
from gradleak.attacks.noise_model import NOISE_SOURCES, noise_model, relative_noise_level
from gradleak.attacks.posterior import MapInversion, posterior_energy
from gradleak.errors import GradleakError
from gradleak.types import AttackResult, NoiseModel, SharedUpdate, StepObserver


def as_gradient(update: SharedUpdate) -> SharedUpdate | None:
    """The gradient behind an update when it is exactly recoverable (FedSGD, or FedAvg with E=1)."""
    if update.kind == "gradient":
        return update
    if update.kind == "weight_delta" and update.local_steps == 1 and update.local_lr:
        lr = float(update.local_lr)
        return SharedUpdate(
            tensors=tuple(-t / lr for t in update.tensors),
            kind="gradient",
            batch_size=update.batch_size,
            input_shape=update.input_shape,
            num_classes=update.num_classes,
            known_labels=update.known_labels,
            defenses=update.defenses,
        )
    return None


@dataclass
class Auto:
    """Analytic inversion when it applies and verifies, Inverting Gradients otherwise."""

    iterations: int = 2000  # for the optimisation fallback
    tv_weight: float = 1e-4
    clamp: bool = True
    accept_error: float = 1e-5  # relative gradient error below which the analytic solve is accepted
    restarts: int = 4
    noise_source: str = "auto"  # how the noise model of a defended update is obtained
    # MAP evaluations on a defended update (at least --iters): low noise needs a longer descent to
    # reach its precision (prune:0.3 on CIFAR-100 images 0, 3, 6: 25.3 dB median at 400, 36.8 at 1500).
    map_iterations_noisy: int = 600
    map_iterations_precise: int = 1500
    name: str = "auto"

    def check(self, update: SharedUpdate, model: nn.Module | None = None) -> None:
        if self.iterations < 1:
            raise GradleakError(f"--iters must be at least 1 (got {self.iterations})")
        if self.noise_source not in NOISE_SOURCES:
            raise GradleakError(
                f"unknown --noise-source {self.noise_source!r}: choose one of {', '.join(NOISE_SOURCES)}"
            )

    def plan(self, model: nn.Module, update: SharedUpdate) -> tuple[str, str]:
        """Which attack ``auto`` will try first, and why."""
        from gradleak.models.imprint import find_imprint_blocks

        if find_imprint_blocks(model):
            return "imprint", "the model carries an imprint block (a malicious server's): batches come out in closed form"
        gradient = as_gradient(update)
        if gradient is None:
            return "ig", f"the update is a {update.local_steps}-step FedAvg change (no exact gradient)"
        layers = sigmoid_conv_layers(model)
        if isinstance(layers, str):
            return "ig", layers
        what = "one image's gradient" if gradient.batch_size == 1 else f"the gradient of a batch of {gradient.batch_size}"
        return "analytic", f"{what} through a sigmoid conv net with a biased Linear head"

    def run(
        self,
        model: nn.Module,
        update: SharedUpdate,
        *,
        generator: torch.Generator | None = None,
        observer: StepObserver | None = None,
    ) -> AttackResult:
        self.check(update, model)
        first, reason = self.plan(model, update)
        if first == "imprint":
            from gradleak.attacks.imprint import ImprintAttack

            result = ImprintAttack().run(model, update, observer=observer)
            result.extras.update(auto_choice="imprint", auto_reason=reason)
            result.stop_reason = f"{result.stop_reason} (auto: {reason})"
            return result
        gradient = as_gradient(update)
        analytic: AttackResult | None = None
        if first == "analytic":
            assert gradient is not None
            analytic = AnalyticInversion().run(model, gradient, observer=observer)
            error = analytic.extras["relative_gradient_error"]
            if error <= self.accept_error:
                analytic.extras.update(auto_choice="analytic", auto_reason=reason)
                analytic.stop_reason = analytic.stop_reason.replace(
                    "solved", f"solved analytically ({reason}); relative gradient error {error:.1e}", 1
                )
                return analytic
            reason = f"the analytic solve left a relative gradient error of {error:.1e}"
            if update.kind == "gradient":
                noise = noise_model(update, source=self.noise_source)
                if noise.perturbed:
                    return self._defended(model, update, analytic, noise, reason, generator, observer)
        warm = analytic.images if analytic is not None else None
        fallback = InvertingGradients(
            iterations=self.iterations, tv_weight=self.tv_weight, restarts=self.restarts, init=warm
        )
        result = fallback.run(model, update, generator=generator, observer=observer)
        result.seconds += analytic.seconds if analytic is not None else 0.0
        result.iterations += analytic.iterations if analytic is not None else 0  # both ran (and are on the curve)
        result.extras.update(auto_choice="ig", auto_reason=reason)
        result.stop_reason = f"{result.stop_reason} (Inverting Gradients: {reason})"
        if analytic is None:
            return result
        if update.batch_size == 1:
            return self._best_of(model, update, result, analytic.images, observer)
        # A batch: keep the analytic result when Inverting Gradients did not explain the update better.
        assert gradient is not None
        ig_error = relative_gradient_error(model, gradient, result.images, result.labels)
        analytic_error = analytic.extras["relative_gradient_error"]
        if analytic_error > ig_error:
            return result
        analytic.seconds, analytic.iterations = result.seconds, result.iterations
        analytic.extras.update({"auto_choice": "analytic", "auto_reason": "its result explains the update better "
                                "than Inverting Gradients from it", "ig_relative_gradient_error": ig_error})
        analytic.stop_reason = (
            f"analytic result kept (relative gradient error {analytic_error:.1e}; Inverting Gradients "
            f"from it: {ig_error:.1e}): {analytic.stop_reason}"
        )
        return analytic

    def _defended(
        self, model: nn.Module, update: SharedUpdate, analytic: AttackResult, noise: NoiseModel, reason: str,
        generator: torch.Generator | None, observer: StepObserver | None,
    ) -> AttackResult:
        """A defended gradient: MAP inversion against a rival (below), the lower posterior energy kept."""
        level = relative_noise_level(update, noise)
        budget = max(self.iterations, self.map_iterations_noisy if level >= 1e-3 else self.map_iterations_precise)
        attack = MapInversion(iterations=budget, noise_source=self.noise_source, noise=noise)
        why = f"{reason}; the update looks defended ({noise.description}; expected noise/signal {level:.1e})"
        # The rival, kept when its posterior energy is lower: for one image iDLG's L-BFGS from the
        # analytic start (cheap; its gradient fit alone is no criterion: on int8, CIFAR-100 image 3,
        # it fits the update below the noise, 0.29× the data term expected at the true image, at
        # 20.7 dB); for a batch the analytic result itself (with its prior for the undetermined layers).
        if update.batch_size == 1:
            rival = DLG(iterations=min(self.iterations, 50), analytic_label=True, init=analytic.images,
                        name="idlg").run(model, update, observer=observer)
            rival.seconds += analytic.seconds
            rival.iterations += analytic.iterations
            key, choice, what = "lbfgs", "lbfgs_from_analytic", "iDLG L-BFGS from the analytic start"
        else:
            rival, key, choice, what = analytic, "analytic", "analytic", "the analytic result"
        energy_rival, discrepancy = posterior_energy(model, update, noise, rival.images, rival.labels, attack)
        result = attack.run(model, update, generator=generator, observer=observer)
        result.seconds += rival.seconds
        result.iterations += rival.iterations  # every phase ran and is on the curve
        energy_map = result.extras["posterior_energy"]
        result.extras.update({
            "auto_choice": "map",
            "auto_reason": why,
            "noise_to_signal": level,
            f"{key}_posterior_energy": energy_rival,
            f"{key}_discrepancy": discrepancy,
        })
        if energy_rival < energy_map:
            rival.seconds, rival.iterations = result.seconds, result.iterations
            rival.extras.update({**result.extras, "auto_choice": choice, "auto_reason": (
                f"its posterior energy {energy_rival:.4g} is below MAP's {energy_map:.4g} ({why})")})
            rival.stop_reason = f"{what} kept: posterior energy {energy_rival:.4g} < MAP's {energy_map:.4g} ({why})"
            return rival
        result.stop_reason = f"MAP inversion ({why}); posterior energy {energy_map:.4g} < {what}'s {energy_rival:.4g}"
        return result

    def _best_of(
        self, model: nn.Module, update: SharedUpdate, ig_result: AttackResult, warm: torch.Tensor,
        observer: StepObserver | None,
    ) -> AttackResult:
        """Also refine the analytic start with iDLG's L-BFGS; keep whichever explains the update better."""
        gradient = as_gradient(update)
        assert gradient is not None
        lbfgs = DLG(iterations=min(self.iterations, 100), analytic_label=True, init=warm, name="idlg")
        candidate = lbfgs.run(model, gradient, observer=observer)
        ig_error = relative_gradient_error(model, gradient, ig_result.images, ig_result.labels)
        lbfgs_error = relative_gradient_error(model, gradient, candidate.images, candidate.labels)
        ig_result.extras["ig_relative_gradient_error"] = ig_error
        ig_result.extras["lbfgs_relative_gradient_error"] = lbfgs_error
        if not lbfgs_error < ig_error:
            ig_result.iterations += candidate.iterations  # both ran (and are on the curve)
            return ig_result
        candidate.seconds += ig_result.seconds
        candidate.iterations += ig_result.iterations
        candidate.extras.update(ig_result.extras)
        candidate.extras["auto_choice"] = "lbfgs_from_analytic"
        candidate.extras["auto_reason"] = (
            f"relative gradient error {lbfgs_error:.1e}, below Inverting Gradients' {ig_error:.1e}")
        candidate.stop_reason = (
            f"{candidate.stop_reason} (iDLG L-BFGS from the analytic start: relative gradient error "
            f"{lbfgs_error:.1e} vs Inverting Gradients {ig_error:.1e})"
        )
        return candidate


ATTACKS.register("auto", Auto)
