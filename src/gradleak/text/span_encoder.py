"""Layer 2 of the span attack for encoders (BERT): sentences from a bidirectional block.

In an encoder, block 1's input at a position depends on the whole sentence, so a partial
sentence cannot be tested exactly as in a decoder. What makes a search work (measured on
``bert-base``, B = 8, ~60 candidate tokens per position after layer 1):

* with the rest of the sentence right, the right token's block-1 input lies in the span
  (relative distance ~1e-6, float32 rounding) and every other token's is >= ~0.02 away;
* with the rest partly wrong, the distances of all positions grow with the number of wrong
  tokens, so "each position takes the token closest to the span given the others" is a descent:
  from a sentence with every token drawn at random from layer 1's candidates, such
  position-by-position sweeps end on an exact sentence of the batch in ~45% of the starts
  (and otherwise far from any, never half-way).

So, per group of sentences of one length (lengths are public): random starts, refined by sweeps
(block 0 computed for one position at a time, :mod:`gradleak.text.layer_inputs`
``at_position``, float32 for ranking); a sentence is accepted when every position's input lies
in the span (float64). Rounds of new starts continue for the groups still missing sentences,
until the accepted sentences' inputs explain the whole block-1 span (deflation: a batch that
repeats a sentence adds no direction, so nothing is left to find) or the rounds run out. Under
noise nothing is accepted; the best-scoring *distinct* sentences are returned. Where a group
has fewer accepted sentences than members, two readings are returned (the best others, or
repeats of accepted ones) and the gradient replay decides.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from gradleak.text.client import TextUpdate
from gradleak.text.span import span_distance
from gradleak.text.span_setup import SpanSetup

# A complete sentence is accepted below this distance at every position (exact gradients): a right
# sentence sits at ~1e-6 (up to ~2e-4 on a 4-layer 128-wide model, whose span keeps weak float32
# directions); one wrong token puts its position at >= ~1e-2.
ACCEPT_FLOOR = 1e-3
MISSING_DIRECTIONS = 0.5  # a missing sentence leaves >= 1 (one per token) unexplained span dimension


def _pools(cands: list[torch.Tensor], special: dict[str, int], n: int) -> list[torch.Tensor]:
    """Per content position ``1..n-2``: layer 1's candidates without the structural tokens."""
    structural = torch.tensor([special["cls"], special["sep"], special["pad"]])
    out = []
    for t in range(n):
        pool = cands[t] if t < len(cands) and cands[t].numel() else cands[0]
        out.append(pool[~torch.isin(pool, structural.to(pool.device))])
    return out


def _refine(setup: SpanSetup, seqs: torch.Tensor, pools: list[torch.Tensor], sweeps: int) -> tuple[torch.Tensor, int]:
    """Position-by-position sweeps: each position takes its closest token given the others."""
    basis = setup.span2.basis.float()
    done = 0
    for _ in range(sweeps):
        changed = False
        for t in range(1, seqs.shape[1] - 1):
            pool = pools[t]
            if pool.numel() < 2:
                continue
            assert setup.inputs.at_position is not None
            d = span_distance(basis, setup.inputs.at_position(seqs, t, pool, torch.float32))
            best = pool[torch.argmin(d, dim=1)]
            if bool((best != seqs[:, t]).any()):
                seqs = seqs.clone()
                seqs[:, t] = best
                changed = True
        done += 1
        if not changed:
            break
    return seqs, done


def _random_sentences(pools: list[torch.Tensor], count: int, special: dict[str, int],
                      generator: torch.Generator) -> torch.Tensor:
    """``(count, n)`` sentences with a random candidate at every content position."""
    n = len(pools)
    seqs = torch.empty((count, n), dtype=torch.long)
    seqs[:, 0], seqs[:, -1] = special["cls"], special["sep"]
    for t in range(1, n - 1):
        pool = pools[t].cpu()
        seqs[:, t] = pool[torch.randint(pool.numel(), (count,), generator=generator)] if pool.numel() else special["sep"]
    return seqs


