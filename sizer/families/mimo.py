"""MiMo-V2-Flash (mimo_v2_flash): GQA attention whose sliding-window layers have twice the KV heads of
the full-attention layers and a learned sink per head, keys of head_dim (192) and values of v_head_dim
(128) values; MoE without shared experts (a float32 router), the mlp_layer_types "dense" layers a
gated MLP. Module names and rules are those of MiMoV2FlashAttention / MiMoV2FlashDecoderLayer and
MiMoV2FlashConfig.__post_init__ (transformers 5.25): full attention on layer 0 and every sixth layer,
sliding_window = sliding_window_size + 1 when the config gives the size.
"""

from __future__ import annotations

from sizer.config import ConfigView
from sizer.errors import UnsupportedModelError
from sizer.families.common import TensorList, as_ranges, gated_mlp, make_spec, mtp_notes, rotary_dim_of
from sizer.spec import FULL_ATTENTION, SLIDING_ATTENTION, KVGeometry, ModelSpec


def mimo_v2_flash(c: ConfigView, name: str) -> ModelSpec:
    family = "mimo_v2_flash"
    hidden = c.int("hidden_size")
    n_layers = c.int("num_hidden_layers")
    n_heads = c.int("num_attention_heads")
    n_kv = c.int("num_key_value_heads", default=4)
    head_dim = c.int("head_dim", default=192)
    v_dim = c.int("v_head_dim", default=128)
    vocab = c.int("vocab_size")
    bias = c.bool("attention_bias", default=False)
    tied = c.bool("tie_word_embeddings", default=False)

    given = c.str_list("layer_types", default=None)
    if given is not None and len(given) != n_layers:
        raise UnsupportedModelError(f"{c.origin}: layer_types has {len(given)} entries for {n_layers} layers")
    types = tuple(SLIDING_ATTENTION if t == SLIDING_ATTENTION else FULL_ATTENTION for t in given) if given else tuple(
        FULL_ATTENTION if i == 0 or (i + 1) % 6 == 0 else SLIDING_ATTENTION for i in range(n_layers))
    size = c.int("sliding_window_size", default=None)
    window = size + 1 if size is not None else c.int("sliding_window", default=129)
    sliding = [i for i, k in enumerate(types) if k == SLIDING_ATTENTION]
    full = [i for i, k in enumerate(types) if k == FULL_ATTENTION]

    t = TensorList(n_layers)
    t.embedding("embed_tokens", "embeddings", vocab, hidden)
    t.linear("layers.self_attn.q_proj", "attention", n_heads * head_dim, hidden, bias)
    for layers, kv in ((full, n_kv), (sliding, 2 * n_kv)):          # SWA layers: twice the KV heads
        for run in as_ranges(layers):
            t.linear("layers.self_attn.k_proj", "attention", kv * head_dim, hidden, bias, run)
            t.linear("layers.self_attn.v_proj", "attention", kv * v_dim, hidden, bias, run)
    t.linear("layers.self_attn.o_proj", "attention", hidden, n_heads * v_dim)          # never a bias
    for run in as_ranges(sliding):
        t.other("layers.self_attn.sinks", "attention", (n_heads,), run)
    t.norm("layers.input_layernorm", hidden)
    t.norm("layers.post_attention_layernorm", hidden)

    n_experts = c.int("n_routed_experts", "num_local_experts", default=256)
    top_k = c.int("num_experts_per_tok", default=8)
    d_ff_expert = c.int("moe_intermediate_size", default=2048)
    d_ff = c.int("intermediate_size", default=16384)
    kinds = c.str_list("mlp_layer_types", default=None) or ["dense"] + ["sparse"] * (n_layers - 1)
    moe = [i for i, kind in enumerate(kinds[:n_layers]) if kind == "sparse"]
    dense = [i for i in range(n_layers) if i not in set(moe)]
    for run in as_ranges(dense):
        gated_mlp(t, "layers.mlp", "mlp", hidden, d_ff, False, run)
    for run in as_ranges(moe):
        t.other("layers.mlp.gate.weight", "router", (n_experts, hidden), run)     # MiMoV2FlashTopkRouter, float32
        gated_mlp(t, "layers.mlp.experts", "experts", hidden, d_ff_expert, False, run, n_experts, top_k)
    t.norm("norm", hidden, layers=None)
    t.lm_head(vocab, hidden, tied)
    notes = mtp_notes(c)
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                     head_dim=head_dim, v_head_dim=v_dim, vocab_size=vocab, d_ff=d_ff if dense else 0,
                     tied_embeddings=tied, layer_types=types, sliding_window=window if sliding else None,
                     n_experts=n_experts if moe else 0, n_experts_active=top_k if moe else 0,
                     d_ff_expert=d_ff_expert if moe else 0,
                     kv_geometry_by_kind=((SLIDING_ATTENTION, KVGeometry(2 * n_kv, head_dim, v_dim)),) if sliding else (),
                     rotary_dim=rotary_dim_of(c, head_dim, default=0.334), notes=notes)
