"""Gemma 3n (gemma3n_text; the gemma3n multimodal wrapper's text_config): Gemma 3 attention (q/k norms,
a scale-free v_norm, sliding layers but every fifth) with

* per-layer inputs: a second embedding table `embed_tokens_per_layer` (vocab_size_per_layer_input x
  num_hidden_layers * hidden_size_per_layer_input; billions of parameters at full size), projected
  from the hidden state by per_layer_model_projection and fed to each layer's per_layer_input_gate /
  per_layer_projection;
* AltUp (altup_num_inputs copies of the hidden state: altup_projections / altup_unembed_projections
  and each layer's correction/prediction coefficients, modality router and its norm) and a LAuReL
  low-rank residual (laurel_rank) in every layer;
* KV sharing: the last num_kv_shared_layers layers have no k_proj / v_proj / k_norm and no cache of
  their own (they read the last earlier layer of their attention type: Gemma3nTextConfig.kv_sharing_modes);
* a per-layer MLP width (intermediate_size may be a list).

Module names are those of Gemma3nTextModel / Gemma3nTextDecoderLayer (transformers 5.25). The tensors
without a component of their own (AltUp, LAuReL, the per-layer input projections) are "other".
"""

from __future__ import annotations

from sizer.config import ConfigView
from sizer.errors import UnsupportedModelError
from sizer.families.common import TensorList, as_ranges, gated_mlp, make_spec
from sizer.spec import FULL_ATTENTION, SHARED_KV, SLIDING_ATTENTION, KVGeometry, ModelSpec


def shared_kv_layer_types(c: ConfigView, types: tuple[str, ...], n_shared: int) -> tuple[str, ...]:
    """The last `n_shared` layers read an earlier layer's cache (SHARED_KV); each attention type they use
    must have a producer before them, as Gemma3nTextConfig / Gemma4TextConfig.kv_sharing_modes require."""
    if not n_shared:
        return types
    first = len(types) - n_shared
    if first > 0 and not set(types[first:]) <= set(types[:first]):
        raise UnsupportedModelError(f"{c.origin}: the KV-shared layers use an attention type no earlier layer caches")
    return tuple(SHARED_KV if i >= first else kind for i, kind in enumerate(types))


