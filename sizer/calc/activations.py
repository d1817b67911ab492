"""Peak activation memory of inference with transformers: prefill of the whole prompt, one decode step.

Some tensors live through the whole forward (the residual stream, generate()'s inputs, RoPE tables,
attention masks); on top of them only one layer's working set is alive at a time (layers run one
after another), so a step's peak is those plus the largest of three moments: attention, MLP and
logits. Every term was read from torch's allocation events on transformers 5 models
(benchmarks/measure_campaign.py, sizer measure); sources are the modeling code the comments name
and docs/reference/engines.md. Coefficients are calibratable by `sizer measure`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sizer.calc.kv import transformers_decode_cache, transformers_kv_cache_bytes, transformers_kv_heads
from sizer.calc.transformers_releases import falcon_own_attention, release_of, release_text
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
Q_NORM = "layers.self_attn.q_norm.weight"     # Qwen3, Gemma 3: q and k RMSNorms per head (_q_norm_bytes)
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
# Inside SDPA (torch's scaled_dot_product_attention, aten/src/ATen/native/transformers/attention.cpp,
# the same composite code on every device): a bool mask is first converted to an additive one in the
# compute dtype ([b, 1, q, kv], cuDNN's variant alike), alive while the kernel runs; the fused kernels
# (CPU flash, CUDA flash and cuDNN) also return the softmax's float32 log-sum-exp per head and query.
# No fused kernel takes K and V with fewer heads than q unless enable_gqa is passed (sdp_utils
# check_batch_size_and_num_heads_dense), which Falcon's own attention does not: its multi-query
# models fall back to the math kernel, which upcasts q, k and v to float32 (q also scaled), forms the
# float32 scores and their softmax beside them, with isneginf's bool per cell (_safe_softmax):
# 9 bytes per score cell. Measured with the allocation meter (sizer.measure.meter.profiler_peak).
LSE_BYTES = FP32_BYTES
# Falcon's own attention (up to transformers 5.24, `falcon_own_attention`): K/V heads broadcast,
# never repeated. From 5.25 it calls transformers' shared attention functions, as Llama does.
FUSED_QKV_TENSORS = frozenset({"layers.self_attn.qkv_proj.weight", "h.self_attention.query_key_value.weight",
                               "layers.attention.query_key_value.weight", "h.attn.c_attn.weight",
                               "blocks.attn.Wqkv.weight"})   # Phi-3, Falcon and Bloom, GPT-NeoX, StarCoder, MPT
MATH_SDPA_SCORE_BYTES = 2 * FP32_BYTES + 1
# Eager attention at the softmax: the masked scores, the float32 copy `softmax(x, dtype=float32)`
# makes of a 16-bit input (torch's SoftMax.cpp converts first; only fp16 on CUDA has a fused path,
# which sizer, tracking byte widths, does not tell from bf16: 2 bytes per cell over there) and the
# float32 softmax; then its cast back, smaller. With attention sinks (gpt-oss) the softmax runs in
# the compute dtype over [scores, sink] while the masked scores are still referenced: three
# tensors of the compute dtype, one column wider.
SINK_FAMILIES = frozenset({"gpt_oss"})
# gpt-oss's and Falcon's own (multi-query, up to 5.24) eager attention pass their fewer K/V heads to
# torch.matmul, which copies the broadcast operand to every head for the duration of that product:
# the expanded K lives through the scores' matmul only, the expanded V through the product with the
# probabilities only (traced on CPU; Falcon's new decoder cached K/V for every head up to 5.24, so
# nothing broadcasts).
MATMUL_BROADCAST_KV_FAMILIES = frozenset({"gpt_oss"})
# Falcon's own eager attention (up to 5.24): scores, scores + mask and their softmax in the compute
# dtype (its softmax is asked for hidden_states.dtype); its K and V of fewer heads broadcast in the
# matmul, not repeated to every head. From 5.25: eager_attention_forward's float32 softmax and repeat_kv.
# Families whose transformers 5 model classes have no SDPA path (`_supports_sdpa = False`: Gemma 2's
# soft-capping, gpt-oss's sinks, Bloom's and MPT's own ALiBi attention): transformers runs them eager
# whatever is asked (flash-attn, where installed and asked for, is not modelled), so the scores are
# materialized. Checked against transformers' classes in tests/test_against_transformers.py.
EAGER_ONLY_FAMILIES = frozenset({"bloom", "gemma2", "gpt_oss", "mimo_v2_flash", "mpt"})
# Bloom's BloomAttention (transformers 5; its own eager attention): q, k and v are views of the fused
# QKV output, which stays alive, and the query's reshape to [b*h, q, d] copies it (at batch 1 it is a
# view): 4 hidden-sized tensors where other eager attention holds q alone. baddbmm's scores stay
# referenced beside the masked scores: one more compute-dtype cell at the softmax. BloomModel's layer
# loop keeps the previous block's outputs (its probabilities) referenced while the next block runs
# (FalconModel's as well, with eager attention).
# The ALiBi bias [b*h, 1, kv] lives throughout. BloomGelu's tanh formula keeps 4 d_ff-sized
# temporaries beside its input (a custom autograd Function: measured since the CPU meter counts frees
# between operators, see sizer.measure.meter.profiler_peak). Read from allocation traces of 1-3 layer
# Blooms of width 128-512 at batch 1-16 and contexts 16-512: every peak within 8 bytes.
FUSED_QKV_VIEW_FAMILIES = frozenset({"bloom"})
PREVIOUS_PROBABILITIES_FAMILIES = frozenset({"bloom", "falcon"})   # their layer loops keep the last block's outputs
ALIBI_BIAS_FAMILIES = frozenset({"bloom"})
TANH_GELU_MLP_COPIES = {"bloom": 5}


@dataclass(frozen=True)
class ActivationPeaks:
    """Peak bytes of the prefill pass and of one decode step, with the parts of the larger one."""

    prefill_bytes: int
    decode_bytes: int
    parts: dict[str, int]

    @property
    def peak_bytes(self) -> int:
        return max(self.prefill_bytes, self.decode_bytes)


def transformers_attention(spec: ModelSpec, requested: str) -> str:
    """The attention transformers runs: the one requested, or eager for a family with no SDPA path."""
    return "eager" if spec.family in EAGER_ONLY_FAMILIES else requested


def math_sdpa(spec: ModelSpec, kernels: str = "cuda") -> bool:
    """Whether transformers' SDPA call takes torch's math kernel: K and V of one head broadcast to
    the queries without enable_gqa (any device), or, on CPU, q and K wider than V (MLA), which the
    CPU flash kernel refuses (sdp_utils_cpp check_head_dim_size_cpp; CUDA's cuDNN and
    memory-efficient kernels take them)."""
    broadcast = falcon_own_attention(spec) and spec.n_kv_heads == 1 < spec.n_heads
    return broadcast or (kernels == "cpu" and spec.is_mla and spec.head_dim != spec.v_head_dim)


def attention_notes(spec: ModelSpec, requested: str) -> list[str]:
    """What a report says where transformers materializes the scores although SDPA was asked for:
    a family with no SDPA path (`transformers_attention`), or one whose SDPA call takes torch's math
    kernel (`math_sdpa`)."""
    if transformers_attention(spec, requested) != requested:
        return [f"transformers has no SDPA path for {spec.family}: eager attention, the scores materialized"]
    if requested == "sdpa" and math_sdpa(spec):
        return [f"transformers {release_text(release_of(spec))}'s {spec.family} passes SDPA one K/V head without "
                "enable_gqa: torch's math kernel, the scores materialized in fp32"]
    return []


def attention_bytes(spec: ModelSpec, batch: int, q_len: int, kv_len: int, eager: bool, cb: int,
                    torch_sdpa: bool = True, kernels: str = "cuda") -> int:
    """The attention moment's working set above the residual part. SDPA: see `_sdpa_bytes`. Eager:
    q, K and V repeated to every head (GQA; one K/V head, and Falcon's own attention up to transformers
    5.24, broadcast inside matmul instead), a fused QKV output its views
    keep, and the scores at the softmax, or right after it (at contexts under about 2 x head_dim
    tokens the larger) the probabilities, their product with V and its contiguous copy. MLA: see `_mla_bytes`. Qwen3 and Gemma 3: their
    q RMSNorm when larger (`_q_norm_bytes`). At eager's softmax, MLA's attention and the q norm the
    block output the residual part counts is not allocated yet. `torch_sdpa=False` (vLLM's own
    kernels): the projections q, k, v and the output alone."""
    tokens = batch * q_len
    scores = batch * spec.n_heads * q_len * _score_columns(spec, kv_len) * _score_bytes(spec, cb) if eager else 0
    block_output = tokens * spec.hidden_size * cb
    if spec.is_mla:
        cached = batch * (kv_len + q_len) if q_len < kv_len else 0          # a decode step re-expands the cache
        if not eager and torch_sdpa and math_sdpa(spec, kernels):
            # the math kernel runs before SDPA's output exists; MLA passes K per head and V as a view
            math = _math_sdpa_bytes(spec, batch, q_len, kv_len, cb, spec.n_heads, True, q_len > 1)
            return _mla_bytes(spec, tokens, True, cb, cached) + math - block_output
        return _mla_bytes(spec, tokens, eager, cb, cached) + scores - block_output
    qkv = tokens * (spec.n_heads + spec.n_kv_heads) * spec.head_dim + tokens * spec.n_kv_heads * spec.v_head_dim
    out = tokens * spec.n_heads * spec.v_head_dim
    q_norm = _q_norm_bytes(spec, batch, q_len, cb) - block_output if _has_tensor(spec, Q_NORM) else 0
    if not eager:
        sdpa = (_sdpa_bytes(spec, batch, q_len, kv_len, cb, qkv, out, block_output, kernels) if torch_sdpa
                else (qkv + out) * cb)
        return max(sdpa, q_norm)
    kv_heads = transformers_kv_heads(spec)
    expanded = batch * kv_len * spec.n_heads * spec.head_dim * cb if kv_heads < spec.n_heads else 0
    # repeat_kv of a single K/V head is a view (the expand folds into a size-1 dimension), so matmul
    # broadcasts it as it does for the families that pass fewer heads on purpose
    matmul_broadcast = (spec.family in MATMUL_BROADCAST_KV_FAMILIES or falcon_own_attention(spec)
                        or kv_heads == 1 < spec.n_heads)
    repeated = 0 if matmul_broadcast else 2 * expanded        # repeat_kv: K and V copied to every head
    # a fused QKV projection's output stays referenced by the q, k and v views taken from it
    fused = qkv * cb if _fused_qkv(spec) and spec.family not in FUSED_QKV_VIEW_FAMILIES else 0
    q_copies = (3 + (batch > 1)) if spec.family in FUSED_QKV_VIEW_FAMILIES else 1
    # after the softmax: the probabilities, the product with V and its contiguous [b, q, h x d] copy
    probabilities = kept_probabilities_bytes(spec, batch, q_len, kv_len, eager, cb)
    output = max(scores, probabilities + 2 * out * cb)
    if matmul_broadcast:        # the scores' matmul (K expanded, its product), the softmax, the product with V expanded
        product = batch * spec.n_heads * q_len * kv_len * cb
        output = max(expanded + product, scores, probabilities + expanded + 2 * out * cb)
    return max(q_norm, q_copies * tokens * spec.n_heads * spec.head_dim * cb + fused + repeated + output - block_output
               + previous_probabilities_bytes(spec, batch, q_len, kv_len, eager, cb))


def _sdpa_bytes(spec: ModelSpec, batch: int, q_len: int, kv_len: int, cb: int, qkv: int, out: int,
                block_output: int, kernels: str = "cuda") -> int:
    """The SDPA moment above the residual part. The projections: q (rotated) and the output, with K
    and V the cache's own tensors once it has taken them (`past_key_values.update` rebinds them),
    before the block output exists; where a fused QKV projection is kept (Falcon, Phi-3, GPT-NeoX,
    StarCoder) the `qkv` values and the output (measured as the moment only for Falcon's math
    kernel, whose parallel block keeps the fused output and no block output). Then the converted
    mask, and the fused kernels' log-sum-exp, or the math kernel's working set (`math_sdpa`,
    `_math_sdpa_bytes`) before the output exists. Where a mask is passed, transformers repeats a GQA
    model's K and V to every head for the prefill (no enable_gqa with a mask; a view for a single
    KV head) and packs the queries by KV head for a decode step."""
    mask = sdpa_mask_cells(spec, batch, q_len, kv_len) * cb
    h, kv_heads, tokens = spec.n_heads, spec.n_kv_heads, batch * q_len
    if math_sdpa(spec, kernels):
        return qkv * cb + mask + _math_sdpa_bytes(spec, batch, q_len, kv_len, cb, kv_heads, batch > 1, False)
    projections = ((qkv + out) * cb if _fused_qkv(spec)
                   else (tokens * h * spec.head_dim + out) * cb - block_output)
    repeated = batch * kv_len * h * (spec.head_dim + spec.v_head_dim) * cb if mask and 1 < kv_heads < h and q_len > 1 else 0
    return projections + repeated + mask + tokens * h * LSE_BYTES


def _math_sdpa_bytes(spec: ModelSpec, batch: int, q_len: int, kv_len: int, cb: int, kv_heads: int,
                     v_copied: bool, causal: bool) -> int:
    """torch's math SDPA kernel (_scaled_dot_product_attention_math, composite, the same on every
    device), K and V passed with `kv_heads` heads: float32 copies of q (and q scaled), K and V; for
    `causal`, the [q, kv] mask it builds in float32. Then the largest of three moments: the scores'
    matmul (K scaled and transposed, copied to every query head when broadcast over a batch; the
    float32 scores), the softmax (MATH_SDPA_SCORE_BYTES per cell and all()'s bool per row), and the
    product with V (the probabilities in float32 and cast for the returned weights, V copied to
    every head where broadcast over a batch or passed as a view (`v_copied`), the float32 product,
    then its cast)."""
    h, dk, dv, tokens = spec.n_heads, spec.head_dim, spec.v_head_dim, batch * q_len
    upcast = FP32_BYTES if cb < FP32_BYTES else 0
    cells = tokens * h * kv_len
    kept = (tokens * h * dk * (FP32_BYTES + upcast) + batch * kv_heads * kv_len * (dk + dv) * upcast
            + (q_len * kv_len * FP32_BYTES if causal else 0))
    k_scaled = batch * kv_heads * kv_len * dk * FP32_BYTES
    k_broadcast = batch * h * kv_len * dk * FP32_BYTES if kv_heads < h and batch > 1 else 0
    scores = k_scaled + k_broadcast + cells * FP32_BYTES
    softmax = cells * MATH_SDPA_SCORE_BYTES + tokens * h
    out_fp32 = tokens * h * dv * FP32_BYTES
    v_copy = batch * h * kv_len * dv * FP32_BYTES if v_copied else 0
    product = cells * (FP32_BYTES + cb) + out_fp32 + max(v_copy, tokens * h * dv * cb)
    return kept + max(scores, softmax, product)


def _fused_qkv(spec: ModelSpec) -> bool:
    return not spec.tensor_names.isdisjoint(FUSED_QKV_TENSORS)


def _has_tensor(spec: ModelSpec, name: str) -> bool:
    return name in spec.tensor_names


def _q_norm_bytes(spec: ModelSpec, batch: int, q_len: int, cb: int) -> int:
    """Qwen3's and Gemma 3's RMSNorm of q per head, in float32: q_proj's output, its float32 copy and
    their product, with the per-head mean and rsqrt. It runs before the block's output exists and
    before this step's K and V enter the last layer's cache (counted in full beside the
    activations). The moment only where n_heads x head_dim rivals d_ff (small test configs; no
    released one)."""
    tokens = batch * q_len
    q = tokens * spec.n_heads * spec.head_dim
    layer_kv = tokens * spec.n_kv_heads * (spec.head_dim + spec.v_head_dim) * cb     # this step's K and V
    return q * (cb + 2 * FP32_BYTES) + 2 * tokens * spec.n_heads * FP32_BYTES - layer_kv


def _mla_bytes(spec: ModelSpec, tokens: int, eager: bool, cb: int, cached_tokens: int = 0) -> int:
    """DeepSeek's MLA as transformers 5 runs it (the cache holds the latent; DeepseekV3Attention):
    per token, q from q_b_proj, its rotated part, q re-joined, the latent from kv_a_proj, kv_b_proj's
    per-head k_nope and v, and K re-joined: 4 h x qk_head_dim + h x v_head_dim + kv_lora_rank +
    qk_rope_head_dim values; SDPA adds its output and the contiguous copy (2 h x v_head_dim). A
    decode step expands the whole cache again: for each of `cached_tokens` (batch x attended
    positions), kv_b_proj's k_nope and v, and K re-joined: h x (2 qk_head_dim - rope + v_head_dim)
    (traced on CPU)."""
    h, rope = spec.n_heads, spec.qk_rope_head_dim
    per_token = (4 * h * spec.head_dim + h * spec.v_head_dim + spec.kv_lora_rank + rope
                 + (0 if eager else 2 * h * spec.v_head_dim))
    per_cached = h * (2 * spec.head_dim - rope + spec.v_head_dim)
    return (tokens * per_token + cached_tokens * per_cached) * cb


def _score_columns(spec: ModelSpec, kv_len: int) -> int:
    return kv_len + (1 if spec.family in SINK_FAMILIES else 0)


def _score_bytes(spec: ModelSpec, cb: int) -> int:
    """Bytes per score cell at eager attention's softmax (see SINK_FAMILIES)."""
    if spec.family in SINK_FAMILIES or falcon_own_attention(spec):
        return 3 * cb
    kept = (2 if spec.family in FUSED_QKV_VIEW_FAMILIES else 1) * cb      # Bloom keeps baddbmm's scores too
    return kept + FP32_BYTES + (FP32_BYTES if cb < FP32_BYTES else 0)


def kept_probabilities_bytes(spec: ModelSpec, batch: int, q_len: int, kv_len: int, eager: bool, cb: int) -> int:
    """Eager attention returns its probabilities, and the decoder layer keeps them
    (`hidden_states, _ = self.self_attn(...)`) until it returns: alive through the MLP."""
    return batch * spec.n_heads * q_len * _score_columns(spec, kv_len) * cb if eager else 0


def previous_probabilities_bytes(spec: ModelSpec, batch: int, q_len: int, kv_len: int, eager: bool, cb: int) -> int:
    """The previous layer's probabilities, where the model's layer loop still references them (Bloom)."""
    if spec.family not in PREVIOUS_PROBABILITIES_FAMILIES or spec.n_layers < 2:
        return 0
    return kept_probabilities_bytes(spec, batch, q_len, kv_len, eager, cb)


def positions_bytes(spec: ModelSpec, batch: int, q_len: int, kv_len: int, cb: int) -> int:
    """generate()'s inputs (ids, position ids, the 2-D mask) and the RoPE cos/sin tables."""
    per_token = 1 if spec.family in NO_POSITION_IDS_FAMILIES else 2        # ids (and position ids)
    inputs = batch * (per_token * q_len + kv_len) * INPUT_BYTES
    width = spec.rope_dim // 2 if spec.family in HALF_ROTARY_FAMILIES else spec.rope_dim
    tables = len(set(spec.layer_types)) if spec.family in ROTARY_PER_LAYER_TYPE_FAMILIES else 1
    alibi = batch * spec.n_heads * kv_len * cb if spec.family in ALIBI_BIAS_FAMILIES else 0
    return inputs + tables * 2 * batch * q_len * width * cb + alibi


def sdpa_mask_cells(spec: ModelSpec, batch: int, q_len: int, kv_len: int) -> int:
    """Cells of the bool [b, 1, q, kv] mask transformers passes SDPA (0 where it passes none)."""
    sliding = spec.n_sliding_layers and spec.sliding_window and kv_len >= spec.sliding_window
    return batch * q_len * kv_len if sliding or spec.family in SDPA_MASKED_FAMILIES else 0


def masks_bytes(spec: ModelSpec, batch: int, q_len: int, kv_len: int, eager: bool, cb: int) -> int:
    """The 4-D attention masks transformers materializes (see the constants above)."""
    if eager:
        return len(set(spec.layer_types)) * batch * q_len * kv_len * cb
    return sdpa_mask_cells(spec, batch, q_len, kv_len) * MASK_BYTES


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
# float32 routing weights: DeepSeek's and Nemotron-H's routers (float32 logits, NemotronHTopkRouter),
# MiniMax's softmax in float32 (MiniMaxTopKRouter), none cast back to the compute dtype
MOE_FP32_ROUTING_FAMILIES = frozenset({"deepseek_v2", "deepseek_v3", "minimax", "nemotron_h"})
INDEX_BYTES = 8


# bitsandbytes LLM.int8 (Linear8bitLt, transformers' default outlier threshold 6.0; bitsandbytes
# 0.50 MatMul8bitLt) holds, while one Linear runs on a row of `in` inputs and `out` outputs, bytes
# per row (its bf16 output included) of the larger of two moments, plus its float32 row statistic:
# - CUDA kernels: quantizing the input (its fp16 copy, the int8 row, |x| in fp16 and the bool outlier
#   test): 6 x in; the product (the int8 row, the int32 product, its fp16 dequantization and the cast
#   to bf16): in + 8 x out;
# - CPU (bitsandbytes' pure-torch fallback, torch._int_mm): quantizing in float32 (the fp16 copy, the
#   outlier test, the scaled row and its rounding): 11 x in; dequantizing in float32 beside the int32
#   product (the product scaled, the float32 copy aten::mul makes of it, and the result): in + 16 x out;
#   where bnb has no CPU int8 product kernel it multiplies in float32 first, a third moment with a
#   float32 copy of the weight (BNB_DEQUANTIZED_INT8 below).
# The CPU figures were read from allocation traces (every Linear of a Llama layer, exact to the
# byte; the campaign's AVX-512 machine, where the product is torch._int_mm); the CUDA ones from the
# kernels' code, for the GPU campaign to measure. In the MLP, the
# up projection runs beside act(gate), the down projection beside its input (and, with Phi-3's fused
# gate_up, the 2 x d_ff output a view keeps alive); plain MLPs' second Linear beside act(fc1). bnb
# does not quantize MoE experts (not nn.Linear); attention projections, narrower than d_ff, are not
# the moment in any architecture measured.
INT8_QUANTIZE_BYTES_PER_INPUT = {"cuda": 6, "cpu": 11}
INT8_PRODUCT_BYTES_PER_OUTPUT = {"cuda": 8, "cpu": 16}


def int8_linear_bytes(rows: int, in_features: int, out_features: int, kernels: str) -> int:
    """Bytes one bitsandbytes int8 Linear holds at its peak over `rows` rows, its output included."""
    quantize = INT8_QUANTIZE_BYTES_PER_INPUT[kernels] * in_features
    product = in_features + INT8_PRODUCT_BYTES_PER_OUTPUT[kernels] * out_features
    return rows * (max(quantize, product) + FP32_BYTES)


# bitsandbytes on a CPU without its native kernels materializes each quantized weight whole, at
# every forward (prefill and decode alike), for the duration of that Linear's product:
# - 4-bit (Linear4bit): bnb repacks the weight for its own CPU kernel only where the CPU has
#   AVX512-BF16 (nn/modules.py Linear4bit.forward, `support_avx512bf16_for_cpu`); otherwise each
#   forward dequantizes the weight to the compute dtype [out, in] and calls F.linear with it
#   (bnb 0.50 backends/default/ops.py _gemm_4bit_default_impl; 0.49 autograd MatMul4Bit.forward).
#   With double quantization 0.50 first dequantizes the blocks' absmax to float32 (one per block of
#   BNB_4BIT_BLOCK weights), referenced until the product returns.
# - int8 (Linear8bitLt): bnb 0.50 registers torch._int_mm for the int8 product on CPU only where
#   torch's CPU capability is AVX512 (0.49: always); otherwise its default int8_linear_matmul runs
#   `torch.matmul(A.float(), B.float().t()).to(torch.int32)` (backends/default/ops.py
#   _int8_linear_matmul_impl): a float32 copy of the int8 weight [out, in] beside the float32 copy
#   of the quantized row (in), the float32 product (out), the int8 row and its float32 statistic.
# Read from allocation traces (a 4-layer Llama of width 256, GQA 8/2, bnb 0.50.2 on an AVX2 CPU;
# benchmarks/allocation_timeline.py --precision nf4|int8 --decode): exact to the byte at decode.
BNB_DEQUANTIZED_4BIT = "4bit"
BNB_DEQUANTIZED_4BIT_NESTED = "4bit-nested"
BNB_DEQUANTIZED_INT8 = "int8"
BNB_4BIT_BLOCK = 64                  # Linear4bit's default blocksize (sizer.quant.BNB_4BIT_BLOCK)
INT8_FALLBACK_BYTES_PER_INPUT = 1 + FP32_BYTES         # the int8 row and its float32 copy (A.float())
INT8_FALLBACK_BYTES_PER_OUTPUT = FP32_BYTES            # the float32 product


def bnb_dequantized_weight_bytes(in_features: int, out_features: int, dequantized: str, cb: int) -> int:
    """The copy of one quantized weight a bitsandbytes Linear holds through its product on the CPU
    fallback (see above): the compute dtype for 4-bit (with the float32 absmax when nested), float32
    for int8."""
    weights = in_features * out_features
    if dequantized == BNB_DEQUANTIZED_INT8:
        return weights * FP32_BYTES
    absmax = -(-weights // BNB_4BIT_BLOCK) * FP32_BYTES if dequantized == BNB_DEQUANTIZED_4BIT_NESTED else 0
    return weights * cb + absmax


def bnb_linear_bytes(rows: int, in_features: int, out_features: int, kernels: str, cb: int,
                     dequantized: str | None) -> int:
    """Bytes one bitsandbytes Linear holds at its peak over `rows` rows, its output included, its
    input not: int8's moments (int8_linear_bytes) or, on the CPU fallback, the dequantized weight
    beside the product (int8: the float32 product's moment; 4-bit: F.linear's output)."""
    copy = bnb_dequantized_weight_bytes(in_features, out_features, dequantized, cb) if dequantized else 0
    if dequantized == BNB_DEQUANTIZED_INT8 or dequantized is None:
        native = int8_linear_bytes(rows, in_features, out_features, kernels)
        if dequantized is None:
            return native
        fallback = rows * (INT8_FALLBACK_BYTES_PER_INPUT * in_features + INT8_FALLBACK_BYTES_PER_OUTPUT * out_features
                           + FP32_BYTES) + copy
        return max(native, fallback)
    return copy + rows * out_features * cb


def _bnb_mlp_bytes(spec: ModelSpec, tokens: int, cb: int, kernels: str, dequantized: str | None = None) -> int:
    """The dense MLP's moments with bitsandbytes Linears: each Linear's own bytes (bnb_linear_bytes)
    beside the MLP tensors alive while it runs."""
    h, ff = spec.hidden_size, spec.d_ff

    def linear(in_features: int, out_features: int) -> int:
        return bnb_linear_bytes(tokens, in_features, out_features, kernels, cb, dequantized)

    down = linear(ff, h) + tokens * ff * cb
    if spec.family in FUSED_GATE_UP_FAMILIES:
        return max(linear(h, 2 * ff), down + 2 * tokens * ff * cb)
    up = linear(h, ff) + (tokens * ff * cb if spec.gated_mlp else 0)
    return max(up, down)


def _int8_mlp_bytes(spec: ModelSpec, tokens: int, cb: int, kernels: str) -> int:
    return _bnb_mlp_bytes(spec, tokens, cb, kernels)


def bnb_q_projection_bytes(spec: ModelSpec, tokens: int, cb: int, dequantized: str) -> int:
    """On the CPU fallback, the query projection's moment (or the fused QKV's): its dequantized
    weight and its output. It runs before the layer's cache update, over the cache as the layer
    found it (decode_peak_bytes). MLA's projections are not modelled (0)."""
    if spec.is_mla:
        return 0
    h, q_width = spec.hidden_size, spec.n_heads * spec.head_dim
    if _fused_qkv(spec):
        q_width += 2 * spec.n_kv_heads * spec.head_dim
    return bnb_dequantized_weight_bytes(h, q_width, dequantized, cb) + tokens * q_width * cb


def bnb_attention_projection_bytes(spec: ModelSpec, tokens: int, cb: int, dequantized: str) -> int:
    """On the CPU fallback, the attention projections' moments (matter where their weights rival the
    MLP's, or the MLP's experts are not bitsandbytes Linears: MoE): q (bnb_q_projection_bytes), o
    with its input and output. MLA's projections are not modelled (0)."""
    if spec.is_mla:
        return 0
    h, o_in = spec.hidden_size, spec.n_heads * spec.v_head_dim
    o = bnb_dequantized_weight_bytes(o_in, h, dequantized, cb) + tokens * (o_in + h) * cb
    return max(bnb_q_projection_bytes(spec, tokens, cb, dequantized), o)


def _mlp_copies(spec: ModelSpec) -> int:
    if spec.family in FUSED_GATE_UP_FAMILIES:
        return FUSED_GATE_UP_MLP_COPIES
    return GATED_MLP_COPIES if spec.gated_mlp else TANH_GELU_MLP_COPIES.get(spec.family, PLAIN_MLP_COPIES)


def dense_mlp_bytes(spec: ModelSpec, tokens: int, cb: int) -> int:
    """A dense MLP's intermediates over `tokens` (0 where the model has no dense MLP)."""
    return _mlp_copies(spec) * tokens * spec.d_ff * cb


# vLLM's fused MoE (its Triton experts; docs/reference/vllm-versions-v1.md "Fused MoE"). With N the
# rank's fused gate/up width (2 x d_ff_expert / TP), K the hidden size, k the experts per token and M
# the tokens of one chunk (VLLM_FUSED_MOE_CHUNK_SIZE, or all of them where the release does not chunk):
# - "separate" (V0, fused_moe.py@0.6.3.post1 / 0.7.3): three caches (M, k, N), (M k, N/2), (M, k, K);
# - "shared13" (fused_experts_impl@0.8.5 / 0.10.2): cache1 and cache3 share one (M k max(N, K))
#   buffer, cache2 (M k, N/2) beside it; both layouts write the sum in place (inplace=True);
# - "workspaces" (the modular kernel's TritonExperts, 0.11+): workspace1 (M, k, max(N/2, K)), which
#   also holds the (M, K) output when there is one chunk, and workspace2 (M, k, max(N, K)), each
#   rounded to 256 bytes by the workspace manager; the layer's own output (tokens, K) beside them.
VLLM_MOE_LAYOUTS = ("separate", "shared13", "workspaces")
VLLM_WORKSPACE_ALIGN_BYTES = 256
FP8_BYTES = 1
INT32_BYTES = 4


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def vllm_moe_workspace_bytes(spec: ModelSpec, tokens: int, cb: int, layout: str, chunk_tokens: int | None) -> int:
    """Bytes of the fused experts' intermediate caches (workspaces) for one MoE layer over `tokens`
    (this rank's experts: spec.d_ff_expert already divided by TP), as vLLM allocates them."""
    m = min(tokens, chunk_tokens) if chunk_tokens else tokens
    rows, n, hidden = m * spec.n_experts_active, 2 * spec.d_ff_expert, spec.hidden_size
    if layout == "separate":
        return rows * (n + n // 2 + hidden) * cb
    if layout == "shared13":
        return rows * (max(n, hidden) + n // 2) * cb
    if layout != "workspaces":
        raise ValueError(f"unknown vLLM MoE layout {layout!r}")
    first = rows * max(n // 2, hidden) * cb
    second = rows * max(n, hidden) * cb
    output = tokens * hidden * cb
    pieces = (max(first, output), second) if m == tokens else (first, second, output)
    return sum(_round_up(p, VLLM_WORKSPACE_ALIGN_BYTES) for p in pieces)


def fp8_quantized_bytes(rows: int, width: int, group: int) -> int:
    """An fp8 copy of `rows` x `width` activations and its float32 scales: one per `group` columns
    of a row (per-token-group, block-quantized weights), or one for the tensor (group 0)."""
    scales = rows * -(-width // group) if group else 1
    return rows * width * FP8_BYTES + scales * FP32_BYTES


def vllm_fused_moe_bytes(spec: ModelSpec, tokens: int, cb: int, layout: str, chunk_tokens: int | None,
                         fp8_group: int | None = None, with_workspace: bool = True) -> int:
    """Bytes above the layer's input while vLLM's fused MoE runs one layer over `tokens`: the
    router's logits (tokens x experts, the gate's output in the compute dtype), the top-k weights
    (float32) and ids (int32), moe_align_block_size's sorted row ids (int32; its per-expert padding,
    under experts x (BLOCK_SIZE_M - 1) ids, left out), the caches (vllm_moe_workspace_bytes) and,
    for fp8 w8a8 experts (`fp8_group`: activation scale group, 0 per tensor; None: 16-bit
    activations), the quantized input and the quantized activation of the second GEMM (both alive
    at the second GEMM). Shared experts (run before the routed ones) keep their output beside them,
    or are the moment themselves (their fused gate/up and activation outputs). `with_workspace`
    False: the caches left out (held throughout, as the workspace manager's buffer, and counted apart)."""
    m = min(tokens, chunk_tokens) if chunk_tokens else tokens
    k, hidden, half = spec.n_experts_active, spec.hidden_size, spec.d_ff_expert
    routing = tokens * spec.n_experts * cb + tokens * k * (FP32_BYTES + INT32_BYTES) + m * k * INT32_BYTES
    quantized = 0
    if fp8_group is not None:
        a1_rows = tokens if layout == "workspaces" else m     # the modular kernel quantizes in prepare()
        quantized = fp8_quantized_bytes(a1_rows, hidden, fp8_group) + fp8_quantized_bytes(m * k, half, fp8_group)
    output = tokens * hidden * cb if layout == "workspaces" else 0
    caches = vllm_moe_workspace_bytes(spec, tokens, cb, layout, chunk_tokens) if with_workspace else 0
    routed = routing + caches + quantized + output
    if not spec.n_shared_experts:
        return routed
    shared_ff = spec.d_ff_expert * spec.n_shared_experts
    return max(routed + tokens * hidden * cb, tokens * 3 * shared_ff * cb)


def mlp_bytes(spec: ModelSpec, tokens: int, cb: int, int8_kernels: str | None = None,
              bnb_dequantized: str | None = None) -> int:
    """Dense MLP intermediates (with bitsandbytes int8 Linears on `int8_kernels`, their moments too;
    with `bnb_dequantized`, bitsandbytes' CPU fallback, each Linear's dequantized weight), or for MoE
    the larger of its moments (the gate or the combine of the routed rows in transformers' grouped_mm
    layout, with the router's tensors; the shared experts)."""
    copies = _mlp_copies(spec)
    dense = dense_mlp_bytes(spec, tokens, cb)
    if not spec.is_moe:
        int8 = _int8_mlp_bytes(spec, tokens, cb, int8_kernels) if int8_kernels else 0
        fallback = _bnb_mlp_bytes(spec, tokens, cb, int8_kernels or "cpu", bnb_dequantized) if bnb_dequantized else 0
        return max(dense, int8, fallback)
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


# Recurrent mixers at prefill, as transformers runs them without the optional kernels (flash-linear-
# attention, causal-conv1d, mamba-ssm): the torch paths, the same composite code on every device.
# Gated DeltaNet (modeling_qwen3_next / modeling_qwen3_5, Qwen3NextGatedDeltaNet.forward and
# torch_chunk_gated_delta_rule, chunk_size 64): the projections and the conv output in the compute
# dtype beside float32 copies of q, k (repeated to the value heads) and v padded to whole chunks, k and
# v scaled by beta, the decayed keys, the triangular solves' two outputs and the output buffer (5 per
# key and 4 per value dimension and padded token per value head), three [chunk x chunk] matrices per
# chunk (the pairwise decays, the UT system, the intra-chunk attention), beta, the decay and its
# cumulative sum in float32, the mask and the state; then the largest of the scan's moments (see
# `_gated_deltanet_bytes`). Traced with the allocation meter on one mixer over 15 geometries (key /
# value heads and sizes, kernel, batch, contexts on and off the chunk grid): exact to the byte.
GDN_CHUNK = 64                        # torch_chunk_gated_delta_rule's chunk_size
FUSED_QKVZ_FAMILIES = frozenset({"qwen3_next"})   # in_proj_qkvz / in_proj_ba, re-ordered by head group


def _gated_deltanet_bytes(spec: ModelSpec, batch: int, q_len: int, cb: int) -> int:
    """One Gated DeltaNet layer's prefill peak above its input (`recurrent_bytes`)."""
    r = spec.recurrent
    nv, nk, dk, dv = r.heads, r.key_heads, r.head_dim, r.value_head_dim
    key, value, tokens = nk * dk, nv * dv, batch * q_len
    c = GDN_CHUNK
    padded = -(-q_len // c) * c
    chunks = padded // c
    if spec.family in FUSED_QKVZ_FAMILIES:
        # in_proj_qkvz and in_proj_ba stay referenced; the re-ordering copies v, z, b and a (when key and value
        # heads differ) and q and k (freed after the conv), and concatenates q, k and v for the conv
        projections = 2 * key + 2 * value + 2 * nv + ((value + 2 * nv) if nk != nv else 0)
    else:
        projections = value + 2 * nv          # Qwen3.5: z, b and a (in_proj_qkv's output is freed by the conv)
    caller = (tokens * (projections + r.conv_channels) * cb          # ... and the conv's output (q, k, v views)
              + tokens * nv * (cb + FP32_BYTES)                        # beta and the decay g
              + batch * r.conv_channels * r.conv_kernel * cb)          # the conv state the cache takes
    state = batch * nv * dk * dv * FP32_BYTES
    per_padded = batch * nv * padded * FP32_BYTES
    scan = per_padded * (5 * dk + 4 * dv + 3 * c + 3) + state + c * c + batch * nv * chunks * FP32_BYTES
    piece = batch * nv * c * dv * FP32_BYTES                            # one chunk's [chunk, dv] product
    moments = (4 * piece,                                                # v_new, the inter- and intra-chunk reads
               2 * piece + 3 * state,                                    # the state update
               2 * piece + per_padded * dv,                              # the output's reshape copy
               per_padded * (dk + 1) - batch * nv * chunks * FP32_BYTES)  # q / k decayed, before chunk_decay
    return caller + scan + max(moments)


# Mamba (Jamba's JambaMambaMixer.forward, mamba_scan_forward and mamba_selective_scan, the sequential
# loop): in_proj's output (x and the gate), the conv output and the conv state, B and C normed, dt
# from dt_proj and softplus(dt + bias) in the compute dtype, A and the bias in float32; then the
# discretized A, B and B x u materialized over [b, d_inner, T, d_state] in float32, the last state in
# float32 and the per-step outputs (kept in a list, then stacked); at the peak the float32 skip term
# hidden x D, the output's float32 copy and their sum. Traced with the allocation meter on one mixer
# over 5 geometries (d_state, expand, kernel, dt_rank, batch, contexts): exact to the byte.
def _mamba_bytes(spec: ModelSpec, batch: int, q_len: int, cb: int) -> int:
    """One Mamba layer's prefill peak above its input (`recurrent_bytes`)."""
    r = spec.recurrent
    d, n = r.conv_channels, r.d_state
    per_channel = batch * d * q_len
    caller = (5 * per_channel * cb + batch * d * r.conv_kernel * cb + 2 * batch * q_len * n * cb
              + d * n * FP32_BYTES + 2 * d * FP32_BYTES)
    return caller + 3 * per_channel * n * FP32_BYTES + batch * d * n * FP32_BYTES + per_channel * (2 * cb + 3 * FP32_BYTES)


# Mamba2 (GraniteMoeHybridMambaLayer, NemotronHMamba2Mixer, FalconH1Mixer: forward, mamba2_scan_forward
# and mamba2_chunk_scan, the same torch code): in_proj's output, the conv output and state and dt in
# the compute dtype; then, over the sequence padded to whole chunks, x in float32 (scaled by dt), the
# D skip term, B and C repeated to every head and B decayed, A and its cumulative sums, three
# [chunk x chunk] matrices per chunk and head (the segment-sum decays L, C.B and their product), the
# per-chunk states (with the initial one) and at the peak the diagonal and off-diagonal outputs, the
# inter-chunk read, their sum and its contiguous copy. Traced with the allocation meter on Granite 4,
# Nemotron-H and Falcon-H1 mixers over 9 geometries (heads, groups, state, chunk, batch, contexts on
# and off the chunk grid): exact to the byte.
def _mamba2_bytes(spec: ModelSpec, batch: int, q_len: int, cb: int) -> int:
    """One Mamba2 layer's prefill peak above its input (`recurrent_bytes`)."""
    r = spec.recurrent
    h, p, n, c = r.heads, r.head_dim, r.d_state, r.chunk_size
    d, conv = h * p, r.conv_channels
    padded = -(-q_len // c) * c
    chunks = padded // c
    caller = (batch * q_len * (d + 2 * conv + 2 * h) * cb          # in_proj's output, the conv's output, dt
              + batch * conv * r.conv_kernel * cb + 2 * h * FP32_BYTES)   # the conv state; A (twice)
    x = batch * padded * h * p * FP32_BYTES
    bc = batch * padded * h * n * FP32_BYTES
    square = batch * h * padded * c * FP32_BYTES
    scan = (7 * x + 3 * bc + 3 * square + batch * (chunks + 2) * h * p * n * FP32_BYTES
            + 4 * batch * h * padded * FP32_BYTES + batch * h * (chunks + 1) ** 2 * FP32_BYTES)
    return caller + scan


# Lightning attention (MiniMax; MiniMaxLightningAttention.forward, blocks of `block_size`): silu(qkv)
# in the compute dtype for the whole prompt; per block, q.k^T and its decayed copy, the intra- and
# inter-block reads (each block's output kept in a list), the keys decayed, the block's state
# update beside the old state; the previous block's locals stay referenced until rebound. After the
# loop the outputs concatenated and reshaped, then the RMSNorm over all heads in float32. Traced with
# the allocation meter over 5 geometries (heads, head size, block size, batch, contexts within one
# block and across several): exact to the byte.
def _lightning_bytes(spec: ModelSpec, batch: int, q_len: int, cb: int) -> int:
    """One lightning-attention layer's prefill peak above its input (`recurrent_bytes`)."""
    r = spec.recurrent
    h, d, block = r.heads, r.head_dim, r.chunk_size
    inner = h * d
    state = batch * h * d * d * cb
    qkv = 3 * batch * q_len * inner * cb
    n_blocks = -(-q_len // block)
    last = q_len - (n_blocks - 1) * block

    def sizes(length: int) -> tuple[int, int]:
        return batch * h * length * length * cb, batch * h * length * d * cb

    def iteration(length: int, previous: int, done: int) -> int:
        """The peak of one block's iteration after `done` tokens, the previous block `previous` long."""
        square, rows = sizes(length)
        old_square, old_rows = sizes(previous)
        old_state = state if previous else 0
        live = qkv + done * batch * inner * cb + state + h * cb + old_square + 2 * old_rows + old_state
        # over more than one sequence, matmul copies its strided [b, h, L, d] operands (q, k, v and their decayed
        # copies, views of the qkv projection) to fold batch and heads, for the duration of the product
        copy = rows if batch > 1 else 0
        top = 0
        for grow, transient, release in (
                (square, 2 * copy, old_square), (square, 0, 0), (rows, copy, square + old_rows),   # q.k^T, decayed, intra
                (rows, 0, 0), (rows, copy, rows + old_rows), (rows, 0, 0),                         # q decayed, inter, output
                (rows, 0, 0), (state, 2 * copy, rows + old_state), (state, 0, 0), (state, 0, 2 * state)):  # k decayed, update
            top = max(top, live + grow + transient)
            live += grow - release
        return top

    loops = [iteration(block if n_blocks > 1 else last, 0, 0)]
    if n_blocks > 2:                                   # the last full block (every full block but the first alike)
        loops.append(iteration(block, block, (n_blocks - 2) * block))
    if n_blocks > 1:
        loops.append(iteration(last, block, (n_blocks - 1) * block))
    square, rows = sizes(last)
    after = (qkv + batch * q_len * inner * cb + 3 * rows + 2 * state + square + h * cb       # the reshaped output
             + 2 * batch * q_len * (inner + 1) * FP32_BYTES)                              # the norm in float32
    return max(max(loops), after)


def recurrent_bytes(spec: ModelSpec, batch: int, q_len: int, cb: int, torch_kernels: bool = True) -> int:
    """The working set of one recurrent layer (Gated DeltaNet, Mamba, Mamba2, lightning) above the residual part, as transformers'
    torch path computes a prefill of `q_len` tokens (0 for a model without one, a decode step, or a
    mixer whose working set is not modelled: those layers count as attention layers). The block
    output the residual part counts is not allocated yet. `torch_kernels=False` (vLLM's own kernels):
    not modelled (0)."""
    r = spec.recurrent
    if r is None or not spec.n_state_layers or q_len <= 1 or not torch_kernels:
        return 0
    block_output = batch * q_len * spec.hidden_size * cb
    if r.kind == "gated_deltanet" and r.heads:
        return _gated_deltanet_bytes(spec, batch, q_len, cb) - block_output
    if r.kind == "mamba" and r.d_state:
        return _mamba_bytes(spec, batch, q_len, cb) - block_output
    if r.kind == "mamba2" and r.heads and r.chunk_size:
        return _mamba2_bytes(spec, batch, q_len, cb) - block_output
    if r.kind == "lightning" and r.heads and r.chunk_size:
        return _lightning_bytes(spec, batch, q_len, cb) - block_output
    return 0


# The optional kernels transformers uses instead of those torch paths when they are installed
# ("falling back to its reference PyTorch implementation" otherwise), by mixer kind.
RECURRENT_KERNELS = {"gated_deltanet": "flash-linear-attention", "mamba": "mamba-ssm and causal-conv1d",
                     "mamba2": "mamba-ssm and causal-conv1d"}


def _torch_only(kind: str) -> bool:
    """MiniMax's lightning attention has no kernel path in transformers: its block loop always runs."""
    return kind not in RECURRENT_KERNELS


def recurrent_notes(spec: ModelSpec) -> list[str]:
    """What a report says about the recurrent layers' activations (`recurrent_bytes`)."""
    r = spec.recurrent
    if r is None or not spec.n_state_layers:
        return []
    if not recurrent_bytes(spec, 1, 2, 2):
        return [f"the {r.kind} layers' working set is not modelled: counted as attention layers'"]
    if _torch_only(r.kind):
        return [f"activations of the {r.kind} layers as transformers computes the prefill (its block loop)"]
    return [f"activations of the {r.kind} layers as transformers' PyTorch path computes the prefill (a chunked "
            f"scan in float32); with {RECURRENT_KERNELS[r.kind]} installed transformers uses their kernels "
            "instead, and this is an upper bound"]


def step_peak(spec: ModelSpec, batch: int, q_len: int, kv_len: int, eager: bool, logit_positions: int,
              cb: int, residual_copies: int | None = None, int8_mlp: bool = False,
              torch_sdpa: bool = True, kernels: str = "cuda", bnb_dequantized: str | None = None) -> dict[str, int]:
    """One forward's parts: `residual`, `positions` and `masks` live throughout; `attention`, `mlp`
    and `logits` are the moments of which the largest adds to them (`peak_of`). `kernels`: the
    device whose kernels run ("cuda" or "cpu"); `int8_mlp`: the MLP's Linears are bitsandbytes int8;
    `torch_sdpa`: attention runs through torch's scaled_dot_product_attention (transformers), not an
    engine's own kernels; `bnb_dequantized`: bitsandbytes' CPU fallback dequantizes every weight at
    its product (BNB_DEQUANTIZED_*; None where its native kernels run)."""
    tokens = batch * q_len
    copies = residual_copies or RESIDUAL_COPIES + _has_tensor(spec, SECOND_PARALLEL_NORM)
    attention = attention_bytes(spec, batch, q_len, kv_len, eager, cb, torch_sdpa, kernels)
    if bnb_dequantized:
        attention = max(attention, bnb_attention_projection_bytes(spec, tokens, cb, bnb_dequantized))
    attention = max(attention, recurrent_bytes(spec, batch, q_len, cb, torch_sdpa))   # the token mixers' moment
    return {
        "residual": copies * tokens * spec.hidden_size * cb,
        "positions": positions_bytes(spec, batch, q_len, kv_len, cb),
        "masks": masks_bytes(spec, batch, q_len, kv_len, eager, cb),
        "attention": attention,
        "mlp": (mlp_bytes(spec, tokens, cb, kernels if int8_mlp else None, bnb_dequantized)
                + kept_probabilities_bytes(spec, batch, q_len, kv_len, eager, cb)
                + previous_probabilities_bytes(spec, batch, q_len, kv_len, eager, cb)),
        "logits": logits_bytes(spec, batch, logit_positions, cb),
    }


def peak_of(parts: dict[str, int], logits: bool = True) -> int:
    """The step's peak: what lives throughout plus the largest moment (the logits only where they are
    computed, the last pipeline stage)."""
    moments = (parts["attention"], parts["mlp"], parts["logits"] if logits else 0)
    return parts["residual"] + parts["positions"] + parts["masks"] + max(moments)


def _layer_moment(layer: dict[str, int], step: dict[str, int]) -> int:
    """A layer's moment over the keys it attends to, with generate()'s inputs as the step has them
    (the 2-D mask spans the whole context, a sliding layer's window or not)."""
    return peak_of({**layer, "positions": step["positions"]}, logits=False)


def decode_peak_bytes(spec: ModelSpec, batch: int, context: int, cb: int, eager: bool, kv_dtype: str,
                      kernels: str = "cuda", int8_mlp: bool = False, bnb_dequantized: str | None = None) -> int:
    """Cache and activations at the first decode step's peak, after a prefill of `context` tokens
    (transformers), the largest of: a cache update's moment (transformers_decode_cache) with what
    lives through the step; each layer's attention or MLP moment over the cache as that layer leaves
    it (the layers after it not yet updated: a sliding layer frees its prompt-long tensors), over
    the keys that layer attends to; the logits and their float32 copy (as generate() takes them)
    over the updated cache."""
    cache = transformers_decode_cache(spec, kv_dtype, context, batch)
    parts = step_peak(spec, batch, 1, context, eager, 1, cb, int8_mlp=int8_mlp, kernels=kernels,
                      bnb_dequantized=bnb_dequantized)
    throughout = parts["residual"] + parts["positions"] + parts["masks"]
    moments = {attended: _layer_moment(step_peak(spec, batch, 1, attended - 1, eager, 1, cb, int8_mlp=int8_mlp,
                                                 kernels=kernels, bnb_dequantized=bnb_dequantized), parts)
               for attended in set(cache.attended_tokens)}
    layers = max(n + moments[a] for n, a in zip(cache.layer_bytes, cache.attended_tokens))
    if bnb_dequantized:     # a layer's q projection, before its update: past a window, the prompt-long cache
        found = (transformers_kv_cache_bytes(spec, kv_dtype, context, batch, storage=True),) + cache.layer_bytes[:-1]
        layers = max(layers, max(found) + throughout + bnb_q_projection_bytes(spec, batch, cb, bnb_dequantized))
    return max(cache.update_peak_bytes + throughout, layers, cache.after_bytes + throughout + parts["logits"])


def activation_peaks(spec: ModelSpec, workload: Workload, compute_bytes: int = 2, kernels: str = "cuda",
                     int8_mlp: bool = False) -> ActivationPeaks:
    """Prefill over the whole context, then one decode step attending to the whole context."""
    b, s = workload.batch_size, workload.context_length
    eager = workload.attention == "eager"
    prefill = step_peak(spec, b, s, s, eager, s if workload.logits == "all" else 1, compute_bytes,
                        int8_mlp=int8_mlp, kernels=kernels)
    decode = step_peak(spec, b, 1, s, eager, 1, compute_bytes, int8_mlp=int8_mlp, kernels=kernels)
    larger = prefill if peak_of(prefill) >= peak_of(decode) else decode
    return ActivationPeaks(peak_of(prefill), peak_of(decode), larger)
