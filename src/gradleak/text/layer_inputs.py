"""What the span attack needs to know about a model family: where the first two attention layers'
input projections are, and how to compute their inputs for candidate tokens, in float64.

The weight gradient of a linear map ``y = W x`` over a batch is ``Σₜ δₜ xₜᵀ``: its row space (in
``x``'s space) is spanned by the inputs ``xₜ`` that reached it. For the first two self-attention
blocks the span attack compares candidate inputs against that span, so each family declares:

* ``projection_gradient(model, tensors, layer)``: a ``(d, k)`` matrix whose columns span the
  inputs of the query/key/value projection of block ``layer`` (0 or 1);
* ``first_inputs(token_ids, positions)``: block 0's projection inputs for (token, position) pairs;
* ``second_inputs(ids, mask)``: block 1's projection inputs for whole token sequences;
* ``causal``: whether position ``t`` sees only tokens ``≤ t`` (decoders);
* ``extend(prefixes, candidates, dtype)`` (decoders): block 1's projection input at the next
  position for every prefix followed by every candidate token (``(K,)``; or ``(F, K)``: each
  prefix its own candidates), computing block 0 for that one
  new position only (the prefixes' keys and values are shared), the attack's inner loop;
* ``screen(prefixes, candidates, dtype)`` and ``screen_gradient(tensors)`` (decoders, optional):
  block 0's attention context (the input of its output projection) for every prefix + candidate,
  and the gradient whose columns span those contexts. The context already depends on the
  prefix, so it passes the same exact test as block 1's input, at a fraction of the cost (no
  output projection, no MLP): the decoder screens every candidate with it and confirms only the
  few that pass on block 1;
* ``at_position(seqs, t, candidates, dtype)`` (encoders): block 1's projection input at position
  ``t`` of every sequence with every candidate token placed at ``t`` (the other positions as
  given; id ``-1`` = not yet known, a zero word embedding), block 0 computed for position ``t``
  only: the encoder search's inner loop.

Families register themselves under ``transformers``' ``model_type`` (``gpt2``, ``bert``). The
float64 copy holds only the embeddings and block 0 (a few million parameters even at GPT-2 small's
shapes), so the 100M-parameter model itself stays in float32.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from gradleak.errors import GradleakError
from gradleak.registry import Registry


def parameter_index(model: Any) -> dict[str, int]:
    """Position of each named parameter in ``model.parameters()`` (the update's tensor order)."""
    return {name: i for i, (name, _) in enumerate(model.named_parameters())}


@dataclass
class LayerInputs:
    """A model's first two attention layers, seen as the span attack needs them."""

    projection_gradient: Callable[[tuple[torch.Tensor, ...], int], torch.Tensor]
    first_inputs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    second_inputs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    causal: bool
    width: int
    extend: Callable[[torch.Tensor, torch.Tensor, torch.dtype], torch.Tensor] | None = None
    at_position: Callable[[torch.Tensor, int, torch.Tensor, torch.dtype], torch.Tensor] | None = None
    screen: Callable[[torch.Tensor, torch.Tensor, torch.dtype], torch.Tensor] | None = None
    screen_gradient: Callable[[tuple[torch.Tensor, ...]], torch.Tensor] | None = None


LAYER_INPUTS: Registry[Callable[[Any], LayerInputs]] = Registry("span-attack model family")


def layer_inputs(model: Any) -> LayerInputs:
    """The :class:`LayerInputs` of ``model``, or one line naming the families that have one."""
    model_type = str(getattr(model.config, "model_type", ""))
    if model_type not in LAYER_INPUTS:
        raise GradleakError(
            f"the span attack knows no {model_type!r} model: it supports "
            f"{', '.join(LAYER_INPUTS.names())}; use --attack tag"
        )
    if int(getattr(model.config, "num_hidden_layers", 0) or getattr(model.config, "n_layer", 0)) < 2:
        raise GradleakError("the span attack needs a model with at least 2 layers: use --attack tag")
    return LAYER_INPUTS.get(model_type)(model)


def _gpt2(model: Any) -> LayerInputs:
    import transformers

    index = parameter_index(model)
    core = model.transformer
    config = copy.deepcopy(core.config)
    config.n_layer = 1
    config._attn_implementation = "eager"
    # Embeddings + block 0 in float64; its final LayerNorm is block 1's ln_1, so the output is
    # exactly the input of block 1's c_attn.
    small = transformers.GPT2Model(config).double().eval()
    small.wte.weight.data.copy_(core.wte.weight.data)
    small.wpe.weight.data.copy_(core.wpe.weight.data)
    small.h[0].load_state_dict(core.h[0].state_dict())
    small.ln_f.load_state_dict(core.h[1].ln_1.state_dict())
    small.to(core.wte.weight.device)
    for p in small.parameters():
        p.requires_grad_(False)

    def projection_gradient(tensors: tuple[torch.Tensor, ...], layer: int) -> torch.Tensor:
        # Conv1D: y = x W + b with W (d, 3d); dL/dW = Σ xₜ δₜᵀ, columns span nothing, rows do.
        return tensors[index[f"transformer.h.{layer}.attn.c_attn.weight"]].double()

    def first_inputs(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return small.h[0].ln_1(small.wte.weight[tokens] + small.wpe.weight[positions])

    def second_inputs(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return small(input_ids=ids, attention_mask=mask).last_hidden_state

    copies = {torch.float64: small}

    def in_dtype(dtype: torch.dtype) -> Any:
        if dtype not in copies:  # float32 for the bulk: 2x faster, its rounding stays far below the threshold
            copies[dtype] = copy.deepcopy(small).to(dtype)
        return copies[dtype]

    def extend(prefixes: torch.Tensor, candidates: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return _gpt2_extend(in_dtype(dtype), prefixes, candidates)

    def screen(prefixes: torch.Tensor, candidates: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return _gpt2_context(in_dtype(dtype), prefixes, candidates)[0]

    def screen_gradient(tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return tensors[index["transformer.h.0.attn.c_proj.weight"]].double()

    return LayerInputs(projection_gradient, first_inputs, second_inputs, True, config.n_embd, extend,
                       screen=screen, screen_gradient=screen_gradient)


def _gpt2_context(small: Any, prefixes: torch.Tensor, candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(F, K, d)`` block-0 attention context at position ``t`` for prefix ``f`` (``(F, t)`` ids)
    + token ``k``, and the new position's residual input ``(F, K, d)``. ``candidates`` is ``(K,)``
    (every prefix with every candidate) or ``(F, K)`` (each prefix with its own candidates)."""
    block = small.h[0]
    heads = small.config.n_head
    f_count, t = prefixes.shape
    d = small.config.n_embd
    dh = d // heads
    with torch.no_grad():
        h_prefix = small.wte.weight[prefixes] + small.wpe.weight[:t]
        _, k_pre, v_pre = block.attn.c_attn(block.ln_1(h_prefix)).split(d, dim=-1)
        k_pre = k_pre.reshape(f_count, t, heads, dh)
        v_pre = v_pre.reshape(f_count, t, heads, dh)
        h_new = small.wte.weight[candidates] + small.wpe.weight[t]  # (K, d) or (F, K, d)
        q, k, v = block.attn.c_attn(block.ln_1(h_new)).split(d, dim=-1)
        shape = (f_count, candidates.shape[-1], heads, dh)  # a shared candidate list is a free view
        q, k, v = (z.reshape(*z.shape[:-1], heads, dh).expand(shape) for z in (q, k, v))
        scale = 1.0 / math.sqrt(dh)
        s_pre = torch.einsum("fkhd,fthd->fkht", q, k_pre) * scale
        s_self = (q * k).sum(-1, keepdim=True) * scale
        a = torch.cat([s_pre, s_self], dim=-1).softmax(-1)
        out = torch.einsum("fkht,fthd->fkhd", a[..., :t], v_pre) + a[..., t:] * v
        return out.reshape(f_count, -1, d), h_new.expand(f_count, -1, -1)


def _gpt2_extend(small: Any, prefixes: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``(F, K, d)``: block 1's input at position ``t`` for prefix ``f`` (``(F, t)`` ids) + token ``k``
    (``candidates`` ``(K,)`` shared, or ``(F, K)`` per prefix).

    GPT-2's block 0 written out for one new position (pre-LayerNorm, scaled dot-product
    attention, causal, eager); ``tests/text`` checks it against ``transformers``' own forward.
    """
    block = small.h[0]
    context, h_new = _gpt2_context(small, prefixes, candidates)
    with torch.no_grad():
        h = h_new + block.attn.c_proj(context)
        h = h + block.mlp(block.ln_2(h))
        return small.ln_f(h)


def _bert(model: Any) -> LayerInputs:
    import transformers

    index = parameter_index(model)
    prefix = model.base_model_prefix  # "bert"
    core = getattr(model, prefix)
    config = copy.deepcopy(core.config)
    config.num_hidden_layers = 1
    config._attn_implementation = "eager"
    small = transformers.BertModel(config, add_pooling_layer=False).double().eval()
    small.embeddings.load_state_dict(core.embeddings.state_dict())
    small.encoder.layer[0].load_state_dict(core.encoder.layer[0].state_dict())
    small.to(core.embeddings.word_embeddings.weight.device)
    for p in small.parameters():
        p.requires_grad_(False)
    emb = small.embeddings

    def projection_gradient(tensors: tuple[torch.Tensor, ...], layer: int) -> torch.Tensor:
        # Linear: y = W x with W (out, d); dL/dW = Σ δₜ xₜᵀ; stack q, k, v and transpose.
        base = f"{prefix}.encoder.layer.{layer}.attention.self."
        parts = [tensors[index[base + f"{p}.weight"]] for p in ("query", "key", "value")]
        return torch.cat(parts, 0).double().T

    def first_inputs(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = (emb.word_embeddings.weight[tokens] + emb.position_embeddings.weight[positions]
                 + emb.token_type_embeddings.weight[0])
            return emb.LayerNorm(x)

    def second_inputs(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return small(input_ids=ids, attention_mask=mask).last_hidden_state

    copies = {torch.float64: small}

    def at_position(seqs: torch.Tensor, t: int, candidates: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if dtype not in copies:  # float32 ranks candidates; acceptance is re-checked in float64
            copies[dtype] = copy.deepcopy(small).to(dtype)
        return _bert_at_position(copies[dtype], seqs, t, candidates)

    return LayerInputs(projection_gradient, first_inputs, second_inputs, False, config.hidden_size,
                       at_position=at_position)


def _bert_at_position(small: Any, seqs: torch.Tensor, t: int, candidates: torch.Tensor) -> torch.Tensor:
    """``(F, K, d)``: block 1's input at position ``t`` of sequence ``f`` (``(F, n)`` ids, ``-1`` =
    unknown) with token ``k`` at ``t``.

    BERT's layer 0 written out for one position (post-LayerNorm, bidirectional, eager): the other
    positions' keys and values are computed once per sequence and shared by all candidates;
    ``tests/text`` checks it against ``transformers``' own forward.
    """
    emb = small.embeddings
    layer = small.encoder.layer[0]
    sa = layer.attention.self
    heads, dh = sa.num_attention_heads, sa.attention_head_size
    f_count, n = seqs.shape
    words = emb.word_embeddings.weight
    offset = emb.position_embeddings.weight[:n] + emb.token_type_embeddings.weight[0]
    with torch.no_grad():
        known = (seqs >= 0).unsqueeze(-1)
        x = emb.LayerNorm(torch.where(known, words[seqs.clamp_min(0)], 0.0) + offset)  # (F, n, d)
        k_seq = sa.key(x).reshape(f_count, n, heads, dh)
        v_seq = sa.value(x).reshape(f_count, n, heads, dh)
        x_new = emb.LayerNorm(words[candidates] + offset[t])  # (K, d)
        q, k, v = (lin(x_new).reshape(-1, heads, dh) for lin in (sa.query, sa.key, sa.value))
        scores = torch.einsum("khd,fjhd->fkhj", q, k_seq) * sa.scaling
        scores[..., t] = (q * k).sum(-1)[None] * sa.scaling
        a = scores.softmax(-1)
        own = a[..., t : t + 1].clone()
        a[..., t] = 0.0
        context = torch.einsum("fkhj,fjhd->fkhd", a, v_seq) + own * v[None]
        out = layer.attention.output
        h = out.LayerNorm(out.dense(context.reshape(f_count, -1, heads * dh)) + x_new[None])
        return layer.output.LayerNorm(layer.output.dense(layer.intermediate(h)) + h)


LAYER_INPUTS.register("gpt2", _gpt2)
LAYER_INPUTS.register("bert", _bert)
