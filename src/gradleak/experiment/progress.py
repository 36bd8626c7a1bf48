"""The runner's observer of an attack: loss and PSNR per iteration, and the progress bar."""

from __future__ import annotations

import math
import sys

import torch

from gradleak.types import StepReport


class Progress:
    """Observer: records loss and PSNR per iteration and drives the progress bar.

    It is the runner's (it holds the ground truth to compute PSNR); the attack only calls it.
    """

    def __init__(self, targets: torch.Tensor | None, total: int, quiet: bool) -> None:
        from gradleak.metrics import match_reconstructions, mean_psnr

        self._match = match_reconstructions
        self._psnr = mean_psnr  # the definition of the reported PSNR: mean over the batch's images
        self.targets = targets.cpu() if targets is not None else None  # None: nothing to score against
        # One point per report. An attack made of phases (auto: analytic, then IG, then L-BFGS)
        # numbers each phase from 1; ``iterations`` counts on across them (what the bar shows).
        self.iterations: list[int] = []
        self.losses: list[float] = []
        self.psnrs: list[float] = []
        self.objectives: list[str] = []
        self._offset = 0
        self._last_reported = 0
        self.events: list[tuple[int, str]] = []
        self.bar = None
        if not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="attack", unit="it", dynamic_ncols=True, file=sys.stderr)

    def __call__(self, report: StepReport) -> None:
        value = float("nan")
        if self.targets is not None:
            images = report.images.detach().cpu().clamp(0, 1)
            order = self._match(images, self.targets) if self.targets.shape[0] > 1 else [0]
            value = self._psnr(images[order], self.targets)
        if report.iteration <= self._last_reported:  # a new phase numbered from 1 again
            self._offset = self.iterations[-1]
        self._last_reported = report.iteration
        iteration = self._offset + report.iteration
        self.iterations.append(iteration)
        self.losses.append(report.loss)
        self.psnrs.append(value)
        self.objectives.append(report.objective)
        if report.event is not None:
            # e.g. DLG's stall guard starting again: printed above the bar (the summary repeats it)
            self.events.append((iteration, report.event))
            if self.bar is not None:
                self.bar.write(report.event, file=sys.stderr)
        if self.bar is not None:
            self.bar.total = max(self.bar.total or 0, iteration)  # an attack whose own budget is larger
            self.bar.n = iteration
            self.bar.set_postfix(loss=f"{report.loss:.3g}", **({"psnr": f"{value:.2f}dB"} if self.targets is not None else {}), refresh=False)
            self.bar.refresh()

    def close(self, *, finished: bool = True, iterations: int | None = None) -> None:
        """End the bar. A finished attack ends it at 100% of the ``iterations`` it ran (the count
        ``metrics.json`` reports); an interrupted or failed one leaves it where it stopped."""
        if self.bar is not None:
            if finished:
                self.bar.n = self.bar.total = iterations if iterations is not None else self.bar.n
                self.bar.refresh()
            self.bar.close()

    def finish(self, iterations: int, final_psnr: float) -> None:
        """Close the curve at the attack's own iteration count with its returned result's PSNR
        (reports may come every few iterations, and a phase may run without reporting)."""
        # the returned result may also differ from the last reported image at the same iteration (a
        # best restart, a scale set by a prior after the descent): a vertical step, not a hidden one
        last_differs = (bool(self.psnrs) and not math.isnan(final_psnr)
                        and not math.isclose(self.psnrs[-1], final_psnr, rel_tol=1e-6, abs_tol=1e-6))
        if not self.iterations or self.iterations[-1] < iterations or last_differs:
            self.iterations.append(max(iterations, self.iterations[-1] if self.iterations else 0))
            self.losses.append(math.nan)  # no objective value for the returned result: the PSNR only
            self.psnrs.append(final_psnr)
            self.objectives.append(self.objectives[-1] if self.objectives else "")

