"""Gradients, optimizer states and fp32 master weights of the trained parameters, per optimizer as
its implementation allocates them (torch.optim.AdamW, bitsandbytes' 8-bit AdamW, transformers'
Adafactor, torch SGD)."""

from __future__ import annotations

from math import ceil, prod

from sizer.finetune.params import TrainedParams

FP32_BYTES = 4
# bitsandbytes 8-bit optimizers: tensors under min_8bit_size elements keep 32-bit states
# (bitsandbytes/optim/optimizer.py Optimizer8bit, min_8bit_size=4096); larger ones one uint8 per
# value and state, plus a float32 absmax per block of 256 values (blockwise quantization).
BNB_MIN_8BIT_SIZE = 4096
BNB_OPTIMIZER_BLOCK = 256


def gradient_bytes(p: TrainedParams) -> int:
    """One gradient per trained parameter, in the parameter's dtype."""
    return p.trainable * p.param_bytes


def master_weight_bytes(p: TrainedParams, master_weights: bool) -> int:
    """fp32 copies of 16-bit trained parameters (mixed precision keeping fp32 masters)."""
    return p.trainable * FP32_BYTES if master_weights and p.param_bytes < FP32_BYTES else 0


def _adam8bit_bytes(n: int) -> int:
    if n < BNB_MIN_8BIT_SIZE:
        return 2 * n * FP32_BYTES
    return 2 * (n + ceil(n / BNB_OPTIMIZER_BLOCK) * FP32_BYTES)


def optimizer_state_bytes(p: TrainedParams, optimizer: str, state_bytes: int) -> int:
    """The optimizer's states for every trained tensor; `state_bytes` the width of a 32/16-bit state
    (torch's AdamW makes exp_avg and exp_avg_sq like the parameter: its dtype)."""
    if optimizer == "adamw":
        return 2 * p.trainable * state_bytes
    if optimizer in ("adamw-8bit", "paged-adamw-8bit"):
        return sum(_adam8bit_bytes(prod(s)) for s in p.trainable_shapes)
    if optimizer == "adafactor":
        return sum(_adafactor_values(s) for s in p.trainable_shapes) * state_bytes
    return 0                                         # sgd without momentum


def optimizer_step_bytes(p: TrainedParams, optimizer: str, block_bytes: int) -> int:
    """torch's AdamW keeps a float32 `step` tensor per parameter tensor (optim/adamw.py, via
    adam.py `_init_group`: torch.tensor(0.0, dtype=_get_scalar_dtype())); on the parameter's device
    when fused or capturable (the Trainer's default adamw_torch_fused), else on the host.
    `block_bytes`: the device allocator's smallest block (CUDA's caching allocator: 512)."""
    if optimizer != "adamw":
        return 0
    return len(p.trainable_shapes) * max(FP32_BYTES, block_bytes)


def _adafactor_values(shape: tuple[int, ...]) -> int:
    """transformers' Adafactor (beta1 None): a matrix keeps a row and a column of second moments,
    a vector its full second moment."""
    if len(shape) >= 2:
        return prod(shape[:-1]) + prod(shape[:-2]) * shape[-1]
    return prod(shape)
