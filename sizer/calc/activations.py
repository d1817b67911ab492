"""Peak activation memory of inference with transformers: prefill of the whole prompt, one decode step.

Some tensors live through the whole forward (the residual stream, generate()'s inputs, RoPE tables,
attention masks); on top of them only one layer's working set is alive at a time (layers run one
after another), so a step's peak is those plus the largest of three moments: attention, MLP and
logits. Every term was read from torch's allocation events on transformers 5 models
(benchmarks/measure_campaign.py, sizer measure); sources are the modeling code the comments name
and ../shared/reference/engines.md. Coefficients are calibratable by `sizer measure`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sizer.spec import ModelSpec, Workload

FP32_BYTES = 4
# Hidden-state-sized tensors alive across a block: the residual, the normed input, the block's
# running output and the embedding output the model's layer loop keeps referenced. Measured with
# torch's allocation events on Llama/Qwen/Mistral/Falcon (benchmarks/measure_campaign.py): 4 copies
# at the MLP. (Falcon's parallel block holds the attention output instead of a post-attention
# residual: 4 as well; its new decoder normalizes the input twice, ln_attn and ln_mlp: 5.) At an
# eager softmax and at MLA's attention the block's output does not exist yet: 3.
RESIDUAL_COPIES = 4
SECOND_PARALLEL_NORM = "h.ln_mlp.weight"      # Falcon's new decoder (40B, 180B)
# Gated MLP: gate and up outputs alive while act(gate) * up is formed; plain MLP: fc1 and act(fc1).
# A fused gate_up projection (Phi-3) keeps its whole 2 x d_ff output alive through the gate: 4.
GATED_MLP_COPIES = 3
FUSED_GATE_UP_MLP_COPIES = 4
FUSED_GATE_UP_FAMILIES = frozenset({"phi3"})
PLAIN_MLP_COPIES = 2

# Tensors alive for the whole forward, outside any layer (transformers 5 masking_utils and the
# models' rotary embeddings; generate() passes a 2-D attention mask and position ids, so both carry
# the batch):
# - inputs: input_ids, attention mask and position ids, int64 [b, q] ([b, kv] for the mask);
# - RoPE tables: cos and sin [b, q, rotary dims] in the compute dtype; gpt-oss builds them half
#   width, Gemma 3 one pair per layer type (local and global bases);
# - attention masks: eager attention, one [b, 1, q, kv] additive mask in the compute dtype per layer
#   type present; SDPA, none for causal full attention (is_causal), a bool [b, 1, q, kv] for
#   sliding layers once kv >= the window, and always for Falcon (it materializes the mask for ALiBi).
INPUT_BYTES = 8
NO_POSITION_IDS_FAMILIES = frozenset({"bloom", "mpt"})   # their forward takes none, so generate() makes none
HALF_ROTARY_FAMILIES = frozenset({"gpt_oss"})
ROTARY_PER_LAYER_TYPE_FAMILIES = frozenset({"gemma3", "gemma3_text"})
SDPA_MASKED_FAMILIES = frozenset({"falcon"})
MASK_BYTES = 1                        # SDPA's bool mask
# Eager attention at the softmax: the masked scores, their float32 softmax and its cast back. With
# attention sinks (gpt-oss) the softmax runs in the compute dtype over [scores, sink] while the
# masked scores are still referenced: three tensors of the compute dtype, one column wider.
SINK_FAMILIES = frozenset({"gpt_oss"})


@dataclass(frozen=True)
class ActivationPeaks:
    """Peak bytes of the prefill pass and of one decode step, with the parts of the larger one."""

    prefill_bytes: int
    decode_bytes: int
    parts: dict[str, int]

    @property
    def peak_bytes(self) -> int:
        return max(self.prefill_bytes, self.decode_bytes)


def attention_bytes(spec: ModelSpec, batch: int, q_len: int, kv_len: int, eager: bool, cb: int) -> int:
    """The attention moment's working set above the residual part. SDPA: projections q, k, v and the
    attention output. Eager: q, K and V repeated to every head (GQA), and the scores at the softmax.
    MLA: see `_mla_bytes`. At eager's softmax and MLA's attention the block output the residual part
    counts is not allocated yet."""
    tokens = batch * q_len
    scores = batch * spec.n_heads * q_len * _score_columns(spec, kv_len) * _score_bytes(spec, cb) if eager else 0
    block_output = tokens * spec.hidden_size * cb
    if spec.is_mla:
        return _mla_bytes(spec, tokens, eager, cb) + scores - block_output
    qkv = tokens * (spec.n_heads + spec.n_kv_heads) * spec.head_dim + tokens * spec.n_kv_heads * spec.v_head_dim
    out = tokens * spec.n_heads * spec.v_head_dim
    if not eager:
        return (qkv + out) * cb
    repeated = 2 * batch * kv_len * spec.n_heads * spec.head_dim * cb if spec.n_kv_heads < spec.n_heads else 0
    return tokens * spec.n_heads * spec.head_dim * cb + repeated + scores - block_output


def _mla_bytes(spec: ModelSpec, tokens: int, eager: bool, cb: int) -> int:
    """DeepSeek's MLA as transformers 5 runs it (the cache holds the latent; DeepseekV3Attention):
    per token, q from q_b_proj, its rotated part, q re-joined, the latent from kv_a_proj, kv_b_proj's
    per-head k_nope and v, and K re-joined: 4 h x qk_head_dim + h x v_head_dim + kv_lora_rank +
    qk_rope_head_dim values; SDPA adds its output and the contiguous copy (2 h x v_head_dim)."""
    h, rope = spec.n_heads, spec.qk_rope_head_dim
    per_token = (4 * h * spec.head_dim + h * spec.v_head_dim + spec.kv_lora_rank + rope
                 + (0 if eager else 2 * h * spec.v_head_dim))
    return tokens * per_token * cb


def _score_columns(spec: ModelSpec, kv_len: int) -> int:
    return kv_len + (1 if spec.family in SINK_FAMILIES else 0)


def _score_bytes(spec: ModelSpec, cb: int) -> int:
    return 3 * cb if spec.family in SINK_FAMILIES else 2 * cb + FP32_BYTES


def kept_probabilities_bytes(spec: ModelSpec, batch: int, q_len: int, kv_len: int, eager: bool, cb: int) -> int:
    """Eager attention returns its probabilities, and the decoder layer keeps them
    (`hidden_states, _ = self.self_attn(...)`) until it returns: alive through the MLP."""
    return batch * spec.n_heads * q_len * _score_columns(spec, kv_len) * cb if eager else 0


def positions_bytes(spec: ModelSpec, batch: int, q_len: int, kv_len: int, cb: int) -> int:
    """generate()'s inputs (ids, position ids, the 2-D mask) and the RoPE cos/sin tables."""
    per_token = 1 if spec.family in NO_POSITION_IDS_FAMILIES else 2        # ids (and position ids)
    inputs = batch * (per_token * q_len + kv_len) * INPUT_BYTES
    width = spec.rope_dim // 2 if spec.family in HALF_ROTARY_FAMILIES else spec.rope_dim
    tables = len(set(spec.layer_types)) if spec.family in ROTARY_PER_LAYER_TYPE_FAMILIES else 1
    return inputs + tables * 2 * batch * q_len * width * cb


