"""``gradleak text``: recover sentences from the gradient of one language-model step.

Example::

    gradleak text --sentence "the quick brown fox jumps over the lazy dog"
    gradleak text --sentence "my password is hunter2" --sentence "meet me at nine"   # a batch
    gradleak text --model gpt2-base --sentences-file batch.txt --batch-size 32        # span attack
    gradleak text --model gpt2-base --sentences-file batch.txt --defense gaussian:1e-8
    gradleak text --model bert-base-uncased --sentence "…"                            # Hub model

Errors are one line on stderr (``gradleak text: error: …``) with exit status 2.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from gradleak.cli.parsing import OneLineParser, guarded
from gradleak.errors import GradleakError

PROG = "gradleak text"


class _SentenceGroups(argparse.Action):
    """Keeps the words given after each ``--sentence`` together, to catch unquoted sentences."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        groups = list(getattr(namespace, self.dest, None) or [])
        groups.append(list(values))
        setattr(namespace, self.dest, groups)


def build_parser() -> argparse.ArgumentParser:
    # Kept free of transformers so that --help works without the optional extra.
    from gradleak.text.model import BUILTIN_MODELS, DEFAULT_MODEL

    p = OneLineParser(
        prog=PROG,
        description="Gradient leakage on text (DLG's language experiment): a client computes the "
        "gradient of one masked-LM step of a BERT on your sentence(s); the attack recovers the "
        "tokens from that gradient alone.",
    )
    p.add_argument(
        "--sentence", action=_SentenceGroups, nargs="+", default=[], metavar="TEXT",
        help='the private sentence, quoted ("the quick fox"); give several (--sentence "A" "B", '
        "or --sentence twice) for a batch",
    )
    p.add_argument("--sentences-file", default=None, metavar="FILE",
                   help="UTF-8 text file, one private sentence per line (blank lines skipped)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="sentences per client batch (one shared update and one attack each; "
                   "default: all sentences in one batch)")
    p.add_argument("--defense", action="append", default=[], metavar="SPEC",
                   help="client-side defense, repeatable, as for images: gaussian:VARIANCE, "
                   "prune:RATIO, dpsgd:clip=C,sigma=S, fp16, int8, laplacian:SCALE")
    p.add_argument(
        "--model", default=DEFAULT_MODEL,
        help=f"built-in random model ({', '.join(BUILTIN_MODELS.names())}; default {DEFAULT_MODEL}, "
        "offline) or a Hugging Face masked-LM/causal-LM name or folder, e.g. bert-base-uncased",
    )
    p.add_argument("--attack", choices=["auto", "span", "tag", "dlg"], default="auto",
                   help="span: exact span attack (DAGER-class) on the first two attention layers; "
                   "tag: L2 + alpha*L1 gradient matching; dlg: L2; auto (default): span for "
                   "the model families it knows (GPT-2, BERT), tag otherwise")
    p.add_argument("--iters", type=int, default=300,
                   help="max steps of the continuous stage (default 300; stops early on an exact "
                   "gradient match)")
    p.add_argument("--lr", type=float, default=0.1, help="Adam learning rate (default 0.1)")
    p.add_argument("--tag-alpha", type=float, default=0.01,
                   help="weight of TAG's L1 term (default 0.01)")
    p.add_argument("--token-set", choices=["leak", "all"], default="leak",
                   help="leak: only tokens the gradient reveals (default); all: whole vocabulary")
    p.add_argument("--refine-passes", type=int, default=20,
                   help="max passes of the discrete swap search after decoding (default 20; 0: off)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the built-in model's weights and the attack's start (default 0)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: 1 for models under 20M parameters, else torch's default)")
    p.add_argument("--offline", action="store_true",
                   help="never contact the Hugging Face Hub (use only the local cache)")
    p.add_argument("--log-every", type=int, default=5,
                   help="record the best guess every N steps (default 5)")
    p.add_argument("--out", default=None, help="output folder (default runs/<time>-text/)")
    p.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty --out")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar, no summary; still prints where the results went")
    return p


