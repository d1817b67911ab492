"""Architecture families: a config.json (Hugging Face keys) normalized into one `ModelSpec`.

Each family function enumerates the parameter tensors exactly as the family's transformers
implementation creates them (module names in comments), so that `ModelSpec.params` equals
`sum(p.numel() for p in model.parameters())`; tests/test_against_transformers.py checks that on
scaled-down configs of every family built on the meta device, and tests/test_catalog.py checks the
full-size counts against tests/data/reference_models/params.md.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from sizer.config import ConfigView
from sizer.errors import UnsupportedModelError
from sizer.spec import (BIAS, EMBEDDING, FULL_ATTENTION, LINEAR, NORM, OTHER, SLIDING_ATTENTION,
                        ModelSpec, TensorSpec)


class TensorList:
    """Collects the tensors of a model; `layers` defaults to every decoder layer."""

    def __init__(self, n_layers: int) -> None:
        self.all_layers = range(n_layers)
        self.items: list[TensorSpec] = []

    def linear(self, name: str, component: str, out_features: int, in_features: int, bias: bool = False,
               layers: range | None | str = "all", experts: int = 1, active: int | None = None) -> None:
        where = self.all_layers if layers == "all" else layers
        self.items.append(TensorSpec(f"{name}.weight", component, (out_features, in_features), LINEAR,
                                     where, experts, active))
        if bias:
            self.items.append(TensorSpec(f"{name}.bias", component, (out_features,), BIAS, where, experts, active))

    def norm(self, name: str, size: int, bias: bool = False, layers: range | None | str = "all") -> None:
        where = self.all_layers if layers == "all" else layers
        self.items.append(TensorSpec(f"{name}.weight", "norms", (size,), NORM, where))
        if bias:
            self.items.append(TensorSpec(f"{name}.bias", "norms", (size,), NORM, where))

    def embedding(self, name: str, component: str, rows: int, cols: int) -> None:
        self.items.append(TensorSpec(f"{name}.weight", component, (rows, cols), EMBEDDING, None))

    def other(self, name: str, component: str, shape: tuple[int, ...], layers: range | None | str = "all") -> None:
        where = self.all_layers if layers == "all" else layers
        self.items.append(TensorSpec(name, component, shape, OTHER, where))

    def lm_head(self, vocab: int, hidden: int, tied: bool, bias: bool = False) -> None:
        """The output projection; a tied head shares the embedding matrix and adds nothing."""
        if not tied:
            self.items.append(TensorSpec("lm_head.weight", "lm_head", (vocab, hidden), LINEAR, None))
        if bias:
            self.items.append(TensorSpec("lm_head.bias", "lm_head", (vocab,), BIAS, None))


# ---------------------------------------------------------------------------------------------
# Shared pieces


def _head_dim(c: ConfigView, hidden: int, n_heads: int) -> int:
    """Explicit `head_dim` when the config has one (Gemma, Qwen3, Mistral Nemo), else hidden / heads."""
    return c.int("head_dim", default=None) or hidden // n_heads


def _rotary_dim(c: ConfigView, head_dim: int, default: float = 1.0, keys: tuple[str, ...] = ("partial_rotary_factor",)
                ) -> int | None:
    """RoPE dimensions per head when only a fraction rotates (`partial_rotary_factor`, `rotary_pct`, at
    the top level or in transformers 5's `rope_parameters`; `default`, the config class's default);
    None when all of head_dim does."""
    nested = c.raw.get("rope_parameters")
    factor = default
    for source in (nested if isinstance(nested, dict) else {}, c.raw):
        found = [source[k] for k in keys if isinstance(source.get(k), (int, float)) and not isinstance(source[k], bool)]
        if found:
            factor = found[0]
    return None if factor == 1 else int(head_dim * factor)


def _layer_types(c: ConfigView, n_layers: int, default_sliding: Callable[[int], bool]) -> tuple[tuple[str, ...], int | None]:
    """Per-layer attention type and the window: the config's `layer_types` when given, else the family rule."""
    window = c.int("sliding_window", default=None)
    given = c.str_list("layer_types", default=None)
    if given is not None:
        if len(given) != n_layers:
            raise UnsupportedModelError(f"{c.origin}: layer_types has {len(given)} entries for {n_layers} layers")
        types = tuple(SLIDING_ATTENTION if t == SLIDING_ATTENTION else FULL_ATTENTION for t in given)
    else:
        types = tuple(SLIDING_ATTENTION if window and default_sliding(i) else FULL_ATTENTION for i in range(n_layers))
    if SLIDING_ATTENTION not in types:
        window = None
    elif window is None:
        raise UnsupportedModelError(f"{c.origin}: sliding-attention layers but no sliding_window")
    return types, window


