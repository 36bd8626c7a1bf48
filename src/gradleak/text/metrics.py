"""Scores of a text reconstruction against the private sentences (runner side only).

Definitions (tokens are the model's WordPiece tokens without ``[CLS]``/``[SEP]``/padding):

* ``token_accuracy``: fraction of reference tokens matched by an optimal order-preserving
  one-to-one alignment with the recovered tokens, i.e. ``|LCS(reference, recovered)| /
  |reference|``, summed over the batch before dividing. A recovered sentence that is right but
  shifted by one position still scores high; a bag of the right tokens in the wrong order
  does not. In a batch, recovered sentences are first paired with the references by the
  assignment that maximises the total LCS, because the batch gradient does not depend on the
  order of the sentences.
* ``positional_accuracy``: fraction of reference tokens equal to the recovered token at the
  same position (after the same pairing), the stricter per-position score.
* ``exact_match``: fraction of sentences recovered token for token.
* ``rouge1``/``rouge2``/``rougeL``: F-measures from Google's ``rouge-score`` package on the
  decoded texts, averaged over sentences (as in TAG and LAMP).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from gradleak.errors import GradleakError


def lcs_length(a: list[Any], b: list[Any]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b``.

    Example:
        >>> lcs_length([1, 2, 3, 4], [2, 1, 3, 4])
        3
    """
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def pair_sentences(refs: list[list[int]], recs: list[list[int]]) -> list[int]:
    """``order[i]``: the index of the recovered sentence paired with reference ``i``."""
    n = len(refs)
    if n != len(recs):
        raise ValueError("references and recoveries differ in number")
    score = np.array([[lcs_length(r, h) for h in recs] for r in refs], dtype=float)
    rows, cols = linear_sum_assignment(-score)
    order = [0] * n
    for r, c in zip(rows, cols):
        order[int(r)] = int(c)
    return order


@dataclass
class TextScores:
    token_accuracy: float
    positional_accuracy: float
    exact_match: float
    rouge1: float
    rouge2: float
    rougeL: float
    order: list[int]  # pairing of references to recovered sentences

    def as_dict(self) -> dict[str, float]:
        return {
            "token_accuracy": self.token_accuracy,
            "positional_accuracy": self.positional_accuracy,
            "exact_match": self.exact_match,
            "rouge1": self.rouge1,
            "rouge2": self.rouge2,
            "rougeL": self.rougeL,
        }


def token_accuracy(refs: list[list[int]], recs: list[list[int]]) -> float:
    """``token_accuracy`` alone (cheap enough to call every few attack steps).

    Example:
        >>> token_accuracy([[5, 6, 7, 8]], [[5, 7, 6, 8]])
        0.75
    """
    order = pair_sentences(refs, recs)
    total = sum(len(r) for r in refs) or 1
    return sum(lcs_length(r, recs[order[i]]) for i, r in enumerate(refs)) / total


def _rouge(ref_texts: list[str], rec_texts: list[str]) -> tuple[float, float, float]:
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise GradleakError(
            "text leakage needs the optional extra: pip install 'gradleak[text]'"
        ) from None
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    sums = [0.0, 0.0, 0.0]
    for ref, rec in zip(ref_texts, rec_texts):
        s = scorer.score(ref, rec)
        for k, key in enumerate(("rouge1", "rouge2", "rougeL")):
            sums[k] += float(s[key].fmeasure)
    n = max(1, len(ref_texts))
    return sums[0] / n, sums[1] / n, sums[2] / n


def score_text(
    refs: list[list[int]], recs: list[list[int]], ref_texts: list[str], rec_texts: list[str]
) -> TextScores:
    """All scores; ``refs``/``recs`` are content token ids, ``*_texts`` their decoded text."""
    order = pair_sentences(refs, recs)
    total = sum(len(r) for r in refs) or 1
    lcs = sum(lcs_length(r, recs[order[i]]) for i, r in enumerate(refs))
    pos = sum(
        sum(x == y for x, y in zip(r, recs[order[i]])) for i, r in enumerate(refs)
    )
    exact = sum(r == recs[order[i]] for i, r in enumerate(refs)) / max(1, len(refs))
    r1, r2, rl = _rouge(ref_texts, [rec_texts[order[i]] for i in range(len(refs))])
    return TextScores(
        token_accuracy=lcs / total,
        positional_accuracy=pos / total,
        exact_match=exact,
        rouge1=r1,
        rouge2=r2,
        rougeL=rl,
        order=order,
    )
