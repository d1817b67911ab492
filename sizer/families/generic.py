"""The generic path: a config.json of a family sizer does not model, sized honestly or refused.

In order: (1) a tensor list transformers counted for this very config before (cached per config hash,
no torch needed); (2) transformers itself, when torch and transformers are installed and know the
`model_type`: the model built on the meta device, its parameters counted module by module
(sizer.families.meta); (3) a Llama-like decoder from the standard keys (hidden size, layers, heads,
KV heads, head dim, intermediate size, vocabulary, experts), every assumption stated in the notes.
Refused only when none works, naming the missing keys. The KV cache follows the standard keys:
full attention in every layer, or the window of `sliding_window` / `layer_types` where given.
"""

from __future__ import annotations

from sizer.config import ConfigView
from sizer.errors import UnsupportedModelError
from sizer.families.common import TensorList, gated_mlp, layer_types_of, make_spec
from sizer.families.meta import count_on_meta_device, kv_note, load_cached, spec_numbers_from
from sizer.spec import ModelSpec

# The standard keys and their usual aliases, the first one set wins.
HIDDEN_KEYS = ("hidden_size", "n_embd", "n_embed", "d_model", "dim")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
HEAD_KEYS = ("num_attention_heads", "n_head", "n_heads", "num_heads")
KV_HEAD_KEYS = ("num_key_value_heads", "num_kv_heads", "n_head_kv", "n_kv_heads")
D_FF_KEYS = ("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size")
VOCAB_KEYS = ("vocab_size", "padded_vocab_size", "n_vocab")
EXPERT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")
TOP_K_KEYS = ("num_experts_per_tok", "experts_per_token", "num_experts_per_token", "moe_top_k")
ATTENTION_BIAS_KEYS = ("attention_bias", "qkv_bias", "use_qkv_bias", "bias", "use_bias")
MLP_BIAS_KEYS = ("mlp_bias", "bias", "use_bias")

# Keys of structures the Llama-like tensor list does not have: their presence is said in the notes.
UNMODELLED_KEYS = ("kv_lora_rank", "q_lora_rank", "n_shared_experts", "shared_expert_intermediate_size",
                   "first_k_dense_replace", "moe_layer_freq", "decoder_sparse_step", "mlp_only_layers",
                   "num_nextn_predict_layers", "layers_block_type", "attn_layer_indices", "ssm_cfg",
                   "state_size", "conv_kernel", "mamba_d_state", "linear_num_key_heads")


def generic_spec_from_config(c: ConfigView, raw: dict, name: str, family: str, origin: str,
                             unsupported: str) -> ModelSpec:
    """A family outside FAMILIES: cached count, transformers' count, or the standard keys (see the module)."""
    cached = load_cached(raw)
    if cached is not None:
        return spec_numbers_from(c, family, name, cached)
    counted, why_not = count_on_meta_device(raw, family, origin)
    if counted is not None:
        return spec_numbers_from(c, family, name, counted)
    missing = missing_keys(c)
    if missing:
        raise UnsupportedModelError(
            f"{unsupported} The generic path cannot size it either: the config lacks the standard "
            f"key{'s' if len(missing) > 1 else ''} {', '.join(missing)} ({why_not}).")
    return from_standard_keys(c, family, name, why_not)


def missing_keys(c: ConfigView) -> list[str]:
    """The standard keys a Llama-like sizing needs and the config lacks (each named by its first alias)."""
    required = [HIDDEN_KEYS, LAYER_KEYS, HEAD_KEYS, VOCAB_KEYS]
    if not c.key_of(*EXPERT_KEYS):
        required.append(D_FF_KEYS)
    else:
        required += [TOP_K_KEYS] + ([] if c.key_of("moe_intermediate_size") else [D_FF_KEYS])
    return [keys[0] for keys in required if c.key_of(*keys) is None]


def _flag(c: ConfigView, keys: tuple[str, ...]) -> bool:
    key = c.key_of(*keys)
    return bool(key and c.raw[key] is True)