def masks_bytes(spec: ModelSpec, batch: int, q_len: int, kv_len: int, eager: bool, cb: int) -> int:
    """The 4-D attention masks transformers materializes (see the constants above)."""
    cells = batch * q_len * kv_len
    if eager:
        return len(set(spec.layer_types)) * cells * cb
    sliding = spec.n_sliding_layers and spec.sliding_window and kv_len >= spec.sliding_window
    return cells * MASK_BYTES if sliding or spec.family in SDPA_MASKED_FAMILIES else 0


# MoE experts in transformers 5 ("grouped_mm", the default, and its eager fallback) process every
# routed row at once (S = tokens x experts_per_token rows). Two moments can be the peak (measured
# with torch's allocation events, benchmarks/measure_campaign.py):
# - the gate: the gathered rows (hidden) and the fused gate/up output (2 x d_ff), act(gate) and the
#   product (d_ff each): hidden + 4 d_ff per row; gpt-oss adds its per-row expert biases (2 d_ff,
#   gathered) and its clamped SwiGLU keeps gate, up, their clamps and products: 9 d_ff per row;
# - the combine: gathered rows, expert outputs, their weighting and the un-permuted sum: 4 x hidden
#   per row, the last two in fp32 where the routing weights are fp32 (DeepSeek's router).
# Through both, the router's tensors: per token its logits (E experts, router dtype rb: fp32 for
# DeepSeek, else the compute dtype), the top-k indices (int64) and weights (rb); per routed row the
# int64 sort (values and indices), its weight gathered (rb) and in fp32; the combine adds the int64
# inverse permutation. Shared experts (DeepSeek) run after the combine, beside the routed output.
MOE_ROW_FF_COPIES = 4
MOE_ROW_FF_COPIES_BY_FAMILY = {"gpt_oss": 9}
MOE_FP32_ROUTING_FAMILIES = frozenset({"deepseek_v2", "deepseek_v3"})
INDEX_BYTES = 8


