"""Hybrid families: attention layers mixed with recurrent ones that keep a fixed-size state per
sequence instead of a per-token KV cache (sizer.spec.RecurrentState).

Module names and shapes from the transformers 5.25 modeling files (named in each function); the
state layouts from the same files' cache updates (update_conv_state / update_recurrent_state).
"""

from __future__ import annotations

from math import ceil

from sizer.config import ConfigView
from sizer.errors import UnsupportedModelError
from sizer.families.common import TensorList, as_ranges, decoder_shape, gated_mlp, make_spec, mtp_notes, rotary_dim_of
from sizer.spec import FULL_ATTENTION, HYBRID, LINEAR_ATTENTION, MAMBA, NO_CACHE, ModelSpec, RecurrentState


def _attention(t: TensorList, layers, hidden: int, n_heads: int, n_kv: int, head_dim: int, bias: bool = False,
               q_factor: int = 1, prefix: str = "layers.self_attn") -> None:
    for run in as_ranges(layers):
        t.linear(f"{prefix}.q_proj", "attention", q_factor * n_heads * head_dim, hidden, bias, run)
        t.linear(f"{prefix}.k_proj", "attention", n_kv * head_dim, hidden, bias, run)
        t.linear(f"{prefix}.v_proj", "attention", n_kv * head_dim, hidden, bias, run)
        t.linear(f"{prefix}.o_proj", "attention", hidden, n_heads * head_dim, bias, run)


def qwen3_next(c: ConfigView, name: str) -> ModelSpec:
    """Qwen3-Next (modeling_qwen3_next): Gated DeltaNet linear attention with a full gated-attention
    layer every `full_attention_interval` layers; MoE with a gated shared expert."""
    return _gated_deltanet_model(c, name, "qwen3_next", fused_projections=True, moe=True)


def qwen3_5(c: ConfigView, name: str) -> ModelSpec:
    """Qwen3.5 dense (modeling_qwen3_5, Qwen3_5TextModel): Qwen3-Next's layout (Gated DeltaNet, a gated
    full-attention layer every 4th) with separate in_proj_qkv / in_proj_z / in_proj_b / in_proj_a and
    a dense gated MLP in every layer. A multimodal checkpoint is sized from its text_config."""
    return _gated_deltanet_model(c, name, "qwen3_5", fused_projections=False, moe=False)


def qwen3_5_moe(c: ConfigView, name: str) -> ModelSpec:
    """Qwen3.5 MoE (modeling_qwen3_5_moe): Qwen3.5's mixers, a sparse MoE block with a gated shared
    expert in every layer (Qwen3_5MoeSparseMoeBlock)."""
    return _gated_deltanet_model(c, name, "qwen3_5_moe", fused_projections=False, moe=True)


def _gated_deltanet_model(c: ConfigView, name: str, family: str, fused_projections: bool, moe: bool) -> ModelSpec:
    hidden = c.int("hidden_size")
    n_layers = c.int("num_hidden_layers")
    n_heads = c.int("num_attention_heads")
    n_kv = c.int("num_key_value_heads")
    head_dim = c.int("head_dim", default=256)
    vocab = c.int("vocab_size")
    given = c.str_list("layer_types", default=None)
    if given is None:                            # Qwen3NextConfig / Qwen3_5TextConfig.__post_init__
        interval = c.int("full_attention_interval", default=4)
        given = ["linear_attention" if (i + 1) % interval else "full_attention" for i in range(n_layers)]
    if len(given) != n_layers:
        raise UnsupportedModelError(f"{c.origin}: layer_types has {len(given)} entries for {n_layers} layers")
    kinds = tuple(LINEAR_ATTENTION if k == "linear_attention" else FULL_ATTENTION for k in given)
    linear = [i for i, k in enumerate(kinds) if k == LINEAR_ATTENTION]
    full = [i for i, k in enumerate(kinds) if k == FULL_ATTENTION]

    t = TensorList(n_layers)
    t.embedding("embed_tokens", "embeddings", vocab, hidden)
    state = _gated_deltanet(t, linear, c, hidden, fused_projections)
    # gated attention: q_proj carries the output gate too (2 x heads x head_dim)
    bias = c.bool("attention_bias", default=False)
    _attention(t, full, hidden, n_heads, n_kv, head_dim, bias, q_factor=2)
    for run in as_ranges(full):
        t.norm("layers.self_attn.q_norm", head_dim, layers=run)
        t.norm("layers.self_attn.k_norm", head_dim, layers=run)
    t.norm("layers.input_layernorm", hidden)
    t.norm("layers.post_attention_layernorm", hidden)
    d_ff, moe_layers, (n_experts, top_k, d_ff_expert, d_shared) = _qwen_mlps(t, c, family, n_layers, hidden, moe)
    t.norm("norm", hidden, layers=None)
    tied = c.bool("tie_word_embeddings", default=False)
    t.lm_head(vocab, hidden, tied)
    notes = ["Gated DeltaNet layers keep a fixed recurrent state per sequence instead of a KV cache"]
    notes += mtp_notes(c)
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                     head_dim=head_dim, vocab_size=vocab, d_ff=d_ff, tied_embeddings=tied,
                     layer_types=kinds, n_experts=n_experts if moe_layers else 0,
                     n_experts_active=top_k if moe_layers else 0,
                     d_ff_expert=d_ff_expert if moe_layers else 0, n_shared_experts=1 if moe_layers and d_shared else 0,
                     rotary_dim=rotary_dim_of(c, head_dim, default=0.25),   # the config classes' default
                     recurrent=state, notes=notes)


