"""What a run records besides the scores: per-client results, DP privacy, identifiability,
the resolved config and the classic metrics.txt."""

from __future__ import annotations

import platform
from dataclasses import asdict
from datetime import datetime
from typing import Any

import numpy as np
import torch

from gradleak.errors import GradleakError
from gradleak.experiment.config import Prepared, RunConfig
from gradleak.types import AttackResult
from gradleak.version import __version__


def scored_metrics(prepared: Prepared, result: AttackResult, score: Any) -> dict[str, Any]:
    """``metrics.json`` of a scored run: the scores, what the attack reported, and the records below."""
    config = prepared.config
    metrics: dict[str, Any] = {
        "dataset": "captured" if config.update else config.dataset,
        **({"update_file": config.update} if config.update else {}),
        "model": prepared.model_name,
        "attack": prepared.attack.name,
        "scenario": config.scenario,
        "defenses": list(prepared.update.defenses),
        "batch_size": int(prepared.images.shape[0]),
        "mse": score.mse,
        "psnr": score.psnr,
        **({"psnr_of_batch_mse": score.psnr_of_mse} if prepared.images.shape[0] > 1 else {}),
        "ssim": score.ssim,
        **({"st_lpips": score.st_lpips} if score.st_lpips is not None else {}),
        **({"lpips": score.lpips} if score.lpips is not None else {}),
        "label_accuracy": score.label_accuracy,
        "iterations": result.iterations,
        "seconds": round(result.seconds, 3),
        "stop_reason": result.stop_reason,
        "tries": result.restarts,
        **({"attempts": [asdict(a) for a in result.attempts]} if result.attempts else {}),
        "final_loss": result.losses[-1] if result.losses else None,
        "per_image": [{k: v for k, v in asdict(s).items() if v is not None} for s in score.per_image],
        **client_metrics(prepared, score),
        **{k: v for k, v in result.extras.items()},
        **dp_privacy(prepared),
        **(prepared.checkpoint.as_record() if prepared.checkpoint is not None else {}),
        "identifiability": identifiability_record(prepared),
    }
    if prepared.client_of is not None:
        for entry, owner in zip(metrics["per_image"], prepared.client_of):
            entry["client"] = owner
    return metrics


def identifiability_record(prepared: Prepared) -> dict[str, Any]:
    """What this update could leak, counted from the model alone (gradleak.attacks.identifiability)."""
    from gradleak.attacks.identifiability import identifiability

    update = prepared.update
    return identifiability(prepared.model, update.input_shape, update.batch_size, sent=update.parameter_names).as_record()


def client_metrics(prepared: Prepared, score: Any, *, success_psnr: float = 30.0) -> dict[str, Any]:
    """Under secure aggregation: which client each scored image (and so its matched reconstruction)
    came from, and per client the mean PSNR and the share of images at ``success_psnr`` or more.

    The runner knows the mapping; the attack saw one aggregated batch."""
    if prepared.client_of is None:
        return {}
    owners = prepared.client_of
    per_client = []
    for k in sorted(set(owners)):
        values = [s.psnr for s, owner in zip(score.per_image, owners) if owner == k]
        per_client.append({
            "client": k,
            "images": len(values),
            "psnr": float(np.mean(values)),
            "recovered": sum(1 for v in values if v >= success_psnr) / len(values),
        })
    return {"clients": len(per_client), "per_client": per_client}


def dp_privacy(prepared: Prepared) -> dict[str, float]:
    """With DP-SGD: ε of this one shared gradient at the configured δ (sampling rate = batch / dataset
    size when the dataset's size is known, else 1, the worst case)."""
    from gradleak.defenses import parse_defenses

    dp = next((d for d in parse_defenses(prepared.config.defenses) if hasattr(d, "epsilon")), None)
    if dp is None:
        return {}
    rate = 1.0
    if not prepared.config.images:
        from gradleak.data import dataset_size

        try:
            size = dataset_size(prepared.config.dataset, split=prepared.config.split,
                                root=prepared.config.data_root, download=False)
            rate = min(1.0, prepared.images.shape[0] / size)
        except GradleakError:
            pass
    return {"dp_epsilon": dp.epsilon(steps=1, sample_rate=rate), "dp_delta": dp.delta, "dp_sample_rate": rate}


def classic_metrics_text(config: RunConfig, model_name: str, metrics: dict[str, Any]) -> str:
    lines = [
        f"dataset={config.dataset}",
        f"model={model_name}",
        f"iterations={metrics['iterations']}",
        f"MSE={metrics['mse']:.6f}",
        f"PSNR={metrics['psnr']:.2f} dB",
    ]
    if "psnr_of_batch_mse" in metrics:  # a batch: say which PSNR is which
        lines += [
            "PSNR above: mean of the per-image PSNRs; MSE above: the batch's (mean of per-image MSEs)",
            f"PSNR of the batch MSE={metrics['psnr_of_batch_mse']:.2f} dB",
        ]
    return "\n".join(lines) + "\n"


def resolved_config(prepared: Prepared) -> dict[str, Any]:
    config = asdict(prepared.config)
    config.update(
        model=prepared.model_name,
        num_classes=prepared.num_classes,
        device=str(prepared.device),
        labels=[int(x) for x in prepared.labels] if prepared.labels is not None else None,
        attack_settings=asdict(prepared.attack) if hasattr(prepared.attack, "__dataclass_fields__") else {},
        out=str(prepared.out_dir),
        **(prepared.checkpoint.as_record() if prepared.checkpoint is not None else {}),
        gradleak_version=__version__,
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        torch_threads=torch.get_num_threads(),
        created=datetime.now().isoformat(timespec="seconds"),
    )
    return config

