"""OLMo 2 (olmo2) and OLMo 3 (olmo3): Llama-style attention with q/k norms over all heads
(q_norm: n_heads x head_dim, k_norm: n_kv_heads x head_dim) and norms after attention and after the
MLP instead of before them (no input_layernorm). OLMo 3 slides a window on three layers of four
(Olmo3Config: sliding unless (i + 1) % 4 == 0; sliding_window default 4096). Module names are those
of Olmo2DecoderLayer / Olmo3DecoderLayer.
"""

from __future__ import annotations

from sizer.config import ConfigView
from sizer.families.common import TensorList, decoder_shape, gated_mlp, layer_types_of, make_spec
from sizer.spec import ModelSpec


def olmo2(c: ConfigView, name: str) -> ModelSpec:
    family = c.str("model_type")
    hidden, n_layers, n_heads, n_kv, head_dim, vocab = decoder_shape(c)
    bias = c.bool("attention_bias", default=False)
    tied = c.bool("tie_word_embeddings", default=False)
    d_ff = c.int("intermediate_size")

    t = TensorList(n_layers)
    t.embedding("embed_tokens", "embeddings", vocab, hidden)
    t.attention(hidden, n_heads, n_kv, head_dim, bias)
    t.norm("layers.self_attn.q_norm", n_heads * head_dim)
    t.norm("layers.self_attn.k_norm", n_kv * head_dim)
    t.norm("layers.post_attention_layernorm", hidden)
    t.norm("layers.post_feedforward_layernorm", hidden)
    gated_mlp(t, "layers.mlp", "mlp", hidden, d_ff)
    t.norm("norm", hidden, layers=None)
    t.lm_head(vocab, hidden, tied)
    # Olmo3Config's sliding_window default (4096) comes from CLASS_DEFAULTS
    types, window = layer_types_of(c, n_layers, (lambda i: (i + 1) % 4 != 0) if family == "olmo3" else (lambda i: False))
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                     head_dim=head_dim, vocab_size=vocab, d_ff=d_ff, tied_embeddings=tied,
                     layer_types=types, sliding_window=window)
