"""The offline WordPiece tokenizer, and one interface over it and any Hugging Face tokenizer.

Why not ``tokenizers``' own trainer: its WordPiece/BPE trainer breaks ties between equally
frequent pairs in Rust hash-map order, which is randomised per process, so two trainings on the
same text give different vocabularies (measured: 5 runs, 4 different vocab sizes). A tokenizer
that changes between runs would make results irreproducible, so the vocabulary is built here by a
fixed rule from the corpus that ships with gradleak (:mod:`gradleak.text.corpus`), and the
tokenizer itself is the ``tokenizers`` library's real WordPiece model with BERT's normaliser
(lower-casing, accent stripping), pre-tokeniser, ``[CLS] … [SEP]`` template and decoder. Building
it takes a few milliseconds, so it is rebuilt in memory on every run: nothing is cached on disk.

Vocabulary rule (deterministic, order included):
    1. ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (ids 0–4, as in BERT's vocabulary);
    2. every printable ASCII letter, digit and punctuation mark, then the same with ``##``;
    3. every word of the corpus after BERT normalisation, most frequent first (ties: alphabetic);
    4. word-start pieces (2–6 characters) and ``##`` continuation pieces (2–5 characters) shared
       by at least two corpus words, most shared first (ties: alphabetic).
"""

from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from gradleak.errors import GradleakError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
ALPHABET = string.ascii_lowercase + string.digits + string.punctuation


def _require_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise GradleakError(
            "text leakage needs the optional extra: pip install 'gradleak[text]'"
        ) from None
    return tokenizers


@lru_cache(maxsize=1)
def build_vocab() -> tuple[str, ...]:
    """The offline WordPiece vocabulary, built by the fixed rule in the module docstring.

    Example:
        >>> vocab = build_vocab()
        >>> vocab[:5]
        ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')
        >>> 'fox' in vocab and '##s' in vocab
        True
    """
    tokenizers = _require_tokenizers()
    from gradleak.text.corpus import TEXT

    normalizer = tokenizers.normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    pre = tokenizers.pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for line in TEXT.splitlines():
        for word, _span in pre.pre_tokenize_str(normalizer.normalize_str(line)):
            words[word] += 1

    vocab: list[str] = list(SPECIAL_TOKENS)
    vocab += list(ALPHABET)
    vocab += ["##" + c for c in ALPHABET]
    seen = set(vocab)
    for word, _n in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
        if word not in seen:
            vocab.append(word)
            seen.add(word)
    prefixes: Counter[str] = Counter()
    suffixes: Counter[str] = Counter()
    for word in words:
        for k in range(2, min(6, len(word) - 1) + 1):
            prefixes[word[:k]] += 1
        for k in range(2, min(5, len(word) - 1) + 1):
            suffixes["##" + word[-k:]] += 1
    pieces = [(n, p) for p, n in prefixes.items() if n >= 2 and p not in seen]
    pieces += [(n, p) for p, n in suffixes.items() if n >= 2 and p not in seen]
    for _n, piece in sorted(pieces, key=lambda np_: (-np_[0], np_[1])):
        if piece not in seen:
            vocab.append(piece)
            seen.add(piece)
    return tuple(vocab)


@dataclass
class TextTokenizer:
    """A thin, uniform view of a Hugging Face tokenizer (built-in or from the Hub).

    Attributes:
        hf: the ``transformers`` tokenizer.
        name: where it came from (``"gradleak-wordpiece"`` or a Hub name/path).
    """

    hf: Any
    name: str

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    @property
    def special_ids(self) -> dict[str, int]:
        """Ids of the structural tokens an attacker knows from the public model format."""
        hf = self.hf
        ids = {"cls": hf.cls_token_id, "sep": hf.sep_token_id, "pad": hf.pad_token_id}
        if any(v is None for v in ids.values()):
            missing = ", ".join(k for k, v in ids.items() if v is None)
            raise GradleakError(
                f"tokenizer {self.name!r} has no {missing} token: use a BERT-style masked-LM model"
            )
        return {k: int(v) for k, v in ids.items()}

    def encode(self, sentence: str) -> list[int]:
        """Token ids of one sentence, with ``[CLS]`` and ``[SEP]``."""
        # verbose=False: the length check is ours (a one-line error), not a transformers warning
        return list(self.hf(sentence, add_special_tokens=True, verbose=False)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids`` without special tokens."""
        return str(self.hf.decode(list(ids), skip_special_tokens=True)).strip()

    def tokens(self, ids: list[int]) -> list[str]:
        return [str(t) for t in self.hf.convert_ids_to_tokens(list(ids))]


def builtin_tokenizer(model_max_length: int = 64) -> TextTokenizer:
    """The offline WordPiece tokenizer (see the module docstring), wrapped for ``transformers``.

    Example:
        >>> tok = builtin_tokenizer()
        >>> tok.decode(tok.encode("The quick brown fox."))
        'the quick brown fox.'
    """
    tokenizers = _require_tokenizers()
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        raise GradleakError(
            "text leakage needs the optional extra: pip install 'gradleak[text]'"
        ) from None

    vocab = {tok: i for i, tok in enumerate(build_vocab())}
    tk = tokenizers.Tokenizer(
        tokenizers.models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100)
    )
    tk.normalizer = tokenizers.normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    tk.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    tk.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tk.decoder = tokenizers.decoders.WordPiece(prefix="##", cleanup=True)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=True,  # "don ' t" -> "don't", as BERT's tokenizer does
    )
    return TextTokenizer(hf=hf, name="gradleak-wordpiece")
