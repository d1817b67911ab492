"""Llama-style decoders: llama, mistral, mixtral, qwen2, qwen2_moe, qwen3, qwen3_moe, gemma, gemma2,
gemma3_text, phi3 (Phi-4-mini: partial RoPE), phimoe, gpt_oss, smollm3 (NoPE layers: no parameters of
their own). Module names below are those of LlamaDecoderLayer & co.
"""

from __future__ import annotations

from typing import Callable

from sizer.config import ConfigView
from sizer.families.common import (
    TensorList,
    as_ranges,
    decoder_shape,
    gated_mlp,
    layer_types_of,
    make_spec,
    moe_layer_indices,
    moe_numbers,
    rotary_dim_of,
)
from sizer.spec import ModelSpec

_SLIDING_RULES: dict[str, Callable[[ConfigView], Callable[[int], bool]]] = {
    # Mistral, Mixtral, Phi-3: a configured window applies to every layer.
    "mistral": lambda c: lambda i: True,
    "mixtral": lambda c: lambda i: True,
    "phi3": lambda c: lambda i: True,
    "phimoe": lambda c: lambda i: True,
    # Qwen2 / Qwen3: only with use_sliding_window, and only layers from max_window_layers on.
    "qwen2": lambda c: lambda i: c.bool("use_sliding_window", default=False) and i >= c.int("max_window_layers", default=0, minimum=0),
    "qwen3": lambda c: lambda i: c.bool("use_sliding_window", default=False) and i >= c.int("max_window_layers", default=0, minimum=0),
    # Qwen2-MoE: odd-numbered layers (i + 1) % 2 below max_window_layers (Qwen2MoeConfig).
    "qwen2_moe": lambda c: lambda i: (c.bool("use_sliding_window", default=False) and (i + 1) % 2 == 1
                                      and i < c.int("max_window_layers", default=0, minimum=0)),
    # Qwen3-MoE: every layer (Qwen3MoeConfig has no layer_types).
    "qwen3_moe": lambda c: lambda i: c.bool("use_sliding_window", default=False),
    # Gemma 2: even layers slide (Gemma2Config: sliding if (i + 1) % 2).
    "gemma2": lambda c: lambda i: (i + 1) % 2 == 1,
    # Gemma 3: 5 local : 1 global (Gemma3TextConfig: sliding if (i + 1) % sliding_window_pattern).
    "gemma3_text": lambda c: lambda i: (i + 1) % c.int("sliding_window_pattern", default=6) != 0,
    "gpt_oss": lambda c: lambda i: i % 2 == 0,
    # SmolLM3: with use_sliding_window, the NoPE layers slide (SmolLM3Config: no_rope_layers[i] == 0)
    "smollm3": lambda c: lambda i: (c.bool("use_sliding_window", default=False) and not _smollm3_uses_rope(c, i)),
}


def _smollm3_uses_rope(c: ConfigView, i: int) -> bool:
    """SmolLM3Config: no_rope_layers[i] == 1 means layer i uses RoPE; without the list, every
    no_rope_layer_interval-th layer is NoPE."""
    given = c.int_list("no_rope_layers", default=None) if c.raw.get("no_rope_layers") is not None else None
    if given is not None:
        return bool(given[i])
    return (i + 1) % c.int("no_rope_layer_interval", default=4) != 0