def sentence_distances(setup: SpanSetup, seqs: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """``(N, n)`` float64 block-1 span distance of every position of complete sentences."""
    out = []
    for s in range(0, seqs.shape[0], chunk):
        part = seqs[s : s + chunk]
        out.append(span_distance(setup.span2.basis, setup.inputs.second_inputs(part, torch.ones_like(part))))
    return torch.cat(out)


def _covered(setup: SpanSetup, found: list[list[int]]) -> bool:
    """Whether the accepted sentences' block-1 inputs span the whole block-1 span: then no other
    sentence is left to find (a batch that repeats a sentence adds no direction)."""
    if not found:
        return False
    vectors = []
    for n in sorted({len(f) for f in found}):
        seqs = torch.tensor([f for f in found if len(f) == n], device=setup.span2.basis.device)
        vectors.append(setup.inputs.second_inputs(seqs, torch.ones_like(seqs)).reshape(-1, setup.span2.width))
    x = torch.cat(vectors).T  # (d, tokens)
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    own = u[:, : int((s > s[0] * 1e-9).sum())]
    # Σ over an orthonormal basis of its squared distance to span(found) = the dimension of what
    # is missing; float32 rounding leaves a little in the weakest directions.
    return bool(span_distance(own, setup.span2.basis.T).pow(2).sum() < MISSING_DIRECTIONS)


def _distinct(rows: list[list[int]], taken: list[list[int]], count: int) -> list[list[int]]:
    """Best-first rows that differ from every taken or kept one in over half their content
    positions (variants of one sentence are not different sentences), then the rest.

    >>> _distinct([[1, 5, 6, 7, 2], [1, 5, 6, 8, 2], [1, 9, 9, 9, 2]], [], 2)
    [[1, 5, 6, 7, 2], [1, 9, 9, 9, 2], [1, 5, 6, 8, 2]]
    """
    kept: list[list[int]] = []
    for row in rows:
        if len(kept) + len(taken) >= count:
            break
        if all(sum(a != b for a, b in zip(row, other)) * 2 > len(row) - 2 for other in taken + kept):
            kept.append(row)
    return kept + [row for row in rows if row not in kept]


def decode_encoder(
    setup: SpanSetup, update: TextUpdate, special: dict[str, int], cands: list[torch.Tensor],
    config: Any, device: torch.device, notes: list[str],
) -> list[list[list[int]]]:
    """Readings of the batch (one sequence per sentence, in ``update.lengths`` order)."""
    groups = Counter(update.lengths)
    pools = {n: _pools(cands, special, n) for n in groups}
    exact: dict[int, list[list[int]]] = {n: [] for n in groups}
    best: dict[int, list[tuple[float, list[int]]]] = {n: [] for n in groups}
    generator = torch.Generator().manual_seed(0)
    rounds = sweeps_total = starts_total = 0
    # Under noise a right sentence is no longer near 0 (the noise-aware threshold, up to 0.5, would
    # accept wrong ones): nothing is accepted, the best distinct sentences are returned.
    accept = ACCEPT_FLOOR if setup.noise_std == 0 else 0.0
    # Under noise every round would run (nothing is accepted) for little gain: one round.
    for rounds in range(1, (config.rounds if accept else 1) + 1):
        open_groups = [n for n, c in groups.items() if len(exact[n]) < c]
        if not open_groups:
            break
        for n in open_groups:
            starts = config.starts * (groups[n] - len(exact[n]))
            seqs = _random_sentences(pools[n], starts, special, generator).to(device)
            seqs, sweeps = _refine(setup, seqs, pools[n], config.sweeps)
            sweeps_total, starts_total = sweeps_total + sweeps, starts_total + starts
            seqs = torch.unique(seqs, dim=0)
            dist = sentence_distances(setup, seqs)[:, 1:-1]
            for row, worst, total in zip(seqs.tolist(), dist.max(dim=1).values, dist.sum(dim=1)):
                if worst < accept:
                    if row not in exact[n]:
                        exact[n].append(row)
                else:
                    best[n].append((float(total), row))
        if _covered(setup, [s for rows in exact.values() for s in rows]):
            break  # the rest of the batch repeats sentences already found
    found = sum(min(len(exact[n]), c) for n, c in groups.items())
    notes.append(f"encoder search: {starts_total} random start(s) refined position by position "
                 f"({sweeps_total} sweep(s), {rounds} round(s)); {found} distinct sentence(s) of "
                 f"{update.batch_size} pass the span test at every position")
    readings: list[dict[int, list[list[int]]]] = [{}, {}]
    for n, count in groups.items():
        picked = exact[n][:count]
        others = _distinct([row for _, row in sorted(best[n]) if row not in exact[n]], picked, count)
        fill = (others + picked) or [[special["cls"]] + [special["sep"]] * (n - 1)]
        readings[0][n] = picked + [fill[k % len(fill)] for k in range(count - len(picked))]
        repeat = picked or fill
        readings[1][n] = picked + [repeat[k % len(repeat)] for k in range(count - len(picked))]
    out = []
    for reading in readings:
        used: Counter[int] = Counter()
        batch = []
        for n in update.lengths:
            batch.append(reading[n][used[n]])
            used[n] += 1
        if batch not in out:
            out.append(batch)
    return out
