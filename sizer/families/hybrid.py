"""Hybrid families: attention layers mixed with recurrent ones that keep a fixed-size state per
sequence instead of a per-token KV cache (sizer.spec.RecurrentState).

Module names and shapes from the transformers 5.25 modeling files (named in each function); the
state layouts from the same files' cache updates (update_conv_state / update_recurrent_state).
"""

from __future__ import annotations

from math import ceil

from sizer.config import ConfigView
from sizer.errors import UnsupportedModelError
from sizer.families.common import TensorList, as_ranges, gated_mlp, make_spec, rotary_dim_of
from sizer.spec import FULL_ATTENTION, HYBRID, LINEAR_ATTENTION, MAMBA, ModelSpec, RecurrentState


def _attention(t: TensorList, layers, hidden: int, n_heads: int, n_kv: int, head_dim: int, bias: bool = False,
               q_factor: int = 1) -> None:
    for run in as_ranges(layers):
        t.linear("layers.self_attn.q_proj", "attention", q_factor * n_heads * head_dim, hidden, bias, run)
        t.linear("layers.self_attn.k_proj", "attention", n_kv * head_dim, hidden, bias, run)
        t.linear("layers.self_attn.v_proj", "attention", n_kv * head_dim, hidden, bias, run)
        t.linear("layers.self_attn.o_proj", "attention", hidden, n_heads * head_dim, bias, run)


def qwen3_next(c: ConfigView, name: str) -> ModelSpec:
    """Qwen3-Next (modeling_qwen3_next): Gated DeltaNet linear attention with a full gated-attention
    layer every `full_attention_interval` layers; MoE with a gated shared expert."""
    family = "qwen3_next"
    hidden = c.int("hidden_size")
    n_layers = c.int("num_hidden_layers")
    n_heads = c.int("num_attention_heads")
    n_kv = c.int("num_key_value_heads")
    head_dim = c.int("head_dim", default=256)
    vocab = c.int("vocab_size")
    given = c.str_list("layer_types", default=None)
    if given is None:                            # Qwen3NextConfig.__post_init__
        interval = c.int("full_attention_interval", default=4)
        given = ["linear_attention" if (i + 1) % interval else "full_attention" for i in range(n_layers)]
    if len(given) != n_layers:
        raise UnsupportedModelError(f"{c.origin}: layer_types has {len(given)} entries for {n_layers} layers")
    kinds = tuple(LINEAR_ATTENTION if k == "linear_attention" else FULL_ATTENTION for k in given)
    linear = [i for i, k in enumerate(kinds) if k == LINEAR_ATTENTION]
    full = [i for i, k in enumerate(kinds) if k == FULL_ATTENTION]

    t = TensorList(n_layers)
    t.embedding("embed_tokens", "embeddings", vocab, hidden)
    # Qwen3NextGatedDeltaNet
    nk, nv = c.int("linear_num_key_heads", default=16), c.int("linear_num_value_heads", default=32)
    dk, dv = c.int("linear_key_head_dim", default=128), c.int("linear_value_head_dim", default=128)
    kernel = c.int("linear_conv_kernel_dim", default=4)
    key_dim, value_dim = nk * dk, nv * dv
    conv_dim = 2 * key_dim + value_dim
    for run in as_ranges(linear):
        t.other("layers.linear_attn.conv1d.weight", "attention", (conv_dim, 1, kernel), run)
        t.linear("layers.linear_attn.in_proj_qkvz", "attention", 2 * key_dim + 2 * value_dim, hidden, False, run)
        t.linear("layers.linear_attn.in_proj_ba", "attention", 2 * nv, hidden, False, run)
        t.other("layers.linear_attn.dt_bias", "attention", (nv,), run)
        t.other("layers.linear_attn.A_log", "attention", (nv,), run)
        t.norm("layers.linear_attn.norm", dv, layers=run)          # Qwen3NextRMSNormGated over a value head
        t.linear("layers.linear_attn.out_proj", "attention", hidden, value_dim, False, run)
    # Qwen3NextAttention: q_proj carries the output gate too (2 x heads x head_dim)
    bias = c.bool("attention_bias", default=False)
    _attention(t, full, hidden, n_heads, n_kv, head_dim, bias, q_factor=2)
    for run in as_ranges(full):
        t.norm("layers.self_attn.q_norm", head_dim, layers=run)
        t.norm("layers.self_attn.k_norm", head_dim, layers=run)
    t.norm("layers.input_layernorm", hidden)
    t.norm("layers.post_attention_layernorm", hidden)
    # Qwen3NextSparseMoeBlock on (i + 1) % decoder_sparse_step == 0 outside mlp_only_layers, else Qwen3NextMLP
    n_experts = c.int("num_experts", default=0, minimum=0)
    top_k = c.int("num_experts_per_tok", default=0, minimum=0)
    d_ff_expert = c.int("moe_intermediate_size", default=0, minimum=0)
    d_shared = c.int("shared_expert_intermediate_size", default=0, minimum=0)
    step = c.int("decoder_sparse_step", default=1)
    dense_only = set(c.int_list("mlp_only_layers", default=[]) or [])
    moe = [i for i in range(n_layers) if n_experts and i not in dense_only and (i + 1) % step == 0]
    dense = [i for i in range(n_layers) if i not in set(moe)]
    d_ff = c.int("intermediate_size")
    for run in as_ranges(dense):
        gated_mlp(t, "layers.mlp", "mlp", hidden, d_ff, False, run)
    for run in as_ranges(moe):
        t.other("layers.mlp.gate.weight", "router", (n_experts, hidden), run)
        gated_mlp(t, "layers.mlp.experts", "experts", hidden, d_ff_expert, False, run, n_experts, top_k)
        if d_shared:
            gated_mlp(t, "layers.mlp.shared_expert", "shared_experts", hidden, d_shared, False, run)
            t.other("layers.mlp.shared_expert_gate.weight", "router", (1, hidden), run)
    t.norm("norm", hidden, layers=None)
    tied = c.bool("tie_word_embeddings", default=False)
    t.lm_head(vocab, hidden, tied)
    # conv_states (batch, conv_dim, kernel); recurrent_states (batch, value heads, key dim, value dim)
    state = RecurrentState("gated_deltanet", conv_dim, kernel, nv * dk * dv)
    notes = ["Gated DeltaNet layers keep a fixed recurrent state per sequence instead of a KV cache"]
    if c.int("mtp_num_hidden_layers", "num_nextn_predict_layers", default=0, minimum=0):
        notes.append("the multi-token-prediction layer of the checkpoint is not counted (transformers does not load it)")
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                     head_dim=head_dim, vocab_size=vocab, d_ff=d_ff if dense else 0, tied_embeddings=tied,
                     layer_types=kinds, n_experts=n_experts if moe else 0, n_experts_active=top_k if moe else 0,
                     d_ff_expert=d_ff_expert if moe else 0, n_shared_experts=1 if moe and d_shared else 0,
                     rotary_dim=rotary_dim_of(c, head_dim, default=0.25),   # Qwen3NextConfig default
                     recurrent=state, notes=notes)


