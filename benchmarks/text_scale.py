"""Text leakage at the scale of real language models: the span attack against TAG, same updates.

For each model, sentence set and batch size, one client update is computed (one CPU thread) and
attacked by the span attack and by TAG (the continuous attack gradleak had before, with a fixed
step budget, as its double backward pass through a 100M-parameter model costs seconds per
step). Then a noise curve: the same batch under ``gaussian:VARIANCE`` for several variances.

Sentence sets: ``corpus`` (the 20 sentences of the bundled corpus, which the offline vocabulary
was built from) and ``heldout`` (``benchmarks/text_heldout.txt``, 68 sentences written for this
benchmark and never used to tune the attack).

    python benchmarks/text_scale.py --ci                       # tiny models, seconds
    python benchmarks/text_scale.py --model gpt2-base --set heldout --batches 1 8 16 32 64
    python benchmarks/text_scale.py --model gpt2-base --set heldout --batches 8 --noise 1e-10 1e-8 1e-6
    python benchmarks/text_scale.py --model bert-base --set heldout --batches 8 --start 8   # lines 9-16

Prints a table; ``--json FILE`` appends one JSON line per row. ``x client`` is the attack's time
over the client's own gradient step on the same batch in the same process (a load-independent
ratio; absolute seconds grow with the machine's load).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from gradleak.defenses import parse_defenses  # noqa: E402
from gradleak.text.attack import TextAttackConfig, run_text_attack  # noqa: E402
from gradleak.text.client import defended_gradient  # noqa: E402
from gradleak.text.corpus import SENTENCES  # noqa: E402
from gradleak.text.metrics import score_text  # noqa: E402
from gradleak.text.model import load_text_model  # noqa: E402
from gradleak.text.span_attack import SpanAttackConfig, run_span_attack  # noqa: E402

HELDOUT = HERE / "text_heldout.txt"


def sentence_set(name: str) -> list[str]:
    if name == "corpus":
        return [s.strip() for s in SENTENCES.strip().splitlines() if s.strip()]
    return [s.strip() for s in HELDOUT.read_text(encoding="utf-8").splitlines() if s.strip()]


def score(tok, batch, token_ids) -> dict:  # type: ignore[no-untyped-def]
    from gradleak.text.metrics import pair_sentences

    refs = [ids[1:-1] for ids in batch]
    order = pair_sentences(refs, [ids[1:-1] for ids in token_ids])
    recs = [token_ids[order[i]] for i in range(len(batch))]
    s = score_text(refs, [r[1:-1] for r in recs], [tok.decode(i) for i in batch],
                   [tok.decode(i) for i in recs])
    return {"rouge1": s.rouge1, "rouge2": s.rouge2, "exact_match": s.exact_match,
            "token_accuracy": s.token_accuracy}


def run_row(tm, batch, defense, attack, tag_iters, seed, sweeps=None):  # type: ignore[no-untyped-def]
    screen = attack != "span-noscreen"
    special = tm.tokenizer.special_ids
    t0 = time.perf_counter()
    update = defended_gradient(tm.model, batch, special["pad"], parse_defenses(defense),
                               objective=tm.objective, generator=torch.Generator().manual_seed(seed))
    client_seconds = time.perf_counter() - t0  # the reference: the client's own step, same process
    t0 = time.perf_counter()
    if attack.startswith("span"):
        config = SpanAttackConfig(screen=screen) if sweeps is None else SpanAttackConfig(sweeps=sweeps, screen=screen)
        result = run_span_attack(tm.model, update, special, config)
    else:
        result = run_text_attack(tm.model, update, special,
                                 TextAttackConfig(method="tag", iters=tag_iters, refine_passes=0,
                                                  report_every=max(1, tag_iters // 2)))
    seconds = time.perf_counter() - t0
    row = score(tm.tokenizer, batch, result.token_ids)
    row.update(seconds=seconds, client_seconds=client_seconds, exact_check=result.final_relative_l2 < 1e-10,
               note=result.stop_reason.split(";")[0][:60], load=os.getloadavg()[0])
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ci", action="store_true", help="tiny models and batches (seconds)")
    p.add_argument("--model", default="gpt2-base")
    p.add_argument("--set", dest="sets", nargs="+", default=["heldout"], choices=["corpus", "heldout"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    p.add_argument("--attacks", nargs="+", default=["span", "tag"], choices=["span", "span-noscreen", "tag"],
                   help="span-noscreen: decoders without the attention-context screen (speed reference)")
    p.add_argument("--tag-iters", type=int, default=10)
    p.add_argument("--noise", type=float, nargs="*", default=[],
                   help="gaussian variances for the noise curve (on the first batch size)")
    p.add_argument("--sweeps", type=int, default=None, help="encoders: refinement sweeps per start")
    p.add_argument("--start", type=int, default=0,
                   help="first sentence of the set (0-based): batches are sentences[start:start+B]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.ci:
        args.model, args.batches, args.tag_iters = "tiny-gpt2-2l", [1, 4], 10
        args.noise = args.noise or [1e-10]
    tm = load_text_model(args.model, seed=args.seed)
    rows = []
    print(f"model {args.model} ({tm.objective}), one CPU thread; TAG: {args.tag_iters} steps; "
          f"sentences from {args.start}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'set':8} {'B':>3} {'defense':16} {'attack':5} {'rouge1':>7} {'rouge2':>7} "
          f"{'exact':>6} {'tok.acc':>7} {'seconds':>8} {'x client':>8} {'load':>5}  note")
    plan = [(s, b, []) for s in args.sets for b in args.batches]
    plan += [(args.sets[0], args.batches[0] if len(args.batches) == 1 else 8 if 8 in args.batches
              else args.batches[-1], [f"gaussian:{v:g}"]) for v in args.noise]
    for set_name, b, defense in plan:
        sentences = sentence_set(set_name)
        if args.start + b > len(sentences):
            print(f"{set_name:8} {b:>3} skipped: the set has {len(sentences)} sentences")
            continue
        batch = [tm.tokenizer.encode(s) for s in sentences[args.start : args.start + b]]
        for attack in args.attacks:
            row = run_row(tm, batch, defense, attack, args.tag_iters, args.seed, args.sweeps)
            row.update(model=args.model, set=set_name, start=args.start, batch=b,
                       defense=",".join(defense) or "none",
                       attack=attack, tag_iters=args.tag_iters if attack == "tag" else None)
            rows.append(row)
            print(f"{set_name:8} {b:>3} {row['defense']:16} {attack:5} {row['rouge1']:7.3f} "
                  f"{row['rouge2']:7.3f} {row['exact_match']:6.0%} {row['token_accuracy']:7.1%} "
                  f"{row['seconds']:8.1f} {row['seconds'] / row['client_seconds']:8.1f} {row['load']:5.1f}  "
                  f"{row['note']}", flush=True)
            if args.json:
                with open(args.json, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