def _gated_deltanet(t: TensorList, layers: list[int], c: ConfigView, hidden: int, fused: bool) -> RecurrentState:
    """Qwen3NextGatedDeltaNet / Qwen3_5GatedDeltaNet on `layers` (Qwen3-Next fuses in_proj_qkvz and
    in_proj_ba; Qwen3.5 keeps qkv, z, b and a apart); the state it keeps per sequence: conv_states
    (batch, conv_dim, kernel) and recurrent_states (batch, value heads, key dim, value dim)."""
    nk, nv = c.int("linear_num_key_heads", default=16), c.int("linear_num_value_heads", default=32)
    dk, dv = c.int("linear_key_head_dim", default=128), c.int("linear_value_head_dim", default=128)
    kernel = c.int("linear_conv_kernel_dim", default=4)
    key_dim, value_dim = nk * dk, nv * dv
    conv_dim = 2 * key_dim + value_dim
    for run in as_ranges(layers):
        t.other("layers.linear_attn.conv1d.weight", "attention", (conv_dim, 1, kernel), run)
        if fused:
            t.linear("layers.linear_attn.in_proj_qkvz", "attention", 2 * key_dim + 2 * value_dim, hidden, False, run)
            t.linear("layers.linear_attn.in_proj_ba", "attention", 2 * nv, hidden, False, run)
        else:
            t.linear("layers.linear_attn.in_proj_qkv", "attention", 2 * key_dim + value_dim, hidden, False, run)
            t.linear("layers.linear_attn.in_proj_z", "attention", value_dim, hidden, False, run)
            t.linear("layers.linear_attn.in_proj_b", "attention", nv, hidden, False, run)
            t.linear("layers.linear_attn.in_proj_a", "attention", nv, hidden, False, run)
        t.other("layers.linear_attn.dt_bias", "attention", (nv,), run)
        t.other("layers.linear_attn.A_log", "attention", (nv,), run)
        t.norm("layers.linear_attn.norm", dv, layers=run)          # RMSNormGated over a value head
        t.linear("layers.linear_attn.out_proj", "attention", hidden, value_dim, False, run)
    return RecurrentState("gated_deltanet", conv_dim, kernel, nv * dk * dv, heads=nv, key_heads=nk, head_dim=dk,
                          value_head_dim=dv)


