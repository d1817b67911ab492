"""Counting the bytes a loaded model holds: parameters with their quantization statistics and packed
GPTQ tensors (each storage once), other buffers, and the key/value tensors of a transformers cache.
"""

from __future__ import annotations

from sizer.errors import SizerError


def _nbytes(t) -> int:
    return t.numel() * t.element_size()


def _quant_state_bytes(module) -> int:
    """bitsandbytes statistics kept beside a quantized weight (as serialized)."""
    weight = getattr(module, "weight", None)
    total = 0
    scb = getattr(weight, "SCB", None)                    # LLM.int8 row scales: on the weight until the
    if scb is None:                                       # first forward moves them to module.state
        scb = getattr(getattr(module, "state", None), "SCB", None)
    if scb is not None:
        total += _nbytes(scb)
    state = getattr(weight, "quant_state", None)
    if state is not None:                                 # 4-bit absmax, code, nested statistics
        total += _nbytes(state.absmax) + _nbytes(state.code)
        if getattr(state, "nested", False):
            total += _nbytes(state.state2.absmax) + _nbytes(state.state2.code) + _nbytes(state.offset)
    return total


def _packed_buffer_keys(model) -> set:
    """Storages of GPTQ QuantLinear tensors (qweight, qzeros, scales, g_idx, bias, or their int4
    kernel layout): buffers, but weights."""
    keys = set()
    for module in model.modules():
        weight_tensors = getattr(module, "weight_tensors", None)
        if callable(weight_tensors):
            keys |= {(t.untyped_storage().data_ptr(), t.storage_offset()) for t in weight_tensors()}
    return keys


def weight_bytes(model) -> tuple[int, int]:
    """(parameters + quantization statistics + GPTQ packed tensors, other buffers) in bytes; each
    storage counted once."""
    seen, params = set(), 0
    for p in model.parameters():
        key = (p.untyped_storage().data_ptr(), p.storage_offset())
        if key not in seen:
            seen.add(key)
            params += _nbytes(p)
    # each weight's statistics once: a PEFT LoRA wrapper exposes its base layer's weight as its own
    seen_weights = set()
    for m in model.modules():
        weight = getattr(m, "weight", None)
        if weight is not None and id(weight) in seen_weights:
            continue
        seen_weights.add(id(weight))
        params += _quant_state_bytes(m)
    packed = _packed_buffer_keys(model)
    buffers, seen_buffers = 0, set()
    for b in model.buffers():
        key = (b.untyped_storage().data_ptr(), b.storage_offset())
        if key not in seen_buffers:
            seen_buffers.add(key)
            if key in packed:
                params += _nbytes(b)
            else:
                buffers += _nbytes(b)
    return params, buffers


def cache_bytes(cache) -> int:
    """Bytes of the key/value tensors a transformers cache holds (their logical size)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return sum(_nbytes(t) for layer in layers for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
                   if t is not None and hasattr(t, "numel"))
    if isinstance(cache, (tuple, list)):                  # legacy tuple of (key, value) per layer
        return sum(_nbytes(t) for layer in cache for t in layer)
    raise SizerError(f"cannot read the KV cache of type {type(cache).__name__}")
