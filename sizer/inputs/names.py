"""Which component a stored tensor belongs to, from its name (Hugging Face and GGUF spellings)."""

from __future__ import annotations

import re

# Checked in order; the first pattern that matches wins.
_RULES: tuple[tuple[str, re.Pattern], ...] = tuple((c, re.compile(p)) for c, p in (
    ("lm_head", r"(^|\.)(lm_head|embed_out)\.|^output\.(weight|bias|scales|qweight)"),
    ("position_embeddings", r"(^|\.)(wpe|embed_positions|position_embeddings|position_embd)\."),
    ("embeddings", r"(^|\.)(embed_tokens_per_layer|per_layer_token_embd|embed_tokens|wte|word_embeddings|embed_in|tok_embeddings|token_embd)\.|^(model\.|backbone\.)?embeddings\."),
    ("norms", r"norm|(^|\.)ln_|(^|\.)ln\d|layernorm|layer_norm"),
    ("router", r"(mlp|moe|block_sparse_moe|feed_forward|mixer)\.(gate|router)\.|(^|\.)router\.(proj|scale|per_expert_scale)|ffn_gate_inp|shared_expert_gate|e_score_correction_bias|exp_probs_b"),
    ("shared_experts", r"shared_expert|_shexp"),
    ("experts", r"\.experts\.|_exps\."),
    ("attention", r"attn|attention|\.(q|k|v|o)_proj\.|query_key_value|Wqkv|sinks|\.mamba\.|(^|\.)ssm_|\.mixer\.(in_proj|conv1d|dt_bias|A_log|D|out_proj)(\.|$)"),
    ("mlp", r"mlp|ffn|\.mixer\.(up_proj|down_proj|fc1_latent_proj|fc2_latent_proj)\.|feed_forward|dense_h_to_4h|dense_4h_to_h"),
))


def component_of(tensor_name: str) -> str:
    for component, pattern in _RULES:
        if pattern.search(tensor_name):
            return component
    return "other"