def llama_like(c: ConfigView, name: str) -> ModelSpec:
    family = c.str("model_type")
    hidden, n_layers, n_heads, n_kv, head_dim, vocab = decoder_shape(c)
    d_ff = c.int("intermediate_size", default=0, minimum=0)
    tied = c.bool("tie_word_embeddings", default=family.startswith("gemma") or family == "smollm3")
    layer_norm = family == "phimoe"                     # PhiMoE uses LayerNorm (weight and bias)
    qkv_bias = c.bool("attention_bias", default=family in ("qwen2", "qwen2_moe", "gpt_oss", "phimoe"))
    o_bias = qkv_bias and family not in ("qwen2", "qwen2_moe")   # Qwen2: bias on q/k/v only
    mlp_bias = c.bool("mlp_bias", default=False)

    t = TensorList(n_layers)
    t.embedding("embed_tokens", "embeddings", vocab, hidden)
    if family == "phi3":      # Phi3Attention: one fused qkv_proj
        t.linear("layers.self_attn.qkv_proj", "attention", (n_heads + 2 * n_kv) * head_dim, hidden, qkv_bias)
        t.linear("layers.self_attn.o_proj", "attention", hidden, n_heads * head_dim, o_bias)
    else:
        t.attention(hidden, n_heads, n_kv, head_dim, qkv_bias, o_bias)
    if family == "gpt_oss":
        t.other("layers.self_attn.sinks", "attention", (n_heads,))        # one learned sink logit per head
    if family in ("qwen3", "qwen3_moe", "gemma3_text"):
        t.norm("layers.self_attn.q_norm", head_dim)
        t.norm("layers.self_attn.k_norm", head_dim)
    norms = ["input_layernorm", "post_attention_layernorm"]
    if family in ("gemma2", "gemma3_text"):
        norms += ["pre_feedforward_layernorm", "post_feedforward_layernorm"]
    for norm in norms:
        t.norm(f"layers.{norm}", hidden, bias=layer_norm)

    n_experts, top_k, d_ff_expert = moe_numbers(c, family)
    moe_layers = list(moe_layer_indices(c, family, n_layers, n_experts))
    dense_layers = [i for i in range(n_layers) if i not in set(moe_layers)]
    for run in as_ranges(dense_layers):
        if family == "phi3":  # Phi3MLP: one fused gate_up_proj
            t.linear("layers.mlp.gate_up_proj", "mlp", 2 * d_ff, hidden, mlp_bias, run)
            t.linear("layers.mlp.down_proj", "mlp", hidden, d_ff, mlp_bias, run)
        else:
            gated_mlp(t, "layers.mlp", "mlp", hidden, d_ff, mlp_bias, run)
    for run in as_ranges(moe_layers):
        _llama_moe_block(c, family, t, run, hidden, n_experts, top_k, d_ff_expert)

    t.norm("norm", hidden, bias=layer_norm, layers=None)
    t.lm_head(vocab, hidden, tied, bias=family == "phimoe" and c.bool("lm_head_bias", default=False))
    types, window = layer_types_of(c, n_layers, _SLIDING_RULES.get(family, lambda c: lambda i: False)(c))
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                 head_dim=head_dim, vocab_size=vocab, d_ff=d_ff if dense_layers else 0,
                 tied_embeddings=tied, layer_types=types, sliding_window=window,
                 n_experts=n_experts, n_experts_active=top_k, d_ff_expert=d_ff_expert,
                 n_shared_experts=1 if family == "qwen2_moe" else 0, rotary_dim=rotary_dim_of(c, head_dim))


def _llama_moe_block(c: ConfigView, family: str, t: TensorList, layers: range, hidden: int,
                     n_experts: int, top_k: int, d_ff_expert: int) -> None:
    """Router plus routed experts (and Qwen2-MoE's shared expert) on `layers`."""
    router_bias = family == "gpt_oss"
    t.linear("layers.mlp.gate", "router", n_experts, hidden, router_bias, layers)
    if family == "gpt_oss":
        # GptOssExperts: fused gate_up_proj [E, hidden, 2*d_ff] (+ bias), down_proj [E, d_ff, hidden] (+ bias)
        t.linear("layers.mlp.experts.gate_up_proj", "experts", 2 * d_ff_expert, hidden, True, layers, n_experts, top_k)
        t.linear("layers.mlp.experts.down_proj", "experts", hidden, d_ff_expert, True, layers, n_experts, top_k)
        return
    gated_mlp(t, "layers.mlp.experts", "experts", hidden, d_ff_expert, False, layers, n_experts, top_k)
    if family == "qwen2_moe":
        shared = c.int("shared_expert_intermediate_size")
        gated_mlp(t, "layers.mlp.shared_expert", "shared_experts", hidden, shared, False, layers)
        t.linear("layers.mlp.shared_expert_gate", "router", 1, hidden, False, layers)