def gemma3n_text(c: ConfigView, name: str) -> ModelSpec:
    family = "gemma3n_text"
    hidden = c.int("hidden_size", default=2048)
    n_layers = c.int("num_hidden_layers", default=35)
    n_heads = c.int("num_attention_heads", default=8)
    n_kv = c.int("num_key_value_heads", default=2)
    head_dim = c.int("head_dim", default=256)
    vocab = c.int("vocab_size", default=262_400)
    vocab_pl = c.int("vocab_size_per_layer_input", default=262_144)
    per_layer = c.int("hidden_size_per_layer_input", default=256)
    n_altup = c.int("altup_num_inputs", default=4)
    laurel = c.int("laurel_rank", default=64)
    bias = c.bool("attention_bias", default=False)
    tied = c.bool("tie_word_embeddings", default=True)
    d_ff_raw = c.raw.get("intermediate_size", 16_384)
    d_ff = list(d_ff_raw) if isinstance(d_ff_raw, list) else [int(d_ff_raw)] * n_layers
    if len(d_ff) != n_layers:
        raise UnsupportedModelError(f"{c.origin}: intermediate_size has {len(d_ff)} entries for {n_layers} layers")
    given = c.str_list("layer_types", default=None)
    attention = tuple(SLIDING_ATTENTION if t == SLIDING_ATTENTION else FULL_ATTENTION for t in given) if given \
        else tuple(FULL_ATTENTION if (i + 1) % 5 == 0 else SLIDING_ATTENTION for i in range(n_layers))
    n_shared = c.int("num_kv_shared_layers", default=15, minimum=0)
    types = shared_kv_layer_types(c, attention, n_shared)
    own_kv = range(n_layers - n_shared)

    t = TensorList(n_layers)
    t.embedding("embed_tokens", "embeddings", vocab, hidden)
    t.embedding("embed_tokens_per_layer", "embeddings", vocab_pl, n_layers * per_layer)   # the per-layer inputs
    t.linear("per_layer_model_projection", "other", n_layers * per_layer, hidden, layers=None)
    t.norm("per_layer_projection_norm", per_layer, layers=None)
    for i in range(1, n_altup):
        t.linear(f"altup_projections.{i - 1}", "other", hidden, hidden, layers=None)
        t.linear(f"altup_unembed_projections.{i - 1}", "other", hidden, hidden, layers=None)
    t.linear("layers.self_attn.q_proj", "attention", n_heads * head_dim, hidden, bias)
    t.norm("layers.self_attn.q_norm", head_dim)
    if len(own_kv):
        t.linear("layers.self_attn.k_proj", "attention", n_kv * head_dim, hidden, bias, own_kv)
        t.linear("layers.self_attn.v_proj", "attention", n_kv * head_dim, hidden, bias, own_kv)
        t.norm("layers.self_attn.k_norm", head_dim, layers=own_kv)      # v_norm has no scale
    t.linear("layers.self_attn.o_proj", "attention", hidden, n_heads * head_dim, bias)
    for run in as_ranges(range(n_layers)) if len(set(d_ff)) == 1 else [range(i, i + 1) for i in range(n_layers)]:
        gated_mlp(t, "layers.mlp", "mlp", hidden, d_ff[run.start], False, run)
    for norm in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                 "post_feedforward_layernorm", "post_per_layer_input_norm"):
        t.norm(f"layers.{norm}", hidden)
    # AltUp (Gemma3nTextAltUp) and LAuReL (Gemma3nTextLaurelBlock)
    t.other("layers.altup.correct_output_scale", "other", (hidden,))
    t.linear("layers.altup.correction_coefs", "other", n_altup, n_altup)
    t.linear("layers.altup.prediction_coefs", "other", n_altup * n_altup, n_altup)
    t.linear("layers.altup.modality_router", "other", n_altup, hidden)
    t.norm("layers.altup.router_norm", hidden)
    t.linear("layers.laurel.linear_left", "other", laurel, hidden)
    t.linear("layers.laurel.linear_right", "other", hidden, laurel)
    t.norm("layers.laurel.post_laurel_norm", hidden)
    t.linear("layers.per_layer_input_gate", "other", per_layer, hidden)
    t.linear("layers.per_layer_projection", "other", hidden, per_layer)
    t.norm("norm", hidden, layers=None)
    t.lm_head(vocab, hidden, tied)
    table = vocab_pl * n_layers * per_layer
    notes = [f"per-layer embeddings (embed_tokens_per_layer): {table:,} of the embedding parameters"]
    if n_shared:
        notes.append(f"the last {n_shared} layers reuse earlier layers' keys and values (no cache of their own)")
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                     head_dim=head_dim, vocab_size=vocab, d_ff=max(d_ff), tied_embeddings=tied, layer_types=types,
                     sliding_window=c.int("sliding_window", default=512) if SLIDING_ATTENTION in types else None,
                     notes=notes)


