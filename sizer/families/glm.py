"""GLM-4.5 / 4.6 / 4.7 MoE (glm4_moe): GQA attention (q/k/v biases with attention_bias, optional
per-head q/k norms, partial RoPE), DeepSeek-style MoE (the first first_k_dense_replace layers dense,
then a float32 router, routed experts and shared experts). Module names are those of
Glm4MoeDecoderLayer. GLM-4.7-Flash (glm4_moe_lite) uses MLA and is in sizer.families.deepseek.
"""

from __future__ import annotations

from sizer.config import ConfigView
from sizer.families.common import TensorList, as_ranges, decoder_shape, gated_mlp, make_spec, mtp_notes, rotary_dim_of
from sizer.spec import ModelSpec


def glm4_moe(c: ConfigView, name: str) -> ModelSpec:
    family = "glm4_moe"
    hidden, n_layers, n_heads, n_kv, head_dim, vocab = decoder_shape(c)
    bias = c.bool("attention_bias", default=False)
    tied = c.bool("tie_word_embeddings", default=False)

    t = TensorList(n_layers)
    t.embedding("embed_tokens", "embeddings", vocab, hidden)
    t.attention(hidden, n_heads, n_kv, head_dim, bias, o_bias=False)          # o_proj: never a bias
    if c.bool("use_qk_norm", default=False):
        t.norm("layers.self_attn.q_norm", head_dim)
        t.norm("layers.self_attn.k_norm", head_dim)
    t.norm("layers.input_layernorm", hidden)
    t.norm("layers.post_attention_layernorm", hidden)

    n_experts = c.int("n_routed_experts", "num_local_experts", default=128)
    top_k = c.int("num_experts_per_tok", default=8)
    d_ff_expert = c.int("moe_intermediate_size", default=1408)
    n_shared = c.int("n_shared_experts", default=1, minimum=0)
    d_ff = c.int("intermediate_size", default=10944)
    first_dense = c.int("first_k_dense_replace", default=1, minimum=0)
    dense = [i for i in range(n_layers) if i < first_dense]
    moe = [i for i in range(n_layers) if i >= first_dense]
    for run in as_ranges(dense):
        gated_mlp(t, "layers.mlp", "mlp", hidden, d_ff, False, run)
    for run in as_ranges(moe):
        t.other("layers.mlp.gate.weight", "router", (n_experts, hidden), run)   # Glm4MoeTopkRouter, float32
        gated_mlp(t, "layers.mlp.experts", "experts", hidden, d_ff_expert, False, run, n_experts, top_k)
        gated_mlp(t, "layers.mlp.shared_experts", "shared_experts", hidden, d_ff_expert * n_shared, False, run)
    t.norm("norm", hidden, layers=None)
    t.lm_head(vocab, hidden, tied)
    notes = mtp_notes(c)
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                     head_dim=head_dim, vocab_size=vocab, d_ff=d_ff if dense else 0, tied_embeddings=tied,
                     n_experts=n_experts if moe else 0, n_experts_active=top_k if moe else 0,
                     d_ff_expert=d_ff_expert if moe else 0, n_shared_experts=n_shared if moe else 0,
                     rotary_dim=rotary_dim_of(c, head_dim, default=0.5), notes=notes)   # Glm4MoeConfig: 0.5
