"""Falcon: the old decoder (multi_query, parallel attention) and the new decoder (num_kv_heads).
"""

from __future__ import annotations

from sizer.config import ConfigView
from sizer.families.common import TensorList, head_dim_of, make_spec
from sizer.spec import ModelSpec


def falcon(c: ConfigView, name: str) -> ModelSpec:
    """FalconDecoderLayer. Old decoder (7B): one input_layernorm, MQA when multi_query.
    New decoder (40B/180B): ln_attn and ln_mlp, `num_kv_heads` grouped KV heads."""
    hidden = c.int("hidden_size", "n_embed")
    n_layers = c.int("num_hidden_layers", "n_layer")
    n_heads = c.int("num_attention_heads", "n_head")
    vocab = c.int("vocab_size")
    new_arch = c.bool("new_decoder_architecture", default=False)
    if new_arch:
        n_kv = c.int("num_kv_heads", "n_head_kv", default=n_heads)
    else:
        n_kv = 1 if c.bool("multi_query", default=True) else n_heads
    head_dim = head_dim_of(c, hidden, n_heads)
    bias = c.bool("bias", default=False)
    d_ff = c.int("ffn_hidden_size", default=4 * hidden)
    parallel = c.bool("parallel_attn", default=True)

    t = TensorList(n_layers)
    t.embedding("word_embeddings", "embeddings", vocab, hidden)
    t.linear("h.self_attention.query_key_value", "attention", (n_heads + 2 * n_kv) * head_dim, hidden, bias)
    t.linear("h.self_attention.dense", "attention", hidden, n_heads * head_dim, bias)
    t.linear("h.mlp.dense_h_to_4h", "mlp", d_ff, hidden, bias)
    t.linear("h.mlp.dense_4h_to_h", "mlp", hidden, d_ff, bias)
    n_ln = c.int("num_ln_in_parallel_attn", default=2)
    if new_arch and n_ln == 2:
        t.norm("h.ln_attn", hidden, bias=True)
        t.norm("h.ln_mlp", hidden, bias=True)
    else:
        t.norm("h.input_layernorm", hidden, bias=True)
        if not parallel:
            t.norm("h.post_attention_layernorm", hidden, bias=True)
    t.norm("ln_f", hidden, bias=True, layers=None)
    tied = c.bool("tie_word_embeddings", default=True)
    t.lm_head(vocab, hidden, tied)
    return make_spec(c, "falcon", name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                 head_dim=head_dim, vocab_size=vocab, d_ff=d_ff, gated_mlp=False,
                 tied_embeddings=tied, rotary_dim=0 if c.bool("alibi", default=False) else None)
