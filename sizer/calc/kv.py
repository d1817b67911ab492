"""KV cache bytes: MHA, GQA, MQA, explicit head_dim, sliding-window layers, MLA latents.

Per token and layer, attention with KV heads stores a key and a value per KV head:
`n_kv_heads x (head_dim + v_head_dim)` values (= 2 x n_kv_heads x head_dim). MLA (DeepSeek V2/V3)
stores one compressed latent plus the shared rotary key: `kv_lora_rank + qk_rope_head_dim` values,
as vLLM and SGLang cache it. A sliding-window layer keeps at most `sliding_window` tokens.
Source: docs/reference/engines.md; checked against params.md's KV bytes per token.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import ceil

from sizer.calc.transformers_releases import expands_cached_kv
from sizer.errors import UsageError
from sizer.spec import SLIDING_ATTENTION, ModelSpec

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


def kv_values_per_token_per_layer(spec: ModelSpec) -> int:
    if spec.is_mla:
        return spec.kv_lora_rank + spec.qk_rope_head_dim
    return spec.n_kv_heads * (spec.head_dim + spec.v_head_dim)


def kv_cache_bytes_per_token(spec: ModelSpec, kv_dtype: str = "bf16") -> int:
    """Bytes one token adds to the cache across all layers (before any window caps it)."""
    return ceil(spec.n_layers * kv_values_per_token_per_layer(spec) * kv_dtype_bytes(kv_dtype))


def cached_tokens(spec: ModelSpec, layer_type: str, context_length: int) -> int:
    """Tokens a layer keeps for one sequence of `context_length` tokens."""
    if layer_type == SLIDING_ATTENTION and spec.sliding_window:
        return min(context_length, spec.sliding_window)
    return context_length


def kv_cache_bytes(spec: ModelSpec, kv_dtype: str, context_length: int, batch_size: int) -> int:
    """Cache bytes for `batch_size` sequences of `context_length` tokens each."""
    per_token_layer = kv_values_per_token_per_layer(spec) * kv_dtype_bytes(kv_dtype)
    tokens = sum(cached_tokens(spec, lt, context_length) for lt in spec.layer_types)
    return ceil(batch_size * tokens * per_token_layer)


def transformers_kv_cache_bytes(spec: ModelSpec, kv_dtype: str, context_length: int, batch_size: int,
                                storage: bool = False) -> int:
    """The cache transformers' DynamicCache holds after a prefill of `context_length` tokens.

    It differs from the engines' layout in two ways (measured in tests/test_against_transformers.py):
    a sliding-window layer keeps `sliding_window - 1` tokens once the prompt reaches the window, and
    Falcon's new decoder stores K and V expanded to every attention head up to transformers 5.24.
    storage=True: the memory behind those tensors right after the prefill, when a sliding layer's
    tensors are still views of the whole prompt's keys and values (freed at the next update).
    """
    per_token_layer = sum(_transformers_kv_values(spec))
    window = spec.sliding_window or 0
    tokens = sum(min(context_length, window - 1)
                 if lt == SLIDING_ATTENTION and context_length >= window and not storage else context_length
                 for lt in spec.layer_types)
    return ceil(batch_size * tokens * per_token_layer * kv_dtype_bytes(kv_dtype))


def _transformers_kv_values(spec: ModelSpec) -> tuple[int, int]:
    """Values per token per layer of the keys and of the values transformers' cache holds: Falcon's
    new decoder expands its KV heads to every head (up to 5.24); MLA caches its compressed latent as
    the keys and the shared RoPE key as the values (DeepSeek's update(compressed_kv, k_pe), traced)."""
    if spec.is_mla:
        return spec.kv_lora_rank, spec.qk_rope_head_dim
    heads = transformers_kv_heads(spec)
    return heads * spec.head_dim, heads * spec.v_head_dim


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
    k_values, v_values = _transformers_kv_values(spec)
    window = spec.sliding_window or 0
    old = context_length
    live = peak = spec.n_layers * old * (k_values + v_values)
    layers, attended = [], []
    for lt in spec.layer_types:
        if lt == SLIDING_ATTENTION and window:      # both concatenations, then both replacements
            new = min(context_length, window - 1) + 1
            steps = ((new * (k_values + v_values), -old * (k_values + v_values)),)
        else:                                        # keys = cat(keys, k); values = cat(values, v)
            new = context_length + 1
            steps = ((new * k_values, -old * k_values), (new * v_values, -old * v_values))
        for grow, release in steps:
            live += grow
            peak = max(peak, live)
            live += release
        layers.append(live)
        attended.append(new)
    scale = batch_size * kv_dtype_bytes(kv_dtype)
    return DecodeCache(ceil(peak * scale), ceil(live * scale), tuple(ceil(n * scale) for n in layers), tuple(attended))