def _gated_mlp(t: TensorList, prefix: str, component: str, hidden: int, d_ff: int, bias: bool = False,
               layers: range | None | str = "all", experts: int = 1, active: int | None = None) -> None:
    """gate_proj/up_proj: hidden -> d_ff; down_proj: d_ff -> hidden (SwiGLU / GeGLU)."""
    t.linear(f"{prefix}.gate_proj", component, d_ff, hidden, bias, layers, experts, active)
    t.linear(f"{prefix}.up_proj", component, d_ff, hidden, bias, layers, experts, active)
    t.linear(f"{prefix}.down_proj", component, hidden, d_ff, bias, layers, experts, active)


# Tensors transformers keeps in float32 whatever the load dtype (_keep_in_fp32_modules_strict; the
# non-strict list, e.g. gpt-oss's norms, applies to float16 loads only and is not modelled).
KEEP_FP32 = {
    "deepseek_v2": lambda t: t.component == "router",                       # gate.weight
    "deepseek_v3": lambda t: t.component == "router",
}
# The transformers release that started keeping them: DeepSeek V2/V3 list gate.weight in
# _keep_in_fp32_modules_strict from 5.24; 5.17-5.23 load the router in the load dtype (V3 kept only
# e_score_correction_bias, a buffer). Read from the modeling files of those releases' wheels.
KEEP_FP32_SINCE = {"deepseek_v2": (5, 24), "deepseek_v3": (5, 24)}


# Config keys of the model's maximum context, the first set wins (vLLM's _get_and_verify_max_len reads
# the same keys among its possible_keys).
MAX_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")


def _spec(c: ConfigView, family: str, name: str, t: TensorList, **numbers) -> ModelSpec:
    """The ModelSpec of tensors `t`; by default every layer has full attention and v_head_dim = head_dim."""
    keep = KEEP_FP32.get(family)
    if keep:
        t.items = [replace(x, fp32=True) if keep(x) else x for x in t.items]
    numbers.setdefault("layer_types", (FULL_ATTENTION,) * numbers["n_layers"])
    numbers.setdefault("sliding_window", None)
    numbers.setdefault("v_head_dim", numbers["head_dim"])
    notes = list(numbers.pop("notes", ()))
    if c.has_text_config:
        notes.append("sized from the language model's text_config; vision/audio towers are not counted")
    return ModelSpec(name=name, family=family, tensors=tuple(t.items), notes=tuple(notes),
                     max_context_length=c.int(*MAX_CONTEXT_KEYS, default=None),
                     max_context_key=c.key_of(*MAX_CONTEXT_KEYS),
                     **numbers)


# ---------------------------------------------------------------------------------------------
# Llama-style decoders: llama, mistral, mixtral, qwen2, qwen2_moe, qwen3, qwen3_moe, gemma, gemma2,
# gemma3_text, phi3, phimoe, gpt_oss. Module names below are those of LlamaDecoderLayer & co.

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
}


def _moe_numbers(c: ConfigView, family: str) -> tuple[int, int, int]:
    """(experts, experts per token, expert intermediate size); zeros for dense models."""
    n_experts = c.int("num_local_experts", "num_experts", "n_routed_experts", default=0, minimum=0)
    if not n_experts:
        return 0, 0, 0
    top_k = c.int("num_experts_per_tok", "experts_per_token", "num_experts_per_token")
    d_ff_expert = c.int("moe_intermediate_size", default=None) or c.int("intermediate_size")
    return n_experts, top_k, d_ff_expert