def _qwen_mlps(t: TensorList, c: ConfigView, family: str, n_layers: int, hidden: int,
               moe: bool) -> tuple[int, list[int], tuple[int, int, int, int]]:
    """Qwen3-Next: a SparseMoeBlock on (i + 1) % decoder_sparse_step == 0 outside mlp_only_layers, else
    an MLP; Qwen3.5 MoE: a SparseMoeBlock in every layer; Qwen3.5: an MLP in every layer. Returns the
    dense width, the MoE layers and (experts, experts per token, expert width, shared expert width)."""
    n_experts = c.int("num_experts", default=0, minimum=0) if moe else 0
    top_k = c.int("num_experts_per_tok", default=0, minimum=0) if moe else 0
    d_ff_expert = c.int("moe_intermediate_size", default=0, minimum=0) if moe else 0
    d_shared = c.int("shared_expert_intermediate_size", default=0, minimum=0) if moe else 0
    if family == "qwen3_next":
        step = c.int("decoder_sparse_step", default=1)
        dense_only = set(c.int_list("mlp_only_layers", default=[]) or [])
    else:
        step, dense_only = 1, set()
    moe_layers = [i for i in range(n_layers) if n_experts and i not in dense_only and (i + 1) % step == 0]
    dense = [i for i in range(n_layers) if i not in set(moe_layers)]
    d_ff = c.int("intermediate_size") if dense else 0
    for run in as_ranges(dense):
        gated_mlp(t, "layers.mlp", "mlp", hidden, d_ff, False, run)
    for run in as_ranges(moe_layers):
        t.other("layers.mlp.gate.weight", "router", (n_experts, hidden), run)
        gated_mlp(t, "layers.mlp.experts", "experts", hidden, d_ff_expert, False, run, n_experts, top_k)
        if d_shared:
            gated_mlp(t, "layers.mlp.shared_expert", "shared_experts", hidden, d_shared, False, run)
            t.other("layers.mlp.shared_expert_gate.weight", "router", (1, hidden), run)
    return d_ff, moe_layers, (n_experts, top_k, d_ff_expert, d_shared)


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
    return RecurrentState("mamba", d_inner, kernel, d_inner * d_state, d_state=d_state, head_dim=dt_rank)


def jamba(c: ConfigView, name: str) -> ModelSpec:
    """Jamba (modeling_jamba): attention on layer i % attn_layer_period == attn_layer_offset, Mamba
    elsewhere; MoE on i % expert_layer_period == expert_layer_offset."""
    family = "jamba"
    hidden, n_layers, n_heads, n_kv, head_dim, vocab = decoder_shape(c)
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
    hidden, n_layers, n_heads, n_kv, head_dim, vocab = decoder_shape(c)
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
    state = RecurrentState("mamba2", conv_dim, kernel, d_ssm * d_state, heads=m_heads, key_heads=groups,
                           head_dim=d_ssm // m_heads, d_state=d_state, chunk_size=c.int("mamba_chunk_size", default=256))
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                     head_dim=head_dim, vocab_size=vocab, d_ff=c.int("intermediate_size"), tied_embeddings=tied,
                     layer_types=(HYBRID,) * n_layers, recurrent=state,
                     notes=["every layer keeps a KV cache and a Mamba2 state per sequence"])