def from_standard_keys(c: ConfigView, family: str, name: str, why_not: str) -> ModelSpec:
    """A Llama-like decoder: separate q/k/v/o, RMSNorms, gated MLP (or experts), lm_head untied unless said."""
    hidden, n_layers, n_heads = c.int(*HIDDEN_KEYS), c.int(*LAYER_KEYS), c.int(*HEAD_KEYS)
    kv_key = c.key_of(*KV_HEAD_KEYS)
    multi_query = c.raw.get("multi_query") is True
    n_kv = c.int(kv_key) if kv_key else (1 if multi_query else n_heads)
    head_dim = c.int("head_dim", default=None) or hidden // n_heads
    vocab = c.int(*VOCAB_KEYS)
    n_experts = c.int(*EXPERT_KEYS, default=0, minimum=0)
    top_k = c.int(*TOP_K_KEYS) if n_experts else 0
    d_ff = c.int(*D_FF_KEYS, default=0, minimum=0)
    d_ff_expert = (c.int("moe_intermediate_size", default=None) or d_ff) if n_experts else 0
    tied = c.bool("tie_word_embeddings", default=False)
    attn_bias, mlp_bias = _flag(c, ATTENTION_BIAS_KEYS), _flag(c, MLP_BIAS_KEYS)

    t = TensorList(n_layers)
    t.embedding("embed_tokens", "embeddings", vocab, hidden)
    t.attention(hidden, n_heads, n_kv, head_dim, attn_bias)
    t.norm("layers.input_layernorm", hidden)
    t.norm("layers.post_attention_layernorm", hidden)
    if n_experts:
        t.linear("layers.mlp.gate", "router", n_experts, hidden)
        gated_mlp(t, "layers.mlp.experts", "experts", hidden, d_ff_expert, mlp_bias, "all", n_experts, top_k)
    else:
        gated_mlp(t, "layers.mlp", "mlp", hidden, d_ff, mlp_bias)
    t.norm("norm", hidden, layers=None)
    t.lm_head(vocab, hidden, tied)
    types, window = layer_types_of(c, n_layers, lambda i: c.raw.get("use_sliding_window") is not False)
    notes = [assumption_note(c, family, kv_key, multi_query, n_experts, attn_bias, mlp_bias, tied, why_not),
             kv_note(types, window)]
    unmodelled = [k for k in UNMODELLED_KEYS if c.raw.get(k) not in (None, False, 0, [], {})]
    if unmodelled:
        notes.append(f"the config sets {', '.join(unmodelled)}, which the generic Llama-like layout does not model: "
                     "the counts may be off (pass the safetensors folder for exact weights)")
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                     head_dim=head_dim, vocab_size=vocab, d_ff=0 if n_experts else d_ff, tied_embeddings=tied,
                     layer_types=types, sliding_window=window, n_experts=n_experts, n_experts_active=top_k,
                     d_ff_expert=d_ff_expert, notes=notes)


def assumption_note(c: ConfigView, family: str, kv_key: str | None, multi_query: bool, n_experts: int,
                    attn_bias: bool, mlp_bias: bool, tied: bool, why_not: str) -> str:
    """What the standard-keys sizing assumed, in one sentence."""
    said = []
    if kv_key is None:
        said.append("one KV head (multi_query)" if multi_query else "as many KV heads as query heads (no KV-head key)")
    said.append("separate q/k/v/o projections" + (" with biases" if attn_bias else " without biases"))
    mlp = f"{n_experts} routed experts (gated SwiGLU, gate/up/down) and a linear router in every layer, " \
          "no shared expert" if n_experts else "a gated SwiGLU MLP (gate/up/down)"
    said.append(mlp + (" with biases" if mlp_bias else " without biases"))
    said.append("RMSNorm (weight only) before attention, before the MLP and at the end")
    said.append("lm_head tied to the embedding" if tied else
                "an untied lm_head" + ("" if c.key_of("tie_word_embeddings") else " (tie_word_embeddings not set)"))
    return (f"family {family!r} is not modelled by sizer and {why_not}: sized from the standard config keys "
            f"as a Llama-like decoder, assuming {'; '.join(said)}")