def _moe_layers(c: ConfigView, family: str, n_layers: int, n_experts: int) -> range | list[int]:
    """Decoder layers whose MLP is a mixture of experts."""
    if not n_experts:
        return []
    if family in ("qwen2_moe", "qwen3_moe"):
        step = c.int("decoder_sparse_step", default=1)
        dense = set(c.int_list("mlp_only_layers", default=[]))
        return [i for i in range(n_layers) if i not in dense and (i + 1) % step == 0]
    return range(n_layers)


def _as_ranges(indices) -> list[range]:
    """Consecutive runs of layer indices as ranges (a TensorSpec repeats over one range)."""
    runs: list[range] = []
    for i in indices:
        if runs and runs[-1].stop == i:
            runs[-1] = range(runs[-1].start, i + 1)
        else:
            runs.append(range(i, i + 1))
    return runs


def llama_like(c: ConfigView, name: str) -> ModelSpec:
    family = c.str("model_type")
    hidden = c.int("hidden_size")
    n_layers = c.int("num_hidden_layers")
    n_heads = c.int("num_attention_heads")
    n_kv = c.int("num_key_value_heads", default=n_heads)
    head_dim = _head_dim(c, hidden, n_heads)
    vocab = c.int("vocab_size")
    d_ff = c.int("intermediate_size", default=0, minimum=0)
    tied = c.bool("tie_word_embeddings", default=family.startswith("gemma"))
    layer_norm = family == "phimoe"                     # PhiMoE uses LayerNorm (weight and bias)
    qkv_bias = c.bool("attention_bias", default=family in ("qwen2", "qwen2_moe", "gpt_oss", "phimoe"))
    o_bias = qkv_bias and family not in ("qwen2", "qwen2_moe")   # Qwen2: bias on q/k/v only
    mlp_bias = c.bool("mlp_bias", default=False)

    t = TensorList(n_layers)
    t.embedding("embed_tokens", "embeddings", vocab, hidden)
    if family == "phi3":      # Phi3Attention: one fused qkv_proj
        t.linear("layers.self_attn.qkv_proj", "attention", (n_heads + 2 * n_kv) * head_dim, hidden, qkv_bias)
    else:
        t.linear("layers.self_attn.q_proj", "attention", n_heads * head_dim, hidden, qkv_bias)
        t.linear("layers.self_attn.k_proj", "attention", n_kv * head_dim, hidden, qkv_bias)
        t.linear("layers.self_attn.v_proj", "attention", n_kv * head_dim, hidden, qkv_bias)
    t.linear("layers.self_attn.o_proj", "attention", hidden, n_heads * head_dim, o_bias)
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

    n_experts, top_k, d_ff_expert = _moe_numbers(c, family)
    moe_layers = list(_moe_layers(c, family, n_layers, n_experts))
    dense_layers = [i for i in range(n_layers) if i not in set(moe_layers)]
    for run in _as_ranges(dense_layers):
        if family == "phi3":  # Phi3MLP: one fused gate_up_proj
            t.linear("layers.mlp.gate_up_proj", "mlp", 2 * d_ff, hidden, mlp_bias, run)
            t.linear("layers.mlp.down_proj", "mlp", hidden, d_ff, mlp_bias, run)
        else:
            _gated_mlp(t, "layers.mlp", "mlp", hidden, d_ff, mlp_bias, run)
    for run in _as_ranges(moe_layers):
        _llama_moe_block(c, family, t, run, hidden, n_experts, top_k, d_ff_expert)

    t.norm("norm", hidden, bias=layer_norm, layers=None)
    t.lm_head(vocab, hidden, tied, bias=family == "phimoe" and c.bool("lm_head_bias", default=False))
    types, window = _layer_types(c, n_layers, _SLIDING_RULES.get(family, lambda c: lambda i: False)(c))
    return _spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                 head_dim=head_dim, vocab_size=vocab, d_ff=d_ff if dense_layers else 0,
                 tied_embeddings=tied, layer_types=types, sliding_window=window,
                 n_experts=n_experts, n_experts_active=top_k, d_ff_expert=d_ff_expert,
                 n_shared_experts=1 if family == "qwen2_moe" else 0, rotary_dim=_rotary_dim(c, head_dim))


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
    _gated_mlp(t, "layers.mlp.experts", "experts", hidden, d_ff_expert, False, layers, n_experts, top_k)
    if family == "qwen2_moe":
        shared = c.int("shared_expert_intermediate_size")
        _gated_mlp(t, "layers.mlp.shared_expert", "shared_experts", hidden, shared, False, layers)
        t.linear("layers.mlp.shared_expert_gate", "router", 1, hidden, False, layers)