def _mamba2(t: TensorList, prefix: str, layers, hidden: int, d_inner: int, heads: int, d_state: int, groups: int,
            kernel: int, proj_bias: bool, conv_bias: bool, chunk: int) -> RecurrentState:
    """A Mamba2 mixer as GraniteMoeHybridMambaLayer and NemotronHMamba2Mixer build it: in_proj ->
    [gate, conv (x, B, C), dt]; depthwise conv1d; dt_bias, A_log, D per head; a gated RMSNorm over
    the inner width; out_proj."""
    conv_dim = d_inner + 2 * groups * d_state
    for run in as_ranges(layers):
        t.linear(f"{prefix}.in_proj", "attention", d_inner + conv_dim + heads, hidden, proj_bias, run)
        t.other(f"{prefix}.conv1d.weight", "attention", (conv_dim, 1, kernel), run)
        if conv_bias:
            t.other(f"{prefix}.conv1d.bias", "attention", (conv_dim,), run)
        for p in ("dt_bias", "A_log", "D"):
            t.other(f"{prefix}.{p}", "attention", (heads,), run)
        t.norm(f"{prefix}.norm", d_inner, layers=run)
        t.linear(f"{prefix}.out_proj", "attention", hidden, d_inner, proj_bias, run)
    # conv_states (batch, conv_dim, kernel); recurrent_states (batch, heads, head_dim, d_state)
    return RecurrentState("mamba2", conv_dim, kernel, d_inner * d_state, heads=heads, key_heads=groups,
                          head_dim=d_inner // heads, d_state=d_state, chunk_size=chunk)


# Legacy layer names (transformers configuration_utils._LEGACY_LAYER_TYPE_REMAP) and Nemotron-H's
# hybrid_override_pattern characters (NemotronHConfig._pattern_to_list).
_LEGACY_LAYER_TYPES = {"mamba": "linear_attention", "attention": "full_attention"}
_NEMOTRON_PATTERN = {"M": "linear_attention", "E": "moe", "*": "full_attention", "-": "mlp"}


def granitemoehybrid(c: ConfigView, name: str) -> ModelSpec:
    """Granite 4.0 hybrids (modeling_granitemoehybrid): per layer a Mamba2 mixer or attention
    (layer_types / layers_block_type, "mamba" / "attention" in hub configs), then a MoE block
    (when num_local_experts > 0) plus a shared gated MLP (shared_mlp) in every layer."""
    family = "granitemoehybrid"
    hidden, n_layers, n_heads, n_kv, head_dim, vocab = decoder_shape(c)
    given = (c.str_list("layer_types", default=None) or c.str_list("layers_block_type", default=None)
             or ["linear_attention"] * n_layers)
    given = [_LEGACY_LAYER_TYPES.get(k, k) for k in given]
    if len(given) != n_layers:
        raise UnsupportedModelError(f"{c.origin}: layer_types has {len(given)} entries for {n_layers} layers")
    kinds = tuple(MAMBA if k == "linear_attention" else FULL_ATTENTION for k in given)
    t = TensorList(n_layers)
    t.embedding("embed_tokens", "embeddings", vocab, hidden)
    d_inner = c.int("mamba_expand", default=2) * hidden
    state = _mamba2(t, "layers.mamba", [i for i, k in enumerate(kinds) if k == MAMBA], hidden, d_inner,
                    c.int("mamba_n_heads", default=128), c.int("mamba_d_state", default=256),
                    c.int("mamba_n_groups", default=1), c.int("mamba_d_conv", default=4),
                    c.bool("mamba_proj_bias", default=False), c.bool("mamba_conv_bias", default=True),
                    c.int("mamba_chunk_size", default=256))
    _attention(t, [i for i, k in enumerate(kinds) if k == FULL_ATTENTION], hidden, n_heads, n_kv, head_dim,
               c.bool("attention_bias", default=False))
    n_experts = c.int("num_local_experts", default=8, minimum=0)
    top_k = c.int("num_experts_per_tok", default=2, minimum=0)
    d_ff = c.int("intermediate_size", default=11008)
    if n_experts:       # GraniteMoeHybridMoE: router + experts (gate_up_proj, down_proj)
        t.other("layers.block_sparse_moe.router.weight", "router", (n_experts, hidden))
        gated_mlp(t, "layers.block_sparse_moe.experts", "experts", hidden, d_ff, False, "all", n_experts, top_k)
    d_shared = c.int("shared_intermediate_size", default=1024)
    t.linear("layers.shared_mlp.input_linear", "mlp", 2 * d_shared, hidden)       # GraniteMoeHybridMLP
    t.linear("layers.shared_mlp.output_linear", "mlp", hidden, d_shared)
    t.norm("layers.input_layernorm", hidden)
    t.norm("layers.post_attention_layernorm", hidden)
    t.norm("norm", hidden, layers=None)
    tied = c.bool("tie_word_embeddings", default=False)
    t.lm_head(vocab, hidden, tied)
    rope = c.raw.get("position_embedding_type") == "rope"      # the rotary embedding only for "rope"
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                     head_dim=head_dim, vocab_size=vocab, d_ff=d_shared, tied_embeddings=tied, layer_types=kinds,
                     n_experts=n_experts, n_experts_active=top_k if n_experts else 0,
                     d_ff_expert=d_ff if n_experts else 0, rotary_dim=None if rope else 0, recurrent=state,
                     notes=["Mamba2 layers keep a fixed state per sequence instead of a KV cache"])