def gemma4_text(c: ConfigView, name: str) -> ModelSpec:
    """Gemma 4 (gemma4_text; the gemma4 wrapper's text_config): Gemma 3 attention whose full-attention
    layers have their own head size (global_head_dim, default 512) and, with attention_k_eq_v, their own
    KV heads (num_global_key_value_heads) and no v_proj (the values are the keys, still cached apart);
    Gemma4TextConfig's per_layer_config holds those per-layer overrides when saved. Optional per-layer
    inputs (hidden_size_per_layer_input), KV sharing (num_kv_shared_layers; use_double_wide_mlp doubles
    their MLP) and a MoE block beside the MLP (enable_moe_block: Gemma4TextRouter, Gemma4TextExperts)."""
    family = "gemma4_text"
    hidden = c.int("hidden_size", default=2304)
    n_layers = c.int("num_hidden_layers", default=30)
    n_heads = c.int("num_attention_heads", default=8)
    n_kv = c.int("num_key_value_heads", default=4)
    head_dim = c.int("head_dim", default=256)
    vocab = c.int("vocab_size", default=262_144)
    bias = c.bool("attention_bias", default=False)
    tied = c.bool("tie_word_embeddings", default=True)
    d_ff = c.int("intermediate_size", default=9216)
    per_layer = c.int("hidden_size_per_layer_input", default=256, minimum=0)
    vocab_pl = c.int("vocab_size_per_layer_input", default=262_144)
    k_eq_v = c.bool("attention_k_eq_v", default=False)
    given = c.str_list("layer_types", default=None)
    attention = [SLIDING_ATTENTION if t == SLIDING_ATTENTION else FULL_ATTENTION for t in given] if given \
        else [SLIDING_ATTENTION if (i + 1) % 6 else FULL_ATTENTION for i in range(n_layers)]
    if attention:
        attention[-1] = FULL_ATTENTION             # Gemma4TextConfig forces the last layer to full attention
    n_shared = c.int("num_kv_shared_layers", default=0, minimum=0)
    if n_shared >= n_layers:
        raise UnsupportedModelError(f"{c.origin}: every layer shares another's KV cache")
    types = shared_kv_layer_types(c, tuple(attention), n_shared)
    geometry, by_kind = _gemma4_geometry(c, attention, head_dim, n_kv, k_eq_v)

    t = TensorList(n_layers)
    t.embedding("embed_tokens", "embeddings", vocab, hidden)
    if per_layer:
        t.embedding("embed_tokens_per_layer", "embeddings", vocab_pl, n_layers * per_layer)
        t.linear("per_layer_model_projection", "other", n_layers * per_layer, hidden, layers=None)
        t.norm("per_layer_projection_norm", per_layer, layers=None)
    own = n_layers - n_shared
    _gemma4_attention(t, geometry, attention, own, hidden, n_heads, bias, k_eq_v)
    double = c.bool("use_double_wide_mlp", default=False)
    for width, layers in _runs([d_ff * (2 if double and i >= own else 1) for i in range(n_layers)]):
        gated_mlp(t, "layers.mlp", "mlp", hidden, width, False, layers)
    for norm in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"):
        t.norm(f"layers.{norm}", hidden)
    if per_layer:
        t.linear("layers.per_layer_input_gate", "other", per_layer, hidden)
        t.linear("layers.per_layer_projection", "other", hidden, per_layer)
        t.norm("layers.post_per_layer_input_norm", hidden)
    n_experts, top_k, d_ff_expert = _gemma4_moe_block(c, t, hidden)
    t.norm("norm", hidden, layers=None)
    t.lm_head(vocab, hidden, tied)
    notes = []
    if per_layer:
        notes.append(f"per-layer embeddings (embed_tokens_per_layer): {vocab_pl * n_layers * per_layer:,} of the "
                     "embedding parameters")
    if n_shared:
        notes.append(f"the last {n_shared} layers reuse earlier layers' keys and values (no cache of their own)")
    sliding_g = next(iter(by_kind.get(SLIDING_ATTENTION, {(head_dim, n_kv)})))
    kinds = tuple((kind, KVGeometry(kv, dim, dim)) for kind, gs in sorted(by_kind.items())
                  for dim, kv in gs if (dim, kv) != sliding_g)
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads,
                     n_kv_heads=sliding_g[1], head_dim=sliding_g[0], vocab_size=vocab, d_ff=d_ff, tied_embeddings=tied,
                     layer_types=types, kv_geometry_by_kind=kinds,
                     sliding_window=c.int("sliding_window", default=512) if SLIDING_ATTENTION in types else None,
                     n_experts=n_experts, n_experts_active=top_k, d_ff_expert=d_ff_expert, notes=notes)


