"""Every output file of a run, written into a staging folder and moved into place whole."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from gradleak.experiment.config import Prepared, RunOutcome
from gradleak.experiment.progress import Progress
from gradleak.experiment.records import classic_metrics_text, identifiability_record, resolved_config
from gradleak.io.staging import staged_folder
from gradleak.types import AttackResult


def write_unscored(prepared: Prepared, result: AttackResult, progress: Progress) -> RunOutcome:
    """A captured update without reference images: the reconstructions and what the attack
    itself knows (no ground-truth scores exist)."""
    from gradleak.io.files import write_json, write_text
    from gradleak.figures import save_curves, save_image, tile

    config = prepared.config
    metrics: dict[str, Any] = {
        "dataset": "captured",
        "update_file": config.update,
        "model": prepared.model_name,
        "attack": prepared.attack.name,
        "kind": prepared.update.kind,
        "defenses": list(prepared.update.defenses),
        "batch_size": int(prepared.update.batch_size),
        "scored": False,
        "recovered_labels": [int(x) for x in result.labels],
        "iterations": result.iterations,
        "seconds": round(result.seconds, 3),
        "stop_reason": result.stop_reason,
        "final_loss": result.losses[-1] if result.losses else None,
        **{k: v for k, v in result.extras.items()},
        "identifiability": identifiability_record(prepared),
    }
    with staged_folder(prepared.out_dir) as stage:
        batch = result.images.shape[0]
        for i in range(batch):
            save_image(stage / f"recon{'' if batch == 1 else f'_{i}'}.png", result.images[i])
        save_image(stage / "reconstructions.png", tile(result.images.detach().cpu()))
        if result.iterations > 1 and progress.iterations:  # one closed-form step: nothing to plot
            progress.finish(result.iterations, math.nan)
            save_curves(stage / "curves.png", iterations=progress.iterations, losses=progress.losses,
                        objectives=progress.objectives)
        write_text(stage / "metrics.txt", "\n".join([
            f"update={config.update}", f"model={prepared.model_name}", f"iterations={result.iterations}",
            "no reference images: not scored (pass --reference IMAGES)"]) + "\n")
        write_json(stage / "metrics.json", metrics)
        write_json(stage / "config.json", resolved_config(prepared))
    return RunOutcome(out_dir=prepared.out_dir, metrics=metrics, result=result)


def write_outputs(prepared: Prepared, result: AttackResult, score: Any, metrics: dict[str, Any], progress: Progress) -> None:
    """Write everything into a staging folder, then move it into place (no half-written run)."""
    with staged_folder(prepared.out_dir) as stage:
        _write_stage(stage, prepared, result, score, metrics, progress)


def _write_stage(stage: Path, prepared: Prepared, result: AttackResult, score: Any, metrics: dict[str, Any], progress: Progress) -> None:
    from gradleak.io.files import write_json, write_text
    from gradleak.figures import save_comparison, save_curves, save_history, save_image

    config = prepared.config
    matched = result.images[score.order]
    batch = prepared.images.shape[0]
    if config.save_final:
        for i in range(batch):
            suffix = "" if batch == 1 else f"_{i}"
            save_image(stage / f"recon{suffix}.png", matched[i])
            save_image(stage / f"target{suffix}.png", prepared.images[i])
    one_step = result.iterations <= 1  # solved in closed form (or --iters 1): nothing happened over iterations
    how = "finished in one step (solved in closed form)" if "solved" in result.stop_reason else "ran one step"
    if config.save_history and result.snapshots and not one_step:
        save_history(stage / "history.png", [*result.snapshots, (result.iterations, result.images)])
    elif config.save_history and not config.quiet:
        print(f"note: --save-history does not apply: attack {prepared.attack.name!r} "
              + (how if one_step else "took no snapshots")
              + ", so there is no history.png (use --attack dlg or ig for an iteration history)")
    captions = [f"{s.psnr:.1f} dB" for s in score.per_image]
    save_comparison(stage / "comparison.png", prepared.images, matched, captions)
    if one_step:
        if not config.quiet:
            print(f"note: no curves.png: attack {prepared.attack.name!r} {how}: nothing to plot over "
                  "iterations (comparison.png shows the result)")
    else:
        progress.finish(result.iterations, score.psnr)
        restarts = [(a.start, a_prev.reason) for a_prev, a in zip(result.attempts, result.attempts[1:])]
        save_curves(stage / "curves.png", iterations=progress.iterations, losses=progress.losses,
                    psnrs=progress.psnrs, objectives=progress.objectives, restarts=restarts,
                    psnr_label="PSNR" if batch == 1 else "PSNR (mean of the per-image PSNRs)")
    write_text(stage / "metrics.txt", classic_metrics_text(config, prepared.model_name, metrics))
    write_json(stage / "metrics.json", metrics)
    write_json(stage / "config.json", resolved_config(prepared))
    if config.save_model:
        # Plain tensors only: loadable with torch.load(weights_only=True) (gradleak inspect-model).
        state = {k: v.detach().cpu().contiguous() for k, v in prepared.model.state_dict().items()}
        torch.save(state, stage / "model.pt")

