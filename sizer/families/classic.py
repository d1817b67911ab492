"""Families from before 2024 with their own module layouts: bloom, mpt, phi (phi-2), gpt_bigcode,
gpt_neox.
"""

from __future__ import annotations

from sizer.config import ConfigView
from sizer.families.common import TensorList, decoder_shape, make_spec, rotary_dim_of
from sizer.spec import ModelSpec


def bloom(c: ConfigView, name: str) -> ModelSpec:
    """BloomModel: word_embeddings + word_embeddings_layernorm, fused QKV with biases, ALiBi, tied head."""
    hidden = c.int("hidden_size", "n_embed")
    n_layers = c.int("n_layer", "num_hidden_layers")
    n_heads = c.int("num_attention_heads", "n_head")
    vocab = c.int("vocab_size")
    t = TensorList(n_layers)
    t.embedding("word_embeddings", "embeddings", vocab, hidden)
    t.norm("word_embeddings_layernorm", hidden, bias=True, layers=None)
    t.norm("h.input_layernorm", hidden, bias=True)
    t.linear("h.self_attention.query_key_value", "attention", 3 * hidden, hidden, True)
    t.linear("h.self_attention.dense", "attention", hidden, hidden, True)
    t.norm("h.post_attention_layernorm", hidden, bias=True)
    t.linear("h.mlp.dense_h_to_4h", "mlp", 4 * hidden, hidden, True)
    t.linear("h.mlp.dense_4h_to_h", "mlp", hidden, 4 * hidden, True)
    t.norm("ln_f", hidden, bias=True, layers=None)
    tied = c.bool("tie_word_embeddings", default=True)
    t.lm_head(vocab, hidden, tied)
    return make_spec(c, "bloom", name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_heads,
                 head_dim=hidden // n_heads, vocab_size=vocab, d_ff=4 * hidden,
                 gated_mlp=False, tied_embeddings=tied, rotary_dim=0)


def mpt(c: ConfigView, name: str) -> ModelSpec:
    """MptModel: fused Wqkv, LayerNorms whose bias transformers removes, ALiBi, tied head."""
    hidden = c.int("d_model", "hidden_size")
    n_layers = c.int("n_layers", "num_hidden_layers")
    n_heads = c.int("n_heads", "num_attention_heads")
    vocab = c.int("vocab_size")
    d_ff = c.int("expansion_ratio", default=4) * hidden
    bias = not c.bool("no_bias", default=True)
    t = TensorList(n_layers)
    t.embedding("wte", "embeddings", vocab, hidden)
    t.norm("blocks.norm_1", hidden)                 # MptBlock sets norm_1.bias = None
    t.linear("blocks.attn.Wqkv", "attention", 3 * hidden, hidden, bias)
    t.linear("blocks.attn.out_proj", "attention", hidden, hidden, bias)
    t.norm("blocks.norm_2", hidden)
    t.linear("blocks.ffn.up_proj", "mlp", d_ff, hidden, bias)
    t.linear("blocks.ffn.down_proj", "mlp", hidden, d_ff, bias)
    t.norm("norm_f", hidden, layers=None)
    tied = c.bool("tie_word_embeddings", default=True)
    t.lm_head(vocab, hidden, tied)
    return make_spec(c, "mpt", name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_heads,
                 head_dim=hidden // n_heads, vocab_size=vocab, d_ff=d_ff,
                 gated_mlp=False, tied_embeddings=tied, rotary_dim=0)