def _gemma4_geometry(c: ConfigView, attention: list[str], head_dim: int, n_kv: int,
                     k_eq_v: bool) -> tuple[list[tuple[int, int]], dict[str, set]]:
    """Per layer (head_dim, KV heads): the config's per_layer_config, else the full-attention layers'
    defaults (global_head_dim; num_global_key_value_heads with attention_k_eq_v); and the geometries of
    each attention type (one each, or the config is refused)."""
    overrides = c.raw.get("per_layer_config")
    if not isinstance(overrides, dict):
        global_kv = c.int("num_global_key_value_heads", default=None) if k_eq_v else None
        full = {"head_dim": c.int("global_head_dim", default=512)} | ({"num_key_value_heads": global_kv} if global_kv else {})
        overrides = {i: full for i, kind in enumerate(attention) if kind == FULL_ATTENTION}
    overrides = {int(i): o or {} for i, o in overrides.items()}
    geometry = [(overrides.get(i, {}).get("head_dim", head_dim), overrides.get(i, {}).get("num_key_value_heads", n_kv))
                for i in range(len(attention))]
    by_kind: dict[str, set] = {}
    for kind, g in zip(attention, geometry):
        by_kind.setdefault(kind, set()).add(g)
    if any(len(gs) > 1 for gs in by_kind.values()):
        raise UnsupportedModelError(f"{c.origin}: per_layer_config gives layers of one attention type different heads")
    return geometry, by_kind


def _gemma4_attention(t: TensorList, geometry: list[tuple[int, int]], attention: list[str], own: int, hidden: int,
                      n_heads: int, bias: bool, k_eq_v: bool) -> None:
    """q/o projections and q_norm per run of one geometry; k/v projections and k_norm only on the first
    `own` layers (the others share KV); attention_k_eq_v: no v_proj on full-attention layers."""
    for (dim, kv), layers in _runs(geometry):
        t.linear("layers.self_attn.q_proj", "attention", n_heads * dim, hidden, bias, layers)
        t.norm("layers.self_attn.q_norm", dim, layers=layers)
        t.linear("layers.self_attn.o_proj", "attention", hidden, n_heads * dim, bias, layers)
        for i in layers:
            if i >= own:
                continue
            one = range(i, i + 1)
            t.linear("layers.self_attn.k_proj", "attention", kv * dim, hidden, bias, one)
            t.norm("layers.self_attn.k_norm", dim, layers=one)
            if not (k_eq_v and attention[i] == FULL_ATTENTION):
                t.linear("layers.self_attn.v_proj", "attention", kv * dim, hidden, bias, one)


def _gemma4_moe_block(c: ConfigView, t: TensorList, hidden: int) -> tuple[int, int, int]:
    """The MoE block beside the MLP (enable_moe_block: Gemma4TextRouter, whose norm has no scale, and
    Gemma4TextExperts); (experts, experts per token, expert width), zeros without one."""
    if not c.bool("enable_moe_block", default=False):
        return 0, 0, 0
    n_experts, top_k = c.int("num_experts"), c.int("top_k_experts")
    d_ff_expert = c.int("moe_intermediate_size")
    t.linear("layers.router.proj", "router", n_experts, hidden)
    t.other("layers.router.scale", "router", (hidden,))
    t.other("layers.router.per_expert_scale", "router", (n_experts,))
    gated_mlp(t, "layers.experts", "experts", hidden, d_ff_expert, False, "all", n_experts, top_k)
    for norm in ("post_feedforward_layernorm_1", "post_feedforward_layernorm_2", "pre_feedforward_layernorm_2"):
        t.norm(f"layers.{norm}", hidden)
    return n_experts, top_k, d_ff_expert


def _runs(values: list) -> list[tuple[object, range]]:
    """(value, consecutive layers holding it)."""
    out: list[tuple[object, range]] = []
    for i, v in enumerate(values):
        if out and out[-1][0] == v and out[-1][1].stop == i:
            out[-1] = (v, range(out[-1][1].start, i + 1))
        else:
            out.append((v, range(i, i + 1)))
    return out
