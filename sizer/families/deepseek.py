"""DeepSeek V2 / V3 (and Kimi K2 / K2.5's language model, which use the DeepSeek V3 architecture), and
GLM-4.7-Flash (glm4_moe_lite, the same layer with its MoE layers given by mlp_layer_types): MLA
attention, MoE with shared experts. DeepSeek V3.2 (deepseek_v32) and GLM-5 (glm_moe_dsa) add DeepSeek
Sparse Attention: each layer's indexer (DeepseekV32Indexer / GlmMoeDsaIndexer: wq_b, wk, a LayerNorm
k_norm, weights_proj) caches one key of index_head_dim values per token next to the MLA latent
(cache_utils DynamicIndexedLayer.indexer_keys); GLM-5's "shared" indexer_types layers reuse the previous
layer's top-k and have no indexer.
"""

from __future__ import annotations

from sizer.config import ConfigView
from sizer.families.common import TensorList, as_ranges, gated_mlp, make_spec, moe_numbers, mtp_notes
from sizer.spec import ModelSpec


def deepseek(c: ConfigView, name: str) -> ModelSpec:
    family = c.str("model_type")
    hidden = c.int("hidden_size")
    n_layers = c.int("num_hidden_layers")
    n_heads = c.int("num_attention_heads")
    vocab = c.int("vocab_size")
    q_lora = c.int("q_lora_rank", default=None)
    kv_lora = c.int("kv_lora_rank")
    rope = c.int("qk_rope_head_dim")
    nope = c.int("qk_nope_head_dim")
    v_dim = c.int("v_head_dim")
    qk_dim = nope + rope
    bias = c.bool("attention_bias", default=False)

    t = TensorList(n_layers)
    t.embedding("embed_tokens", "embeddings", vocab, hidden)
    if q_lora:   # DeepseekV3Attention: q_a_proj -> q_a_layernorm -> q_b_proj
        t.linear("layers.self_attn.q_a_proj", "attention", q_lora, hidden, bias)
        t.norm("layers.self_attn.q_a_layernorm", q_lora)
        t.linear("layers.self_attn.q_b_proj", "attention", n_heads * qk_dim, q_lora)
    else:
        t.linear("layers.self_attn.q_proj", "attention", n_heads * qk_dim, hidden)
    t.linear("layers.self_attn.kv_a_proj_with_mqa", "attention", kv_lora + rope, hidden, bias)
    t.norm("layers.self_attn.kv_a_layernorm", kv_lora)
    t.linear("layers.self_attn.kv_b_proj", "attention", n_heads * (nope + v_dim), kv_lora)
    t.linear("layers.self_attn.o_proj", "attention", hidden, n_heads * v_dim, bias)
    t.norm("layers.input_layernorm", hidden)
    t.norm("layers.post_attention_layernorm", hidden)

    dsa = family in DSA_FAMILIES
    indexer_layers = None
    if dsa:
        indexer_layers = tuple(i for i, kind in enumerate(indexer_types(c, n_layers)) if kind == "full")
        index_heads, index_dim = c.int("index_n_heads"), c.int("index_head_dim")
        for run in as_ranges(indexer_layers):
            t.linear("layers.self_attn.indexer.wq_b", "attention", index_heads * index_dim, q_lora, layers=run)
            t.linear("layers.self_attn.indexer.wk", "attention", index_dim, hidden, layers=run)
            t.norm("layers.self_attn.indexer.k_norm", index_dim, bias=True, layers=run)      # nn.LayerNorm
            t.linear("layers.self_attn.indexer.weights_proj", "attention", index_heads, hidden, layers=run)

    n_experts, top_k, d_ff_expert = moe_numbers(c, family)
    first_dense = c.int("first_k_dense_replace", default=0, minimum=0)
    freq = c.int("moe_layer_freq", default=1)
    moe = [i for i in range(n_layers) if n_experts and i >= first_dense and i % freq == 0]
    if family == "glm4_moe_lite":   # Glm4MoeLiteConfig: mlp_layer_types, default dense then sparse (first_k_dense_replace unused)
        kinds = c.str_list("mlp_layer_types", default=None) or ["dense"] + ["sparse"] * (n_layers - 1)
        moe = [i for i, kind in enumerate(kinds[:n_layers]) if kind == "sparse"]
    elif dsa:   # DeepseekV32Config / GlmMoeDsaConfig: mlp_layer_types, default first_k_dense_replace (3) dense
        n_dense = min(c.int("first_k_dense_replace", default=3, minimum=0), n_layers)
        kinds = c.str_list("mlp_layer_types", default=None) or ["dense"] * n_dense + ["sparse"] * (n_layers - n_dense)
        moe = [i for i, kind in enumerate(kinds[:n_layers]) if kind == "sparse"] if n_experts else []
    dense = [i for i in range(n_layers) if i not in set(moe)]
    d_ff = c.int("intermediate_size")
    n_shared = c.int("n_shared_experts", default=0, minimum=0)
    for run in as_ranges(dense):
        gated_mlp(t, "layers.mlp", "mlp", hidden, d_ff, False, run)
    for run in as_ranges(moe):
        # DeepseekV3TopkRouter.weight [E, hidden]; its e_score_correction_bias is a buffer, not a parameter
        t.other("layers.mlp.gate.weight", "router", (n_experts, hidden), run)
        gated_mlp(t, "layers.mlp.experts", "experts", hidden, d_ff_expert, False, run, n_experts, top_k)
        if n_shared:
            gated_mlp(t, "layers.mlp.shared_experts", "shared_experts", hidden, d_ff_expert * n_shared, False, run)
    t.norm("norm", hidden, layers=None)
    tied = c.bool("tie_word_embeddings", default=False)
    t.lm_head(vocab, hidden, tied)
    notes = mtp_notes(c)
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_heads,
                 head_dim=qk_dim, v_head_dim=v_dim, vocab_size=vocab, d_ff=d_ff if dense else 0,
                 tied_embeddings=tied,
                 n_experts=n_experts, n_experts_active=top_k, d_ff_expert=d_ff_expert, n_shared_experts=n_shared,
                 kv_lora_rank=kv_lora, qk_rope_head_dim=rope, rotary_dim=rope, notes=notes,
                 indexer_values_per_token=index_dim if dsa else 0,
                 indexer_layers=indexer_layers if dsa and len(indexer_layers) < n_layers else None)


DSA_FAMILIES = ("deepseek_v32", "glm_moe_dsa")


def indexer_types(c: ConfigView, n_layers: int) -> list[str]:
    """Per layer "full" (its own indexer) or "shared" (reuses the previous layer's top-k), as
    GlmMoeDsaConfig.__post_init__ derives them: indexer_types, else index_topk_pattern ("F"/"S" per
    layer), else index_topk_freq / index_skip_topk_offset. DeepSeek V3.2: an indexer in every layer."""
    if c.str("model_type") != "glm_moe_dsa":
        return ["full"] * n_layers
    given = c.str_list("indexer_types", default=None)
    if given is not None:
        return given[:n_layers]
    pattern = c.raw.get("index_topk_pattern")
    if isinstance(pattern, str):
        return [{"F": "full", "S": "shared"}[ch] for ch in pattern][:n_layers]
    if isinstance(pattern, list):
        return [str(kind) for kind in pattern][:n_layers]
    freq = max(c.int("index_topk_freq", default=1), 1)
    offset = c.int("index_skip_topk_offset", default=2, minimum=0)
    return ["full" if max(i - offset + 1, 0) % freq == 0 else "shared" for i in range(n_layers)]