def phi(c: ConfigView, name: str) -> ModelSpec:
    """PhiModel (phi-1.5, phi-2): parallel attention and MLP behind one LayerNorm, biases, lm_head bias."""
    hidden, n_layers, n_heads, n_kv, head_dim, vocab = decoder_shape(c)
    d_ff = c.int("intermediate_size")
    t = TensorList(n_layers)
    t.embedding("embed_tokens", "embeddings", vocab, hidden)
    t.linear("layers.self_attn.q_proj", "attention", n_heads * head_dim, hidden, True)
    t.linear("layers.self_attn.k_proj", "attention", n_kv * head_dim, hidden, True)
    t.linear("layers.self_attn.v_proj", "attention", n_kv * head_dim, hidden, True)
    t.linear("layers.self_attn.dense", "attention", hidden, n_heads * head_dim, True)
    if c.bool("qk_layernorm", default=False):
        t.norm("layers.self_attn.q_layernorm", head_dim, bias=True)
        t.norm("layers.self_attn.k_layernorm", head_dim, bias=True)
    t.norm("layers.input_layernorm", hidden, bias=True)
    t.linear("layers.mlp.fc1", "mlp", d_ff, hidden, True)
    t.linear("layers.mlp.fc2", "mlp", hidden, d_ff, True)
    t.norm("final_layernorm", hidden, bias=True, layers=None)
    tied = c.bool("tie_word_embeddings", default=False)
    t.lm_head(vocab, hidden, tied, bias=True)
    return make_spec(c, "phi", name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                 head_dim=head_dim, vocab_size=vocab, d_ff=d_ff, gated_mlp=False,
                 tied_embeddings=tied, rotary_dim=rotary_dim_of(c, head_dim, default=0.5))


def gpt_bigcode(c: ConfigView, name: str) -> ModelSpec:
    """GPTBigCodeModel (StarCoder): learned positions, MQA fused c_attn, biases, tied head."""
    hidden = c.int("n_embd", "hidden_size")
    n_layers = c.int("n_layer", "num_hidden_layers")
    n_heads = c.int("n_head", "num_attention_heads")
    vocab = c.int("vocab_size")
    positions = c.int("n_positions", "max_position_embeddings")
    d_ff = c.int("n_inner", default=4 * hidden)
    head_dim = hidden // n_heads
    n_kv = 1 if c.bool("multi_query", default=True) else n_heads
    t = TensorList(n_layers)
    t.embedding("wte", "embeddings", vocab, hidden)
    t.embedding("wpe", "position_embeddings", positions, hidden)
    t.norm("h.ln_1", hidden, bias=True)
    t.linear("h.attn.c_attn", "attention", hidden + 2 * n_kv * head_dim, hidden, True)
    t.linear("h.attn.c_proj", "attention", hidden, hidden, True)
    t.norm("h.ln_2", hidden, bias=True)
    t.linear("h.mlp.c_fc", "mlp", d_ff, hidden, True)
    t.linear("h.mlp.c_proj", "mlp", hidden, d_ff, True)
    t.norm("ln_f", hidden, bias=True, layers=None)
    tied = c.bool("tie_word_embeddings", default=True)
    t.lm_head(vocab, hidden, tied)
    return make_spec(c, "gpt_bigcode", name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                 head_dim=head_dim, vocab_size=vocab, d_ff=d_ff, gated_mlp=False,
                 tied_embeddings=tied, rotary_dim=0)


def gpt_neox(c: ConfigView, name: str) -> ModelSpec:
    """GPTNeoXModel (Pythia, GPT-NeoX-20B): fused QKV, two LayerNorms per layer, untied embed_out."""
    hidden = c.int("hidden_size")
    n_layers = c.int("num_hidden_layers")
    n_heads = c.int("num_attention_heads")
    vocab = c.int("vocab_size")
    d_ff = c.int("intermediate_size")
    bias = c.bool("attention_bias", default=True)
    t = TensorList(n_layers)
    t.embedding("embed_in", "embeddings", vocab, hidden)
    t.norm("layers.input_layernorm", hidden, bias=True)
    t.norm("layers.post_attention_layernorm", hidden, bias=True)
    t.linear("layers.attention.query_key_value", "attention", 3 * hidden, hidden, bias)
    t.linear("layers.attention.dense", "attention", hidden, hidden, bias)
    t.linear("layers.mlp.dense_h_to_4h", "mlp", d_ff, hidden, True)
    t.linear("layers.mlp.dense_4h_to_h", "mlp", hidden, d_ff, True)
    t.norm("final_layer_norm", hidden, bias=True, layers=None)
    tied = c.bool("tie_word_embeddings", default=False)
    t.lm_head(vocab, hidden, tied)
    return make_spec(c, "gpt_neox", name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_heads,
                 head_dim=hidden // n_heads, vocab_size=vocab, d_ff=d_ff,
                 gated_mlp=False, tied_embeddings=tied,
                 rotary_dim=rotary_dim_of(c, hidden // n_heads, 0.25, ("rotary_pct", "partial_rotary_factor")))
