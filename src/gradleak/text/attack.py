"""Gradient-matching attacks on a masked-LM update: DLG and TAG for text.

The attack receives the server's model, the client's :class:`~gradleak.text.client.TextUpdate`
(gradient, batch size, sequence lengths) and the public special-token ids. It never sees the
sentence. Three stages:

1. **Token set from the gradient** (the leak TAG and LAMP exploit). With ``labels = inputs`` the
   gradient of the output bias is ``Σ_positions (softmax − one_hot(token)) / N``: negative
   exactly at the tokens of the batch, and, for a model that spreads its probability (random
   init), ``−N · grad ≈`` each token's count. When the model has no output bias and untied
   embeddings, the non-zero rows of the word-embedding gradient give the set instead. The attack
   then only considers those candidates (``token_set="all"`` turns this off: whole vocabulary).
2. **Continuous gradient matching.** Each content position holds a soft distribution over the
   candidates (logits ``z``); its input embedding is ``softmax(z) @ E[candidates]`` and its label
   is the same distribution (labels are the inputs). Adam minimises the distance between the
   dummy gradient and the shared one: ``dlg`` = squared L2 summed over parameters (DLG), ``tag``
   = squared L2 + ``alpha`` · L1 (TAG). ``[CLS]``, ``[SEP]`` and padding are fixed, as the input
   format is public.
3. **Decoding and discrete refinement.** Every ``report_every`` steps the current soft tokens
   are decoded, position by position, by an optimal assignment that respects the leaked counts
   (rows: positions, cost: −log probability), and the gradient of that token sequence is
   computed exactly; the continuous stage stops as soon as it equals the shared gradient
   (relative squared L2 below 1e-10, a test that needs no ground truth) or when the decoded
   guess stops changing. Then a greedy search keeps any discrete move that lowers the exact
   gradient distance: exchanging a block of positions between two sentences of a batch,
   swapping two positions, moving one token elsewhere, replacing one token by another
   candidate. It stops at an exact match or when no move helps. Token order is therefore
   recovered from the optimisation and the gradient alone.

Compute: each continuous step is a double backward pass through the model; each refine
evaluation a single one. A short sentence on the built-in 2-layer BERT takes well under a second
on one CPU thread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from gradleak.errors import GradleakError
from gradleak.text.client import TextUpdate, pad_batch

Method = Literal["dlg", "tag"]
EXACT_RELATIVE_L2 = 1e-10  # ‖g − g*‖² / ‖g*‖² below this: the tokens reproduce the gradient


@dataclass(frozen=True)
class TextAttackConfig:
    """Knobs of :func:`run_text_attack`.

    Attributes:
        method: ``"dlg"`` (squared L2 gradient distance) or ``"tag"`` (L2 + ``tag_alpha`` · L1).
        iters: Adam steps of the continuous stage.
        lr: Adam learning rate on the candidate logits.
        tag_alpha: weight of the L1 term for ``tag``.
        token_set: ``"leak"`` restricts candidates to the tokens the gradient reveals; ``"all"``
            uses the whole vocabulary (plain DLG).
        refine_passes: at most this many passes of the discrete swap/replace search (0: off).
        seed: seeds the initial logits.
        report_every: every this many continuous steps the current guess is decoded, reported
            to the observer and checked: the stage stops early when the decoded tokens
            reproduce the shared gradient exactly, or when the decoded guess has not changed
            for ``patience`` steps (0: never).
    """

    method: Method = "tag"
    iters: int = 300
    lr: float = 0.1
    tag_alpha: float = 0.01
    token_set: Literal["leak", "all"] = "leak"
    refine_passes: int = 20
    patience: int = 25
    seed: int = 0
    report_every: int = 10


@dataclass
class TextStepReport:
    """Sent to the observer: no ground truth, only what the attack currently believes."""

    iteration: int  # Adam steps taken so far (refine passes continue the count)
    loss: float  # the soft distance being minimised (continuous) or the exact one (refine)
    token_ids: list[list[int]]  # current decoded guess, one list per sentence, with specials
    stage: str  # "continuous" or "refine"
    decoded_distance: float  # exact gradient distance of ``token_ids``


TextObserver = Callable[[TextStepReport], None]


@dataclass
class TextAttackResult:
    token_ids: list[list[int]]  # recovered sequences, with [CLS]/[SEP], per sentence
    losses: list[float]  # continuous stage: soft distance after 0, 1, 2, … Adam steps
    refine_losses: list[float]  # exact distance after each refine pass
    decoded_distances: list[tuple[int, float]]  # (iteration, exact distance of decoded guess)
    iterations: int  # Adam steps taken in the continuous stage
    refine_passes: int  # discrete passes run
    seconds: float
    candidate_ids: list[int]  # the token set the attack worked with
    leaked_counts: dict[int, int]  # estimated occurrences per candidate (from the leak)
    token_set_source: str  # "output-bias", "embedding-rows" or "vocabulary"
    final_distance: float  # exact gradient distance of the recovered tokens
    final_relative_l2: float  # ‖g − g*‖² / ‖g*‖² of the recovered tokens (0: exact match)
    stop_reason: str
    snapshots: list[tuple[int, list[list[int]]]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Stage 1: token set


def _param_index(params: list[torch.Tensor], target: torch.Tensor | None) -> int | None:
    if target is None:
        return None
    for i, p in enumerate(params):
        if p is target:
            return i
    return None


def leaked_token_set(
    model: Any, update: TextUpdate, special: dict[str, int]
) -> tuple[list[int], dict[int, int], str]:
    """Tokens (other than ``[CLS]``/``[SEP]``/``[PAD]``) the gradient says the batch contains.

    Returns ``(candidates, counts, source)``; counts are estimates summing to the number of
    content positions.
    """
    params = list(model.parameters())
    n_real = sum(update.lengths)
    n_content = sum(n - 2 for n in update.lengths)
    structural = {special["cls"], special["sep"], special["pad"]}
    out = model.get_output_embeddings()
    bias_idx = _param_index(params, getattr(out, "bias", None) if out is not None else None)
    emb = model.get_input_embeddings().weight
    emb_idx = _param_index(params, emb)
    tied = out is not None and getattr(out, "weight", None) is emb

    if bias_idx is not None:
        g = update.tensors[bias_idx].detach().double().cpu() * n_real
        neg = (g < 0).nonzero().flatten().tolist()
        cand = [v for v in neg if v not in structural]
        # −N·grad = count − Σ softmax ≤ count; round, at least one each.
        est = {v: max(1, round(float(-g[v]))) for v in cand}
        source = "output-bias"
        score = {v: float(-g[v]) for v in cand}
    elif emb_idx is not None and not tied:
        rows = update.tensors[emb_idx].detach().norm(dim=1).cpu()
        cand = [v for v in (rows > 0).nonzero().flatten().tolist() if v not in structural]
        est = {v: 1 for v in cand}
        source = "embedding-rows"
        score = {v: float(rows[v]) for v in cand}
    else:
        return [], {}, "vocabulary"
    if not cand:
        return [], {}, "vocabulary"
    # Reconcile the counts with the number of content positions.
    total = sum(est.values())
    while total > n_content:
        v = min((v for v in cand if est[v] > 1), key=lambda v: score[v] - est[v], default=None)
        if v is None:
            break
        est[v] -= 1
        total -= 1
    while total < n_content:
        v = max(cand, key=lambda v: score[v] - est[v])
        est[v] += 1
        total += 1
    return sorted(cand), est, source


# ---------------------------------------------------------------------------------------------
# Gradient distances


def _distance(
    grads: tuple[torch.Tensor, ...], target: tuple[torch.Tensor, ...], method: str, alpha: float
) -> torch.Tensor:
    total = grads[0].new_zeros(())
    for g, t in zip(grads, target):
        diff = g - t
        total = total + diff.pow(2).sum()
        if method == "tag":
            total = total + alpha * diff.abs().sum()
    return total


class _Problem:
    """The shared state of one attack: model, target gradient, fixed structure of the batch."""

    def __init__(self, model: Any, update: TextUpdate, special: dict[str, int]) -> None:
        self.model = model
        self.params = [p for p in model.parameters()]
        self.device = self.params[0].device
        self.target = tuple(t.to(self.device) for t in update.tensors)
        self.target_sq = sum(float(t.pow(2).sum()) for t in self.target) or 1.0
        self.last_relative_l2 = math.inf
        self.lengths = list(update.lengths)
        self.special = special
        skeleton = []
        for n in self.lengths:
            skeleton.append([special["cls"]] + [special["pad"]] * (n - 2) + [special["sep"]])
        self.fixed_ids, self.mask = pad_batch(skeleton, special["pad"], self.device)
        content = torch.zeros_like(self.mask, dtype=torch.bool)
        for b, n in enumerate(self.lengths):
            content[b, 1 : n - 1] = True
        self.content = content
        self.positions = [(b, p) for b, n in enumerate(self.lengths) for p in range(1, n - 1)]
        self.emb = model.get_input_embeddings().weight

    def soft_distance(
        self, z: torch.Tensor, cand: torch.Tensor, method: str, alpha: float
    ) -> torch.Tensor:
        """Gradient distance for soft content tokens ``softmax(z)`` over ``cand``."""
        probs = z.softmax(-1)  # (B, L, K)
        soft_emb = probs @ self.emb[cand]  # (B, L, H)
        fixed_emb = self.emb[self.fixed_ids]
        inputs = torch.where(self.content.unsqueeze(-1), soft_emb, fixed_emb)
        logits = self.model(inputs_embeds=inputs, attention_mask=self.mask).logits
        logp = logits.log_softmax(-1)
        ce_soft = -(probs * logp[..., cand]).sum(-1)
        ce_fixed = -logp.gather(-1, self.fixed_ids.unsqueeze(-1)).squeeze(-1)
        ce = torch.where(self.content, ce_soft, ce_fixed)
        loss = (ce * self.mask).sum() / self.mask.sum()
        grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        grads = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads))
        return _distance(grads, self.target, method, alpha)

    def ids_tensor(self, seqs: list[list[int]]) -> torch.Tensor:
        ids, _ = pad_batch(seqs, self.special["pad"], self.device)
        return ids

    def exact_distance(self, ids: torch.Tensor, method: str, alpha: float) -> float:
        """The attack's distance between the gradient of token ids ``ids`` and the target.

        Also sets :attr:`last_relative_l2`: ``‖g − g*‖² / ‖g*‖²`` of the same evaluation, the
        scale-free test of an exact match (robust to non-deterministic GPU kernels).
        """
        labels = ids.masked_fill(self.mask == 0, -100)
        loss = self.model(input_ids=ids, attention_mask=self.mask, labels=labels).loss
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        grads = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads))
        with torch.no_grad():
            l2 = float(_distance(grads, self.target, "dlg", 0.0))
            self.last_relative_l2 = l2 / self.target_sq
            if method == "dlg":
                return l2
            return float(_distance(grads, self.target, method, alpha))

    def assemble(self, content_tokens: list[int]) -> list[list[int]]:
        """Full sequences from the content tokens listed in :attr:`positions` order."""
        seqs = [[self.special["cls"]] + [0] * (n - 2) + [self.special["sep"]] for n in self.lengths]
        for (b, p), t in zip(self.positions, content_tokens):
            seqs[b][p] = t
        return seqs


# ---------------------------------------------------------------------------------------------
# Stage 3 helpers


def _assign(logprobs: np.ndarray, cand: list[int], counts: dict[int, int] | None) -> list[int]:
    """Optimal decoding of positions (rows of ``logprobs``) to candidates under the counts."""
    if not counts:
        return [cand[k] for k in logprobs.argmax(1)]
    cols: list[int] = []
    for k, v in enumerate(cand):
        cols += [k] * counts.get(v, 0)
    cost = -logprobs[:, cols]
    rows, chosen = linear_sum_assignment(cost)
    out = [cand[0]] * logprobs.shape[0]
    for r, c in zip(rows, chosen):
        out[r] = cand[cols[c]]
    return out


Move = Callable[[list[int]], "list[int] | None"]


def _swap(i: int, j: int) -> Move:
    def apply(t: list[int]) -> list[int] | None:
        if t[i] == t[j]:
            return None
        out = list(t)
        out[i], out[j] = out[j], out[i]
        return out

    return apply


def _exchange(pairs: list[tuple[int, int]]) -> Move:
    def apply(t: list[int]) -> list[int] | None:
        out = list(t)
        for i, j in pairs:
            out[i], out[j] = out[j], out[i]
        return out

    return apply


def _relocate(i: int, j: int) -> Move:
    def apply(t: list[int]) -> list[int] | None:
        out = t[:i] + t[i + 1 :]
        out.insert(j, t[i])
        return out

    return apply


def _replace(i: int, v: int) -> Move:
    def apply(t: list[int]) -> list[int] | None:
        if t[i] == v:
            return None
        out = list(t)
        out[i] = v
        return out

    return apply


def _move_families(
    positions: list[tuple[int, int]], lengths: list[int], cand: list[int]
) -> list[list[Move]]:
    """Discrete moves on the flattened content tokens, cheapest and most useful first.

    Column-block exchanges (batches only) swap positions ``p..q`` between two sentences: the
    position-embedding gradient pins which tokens sit at each position but hardly which sentence
    they belong to, so whole runs of columns must move together. Swaps fix local order.
    Relocations shift one token (and everything between); replacements fix a miscounted token
    (only for small candidate sets).
    """
    n = len(positions)
    index = {bp: k for k, bp in enumerate(positions)}
    families: list[list[Move]] = []
    if len(lengths) > 1:
        blocks: list[Move] = []
        for b in range(len(lengths)):
            for b2 in range(b + 1, len(lengths)):
                m = min(lengths[b], lengths[b2]) - 2
                for p in range(1, m + 1):
                    for q in range(p + 1, m + 1):
                        blocks.append(
                            _exchange([(index[(b, c)], index[(b2, c)]) for c in range(p, q + 1)])
                        )
        families.append(blocks)
    families.append([_swap(i, j) for i in range(n) for j in range(i + 1, n)])
    families.append([_relocate(i, j) for i in range(n) for j in range(n) if abs(i - j) > 1])
    if len(cand) <= 64:
        families.append([_replace(i, v) for i in range(n) for v in cand])
    return families


def run_text_attack(
    model: Any,
    update: TextUpdate,
    special: dict[str, int],
    config: TextAttackConfig = TextAttackConfig(),
    observer: TextObserver | None = None,
) -> TextAttackResult:
    """Recover the token sequences behind ``update`` (see the module docstring).

    ``special`` holds the public ids of ``cls``, ``sep`` and ``pad``. The ground truth is never
    an argument: an observer that wants accuracy must know the sentence itself.
    """
    if config.iters < 1:
        raise GradleakError(f"--iters must be at least 1 (got {config.iters}): pass --iters 300")
    if config.method not in ("dlg", "tag"):
        raise GradleakError(f"unknown text attack {config.method!r}: choose one of dlg, tag")
    if any(n < 2 for n in update.lengths):
        raise GradleakError("each sequence needs at least [CLS] and [SEP]")
    start = time.perf_counter()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    prob = _Problem(model, update, special)
    method, alpha = config.method, config.tag_alpha

    if config.token_set == "leak":
        cand, counts, source = leaked_token_set(model, update, special)
    else:
        cand, counts, source = [], {}, "vocabulary"
    if not cand:
        structural = set(special.values())
        vocab = model.get_input_embeddings().weight.shape[0]
        cand = [v for v in range(vocab) if v not in structural]
        counts, source = {}, "vocabulary"
    cand_t = torch.tensor(cand, dtype=torch.long, device=prob.device)

    n_content = len(prob.positions)
    losses: list[float] = []
    snapshots: list[tuple[int, list[list[int]]]] = []
    B, L = prob.fixed_ids.shape

    def decode(z: torch.Tensor) -> list[list[int]]:
        if n_content == 0:
            return prob.assemble([])
        logp = z.detach().log_softmax(-1)
        rows = torch.stack([logp[b, p] for b, p in prob.positions]).double().cpu().numpy()
        return prob.assemble(_assign(rows, cand, counts))

    def is_exact() -> bool:  # of the last exact_distance evaluation
        return prob.last_relative_l2 <= EXACT_RELATIVE_L2

    gen = torch.Generator().manual_seed(config.seed)
    z0 = torch.randn((B, L, len(cand)), generator=gen) * 0.1
    z = z0.to(prob.device).requires_grad_(True)
    best_z = z.detach().clone()
    best = math.inf
    stop = "max_iterations"
    decoded: list[tuple[int, float]] = []
    iterations = 0
    if n_content > 0:
        opt = torch.optim.Adam([z], lr=config.lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(
            opt, milestones=[int(config.iters * f) for f in (0.5, 0.75, 0.9)], gamma=0.3
        )
        last_guess: list[list[int]] | None = None
        changed_at = 0
        for it in range(config.iters + 1):  # evaluation `it` follows `it` Adam steps
            opt.zero_grad(set_to_none=True)
            d = prob.soft_distance(z, cand_t, method, alpha)
            if not torch.isfinite(d):
                stop = "diverged"
                break
            val = float(d.detach())
            losses.append(val)
            if val < best:
                best, best_z = val, z.detach().clone()
            if it % config.report_every == 0 or it == config.iters:
                guess = decode(best_z)
                dd = prob.exact_distance(prob.ids_tensor(guess), method, alpha)
                snapshots.append((it, guess))
                decoded.append((it, dd))
                if observer is not None:
                    observer(TextStepReport(it, val, guess, "continuous", dd))
                # Early stop when the decoded tokens reproduce the gradient (no ground truth),
                # or when the decoded guess has not changed for `patience` steps.
                if is_exact():
                    stop = "exact_gradient_match"
                    break
                if guess != last_guess:
                    last_guess, changed_at = guess, it
                if config.patience and it - changed_at >= config.patience:
                    stop = "plateau"
                    break
            if it == config.iters:
                break
            (zg,) = torch.autograd.grad(d, [z])
            z.grad = zg
            opt.step()
            sched.step()
            iterations = it + 1

    # Stage 3: decode, then refine on the exact gradient distance.
    current = decode(best_z)
    tokens = [current[b][p] for b, p in prob.positions]
    dist = prob.exact_distance(prob.ids_tensor(current), method, alpha)
    exact = is_exact()
    passes = 0
    refine_losses: list[float] = []
    if exact:
        stop = "exact_gradient_match"

    def evaluate(candidate: list[int]) -> float:
        return prob.exact_distance(prob.ids_tensor(prob.assemble(candidate)), method, alpha)

    while passes < config.refine_passes and not exact:
        passes += 1
        improved = False
        for moves in _move_families(prob.positions, prob.lengths, cand):
            for move in moves:
                candidate = move(tokens)
                if candidate is None or candidate == tokens:
                    continue
                d_move = evaluate(candidate)
                if d_move < dist:
                    tokens, dist, improved = candidate, d_move, True
                    exact = is_exact()
                    if exact:
                        break
            if improved:  # cheaper families first; costlier ones only when these are stuck
                break
        current = prob.assemble(tokens)
        refine_losses.append(dist)
        snapshots.append((iterations + passes, current))
        decoded.append((iterations + passes, dist))
        if observer is not None:
            observer(TextStepReport(iterations + passes, dist, current, "refine", dist))
        if exact:
            stop = "exact_gradient_match"
        elif not improved:
            stop = "refine_converged"
            break
        elif passes == config.refine_passes:
            stop = "max_refine_passes"
    prob.exact_distance(prob.ids_tensor(prob.assemble(tokens)), method, alpha)
    final_rel = prob.last_relative_l2
    return TextAttackResult(
        token_ids=prob.assemble(tokens),
        losses=losses,
        refine_losses=refine_losses,
        decoded_distances=decoded,
        iterations=iterations,
        refine_passes=passes,
        seconds=time.perf_counter() - start,
        candidate_ids=cand if source != "vocabulary" else [],
        leaked_counts=dict(counts),
        token_set_source=source,
        final_distance=dist,
        final_relative_l2=final_rel,
        stop_reason=stop,
        snapshots=snapshots,
    )
