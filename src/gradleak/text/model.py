"""Language models for text leakage: random-init models built offline, or any Hub model.

Built-in names (no download, seeded initialisation, the offline tokenizer of
:mod:`gradleak.text.tokenizer`, tied input/output word embeddings):

* masked LM (``transformers``' ``BertForMaskedLM``): ``tiny-bert-2l`` (default), ``tiny-bert-4l``,
  ``tiny-bert-6l`` (hidden 128, 4 heads, feed-forward 256, 64 positions) and ``bert-base``
  (BERT-base's shapes: 12 layers, 768 wide, 12 heads, feed-forward 3072, 512 positions);
* causal LM (``GPT2LMHeadModel``, next-token loss): ``tiny-gpt2-2l`` (2 layers, 256 wide, 4
  heads, 64 positions) and ``gpt2-base`` (GPT-2 small's shapes: 12 layers, 768 wide, 12 heads,
  1024 positions).

The vocabulary is the offline one (1,794 tokens), so ``gpt2-base`` has GPT-2 small's blocks
(85M parameters) but a smaller embedding table than GPT-2's 50,257 tokens. Any other name is a
Hub name or a local ``save_pretrained`` folder, loaded with ``trust_remote_code=False``; a model
whose ``config.json`` asks for custom code (``auto_map``) is refused before anything runs.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from gradleak.errors import GradleakError
from gradleak.registry import Registry
from gradleak.text.tokenizer import TextTokenizer, builtin_tokenizer

if TYPE_CHECKING:
    import torch

INSTALL_HINT = "text leakage needs the optional extra: pip install 'gradleak[text]'"


Objective = Literal["masked", "causal"]


@dataclass(frozen=True)
class BuiltinSpec:
    """Shapes of a built-in random-init model; ``objective`` picks BERT (masked) or GPT-2 (causal)."""

    layers: int
    hidden: int = 128
    heads: int = 4
    intermediate: int = 256
    max_positions: int = 64
    objective: Objective = "masked"


BUILTIN_MODELS: Registry[BuiltinSpec] = Registry("text model")
BUILTIN_MODELS.register("tiny-bert-2l", BuiltinSpec(layers=2))
BUILTIN_MODELS.register("tiny-bert-4l", BuiltinSpec(layers=4))
BUILTIN_MODELS.register("tiny-bert-6l", BuiltinSpec(layers=6))
BUILTIN_MODELS.register(
    "tiny-gpt2-2l", BuiltinSpec(layers=2, hidden=256, intermediate=1024, objective="causal")
)
BUILTIN_MODELS.register(
    "bert-base",
    BuiltinSpec(layers=12, hidden=768, heads=12, intermediate=3072, max_positions=512),
)
BUILTIN_MODELS.register(
    "gpt2-base",
    BuiltinSpec(
        layers=12, hidden=768, heads=12, intermediate=3072, max_positions=1024, objective="causal"
    ),
)
DEFAULT_MODEL = "tiny-bert-2l"


@dataclass
class TextModel:
    """A language model together with its tokenizer.

    Attributes:
        model: a ``transformers`` masked-LM or causal-LM model in eval mode (dropout off, so the
            client's gradient is a deterministic function of the sentences, as in DLG/TAG).
        tokenizer: its tokenizer.
        name: the name it was loaded by.
        max_length: the longest token sequence (with special tokens) the model accepts.
        objective: ``"masked"`` (labels are the inputs) or ``"causal"`` (next-token loss).
    """

    model: Any
    tokenizer: TextTokenizer
    name: str
    max_length: int
    objective: Objective = "masked"


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
        model = _build_builtin(transformers, spec, tokenizer, seed)
        return TextModel(
            model=model.to(device), tokenizer=tokenizer, name=name,
            max_length=spec.max_positions, objective=spec.objective,
        )
    return _load_hub_model(transformers, name, device=device, offline=offline)


def _build_builtin(transformers: Any, spec: BuiltinSpec, tokenizer: TextTokenizer, seed: int) -> Any:
    """A seeded random-init model of ``spec``'s shapes (dropout off, eager attention)."""
    import torch

    pad = tokenizer.special_ids["pad"]
    if spec.objective == "causal":
        config = transformers.GPT2Config(
            vocab_size=tokenizer.vocab_size, n_embd=spec.hidden, n_layer=spec.layers,
            n_head=spec.heads, n_inner=spec.intermediate, n_positions=spec.max_positions,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=pad,
            bos_token_id=tokenizer.special_ids["cls"], eos_token_id=tokenizer.special_ids["sep"],
            tie_word_embeddings=True,
        )
        model_class = transformers.GPT2LMHeadModel
    else:
        config = transformers.BertConfig(
            vocab_size=tokenizer.vocab_size, hidden_size=spec.hidden,
            num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
            intermediate_size=spec.intermediate, max_position_embeddings=spec.max_positions,
            pad_token_id=pad, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            tie_word_embeddings=True,
        )
        model_class = transformers.BertForMaskedLM
    config._attn_implementation = "eager"  # double backward through attention, any version
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.eval()
    return model


def refuse_remote_code(name: str) -> None:
    """One line instead of running (or prompting to run) custom code a model folder asks for.

    Example:
        >>> refuse_remote_code("tiny-bert-2l")  # not a folder: nothing to check here
    """
    config_path = Path(name) / "config.json"
    if not config_path.is_file():
        return
    import json

    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GradleakError(f"cannot read {config_path}: {e}; fix or remove it") from None
    if isinstance(config, dict) and config.get("auto_map"):
        raise GradleakError(
            f"model folder {name} asks to run its own Python code (auto_map in config.json), "
            "which gradleak never does: use a model built from transformers' own classes"
        )


def _load_hub_model(
    transformers: Any, name: str, *, device: str | torch.device, offline: bool | None
) -> TextModel:
    if offline is None:
        offline = Path(name).is_dir() or _offline_env() or not _hub_reachable()
    builtin = ", ".join(BUILTIN_MODELS.names())
    refuse_remote_code(name)
    objective: Objective = "masked"
    try:
        config = transformers.AutoConfig.from_pretrained(
            name, local_files_only=offline, trust_remote_code=False
        )
        if getattr(config, "auto_map", None):  # a Hub repo asking for its own code
            raise GradleakError(
                f"model {name!r} asks to run its own Python code (auto_map in its config), "
                "which gradleak never does: use a model built from transformers' own classes"
            )
        architectures = " ".join(getattr(config, "architectures", None) or [])
        if "CausalLM" in architectures or "LMHeadModel" in architectures:
            objective = "causal"
        auto_class = (
            transformers.AutoModelForCausalLM if objective == "causal"
            else transformers.AutoModelForMaskedLM
        )
        hf_tok = transformers.AutoTokenizer.from_pretrained(
            name, local_files_only=offline, trust_remote_code=False
        )
        model = auto_class.from_pretrained(
            name, local_files_only=offline, attn_implementation="eager", trust_remote_code=False
        )
    except (ImportError, GradleakError):
        raise
    except Exception as e:  # noqa: BLE001 -- OSError, HFValidationError, ValueError (non-MLM), …
        first = " ".join(str(e).split()).split(". ")[0][:200]
        if Path(name).is_dir():
            why = f"that folder holds no loadable masked-LM or causal-LM model ({type(e).__name__}: {first})"
            fix = "point --model at a save_pretrained() folder or pick a built-in model"
        elif offline:
            why = (
                "not in the local Hugging Face cache (offline: the Hub is unreachable, or "
                "--offline / HF_HUB_OFFLINE is set)"
            )
            fix = "pick a built-in model, or go online to download it"
        else:
            why = f"not loadable from the Hugging Face Hub ({type(e).__name__}: {first})"
            fix = "check the name (it must be a masked-LM or causal-LM model) or pick a built-in model"
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
    return TextModel(
        model=model.to(device), tokenizer=tokenizer, name=name, max_length=max_len,
        objective=objective,
    )