# ---------------------------------------------------------------------------------------------
# DeepSeek V2/V3: multi-head latent attention (MLA) and MoE with shared experts.


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

    n_experts, top_k, d_ff_expert = _moe_numbers(c, family)
    first_dense = c.int("first_k_dense_replace", default=0, minimum=0)
    freq = c.int("moe_layer_freq", default=1)
    moe = [i for i in range(n_layers) if n_experts and i >= first_dense and i % freq == 0]
    dense = [i for i in range(n_layers) if i not in set(moe)]
    d_ff = c.int("intermediate_size")
    n_shared = c.int("n_shared_experts", default=0, minimum=0)
    for run in _as_ranges(dense):
        _gated_mlp(t, "layers.mlp", "mlp", hidden, d_ff, False, run)
    for run in _as_ranges(moe):
        # DeepseekV3TopkRouter.weight [E, hidden]; its e_score_correction_bias is a buffer, not a parameter
        t.other("layers.mlp.gate.weight", "router", (n_experts, hidden), run)
        _gated_mlp(t, "layers.mlp.experts", "experts", hidden, d_ff_expert, False, run, n_experts, top_k)
        if n_shared:
            _gated_mlp(t, "layers.mlp.shared_experts", "shared_experts", hidden, d_ff_expert * n_shared, False, run)
    t.norm("norm", hidden, layers=None)
    tied = c.bool("tie_word_embeddings", default=False)
    t.lm_head(vocab, hidden, tied)
    notes = []
    if c.int("num_nextn_predict_layers", default=0, minimum=0):
        notes.append("the multi-token-prediction layer of the checkpoint is not counted (transformers does not load it)")
    return _spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_heads,
                 head_dim=qk_dim, v_head_dim=v_dim, vocab_size=vocab, d_ff=d_ff if dense else 0,
                 tied_embeddings=tied,
                 n_experts=n_experts, n_experts_active=top_k, d_ff_expert=d_ff_expert, n_shared_experts=n_shared,
                 kv_lora_rank=kv_lora, qk_rope_head_dim=rope, rotary_dim=rope, notes=notes)


