"""The text experiment end to end: client gradient, attack, scores, ``text.txt``/``metrics.json``/
``curves.png``.

The runner is the only place that knows both the private sentences and the attack's output: it
scores the attack's intermediate guesses through an observer (the attack itself never sees the
sentences).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gradleak.errors import GradleakError
from gradleak.report import atomic_write, write_json, write_text
from gradleak.text.attack import TextAttackConfig, TextAttackResult, TextStepReport, run_text_attack
from gradleak.text.client import mlm_gradient
from gradleak.text.metrics import score_text, token_accuracy
from gradleak.text.model import DEFAULT_MODEL, TextModel, load_text_model


@dataclass
class TextRunConfig:
    sentences: list[str]
    model: str = DEFAULT_MODEL
    attack: TextAttackConfig = field(default_factory=TextAttackConfig)
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # None: 1 on CPU for models under 20M parameters, else torch's
    offline: bool | None = None


@dataclass
class TextRunResult:
    metrics: dict[str, Any]
    original: list[str]
    recovered: list[str]
    attack: TextAttackResult
    files: list[Path]
    curve: list[tuple[int, float, float]]  # (iteration, decoded distance, accuracy) per report


def resolve_device(spec: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; anything else must exist."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise GradleakError(f"unknown --device {spec!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GradleakError(f"--device {spec} but CUDA is not available: pass --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GradleakError(
                f"--device {spec} but only {torch.cuda.device_count()} CUDA device(s): "
                "pass --device cuda:0"
            )
    elif device.type != "cpu":
        raise GradleakError(f"unsupported --device {spec!r}: use auto, cpu, cuda or cuda:N")
    return device


def tokenize_sentences(tm: TextModel, sentences: list[str]) -> list[list[int]]:
    """Token ids per sentence, with clear errors for empty or over-long sentences."""
    if not sentences:
        raise GradleakError('no sentence given: pass --sentence "the quick brown fox"')
    batch: list[list[int]] = []
    for k, sentence in enumerate(sentences, start=1):
        which = "--sentence" if len(sentences) == 1 else f"--sentence #{k}"
        if not sentence or not sentence.strip():
            raise GradleakError(f'{which} is empty: pass some text, e.g. --sentence "hello world"')
        ids = tm.tokenizer.encode(sentence)
        if len(ids) <= 2:
            raise GradleakError(f"{which} has no tokens after tokenisation: pass some words")
        if len(ids) > tm.max_length:
            raise GradleakError(
                f"{which} is {len(ids)} tokens long with [CLS]/[SEP] but model {tm.name!r} accepts "
                f"at most {tm.max_length}: shorten it"
            )
        batch.append(ids)
    return batch


def run_text_experiment(
    config: TextRunConfig,
    out_dir: Path | None = None,
    *,
    progress: bool = False,
) -> TextRunResult:
    """Run the client and the attack; write outputs into ``out_dir`` when given."""
    device = resolve_device(config.device)
    if config.threads is not None and config.threads < 1:
        raise GradleakError(f"--threads must be at least 1 (got {config.threads})")
    if config.attack.iters < 1:
        raise GradleakError(
            f"--iters must be at least 1 (got {config.attack.iters}): pass --iters 300"
        )
    old_threads = torch.get_num_threads()
    try:
        return _run(config, device, out_dir, progress)
    finally:
        torch.set_num_threads(old_threads)


SMALL_MODEL_PARAMS = 20_000_000


def _run(
    config: TextRunConfig, device: torch.device, out_dir: Path | None, progress: bool
) -> TextRunResult:
    tm = load_text_model(config.model, seed=config.seed, device=device, offline=config.offline)
    threads = config.threads
    if threads is None and device.type == "cpu":
        n_params = sum(p.numel() for p in tm.model.parameters())
        if n_params < SMALL_MODEL_PARAMS:
            threads = 1  # tiny ops: one thread is faster, and far faster on a busy machine
    if threads is not None:
        torch.set_num_threads(threads)
    tok = tm.tokenizer
    batch = tokenize_sentences(tm, config.sentences)
    special = tok.special_ids

    t0 = time.perf_counter()
    update = mlm_gradient(tm.model, batch, special["pad"])  # the client
    refs = [ids[1:-1] for ids in batch]
    ref_texts = [tok.decode(ids) for ids in batch]

    curve: list[tuple[int, float, float]] = []
    guesses: list[tuple[int, float, float, list[str]]] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.attack.iters, desc="text attack", unit="it", leave=False)

    def observe(report: TextStepReport) -> None:
        # Runner-side scoring: the attack reports its guess, the runner knows the sentence.
        acc = token_accuracy(refs, [ids[1:-1] for ids in report.token_ids])
        curve.append((report.iteration, report.decoded_distance, acc))
        guesses.append(
            (report.iteration, report.decoded_distance, acc,
             [tok.decode(ids) for ids in report.token_ids])
        )
        if bar is not None:
            if report.stage == "continuous":
                bar.update(report.iteration - bar.n)
            else:
                bar.set_description("refine")
            bar.set_postfix(loss=f"{report.loss:.3g}", acc=f"{acc:.0%}", refresh=False)

    try:
        result = run_text_attack(tm.model, update, special, config.attack, observe)
    finally:
        if bar is not None:
            bar.close()
    total_seconds = time.perf_counter() - t0

    recs = [ids[1:-1] for ids in result.token_ids]
    rec_texts = [tok.decode(ids) for ids in result.token_ids]
    scores = score_text(refs, recs, ref_texts, rec_texts)
    metrics: dict[str, Any] = scores.as_dict()
    metrics.update(
        {
            "attack": config.attack.method,
            "model": tm.name,
            "layers": int(getattr(tm.model.config, "num_hidden_layers", 0)),
            "batch_size": len(batch),
            "num_tokens": [len(ids) for ids in batch],
            "token_set": result.token_set_source,
            "token_set_size": len(result.candidate_ids),
            "iterations": result.iterations,
            "refine_passes": result.refine_passes,
            "stop_reason": result.stop_reason,
            "final_gradient_distance": result.final_distance,
            "final_relative_l2": result.final_relative_l2,
            "attack_seconds": round(result.seconds, 3),
            "seconds": round(total_seconds, 3),
            "seed": config.seed,
            "device": str(device),
            "token_accuracy_definition": "LCS(reference, recovered) / len(reference) over "
            "WordPiece tokens without [CLS]/[SEP], sentences paired by optimal assignment",
        }
    )
    files: list[Path] = []
    if out_dir is not None:
        files = write_outputs(out_dir, tm, batch, result, scores.order, ref_texts, rec_texts,
                              metrics, guesses, curve)
    return TextRunResult(
        metrics=metrics,
        original=ref_texts,
        recovered=[rec_texts[i] for i in scores.order],
        attack=result,
        files=files,
        curve=curve,
    )


def write_outputs(
    out_dir: Path,
    tm: TextModel,
    batch: list[list[int]],
    result: TextAttackResult,
    order: list[int],
    ref_texts: list[str],
    rec_texts: list[str],
    metrics: dict[str, Any],
    guesses: list[tuple[int, float, float, list[str]]],
    curve: list[tuple[int, float, float]],
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = tm.tokenizer
    header = (
        f"gradleak text: {metrics['attack']} on {tm.name} ({metrics['layers']} layers), "
        f"batch of {len(batch)}"
    )
    summary = (
        f"token accuracy {metrics['token_accuracy']:.1%}, exact match "
        f"{metrics['exact_match']:.0%}, rougeL {metrics['rougeL']:.3f}, "
        f"stop: {metrics['stop_reason']}"
    )
    lines = [header, summary, ""]
    for i, ids in enumerate(batch):
        rec = result.token_ids[order[i]]
        lines += [
            f"[{i + 1}] original:  {ref_texts[i]}",
            f"[{i + 1}] recovered: {rec_texts[order[i]]}",
            f"[{i + 1}] original tokens:  {' '.join(tok.tokens(ids))}",
            f"[{i + 1}] recovered tokens: {' '.join(tok.tokens(rec))}",
            "",
        ]
    lines.append(
        "best guess every report (continuous stage every --log-every steps, then one line per "
        "refine pass; accuracy computed by the runner, not the attack)"
    )
    lines.append("iteration\tdecoded_gradient_distance\ttoken_accuracy\tguess")
    for it, loss, acc, texts in guesses:
        lines.append(f"{it}\t{loss:.6g}\t{acc:.4f}\t" + " || ".join(texts))
    # The project's atomic writers: an interrupted run never leaves half a file behind.
    text_path = out_dir / "text.txt"
    write_text(text_path, "\n".join(lines) + "\n")

    metrics_path = out_dir / "metrics.json"
    write_json(metrics_path, metrics)

    curves_path = out_dir / "curves.png"
    plot_curves(curves_path, result, curve, str(metrics["attack"]))
    return [text_path, metrics_path, curves_path]


def plot_curves(
    path: Path, result: TextAttackResult, curve: list[tuple[int, float, float]], attack: str
) -> None:
    """Loss (soft and decoded gradient distance) and token accuracy against iterations."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    floor = 1e-12
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    n_cont = result.iterations
    if result.losses:
        ax1.plot(range(len(result.losses)), [max(v, floor) for v in result.losses], lw=1.2,
                 label="soft tokens (minimised)")
    if result.decoded_distances:
        ax1.plot([d[0] for d in result.decoded_distances],
                 [max(d[1], floor) for d in result.decoded_distances], "o-", ms=3, lw=1,
                 label="decoded tokens (exact)")
    ax1.set_yscale("log")
    ax1.set_xlabel("iteration (then refine passes)")
    ax1.set_ylabel(f"gradient distance ({attack})")
    ax1.set_title(f"gradient matching (0 is drawn at {floor:g})", fontsize=10)
    ax1.legend(fontsize=8)
    if curve:
        ax2.plot([c[0] for c in curve], [100 * c[2] for c in curve], "o-", ms=3)
    ax2.set_ylim(-2, 102)
    ax2.set_xlabel("iteration (then refine passes)")
    ax2.set_ylabel("token accuracy (%)")
    ax2.set_title("token accuracy of the decoded guess", fontsize=10)
    for ax in (ax1, ax2):
        if result.refine_passes:
            ax.axvline(n_cont + 0.5, color="gray", ls=":", lw=1)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