def nemotron_h(c: ConfigView, name: str) -> ModelSpec:
    """Nemotron-H and NVIDIA Nemotron 3 (modeling_nemotron_h): a stack of single-mixer blocks, each a
    norm and one of Mamba2 (M), attention without RoPE (*), a squared-ReLU MLP (-) or a MoE (E: ReLU^2
    experts with up/down only, a shared expert, an optional latent projection around the routed
    experts); the MLP and MoE blocks keep no cache (NO_CACHE)."""
    family = "nemotron_h"
    hidden = c.int("hidden_size")
    given = c.str_list("layers_block_type", default=None) or c.str_list("layer_types", default=None)
    pattern = c.raw.get("hybrid_override_pattern")
    if given is None and isinstance(pattern, str):
        unknown = set(pattern) - set(_NEMOTRON_PATTERN)
        if unknown:
            raise UnsupportedModelError(f"{c.origin}: hybrid_override_pattern has unknown blocks {sorted(unknown)}")
        given = [_NEMOTRON_PATTERN[ch] for ch in pattern]
    given = [_LEGACY_LAYER_TYPES.get(k, k) for k in (given or ["linear_attention", "moe", "full_attention", "mlp"])]
    if set(given) - {"linear_attention", "full_attention", "moe", "mlp"}:
        raise UnsupportedModelError(f"{c.origin}: unknown Nemotron-H block types {sorted(set(given))}")
    n_layers = len(given)                     # NemotronHConfig.num_hidden_layers is len(layers_block_type)
    n_heads = c.int("num_attention_heads", default=32)
    n_kv = c.int("num_key_value_heads", default=8)
    head_dim = c.int("head_dim", default=128)
    vocab = c.int("vocab_size", default=131072)
    kinds = tuple({"linear_attention": MAMBA, "full_attention": FULL_ATTENTION}.get(k, NO_CACHE) for k in given)
    where = {k: [i for i, g in enumerate(given) if g == k] for k in ("linear_attention", "full_attention", "moe", "mlp")}
    t = TensorList(n_layers)
    t.embedding("embeddings", "embeddings", vocab, hidden)
    # NemotronHConfig.__post_init__: the legacy mamba_* keys (mamba_n_groups, mamba_d_conv, ...) win where given
    heads, head = c.int("mamba_num_heads", default=128), c.int("mamba_head_dim", default=64)
    state = _mamba2(t, "layers.mixer", where["linear_attention"], hidden, heads * head, heads,
                    c.int("ssm_state_size", default=128), c.int("mamba_n_groups", "n_groups", default=8),
                    c.int("mamba_d_conv", "conv_kernel", default=4), c.bool("use_bias", default=False),
                    c.bool("mamba_conv_bias", "use_conv_bias", default=True), c.int("mamba_chunk_size", "chunk_size", default=128))
    _attention(t, where["full_attention"], hidden, n_heads, n_kv, head_dim, prefix="layers.mixer")   # no biases
    mlp_bias = c.bool("mlp_bias", default=False)
    d_ff = c.int("intermediate_size", default=21504)
    for run in as_ranges(where["mlp"]):                # NemotronHMLP: up_proj, relu2, down_proj
        t.linear("layers.mixer.up_proj", "mlp", d_ff, hidden, mlp_bias, run)
        t.linear("layers.mixer.down_proj", "mlp", hidden, d_ff, mlp_bias, run)
    n_experts = c.int("n_routed_experts", "num_local_experts", default=8)
    top_k = c.int("num_experts_per_tok", default=2)
    d_ff_expert = c.int("moe_intermediate_size", default=7688)
    d_shared = c.int("moe_shared_expert_intermediate_size", default=7688)
    latent = c.int("moe_latent_size", default=None)
    width = latent or hidden
    for run in as_ranges(where["moe"]):                 # NemotronHMoE
        t.other("layers.mixer.gate.weight", "router", (n_experts, hidden), run)
        t.linear("layers.mixer.experts.up_proj", "experts", d_ff_expert, width, False, run, n_experts, top_k)
        t.linear("layers.mixer.experts.down_proj", "experts", width, d_ff_expert, False, run, n_experts, top_k)
        t.linear("layers.mixer.shared_experts.up_proj", "shared_experts", d_shared, hidden, mlp_bias, run)
        t.linear("layers.mixer.shared_experts.down_proj", "shared_experts", hidden, d_shared, mlp_bias, run)
        if latent:
            t.linear("layers.mixer.fc1_latent_proj", "mlp", latent, hidden, mlp_bias, run)
            t.linear("layers.mixer.fc2_latent_proj", "mlp", hidden, latent, mlp_bias, run)
    t.norm("layers.norm", hidden)
    t.norm("norm_f", hidden, layers=None)
    tied = False        # NemotronHForCausalLM._tied_weights_keys is empty: lm_head is its own whatever the config says
    t.lm_head(vocab, hidden, tied)
    moe = bool(where["moe"])
    notes = ["Mamba2 layers keep a fixed state per sequence instead of a KV cache; the MLP and MoE blocks keep none"]
    notes += mtp_notes(c)
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                     head_dim=head_dim, vocab_size=vocab, d_ff=d_ff if where["mlp"] else 0, tied_embeddings=tied,
                     layer_types=kinds, gated_mlp=False, n_experts=n_experts if moe else 0,
                     n_experts_active=top_k if moe else 0, d_ff_expert=d_ff_expert if moe else 0,
                     n_shared_experts=1 if moe else 0, rotary_dim=0, recurrent=state, notes=notes)