# ---------------------------------------------------------------------------------------------
# Older decoders with fused QKV and LayerNorm: falcon, bloom, mpt, phi (phi-2), gpt_bigcode, gpt_neox.


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
    head_dim = _head_dim(c, hidden, n_heads)
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
    return _spec(c, "falcon", name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                 head_dim=head_dim, vocab_size=vocab, d_ff=d_ff, gated_mlp=False,
                 tied_embeddings=tied, rotary_dim=0 if c.bool("alibi", default=False) else None)


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
    return _spec(c, "bloom", name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_heads,
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
    return _spec(c, "mpt", name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_heads,
                 head_dim=hidden // n_heads, vocab_size=vocab, d_ff=d_ff,
                 gated_mlp=False, tied_embeddings=tied, rotary_dim=0)


def phi(c: ConfigView, name: str) -> ModelSpec:
    """PhiModel (phi-1.5, phi-2): parallel attention and MLP behind one LayerNorm, biases, lm_head bias."""
    hidden = c.int("hidden_size")
    n_layers = c.int("num_hidden_layers")
    n_heads = c.int("num_attention_heads")
    n_kv = c.int("num_key_value_heads", default=n_heads)
    head_dim = hidden // n_heads
    vocab = c.int("vocab_size")
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
    return _spec(c, "phi", name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                 head_dim=head_dim, vocab_size=vocab, d_ff=d_ff, gated_mlp=False,
                 tied_embeddings=tied, rotary_dim=_rotary_dim(c, head_dim, default=0.5))


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
    return _spec(c, "gpt_bigcode", name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
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
    return _spec(c, "gpt_neox", name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_heads,
                 head_dim=hidden // n_heads, vocab_size=vocab, d_ff=d_ff,
                 gated_mlp=False, tied_embeddings=tied,
                 rotary_dim=_rotary_dim(c, hidden // n_heads, 0.25, ("rotary_pct", "partial_rotary_factor")))


FAMILIES: dict[str, Callable[[ConfigView, str], ModelSpec]] = {
    **{f: llama_like for f in ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe",
                               "gemma", "gemma2", "gemma3_text", "phi3", "phimoe", "gpt_oss")},
    "gemma3": llama_like,
    "deepseek_v2": deepseek,
    "deepseek_v3": deepseek,
    "falcon": falcon,
    "RefinedWeb": falcon,
    "RefinedWebModel": falcon,
    "bloom": bloom,
    "mpt": mpt,
    "phi": phi,
    "gpt_bigcode": gpt_bigcode,
    "gpt_neox": gpt_neox,
}


def supported_families() -> list[str]:
    return sorted(f for f in FAMILIES if f[0].islower())


# Defaults of the transformers config classes for sizing keys that hub configs leave out, e.g.
# Gemma 3's text_config lists only what differs from Gemma3TextConfig (transformers 5.24).
CLASS_DEFAULTS: dict[str, dict] = {
    # sliding_window defaults of the config classes; an explicit null in a config still means none.
    "mistral": {"sliding_window": 4096},
    "gemma2": {"sliding_window": 4096},
    "gpt_oss": {"sliding_window": 128},
    "qwen2": {"sliding_window": 4096},
    "qwen2_moe": {"sliding_window": 4096},
    "qwen3": {"sliding_window": 4096},
    "qwen3_moe": {"sliding_window": 4096},
    "gemma3_text": {"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
                    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "sliding_window": 4096,
                    "max_position_embeddings": 131072, "tie_word_embeddings": True},
}


def spec_from_config(raw: dict, name: str, origin: str, source: str = "") -> ModelSpec:
    """Normalize a config.json dict; `origin` names the file in error messages."""
    c = ConfigView(raw, origin)
    family = c.str("model_type", default="")
    if family == "gemma3":         # Gemma3ForConditionalGeneration: the text model is gemma3_text
        c.raw["model_type"] = family = "gemma3_text"
    c.raw = {**CLASS_DEFAULTS.get(family, {}), **c.raw}
    build = FAMILIES.get(family)
    if build is None:
        shown = family or "(no model_type)"
        raise_unsupported(origin, shown)
    spec = build(c, name)
    native = quantization_label(c.raw.get("quantization_config"))
    if native or source:
        spec = replace(spec, native_precision=native, source=source or spec.source)
    return spec


def quantization_label(q) -> str | None:
    """The sizer precision name of a config's quantization_config (None when there is none)."""
    if not isinstance(q, dict):
        return None
    method = str(q.get("quant_method", "")).lower()
    if method in ("gptq", "awq"):
        return f"{method}-{q.get('bits', q.get('w_bit', 4))}bit-g{q.get('group_size', q.get('q_group_size', 128))}"
    if method == "bitsandbytes":
        if q.get("load_in_8bit"):
            return "int8"
        kind = str(q.get("bnb_4bit_quant_type", "fp4")).lower()
        return kind + ("-dq" if q.get("bnb_4bit_use_double_quant") else "")
    if method == "fp8":
        block = q.get("weight_block_size")
        return f"fp8-block{block[0]}" if isinstance(block, list) and block and block[0] == block[-1] else "fp8"
    return method or None


def raise_unsupported(origin: str, family: str) -> None:
    raise UnsupportedModelError(
        f"{origin}: architecture family {family!r} is not supported; supported: {', '.join(supported_families())}. "
        "Pass a folder with the checkpoint's *.safetensors files to size it from the tensor headers instead.")