def _mamba1(t: TensorList, layers, c: ConfigView, hidden: int) -> RecurrentState:
    """JambaMambaMixer: in_proj -> conv1d -> x_proj -> dt_proj, A_log, D, out_proj, dt/B/C RMSNorms."""
    d_state = c.int("mamba_d_state", default=16)
    kernel = c.int("mamba_d_conv", default=4)
    d_inner = c.int("mamba_expand", default=2) * hidden
    dt_rank = c.raw.get("mamba_dt_rank", "auto")
    dt_rank = ceil(hidden / 16) if dt_rank in ("auto", None) else int(dt_rank)
    proj_bias = c.bool("mamba_proj_bias", default=False)
    conv_bias = c.bool("mamba_conv_bias", default=True)
    for run in as_ranges(layers):
        t.linear("layers.mamba.in_proj", "attention", 2 * d_inner, hidden, proj_bias, run)
        t.other("layers.mamba.conv1d.weight", "attention", (d_inner, 1, kernel), run)
        if conv_bias:
            t.other("layers.mamba.conv1d.bias", "attention", (d_inner,), run)
        t.linear("layers.mamba.x_proj", "attention", dt_rank + 2 * d_state, d_inner, False, run)
        t.linear("layers.mamba.dt_proj", "attention", d_inner, dt_rank, True, run)
        t.other("layers.mamba.A_log", "attention", (d_inner, d_state), run)
        t.other("layers.mamba.D", "attention", (d_inner,), run)
        t.linear("layers.mamba.out_proj", "attention", hidden, d_inner, proj_bias, run)
        t.norm("layers.mamba.dt_layernorm", dt_rank, layers=run)
        t.norm("layers.mamba.b_layernorm", d_state, layers=run)
        t.norm("layers.mamba.c_layernorm", d_state, layers=run)
    # conv_states (batch, d_inner, kernel); recurrent_states (batch, d_inner, d_state)
    return RecurrentState("mamba", d_inner, kernel, d_inner * d_state)


