"""The text experiment end to end: client gradient, attack, scores, ``text.txt``/``metrics.json``/
``curves.png``.

The runner is the only place that knows both the private sentences and the attack's output: it
scores the attack's intermediate guesses through an observer (the attack itself never sees the
sentences). Sentences are split into client batches of ``batch_size`` (one shared update and one
attack each); the scores cover all sentences.

Attacks: ``span`` (:mod:`gradleak.text.span_attack`), ``tag``/``dlg``
(:mod:`gradleak.text.attack`) and ``auto``: the span attack where it applies (a model family it
knows: GPT-2 decoders and BERT encoders), TAG otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from gradleak.errors import GradleakError
from gradleak.io.files import atomic_write, write_json, write_text
from gradleak.runtime import torch_threads
from gradleak.text.attack import (
    EXACT_RELATIVE_L2,
    TextAttackConfig,
    TextAttackResult,
    TextStepReport,
    run_text_attack,
)
from gradleak.text.client import defended_gradient
from gradleak.text.metrics import score_text, token_accuracy
from gradleak.text.model import DEFAULT_MODEL, TextModel, load_text_model
from gradleak.text.span_attack import SpanAttackConfig, applies, run_span_attack

METHODS = ("auto", "span", "tag", "dlg")


@dataclass
class TextRunConfig:
    sentences: list[str]
    model: str = DEFAULT_MODEL
    attack: TextAttackConfig = field(default_factory=TextAttackConfig)
    seed: int = 0
    device: str = "auto"
    threads: int | None = None  # None: 1 on CPU for models under 20M parameters, else torch's
    offline: bool | None = None
    method: str = "auto"  # auto, span, tag or dlg (tag/dlg: attack.method is overridden)
    span: SpanAttackConfig = field(default_factory=SpanAttackConfig)
    defenses: list[str] = field(default_factory=list)
    batch_size: int | None = None  # sentences per client batch; None: all in one batch


@dataclass
class TextRunResult:
    metrics: dict[str, Any]
    original: list[str]
    recovered: list[str]
    attack: TextAttackResult
    files: list[Path]
    curve: list[tuple[int, float, float]]  # (iteration, decoded distance, accuracy) per report
    attacks: list[TextAttackResult] = field(default_factory=list)  # one per client batch


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
    if config.method not in METHODS:
        raise GradleakError(f"unknown --attack {config.method!r}: choose one of {', '.join(METHODS)}")
    if config.batch_size is not None and config.batch_size < 1:
        raise GradleakError(f"--batch-size must be at least 1 (got {config.batch_size})")
    if config.attack.iters < 1:
        raise GradleakError(
            f"--iters must be at least 1 (got {config.attack.iters}): pass --iters 300"
        )
    with torch_threads(None):  # _run picks the count; the caller's is restored after
        return _run(config, device, out_dir, progress)


SMALL_MODEL_PARAMS = 20_000_000


def choose_method(config: TextRunConfig, tm: TextModel) -> str:
    """``auto``: the span attack for the families it knows (decoders and encoders, any batch
    size: beyond the rank limit it says that its recovery is partial), TAG otherwise."""
    if config.method != "auto":
        return config.method
    return "span" if applies(tm.model) else "tag"


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
    from gradleak.defenses import parse_defenses

    defenses = parse_defenses(config.defenses)
    tok = tm.tokenizer
    sentences = tokenize_sentences(tm, config.sentences)
    size = config.batch_size or len(sentences)
    batches = [sentences[i : i + size] for i in range(0, len(sentences), size)]
    generator = torch.Generator(device=device).manual_seed(config.seed)

    t0 = time.perf_counter()
    curve: list[tuple[int, float, float]] = []
    guesses: list[tuple[int, float, float, list[str]]] = []
    results: list[TextAttackResult] = []
    recovered: list[list[int]] = []
    methods: list[str] = []
    notices: list[str] = []
    for k, batch in enumerate(batches):
        update = defended_gradient(  # the client
            tm.model, batch, tok.special_ids["pad"], defenses, objective=tm.objective,
            generator=generator,
        )
        method = choose_method(config, tm)
        methods.append(method)
        refs = [ids[1:-1] for ids in batch]
        label = f"batch {k + 1}/{len(batches)}: " if len(batches) > 1 else ""
        bar = None
        if progress and method != "span":
            from tqdm import tqdm

            bar = tqdm(total=config.attack.iters, desc=f"{label}text attack", unit="it", leave=False)

        def observe(report: TextStepReport, refs: list[list[int]] = refs, bar: Any = bar) -> None:
            # Runner-side scoring: the attack reports its guess, the runner knows the sentences.
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

        def announce(line: str, label: str = label) -> None:
            notices.append(label + line)
            if progress:
                print(f"{label}{line}", flush=True)

        try:
            if method == "span":
                result = run_span_attack(tm.model, update, tok.special_ids, config.span, observe,
                                         announce=announce)
            else:
                attack = config.attack
                if config.method in ("tag", "dlg"):
                    attack = replace(attack, method=config.method)  # type: ignore[arg-type]
                result = run_text_attack(tm.model, update, tok.special_ids, attack, observe)
        finally:
            if bar is not None:
                bar.close()
        results.append(result)
        recovered += _pair_within(refs, result.token_ids)
    total_seconds = time.perf_counter() - t0

    refs_all = [ids[1:-1] for ids in sentences]
    recs = [ids[1:-1] for ids in recovered]
    ref_texts = [tok.decode(ids) for ids in sentences]
    rec_texts = [tok.decode(ids) for ids in recovered]
    scores = score_text(refs_all, recs, ref_texts, rec_texts)
    metrics: dict[str, Any] = scores.as_dict()
    first = results[0]
    metrics.update(
        {
            "attack": methods[0] if len(set(methods)) == 1 else ",".join(methods),
            "model": tm.name,
            "objective": tm.objective,
            "layers": int(getattr(tm.model.config, "num_hidden_layers", 0)),
            "sentences": len(sentences),
            "batch_size": size,
            "client_batches": len(batches),
            "num_tokens": [len(ids) for ids in sentences],
            "defenses": [d.name for d in defenses],
            "token_set": first.token_set_source,
            "token_set_size": len(first.candidate_ids),
            "iterations": sum(r.iterations for r in results),
            "refine_passes": sum(r.refine_passes for r in results),
            "stop_reason": " | ".join(r.stop_reason for r in results),
            "exact_batches": sum(r.final_relative_l2 < EXACT_RELATIVE_L2 for r in results),
            "final_gradient_distance": max(r.final_distance for r in results),
            "final_relative_l2": max(r.final_relative_l2 for r in results),
            "attack_seconds": round(sum(r.seconds for r in results), 3),
            "seconds": round(total_seconds, 3),
            "seed": config.seed,
            "device": str(device),
            "notices": notices,
            "token_accuracy_definition": "LCS(reference, recovered) / len(reference) over "
            "tokens without [CLS]/[SEP], sentences paired by optimal assignment within each batch",
        }
    )
    files: list[Path] = []
    if out_dir is not None:
        files = write_outputs(out_dir, tm, sentences, results, recovered, ref_texts, rec_texts,
                              metrics, guesses, curve)
    return TextRunResult(
        metrics=metrics,
        original=ref_texts,
        recovered=rec_texts,
        attack=first,
        files=files,
        curve=curve,
        attacks=results,
    )


def _pair_within(refs: list[list[int]], token_ids: list[list[int]]) -> list[list[int]]:
    """The recovered sequences reordered to pair with ``refs`` (the batch gradient does not
    depend on the order of the sentences, so the attack returns them in any order)."""
    from gradleak.text.metrics import pair_sentences

    order = pair_sentences(refs, [ids[1:-1] for ids in token_ids])
    return [token_ids[order[i]] for i in range(len(refs))]


def write_outputs(
    out_dir: Path,
    tm: TextModel,
    sentences: list[list[int]],
    results: list[TextAttackResult],
    recovered: list[list[int]],
    ref_texts: list[str],
    rec_texts: list[str],
    metrics: dict[str, Any],
    guesses: list[tuple[int, float, float, list[str]]],
    curve: list[tuple[int, float, float]],
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = tm.tokenizer
    header = (
        f"gradleak text: {metrics['attack']} on {tm.name} ({metrics['layers']} layers, "
        f"{tm.objective} LM), {len(sentences)} sentence(s) in {metrics['client_batches']} client "
        f"batch(es) of up to {metrics['batch_size']}"
        + (f", defenses {', '.join(metrics['defenses'])}" if metrics["defenses"] else "")
    )
    summary = (
        f"token accuracy {metrics['token_accuracy']:.1%}, exact match "
        f"{metrics['exact_match']:.0%}, rouge1 {metrics['rouge1']:.3f}, rouge2 "
        f"{metrics['rouge2']:.3f}, rougeL {metrics['rougeL']:.3f}"
    )
    lines = [header, summary, *(f"stop: {r.stop_reason}" for r in results), ""]
    for i, ids in enumerate(sentences):
        rec = recovered[i]
        lines += [
            f"[{i + 1}] original:  {ref_texts[i]}",
            f"[{i + 1}] recovered: {rec_texts[i]}",
            f"[{i + 1}] original tokens:  {' '.join(tok.tokens(ids))}",
            f"[{i + 1}] recovered tokens: {' '.join(tok.tokens(rec))}",
            "",
        ]
    lines.append(
        "best guess every report (continuous stage every --log-every steps, then one line per "
        "refine pass; the span attack reports once per batch; accuracy computed by the runner)"
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
    if all(r.iterations <= 1 and not r.losses for r in results):
        plot_batches(curves_path, results, curve, str(metrics["attack"]))
    else:
        plot_curves(curves_path, results[0], curve, str(metrics["attack"]))
    return [text_path, metrics_path, curves_path]


def plot_batches(
    path: Path, results: list[TextAttackResult], curve: list[tuple[int, float, float]], attack: str
) -> None:
    """One-shot attacks (span): per client batch, the gradient check and the token accuracy."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    floor = 1e-16
    xs = list(range(1, len(results) + 1))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(xs, [max(r.final_relative_l2, floor) for r in results], "o", ms=8, color="tab:blue",
             label="recovered batch")
    ax1.axhline(EXACT_RELATIVE_L2, color="gray", ls=":", lw=1, label="exact below this")
    ax1.set_yscale("log")
    ax1.set_ylim(floor / 10, 10)
    ax1.set_xlim(0.5, len(xs) + 0.5)
    ax1.set_xlabel("client batch")
    ax1.set_ylabel("relative squared gradient distance")
    ax1.set_title(f"{attack}: recovered batch vs shared gradient ({floor:g} = 0)", fontsize=10)
    ax1.legend(fontsize=8)
    ax2.bar(xs, [100 * c[2] for c in curve[: len(xs)]], color="tab:green")
    ax2.set_ylim(0, 102)
    ax2.set_xlabel("client batch")
    ax2.set_ylabel("token accuracy (%)")
    ax2.set_title("token accuracy per client batch", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_xticks(xs)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


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
