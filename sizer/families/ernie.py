"""ERNIE 4.5 (ernie4_5, dense) and ERNIE 4.5 MoE (ernie4_5_moe): Llama-style layers with use_bias on
every projection; the MoE has a float32 router with a float32 e_score_correction_bias parameter
(gate.moe_statics), routed experts and optional shared experts on the layers from
moe_layer_start_index to moe_layer_end_index every moe_layer_interval. Module names are those of
Ernie4_5_MoeDecoderLayer.
"""

from __future__ import annotations

from sizer.config import ConfigView
from sizer.families.common import TensorList, as_ranges, gated_mlp, head_dim_of, make_spec, mtp_notes
from sizer.spec import ModelSpec


def ernie4_5(c: ConfigView, name: str) -> ModelSpec:
    family = c.str("model_type")
    moe_family = family == "ernie4_5_moe"
    hidden = c.int("hidden_size")
    n_layers = c.int("num_hidden_layers")
    n_heads = c.int("num_attention_heads")
    n_kv = c.int("num_key_value_heads", default=n_heads)
    # Ernie4_5Config: head_dim 128 unless set; Ernie4_5_MoeConfig has none: hidden / heads unless set
    head_dim = head_dim_of(c, hidden, n_heads) if moe_family else c.int("head_dim", default=128)
    vocab = c.int("vocab_size")
    bias = c.bool("use_bias", default=False)
    tied = c.bool("tie_word_embeddings", default=True)
    d_ff = c.int("intermediate_size")

    t = TensorList(n_layers)
    t.embedding("embed_tokens", "embeddings", vocab, hidden)
    t.attention(hidden, n_heads, n_kv, head_dim, bias)
    t.norm("layers.input_layernorm", hidden)
    t.norm("layers.post_attention_layernorm", hidden)

    n_experts = top_k = d_ff_expert = n_shared = 0
    moe: list[int] = []
    if moe_family:
        n_experts = c.int("moe_num_experts", "num_experts", default=64)
        top_k = c.int("moe_k", "num_experts_per_tok", default=6)
        d_ff_expert = c.int("moe_intermediate_size", default=1536)
        n_shared = c.int("moe_num_shared_experts", default=2, minimum=0)
        start = c.int("moe_layer_start_index", default=1, minimum=0)
        end = c.raw.get("moe_layer_end_index", -1)
        end = n_layers - 1 if end is None or end == -1 else c.int("moe_layer_end_index", minimum=0)
        interval = c.int("moe_layer_interval", default=1)
        moe = [i for i in range(n_layers) if (i + 1) % interval == 0 and start <= i <= end]
    dense = [i for i in range(n_layers) if i not in set(moe)]
    for run in as_ranges(dense):
        gated_mlp(t, "layers.mlp", "mlp", hidden, d_ff, bias, run)
    for run in as_ranges(moe):
        t.other("layers.mlp.gate.weight", "router", (n_experts, hidden), run)                      # float32
        t.other("layers.mlp.gate.moe_statics.e_score_correction_bias", "router", (1, n_experts), run)  # float32
        gated_mlp(t, "layers.mlp.experts", "experts", hidden, d_ff_expert, False, run, n_experts, top_k)
        if n_shared:
            gated_mlp(t, "layers.mlp.shared_experts", "shared_experts", hidden, d_ff_expert * n_shared, bias, run)
    t.norm("norm", hidden, layers=None)
    t.lm_head(vocab, hidden, tied, bias=moe_family and bias)
    notes = mtp_notes(c)
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                     head_dim=head_dim, vocab_size=vocab, d_ff=d_ff if dense else 0, tied_embeddings=tied,
                     n_experts=n_experts if moe else 0, n_experts_active=top_k if moe else 0,
                     d_ff_expert=d_ff_expert if moe else 0, n_shared_experts=n_shared if moe else 0, notes=notes)