def minimax(c: ConfigView, name: str) -> ModelSpec:
    """MiniMax-Text-01 / MiniMax-M1 (modeling_minimax): lightning attention (linear attention without a
    conv: qkv_proj, a gated output, an RMSNorm over all heads) on most layers, softmax attention on the
    others (layer_types; the original configs' attn_type_list, 0 linear and 1 softmax); a Mixtral-like
    MoE in every layer. The lightning layers keep a [heads, head_dim, head_dim] state per sequence."""
    family = "minimax"
    hidden, n_layers, n_heads, n_kv, head_dim, vocab = decoder_shape(c)
    given = c.str_list("layer_types", default=None)
    if given is None:
        codes = c.int_list("attn_type_list") if c.raw.get("attn_type_list") is not None else None
        given = (["linear_attention" if k == 0 else "full_attention" for k in codes] if codes is not None
                 else ["full_attention" if (i + 1) % 2 else "linear_attention" for i in range(n_layers)])
    if len(given) != n_layers:
        raise UnsupportedModelError(f"{c.origin}: layer_types has {len(given)} entries for {n_layers} layers")
    kinds = tuple(LINEAR_ATTENTION if k == "linear_attention" else FULL_ATTENTION for k in given)
    linear = [i for i, k in enumerate(kinds) if k == LINEAR_ATTENTION]
    t = TensorList(n_layers)
    t.embedding("embed_tokens", "embeddings", vocab, hidden)
    inner = n_heads * head_dim
    for run in as_ranges(linear):                       # MiniMaxLightningAttention
        t.linear("layers.self_attn.qkv_proj", "attention", 3 * inner, hidden, False, run)
        t.linear("layers.self_attn.output_gate", "attention", inner, hidden, False, run)
        t.linear("layers.self_attn.out_proj", "attention", hidden, inner, False, run)
        t.norm("layers.self_attn.norm", inner, layers=run)
    _attention(t, [i for i, k in enumerate(kinds) if k == FULL_ATTENTION], hidden, n_heads, n_kv, head_dim)
    n_experts = c.int("num_local_experts", default=8)
    top_k = c.int("num_experts_per_tok", default=2)
    d_ff = c.int("intermediate_size")
    t.other("layers.mlp.gate.weight", "router", (n_experts, hidden))    # MiniMaxSparseMoeBlock
    gated_mlp(t, "layers.mlp.experts", "experts", hidden, d_ff, False, "all", n_experts, top_k)
    t.norm("layers.input_layernorm", hidden)
    t.norm("layers.post_attention_layernorm", hidden)
    t.norm("norm", hidden, layers=None)
    tied = c.bool("tie_word_embeddings", default=False)
    t.lm_head(vocab, hidden, tied)
    rotary = c.int("rotary_dim", default=None)
    # attn_weights_inter (batch, heads, head_dim, head_dim); no conv
    state = RecurrentState("lightning", 0, 0, n_heads * head_dim * head_dim, heads=n_heads, head_dim=head_dim,
                           value_head_dim=head_dim, chunk_size=c.int("block_size", default=256))
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
                     head_dim=head_dim, vocab_size=vocab, d_ff=0, tied_embeddings=tied, layer_types=kinds,
                     n_experts=n_experts, n_experts_active=top_k, d_ff_expert=d_ff,
                     rotary_dim=rotary if rotary and rotary < head_dim else rotary_dim_of(c, head_dim),
                     recurrent=state,
                     notes=["lightning-attention layers keep a fixed state per sequence instead of a KV cache"])