def mlp_bytes(spec: ModelSpec, tokens: int, cb: int) -> int:
    """Dense MLP intermediates, or for MoE the larger of its moments (the gate or the combine of the
    routed rows in transformers' grouped_mm layout, with the router's tensors; the shared experts)."""
    copies = GATED_MLP_COPIES if spec.gated_mlp else PLAIN_MLP_COPIES
    if spec.family in FUSED_GATE_UP_FAMILIES:
        copies = FUSED_GATE_UP_MLP_COPIES
    dense = copies * tokens * spec.d_ff * cb
    if not spec.is_moe:
        return dense
    rows = tokens * spec.n_experts_active
    ff_copies = MOE_ROW_FF_COPIES_BY_FAMILY.get(spec.family, MOE_ROW_FF_COPIES)
    weighted = FP32_BYTES if spec.family in MOE_FP32_ROUTING_FAMILIES else cb
    router = tokens * spec.n_experts * weighted + rows * (3 * INDEX_BYTES + 2 * weighted + FP32_BYTES)
    gate = rows * (spec.hidden_size + ff_copies * spec.d_ff_expert) * cb + router
    combine = rows * spec.hidden_size * (2 * cb + 2 * weighted) + router + rows * INDEX_BYTES
    shared = tokens * spec.hidden_size * cb + copies * tokens * spec.d_ff_expert * spec.n_shared_experts * cb
    return max(dense, gate, combine, shared if spec.n_shared_experts else 0)


def logits_bytes(spec: ModelSpec, batch: int, positions: int, cb: int) -> int:
    """lm_head output for `positions` per sequence. generate() computes the last position only and
    copies it to fp32; a plain forward computes every position, upcast to fp32 (engines.md)."""
    if positions == 1:
        return batch * spec.vocab_size * (cb + FP32_BYTES)
    return batch * positions * spec.vocab_size * FP32_BYTES


def step_peak(spec: ModelSpec, batch: int, q_len: int, kv_len: int, eager: bool, logit_positions: int,
              cb: int, residual_copies: int | None = None) -> dict[str, int]:
    """One forward's parts: `residual`, `positions` and `masks` live throughout; `attention`, `mlp`
    and `logits` are the moments of which the largest adds to them (`peak_of`)."""
    tokens = batch * q_len
    copies = residual_copies or RESIDUAL_COPIES + any(t.name == SECOND_PARALLEL_NORM for t in spec.tensors)
    return {
        "residual": copies * tokens * spec.hidden_size * cb,
        "positions": positions_bytes(spec, batch, q_len, kv_len, cb),
        "masks": masks_bytes(spec, batch, q_len, kv_len, eager, cb),
        "attention": attention_bytes(spec, batch, q_len, kv_len, eager, cb),
        "mlp": mlp_bytes(spec, tokens, cb) + kept_probabilities_bytes(spec, batch, q_len, kv_len, eager, cb),
        "logits": logits_bytes(spec, batch, logit_positions, cb),
    }


def peak_of(parts: dict[str, int], logits: bool = True) -> int:
    """The step's peak: what lives throughout plus the largest moment (the logits only where they are
    computed, the last pipeline stage)."""
    moments = (parts["attention"], parts["mlp"], parts["logits"] if logits else 0)
    return parts["residual"] + parts["positions"] + parts["masks"] + max(moments)


def activation_peaks(spec: ModelSpec, workload: Workload, compute_bytes: int = 2) -> ActivationPeaks:
    """Prefill over the whole context, then one decode step attending to the whole context."""
    b, s = workload.batch_size, workload.context_length
    eager = workload.attention == "eager"
    prefill = step_peak(spec, b, s, s, eager, s if workload.logits == "all" else 1, compute_bytes)
    decode = step_peak(spec, b, 1, s, eager, 1, compute_bytes)
    larger = prefill if peak_of(prefill) >= peak_of(decode) else decode
    return ActivationPeaks(peak_of(prefill), peak_of(decode), larger)