def jamba(c: ConfigView, name: str) -> ModelSpec:
    """Jamba (modeling_jamba): attention on layer i % attn_layer_period == attn_layer_offset, Mamba
    elsewhere; MoE on i % expert_layer_period == expert_layer_offset."""
    family = "jamba"
    hidden = c.int("hidden_size")
    n_layers = c.int("num_hidden_layers")
    n_heads = c.int("num_attention_heads")
    n_kv = c.int("num_key_value_heads", default=n_heads)
    head_dim = hidden // n_heads
    vocab = c.int("vocab_size")
    period, offset = c.int("attn_layer_period", default=8), c.int("attn_layer_offset", default=4)
    kinds = tuple(FULL_ATTENTION if i % period == offset else MAMBA for i in range(n_layers))
    t = TensorList(n_layers)
    t.embedding("embed_tokens", "embeddings", vocab, hidden)
    state = _mamba1(t, [i for i, k in enumerate(kinds) if k == MAMBA], c, hidden)
    _attention(t, [i for i, k in enumerate(kinds) if k == FULL_ATTENTION], hidden, n_heads, n_kv, head_dim)
    n_experts = c.int("num_experts", default=16, minimum=1)
    top_k = c.int("num_experts_per_tok", default=2)
    e_period, e_offset = c.int("expert_layer_period", default=2), c.int("expert_layer_offset", default=1)
    moe = [i for i in range(n_layers) if n_experts > 1 and i % e_period == e_offset]
    dense = [i for i in range(n_layers) if i not in set(moe)]
    d_ff = c.int("intermediate_size")
    for run in as_ranges(dense):
        gated_mlp(t, "layers.feed_forward", "mlp", hidden, d_ff, False, run)
    for run in as_ranges(moe):
        t.other("layers.feed_forward.router.weight", "router", (n_experts, hidden), run)
        gated_mlp(t, "layers.feed_forward.experts", "experts", hidden, d_ff, False, run, n_experts, top_k)
    t.norm("layers.input_layernorm", hidden)
    t.norm("layers.pre_ff_layernorm", hidden)
    t.norm("final_layernorm", hidden, layers=None)
    tied = c.bool("tie_word_embeddings", default=False)
    t.lm_head(vocab, hidden, tied)
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                     head_dim=head_dim, vocab_size=vocab, d_ff=d_ff if dense else 0, tied_embeddings=tied,
                     layer_types=kinds, n_experts=n_experts if moe else 0, n_experts_active=top_k if moe else 0,
                     d_ff_expert=d_ff if moe else 0, rotary_dim=0, recurrent=state,
                     notes=["Mamba layers keep a fixed state per sequence instead of a KV cache"])


def falcon_h1(c: ConfigView, name: str) -> ModelSpec:
    """Falcon-H1 (modeling_falcon_h1): every layer runs attention and a Mamba2 mixer side by side,
    then a gated MLP; each layer keeps KV and a state (transformers' "hybrid" cache layer)."""
    family = "falcon_h1"
    hidden = c.int("hidden_size")
    n_layers = c.int("num_hidden_layers")
    n_heads = c.int("num_attention_heads")
    n_kv = c.int("num_key_value_heads", default=n_heads)
    head_dim = c.int("head_dim", default=None) or hidden // n_heads
    vocab = c.int("vocab_size")
    t = TensorList(n_layers)
    t.embedding("embed_tokens", "embeddings", vocab, hidden)
    t.linear("layers.feed_forward.gate_proj", "mlp", c.int("intermediate_size"), hidden, c.bool("mlp_bias", default=False))
    t.linear("layers.feed_forward.up_proj", "mlp", c.int("intermediate_size"), hidden, c.bool("mlp_bias", default=False))
    t.linear("layers.feed_forward.down_proj", "mlp", hidden, c.int("intermediate_size"), c.bool("mlp_bias", default=False))
    # FalconH1Mixer (Mamba2): in_proj -> [gate, conv (x, B, C), dt]; conv1d; dt_bias, A_log, D; optional gated norm
    d_ssm = c.int("mamba_d_ssm", default=None) or c.int("mamba_expand", default=2) * hidden
    m_heads = c.int("mamba_n_heads", default=128)
    d_state = c.int("mamba_d_state", default=256)
    groups = c.int("mamba_n_groups", default=1)
    kernel = c.int("mamba_d_conv", default=4)
    conv_dim = d_ssm + 2 * groups * d_state
    proj_bias = c.bool("mamba_proj_bias", default=False)
    t.linear("layers.mamba.in_proj", "attention", d_ssm + conv_dim + m_heads, hidden, proj_bias)
    t.other("layers.mamba.conv1d.weight", "attention", (conv_dim, 1, kernel))
    if c.bool("mamba_conv_bias", default=True):
        t.other("layers.mamba.conv1d.bias", "attention", (conv_dim,))
    for p in ("dt_bias", "A_log", "D"):
        t.other(f"layers.mamba.{p}", "attention", (m_heads,))
    if c.bool("mamba_rms_norm", default=False):
        t.norm("layers.mamba.norm", d_ssm)
    t.linear("layers.mamba.out_proj", "attention", hidden, d_ssm, proj_bias)
    _attention(t, range(n_layers), hidden, n_heads, n_kv, head_dim, c.bool("attention_bias", default=False))
    t.norm("layers.input_layernorm", hidden)
    t.norm("layers.pre_ff_layernorm", hidden)
    t.norm("final_layernorm", hidden, layers=None)
    tied = c.bool("tie_word_embeddings", default=False)
    t.lm_head(vocab, hidden, tied)
    # conv_states (batch, conv_dim, kernel); recurrent_states (batch, heads, head_dim, d_state)
    state = RecurrentState("mamba2", conv_dim, kernel, d_ssm * d_state)
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                     head_dim=head_dim, vocab_size=vocab, d_ff=c.int("intermediate_size"), tied_embeddings=tied,
                     layer_types=(HYBRID,) * n_layers, recurrent=state,
                     notes=["every layer keeps a KV cache and a Mamba2 state per sequence"])