def _prepare_out(out: str | None, overwrite: bool) -> Path:
    path = Path(out) if out else Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-text"
    if path.exists() and not path.is_dir():
        raise GradleakError(f"--out {path} exists and is not a folder: pick another --out")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise GradleakError(f"--out {path} is not empty: pass --overwrite or pick another --out")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gradleak text``; returns the exit status."""
    args = list(argv) if argv is not None else None
    return guarded(lambda: _main(build_parser().parse_args(args)), PROG)


def _sentences(args: argparse.Namespace) -> list[str]:
    for group in args.sentence:
        if len(group) > 1 and not any(any(c.isspace() for c in word) for word in group):
            raise GradleakError(
                f"--sentence got {len(group)} separate words ({' '.join(group[:4])}"
                f"{' …' if len(group) > 4 else ''}): quote the sentence, "
                f'--sentence "{" ".join(group)}"'
            )
    sentences = [s for group in args.sentence for s in group]
    if args.sentences_file is not None:
        path = Path(args.sentences_file)
        if not path.is_file():
            raise GradleakError(f"--sentences-file {path} does not exist or is not a file: check the path")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise GradleakError(f"--sentences-file {path} is not UTF-8 text: save it as UTF-8") from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise GradleakError(f"--sentences-file {path} holds no sentence: write one per line")
        sentences += lines
    return sentences


def _main(args: argparse.Namespace) -> int:
    args.sentence = _sentences(args)
    if not args.sentence:
        raise GradleakError(
            'no sentence given: pass --sentence "the quick brown fox" or --sentences-file FILE'
        )
    if args.batch_size is not None and args.batch_size < 1:
        raise GradleakError(f"--batch-size must be at least 1 (got {args.batch_size})")
    if args.iters < 1:
        raise GradleakError(f"--iters must be at least 1 (got {args.iters}): pass --iters 300")
    if args.log_every < 1:
        raise GradleakError(f"--log-every must be at least 1 (got {args.log_every})")
    if args.refine_passes < 0:
        raise GradleakError(f"--refine-passes must be 0 or more (got {args.refine_passes})")
    if not args.lr > 0:
        raise GradleakError(f"--lr must be positive (got {args.lr})")
    if args.tag_alpha < 0:
        raise GradleakError(f"--tag-alpha must be 0 or more (got {args.tag_alpha})")
    for k, s in enumerate(args.sentence, start=1):
        if not s.strip():
            which = "--sentence" if len(args.sentence) == 1 else f"--sentence #{k}"
            raise GradleakError(f'{which} is empty: pass some text, e.g. --sentence "hello world"')
    out = _prepare_out(args.out, args.overwrite)

    try:
        import rouge_score  # noqa: F401
        import tokenizers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise GradleakError(
            "text leakage needs the optional extra: pip install 'gradleak[text]'"
        ) from None
    from gradleak.defenses import parse_defenses
    from gradleak.text.attack import TextAttackConfig
    from gradleak.text.runner import TextRunConfig, run_text_experiment

    parse_defenses(args.defense)  # a bad spec fails here, before the model is built

    config = TextRunConfig(
        sentences=list(args.sentence),
        model=args.model,
        method=args.attack,
        defenses=list(args.defense),
        batch_size=args.batch_size,
        attack=TextAttackConfig(
            iters=args.iters,
            lr=args.lr,
            tag_alpha=args.tag_alpha,
            token_set=args.token_set,
            refine_passes=args.refine_passes,
            seed=args.seed,
            report_every=args.log_every,
        ),
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        offline=True if args.offline else None,
    )
    result = run_text_experiment(config, out, progress=not args.quiet)
    if not args.quiet:
        m = result.metrics
        for i, (orig, rec) in enumerate(zip(result.original, result.recovered), start=1):
            print(f"[{i}] original:  {orig}")
            print(f"[{i}] recovered: {rec}")
        print(
            f"token accuracy {m['token_accuracy']:.1%}, exact match {m['exact_match']:.0%}, "
            f"rouge1 {m['rouge1']:.3f} rouge2 {m['rouge2']:.3f} rougeL {m['rougeL']:.3f} "
            f"({m['attack']}, {m['seconds']:.1f} s)"
        )
    print(f"results in {out}: {', '.join(f.name for f in result.files)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
