"""KV cache bytes: MHA, GQA, MQA, explicit head_dim, sliding-window layers, MLA latents.

Per token and layer, attention with KV heads stores a key and a value per KV head:
`n_kv_heads x (head_dim + v_head_dim)` values (= 2 x n_kv_heads x head_dim). MLA (DeepSeek V2/V3)
stores one compressed latent plus the shared rotary key: `kv_lora_rank + qk_rope_head_dim` values,
as vLLM and SGLang cache it. A sliding-window layer keeps at most `sliding_window` tokens, a chunked
(local) attention layer at most one chunk. Layers without attention (Mamba, linear attention) and
layers reading an earlier layer's KV keep no per-token cache; the recurrent layers keep instead one
state per sequence, constant in the context (`state_bytes_per_sequence`).
Source: docs/reference/engines.md; checked against params.md's KV bytes per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import ceil

from sizer.calc.transformers_releases import expands_cached_kv
from sizer.errors import UsageError
from sizer.spec import (CHUNKED_ATTENTION, FULL_ATTENTION, KV_KINDS, MAMBA, NO_CACHE, SHARED_KV, SLIDING_ATTENTION,
                         ModelSpec)

# Bits per cached value. int8/fp8 per-tensor scales are a few bytes per layer and are left out;
# llama.cpp's q8_0 / q4_0 cache types carry an fp16 scale per block of 32 (8.5 and 4.5 bits).
KV_DTYPE_BITS = {"fp32": Fraction(32), "bf16": Fraction(16), "fp16": Fraction(16), "fp8": Fraction(8),
                 "int8": Fraction(8), "q8_0": Fraction(17, 2), "q4_0": Fraction(9, 2)}


def kv_dtype_bytes(kv_dtype: str) -> Fraction:
    """Bytes per cached value (a fraction for the block-quantized llama.cpp types)."""
    try:
        return KV_DTYPE_BITS[kv_dtype.lower()] / 8
    except KeyError:
        raise UsageError(f"unknown KV cache dtype {kv_dtype!r} (known: {', '.join(KV_DTYPE_BITS)})") from None


def kv_values_per_token_per_layer(spec: ModelSpec, layer_type: str = FULL_ATTENTION) -> int:
    """Key and value values one token adds to one layer of `layer_type` (MLA: its latent)."""
    if spec.is_mla:
        return spec.kv_lora_rank + spec.qk_rope_head_dim
    g = spec.kv_geometry(layer_type)
    return g.n_kv_heads * (g.head_dim + g.v_head_dim)


def kv_values_per_token_per_kv_layer(spec: ModelSpec) -> int:
    """Values one token adds to each layer with its own KV: keys and values, and the sparse-attention
    indexer's keys where the model has an indexer (DeepSeek V3.2). Models whose KV layers differ
    (per-kind geometry, indexer on some layers only) use `kv_layer_bytes_per_token` per layer."""
    return kv_values_per_token_per_layer(spec) + spec.indexer_values_per_token


# vLLM caches the sparse-attention indexer's keys as fp8 with a float32 scale per 128 values, whatever
# --kv-cache-dtype says: vllm/model_executor/models/deepseek_v2.py Indexer.__init__ builds
# DeepseekV32IndexerCache(head_dim=index_head_dim + index_head_dim // quant_block_size * 4,
# dtype=torch.uint8) with quant_block_size = 128 ("fp8 naive cache ... value in fp8 and scale in fp32
# per quant_block_size element"); its get_kv_cache_spec is an MLAAttentionSpec of one head that size.
VLLM_INDEXER_QUANT_BLOCK = 128
INDEXER_AT_KV_DTYPE, INDEXER_VLLM_FP8 = "kv_dtype", "vllm_fp8"


def indexer_bytes_per_token(values: int, kv_dtype: str, layout: str = INDEXER_AT_KV_DTYPE) -> Fraction:
    """Bytes of one token's indexer keys in one layer: in the KV dtype (transformers caches them in the
    model dtype), or vLLM's fp8 values plus a float32 scale per 128."""
    if layout == INDEXER_VLLM_FP8:
        return Fraction(values + values // VLLM_INDEXER_QUANT_BLOCK * 4)
    return values * kv_dtype_bytes(kv_dtype)


def kv_layer_bytes_per_token(spec: ModelSpec, layer: int, kv_dtype: str,
                             indexer: str = INDEXER_AT_KV_DTYPE) -> Fraction:
    """Bytes one token adds to layer `layer`'s cache (0 for a layer without per-token KV)."""
    kind = spec.layer_types[layer]
    if kind not in KV_KINDS:
        return Fraction(0)
    size = kv_values_per_token_per_layer(spec, kind) * kv_dtype_bytes(kv_dtype)
    if spec.has_indexer(layer):
        size += indexer_bytes_per_token(spec.indexer_values_per_token, kv_dtype, indexer)
    return size


def kv_cache_bytes_per_token(spec: ModelSpec, kv_dtype: str = "bf16", indexer: str = INDEXER_AT_KV_DTYPE) -> int:
    """Bytes one token adds to the cache across the layers that keep KV (before any window caps it)."""
    return ceil(sum(kv_layer_bytes_per_token(spec, i, kv_dtype, indexer) for i in range(len(spec.layer_types))))


def window_of(spec: ModelSpec, layer_type: str) -> int | None:
    """The tokens a windowed layer keeps at most (sliding window, attention chunk); None: unbounded."""
    if layer_type == SLIDING_ATTENTION:
        return spec.sliding_window or None
    if layer_type == CHUNKED_ATTENTION:
        return spec.attention_chunk or None
    return None


def cached_tokens(spec: ModelSpec, layer_type: str, context_length: int) -> int:
    """Tokens a layer keeps for one sequence of `context_length` tokens (0: no per-token cache)."""
    if layer_type not in KV_KINDS:
        return 0
    window = window_of(spec, layer_type)
    return min(context_length, window) if window else context_length


def kv_cache_bytes(spec: ModelSpec, kv_dtype: str, context_length: int, batch_size: int,
                   indexer: str = INDEXER_AT_KV_DTYPE) -> int:
    """Per-token cache bytes for `batch_size` sequences of `context_length` tokens each (no state)."""
    return ceil(batch_size * sum(cached_tokens(spec, lt, context_length) * kv_layer_bytes_per_token(spec, i, kv_dtype, indexer)
                                 for i, lt in enumerate(spec.layer_types)))


# Bytes per element of the recurrent state as each engine keeps it:
# * vLLM: mamba_cache_dtype / mamba_ssm_cache_dtype "auto" use the model dtype for the conv and the
#   SSM state (vllm/model_executor/layers/mamba/mamba_utils.py MambaStateDtypeCalculator.
#   _mamba_state_dtype, also for Gated DeltaNet); --mamba-ssm-cache-dtype float32 raises the SSM
#   part, and some checkpoints set it (NemotronH: the config's mamba_ssm_cache_dtype, else float16;
#   Qwen3.5's float32 SSM state is what its logged 784-token blocks need, tests/test_vllm_hybrid.py).
#   Speculative decoding adds num_spec conv columns (conv_kernel - 1 + num_spec):
#   `vllm_state_bytes_per_layer`. docs/reference/vllm-hybrid.md quotes the lines.
# * llama.cpp: llama_memory_recurrent stores r (conv) and s (SSM) in GGML_TYPE_F32 (the types
#   llama_model::create_memory passes), one cell per sequence (n_seq_max cells).
# * transformers: LinearAttentionLayer keeps the conv state in the model dtype and the recurrent
#   state as the mixer returns it, float32 (the torch paths accumulate it in fp32; measured in
#   tests/test_against_transformers.py).
LLAMACPP_STATE_BYTES = 4
TRANSFORMERS_RECURRENT_STATE_BYTES = 4


def state_bytes_per_layer(spec: ModelSpec, state_dtype_bytes: int | Fraction = 2,
                          ssm_dtype_bytes: int | Fraction | None = None) -> int:
    """Per-sequence bytes of one recurrent layer as serving engines keep it: the conv state's last
    kernel - 1 inputs and the recurrent state (SSM dtype: the state dtype unless given)."""
    r = spec.recurrent
    if r is None:
        return 0
    ssm = state_dtype_bytes if ssm_dtype_bytes is None else ssm_dtype_bytes
    return ceil(r.conv_values * state_dtype_bytes + r.state_values * ssm)


def vllm_state_bytes_per_layer(spec: ModelSpec, state_dtype_bytes: int | Fraction = 2,
                               ssm_dtype_bytes: int | Fraction | None = None, num_speculative_tokens: int = 0) -> int:
    """One recurrent layer's MambaSpec page before padding, as vLLM sizes it (mamba_utils.py
    MambaStateShapeCalculator): conv state (conv_kernel - 1 + num_spec) x channels in the state dtype,
    SSM / recurrent state in the SSM dtype (the state dtype unless given)."""
    r = spec.recurrent
    if r is None:
        return 0
    ssm = state_dtype_bytes if ssm_dtype_bytes is None else ssm_dtype_bytes
    conv = r.conv_channels * (max(0, r.conv_kernel - 1) + num_speculative_tokens)
    return ceil(conv * state_dtype_bytes + r.state_values * ssm)


def state_bytes_per_sequence(spec: ModelSpec, state_dtype_bytes: int | Fraction = 2,
                             ssm_dtype_bytes: int | Fraction | None = None) -> int:
    """Bytes of recurrent state one sequence holds across the model, whatever its length."""
    return spec.n_state_layers * state_bytes_per_layer(spec, state_dtype_bytes, ssm_dtype_bytes)


def transformers_state_bytes(spec: ModelSpec, compute_bytes: int, batch_size: int) -> int:
    """The recurrent state transformers' cache holds for `batch_size` sequences: per recurrent layer
    conv_states (batch, channels, kernel) in the model dtype and recurrent_states in float32."""
    r = spec.recurrent
    if r is None:
        return 0
    # MiniMax's lightning attention keeps its [heads, head_dim, head_dim] state in the dtype of its values
    # (MiniMaxLightningAttention.forward, MiniMaxCache.linear_cache)
    recurrent = compute_bytes if r.kind == "lightning" else TRANSFORMERS_RECURRENT_STATE_BYTES
    per_layer = r.conv_channels * r.conv_kernel * compute_bytes + r.state_values * recurrent
    return batch_size * spec.n_state_layers * per_layer


# The layer types of transformers' cache (cache_utils.DYNAMIC_LAYER_TYPE_MAPPING) for sizer's kinds:
# every recurrent-only layer is a "linear_attention" LinearAttentionLayer, a layer without its own
# cache a "dummy" DummyLayer; the other kinds have the same names.
TRANSFORMERS_CACHE_LAYER_TYPE = {MAMBA: "linear_attention", SHARED_KV: "dummy", NO_CACHE: "dummy"}


def transformers_kv_cache_bytes(spec: ModelSpec, kv_dtype: str, context_length: int, batch_size: int,
                                storage: bool = False) -> int:
    """The cache transformers' DynamicCache holds after a prefill of `context_length` tokens.

    It differs from the engines' layout in two ways (measured in tests/test_against_transformers.py):
    a sliding-window layer keeps `sliding_window - 1` tokens once the prompt reaches the window, and
    Falcon's new decoder stores K and V expanded to every attention head up to transformers 5.24.
    storage=True: the memory behind those tensors right after the prefill, when a sliding layer's
    tensors are still views of the whole prompt's keys and values (freed at the next update).
    """
    tokens = 0
    for i, lt in enumerate(spec.layer_types):
        window = window_of(spec, lt)        # chunked layers are DynamicSlidingWindowLayer(chunk) too
        if lt not in KV_KINDS:
            continue
        kept = min(context_length, window - 1) if window and context_length >= window and not storage \
            else context_length
        # the indexer keys (DynamicIndexedLayer.indexer_keys) grow by concatenation, never windowed
        tokens += kept * sum(_transformers_kv_values(spec, lt)) + context_length * _indexer_values(spec, i)
    return ceil(batch_size * tokens * kv_dtype_bytes(kv_dtype))


def _indexer_values(spec: ModelSpec, layer: int) -> int:
    return spec.indexer_values_per_token if spec.has_indexer(layer) else 0


def _transformers_kv_values(spec: ModelSpec, layer_type: str = FULL_ATTENTION) -> tuple[int, int]:
    """Values per token per layer of the keys and of the values transformers' cache holds: Falcon's
    new decoder expands its KV heads to every head (up to 5.24); MLA caches its compressed latent as
    the keys and the shared RoPE key as the values (DeepSeek's update(compressed_kv, k_pe), traced)."""
    if spec.is_mla:
        return spec.kv_lora_rank, spec.qk_rope_head_dim
    g = spec.kv_geometry(layer_type)
    heads = transformers_kv_heads(spec) if g.n_kv_heads == spec.n_kv_heads else g.n_kv_heads
    return heads * g.head_dim, heads * g.v_head_dim


def transformers_kv_heads(spec: ModelSpec) -> int:
    """K/V heads transformers caches and hands to attention (not MLA): Falcon's new decoder expands
    them to every query head up to transformers 5.24 (transformers_releases)."""
    return spec.n_heads if expands_cached_kv(spec) else spec.n_kv_heads


@dataclass(frozen=True)
class DecodeCache:
    """Bytes behind transformers' cache through the first decode step after a prefill."""

    update_peak_bytes: int                  # at the largest moment of an update
    after_bytes: int                        # once every layer is updated
    layer_bytes: tuple[int, ...]            # once layer i is updated (the layers after it not yet)
    attended_tokens: tuple[int, ...]        # the keys layer i attends to


def transformers_decode_cache(spec: ModelSpec, kv_dtype: str, context_length: int, batch_size: int) -> DecodeCache:
    """The memory behind transformers' cache during the first decode step after a prefill of
    `context_length` tokens (traced on CPU). Layer by layer, a full layer (DynamicLayer)
    concatenates the new token to its keys and replaces them, then its values, growing to context + 1
    tokens; a sliding layer (DynamicSlidingWindowLayer) concatenates both before replacing either,
    min(context, window - 1) + 1 tokens each, and keeps views of their last window - 1 (the
    prompt-long tensors behind its old views are freed). The peak is at one layer's update, the
    layers before it updated and the rest not."""
    old = context_length
    live = peak = sum(old * (sum(_transformers_kv_values(spec, lt)) + _indexer_values(spec, i))
                      for i, lt in enumerate(spec.layer_types) if lt in KV_KINDS)
    layers, attended = [], []
    for i, lt in enumerate(spec.layer_types):
        window = window_of(spec, lt)
        if lt not in KV_KINDS:                      # no per-token cache: the state is updated in place
            layers.append(live)
            attended.append(0)
            continue
        k_values, v_values = _transformers_kv_values(spec, lt)
        if window:                                  # both concatenations, then both replacements
            new = min(context_length, window - 1) + 1
            steps = [(new * (k_values + v_values), -old * (k_values + v_values))]
        else:                                        # keys = cat(keys, k); values = cat(values, v)
            new = context_length + 1
            steps = [(new * k_values, -old * k_values), (new * v_values, -old * v_values)]
        if idx := _indexer_values(spec, i):         # then the indexer: indexer_keys = cat(indexer_keys, k)
            steps.append(((context_length + 1) * idx, -old * idx))
        for grow, release in steps:
            live += grow
            peak = max(peak, live)
            live += release
        layers.append(live)
        attended.append(new)
    scale = batch_size * kv_dtype_bytes(kv_dtype)
    return DecodeCache(ceil(peak * scale), ceil(live * scale), tuple(ceil(n * scale) for n in layers), tuple(attended))
