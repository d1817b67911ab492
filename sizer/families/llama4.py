"""Llama 4 (llama4 / llama4_text): MoE with a shared expert on the MoE layers (all of them, or every
interleave_moe_layer_step-th), dense MLPs of intermediate_size_mlp elsewhere, RoPE layers with chunked
attention and NoPE layers with full attention. Module names are those of Llama4TextDecoderLayer.

KV cache: transformers caches a chunked-attention layer as a sliding-window layer of
attention_chunk_size tokens (cache_utils DYNAMIC_LAYER_TYPE_MAPPING: "chunked_attention" ->
DynamicSlidingWindowLayer, get_layer_types_and_kwargs: sliding_window = attention_chunk_size), so those
layers are SLIDING_ATTENTION here with that window; the NoPE layers keep every token.
"""

from __future__ import annotations

from sizer.config import ConfigView
from sizer.errors import UnsupportedModelError
from sizer.families.common import TensorList, as_ranges, gated_mlp, make_spec
from sizer.spec import FULL_ATTENTION, SLIDING_ATTENTION, ModelSpec


def llama4(c: ConfigView, name: str) -> ModelSpec:
    family = "llama4_text"
    hidden = c.int("hidden_size", default=5120)
    n_layers = c.int("num_hidden_layers", default=48)
    n_heads = c.int("num_attention_heads", default=40)
    n_kv = c.int("num_key_value_heads", default=n_heads if "num_key_value_heads" in c.raw else 8)
    head_dim = c.int("head_dim", default=128)           # Llama4TextConfig: 128 unless set (not hidden / heads)
    vocab = c.int("vocab_size", default=202048)
    d_ff_expert = c.int("intermediate_size", default=8192)         # experts and the shared expert
    d_ff = c.int("intermediate_size_mlp", default=16384)           # dense layers
    n_experts = c.int("num_local_experts", default=16)
    top_k = c.int("num_experts_per_tok", default=1)
    bias = c.bool("attention_bias", default=False)
    tied = c.bool("tie_word_embeddings", default=False)

    # Llama4TextConfig.__post_init__: moe_layers, else every interleave_moe_layer_step-th layer
    given_moe = c.raw.get("moe_layers")
    if given_moe is not None:
        moe = sorted(set(c.int_list("moe_layers")) & set(range(n_layers)))
    else:
        step = c.int("interleave_moe_layer_step", default=1)
        moe = list(range(step - 1, n_layers, step))
    dense = [i for i in range(n_layers) if i not in set(moe)]

    t = TensorList(n_layers)
    t.embedding("embed_tokens", "embeddings", vocab, hidden)
    t.attention(hidden, n_heads, n_kv, head_dim, bias)
    # qk_norm (use_qk_norm, RoPE layers) is Llama4TextWeightlessRMSNorm: no parameters
    t.norm("layers.input_layernorm", hidden)
    t.norm("layers.post_attention_layernorm", hidden)
    for run in as_ranges(dense):
        gated_mlp(t, "layers.feed_forward", "mlp", hidden, d_ff, False, run)
    for run in as_ranges(moe):
        t.linear("layers.feed_forward.router", "router", n_experts, hidden, False, run)
        # Llama4TextExperts: gate_up_proj [E, hidden, 2 * d_ff], down_proj [E, d_ff, hidden] (no biases)
        t.linear("layers.feed_forward.experts.gate_up_proj", "experts", 2 * d_ff_expert, hidden, False, run,
                 n_experts, top_k)
        t.linear("layers.feed_forward.experts.down_proj", "experts", hidden, d_ff_expert, False, run, n_experts, top_k)
        gated_mlp(t, "layers.feed_forward.shared_expert", "shared_experts", hidden, d_ff_expert, False, run)
    t.norm("norm", hidden, layers=None)
    t.lm_head(vocab, hidden, tied)

    types, window, nope = _layer_types(c, n_layers)
    notes = []
    if nope:
        notes.append(f"{nope} of {n_layers} layers use no RoPE (NoPE) and full attention")
    if window:
        notes.append(f"chunked attention (attention_chunk_size {window:,}) on the RoPE layers: their cache is "
                     "counted as a sliding window of that many tokens, as transformers' cache keeps it")
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                     head_dim=head_dim, vocab_size=vocab, d_ff=d_ff if dense else 0, tied_embeddings=tied,
                     layer_types=types, sliding_window=window, n_experts=n_experts, n_experts_active=top_k,
                     d_ff_expert=d_ff_expert, n_shared_experts=1, notes=notes)


def _layer_types(c: ConfigView, n_layers: int) -> tuple[tuple[str, ...], int | None, int]:
    """Per-layer cache kind, the chunk (as the window) and the number of NoPE layers, as
    Llama4TextConfig.__post_init__ derives them: no_rope_layers[i] == 1 means layer i uses RoPE (an
    empty or missing list: every no_rope_layer_interval-th layer is NoPE); RoPE layers are chunked
    when attention_chunk_size is set."""
    interval = c.int("no_rope_layer_interval", default=4)
    given = c.raw.get("no_rope_layers")
    uses_rope = (c.int_list("no_rope_layers") if given else
                 [int((i + 1) % interval != 0) for i in range(n_layers)])
    chunk = c.int("attention_chunk_size", default=8192) if "attention_chunk_size" not in c.raw else \
        c.int("attention_chunk_size", default=None)
    explicit = c.str_list("layer_types", default=None)
    if explicit is not None:
        if len(explicit) != n_layers:
            raise UnsupportedModelError(f"{c.origin}: layer_types has {len(explicit)} entries for {n_layers} layers")
        kinds = explicit
    else:
        kinds = ["chunked_attention" if rope and chunk is not None else FULL_ATTENTION for rope in uses_rope]
    types = tuple(SLIDING_ATTENTION if k in ("chunked_attention", SLIDING_ATTENTION) else FULL_ATTENTION for k in kinds)
    window = chunk if SLIDING_ATTENTION in types else None
    if SLIDING_ATTENTION in types and window is None:
        raise UnsupportedModelError(f"{c.origin}: chunked-attention layers but no attention_chunk_size")
    return types, window, sum(1 for rope in uses_rope[:n_layers] if not rope)
