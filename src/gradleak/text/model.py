"""Masked-LM models for text leakage: small random BERTs built offline, or any Hub model.

Built-in names (no download, seeded initialisation, the offline tokenizer of
:mod:`gradleak.text.tokenizer`): ``tiny-bert-2l`` (default), ``tiny-bert-4l``, ``tiny-bert-6l``
— ``transformers``' ``BertForMaskedLM`` with hidden size 128, 4 heads, feed-forward 256,
64 positions, tied input/output word embeddings (as in BERT). Any other name is passed to
``transformers``' ``AutoTokenizer``/``AutoModelForMaskedLM.from_pretrained`` (a Hub name such as
``bert-base-uncased`` or a local directory).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from gradleak.errors import GradleakError
from gradleak.registry import Registry
from gradleak.text.tokenizer import TextTokenizer, builtin_tokenizer

if TYPE_CHECKING:
    import torch

INSTALL_HINT = "text leakage needs the optional extra: pip install 'gradleak[text]'"


@dataclass(frozen=True)
class TinyBertSpec:
    layers: int
    hidden: int = 128
    heads: int = 4
    intermediate: int = 256
    max_positions: int = 64


BUILTIN_MODELS: Registry[TinyBertSpec] = Registry("text model")
BUILTIN_MODELS.register("tiny-bert-2l", TinyBertSpec(layers=2))
BUILTIN_MODELS.register("tiny-bert-4l", TinyBertSpec(layers=4))
BUILTIN_MODELS.register("tiny-bert-6l", TinyBertSpec(layers=6))
DEFAULT_MODEL = "tiny-bert-2l"


@dataclass
class TextModel:
    """A masked-LM model together with its tokenizer.

    Attributes:
        model: a ``transformers`` masked-LM model in eval mode (dropout off, so the client's
            gradient is a deterministic function of the sentence, as in DLG/TAG's experiments).
        tokenizer: its tokenizer.
        name: the name it was loaded by.
        max_length: the longest token sequence (with special tokens) the model accepts.
    """

    model: Any
    tokenizer: TextTokenizer
    name: str
    max_length: int


def require_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise GradleakError(INSTALL_HINT) from None
    return transformers


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint answers a TCP connect within ``timeout`` seconds."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_env() -> bool:
    return any(
        os.environ.get(k, "").strip().lower() in {"1", "true", "yes", "on"}
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def load_text_model(
    name: str = DEFAULT_MODEL,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    offline: bool | None = None,
) -> TextModel:
    """Load ``name``: a built-in tiny BERT (seeded by ``seed``) or a Hub model / local path.

    ``offline=None`` probes the Hub (3 s connect timeout) and, when it is unreachable, looks only
    in the local cache, so an unknown name fails in seconds rather than after minutes of retries.

    Example:
        >>> tm = load_text_model("tiny-bert-2l", seed=0)
        >>> tm.model.config.num_hidden_layers, tm.max_length
        (2, 64)
    """
    transformers = require_transformers()
    try:  # gradleak shows its own progress; transformers' download/loading bars are noise here
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:  # pragma: no cover - very old transformers
        pass
    if not name or not name.strip():
        raise GradleakError(
            f"--model is empty: pass a built-in name ({', '.join(BUILTIN_MODELS.names())}) "
            "or a Hugging Face model name"
        )
    if name in BUILTIN_MODELS:
        spec = BUILTIN_MODELS.get(name)
        tokenizer = builtin_tokenizer(model_max_length=spec.max_positions)
        config = transformers.BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=spec.hidden,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            intermediate_size=spec.intermediate,
            max_position_embeddings=spec.max_positions,
            pad_token_id=tokenizer.special_ids["pad"],
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            tie_word_embeddings=True,
        )
        config._attn_implementation = "eager"  # double backward through attention, any version
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = transformers.BertForMaskedLM(config)
        model.eval()
        return TextModel(
            model=model.to(device), tokenizer=tokenizer, name=name, max_length=spec.max_positions
        )
    return _load_hub_model(transformers, name, device=device, offline=offline)


def _load_hub_model(
    transformers: Any, name: str, *, device: str | torch.device, offline: bool | None
) -> TextModel:
    if offline is None:
        offline = Path(name).is_dir() or _offline_env() or not _hub_reachable()
    builtin = ", ".join(BUILTIN_MODELS.names())
    try:
        hf_tok = transformers.AutoTokenizer.from_pretrained(name, local_files_only=offline)
        model = transformers.AutoModelForMaskedLM.from_pretrained(
            name, local_files_only=offline, attn_implementation="eager"
        )
    except ImportError:
        raise
    except Exception as e:  # noqa: BLE001 -- OSError, HFValidationError, ValueError (non-MLM), …
        first = " ".join(str(e).split()).split(". ")[0][:200]
        if Path(name).is_dir():
            why = f"that folder holds no loadable masked-LM model ({type(e).__name__}: {first})"
            fix = "point --model at a save_pretrained() folder or pick a built-in model"
        elif offline:
            why = (
                "not in the local Hugging Face cache (offline: the Hub is unreachable, or "
                "--offline / HF_HUB_OFFLINE is set)"
            )
            fix = "pick a built-in model, or go online to download it"
        else:
            why = f"not loadable from the Hugging Face Hub ({type(e).__name__}: {first})"
            fix = "check the name (it must be a masked-LM model) or pick a built-in model"
        raise GradleakError(
            f"cannot load text model {name!r}: not a built-in name ({builtin}) and {why}; {fix}"
        ) from None
    model.eval()
    max_len = int(getattr(model.config, "max_position_embeddings", 0) or 512)
    tok_max = getattr(hf_tok, "model_max_length", max_len)
    if isinstance(tok_max, int) and 0 < tok_max < max_len:
        max_len = tok_max
    tokenizer = TextTokenizer(hf=hf_tok, name=name)
    tokenizer.special_ids  # noqa: B018 -- fail early on tokenizers without [CLS]/[SEP]/[PAD]
    return TextModel(model=model.to(device), tokenizer=tokenizer, name=name, max_length=max_len)
