"""Gradients, optimizer states and fp32 master weights of the trained parameters, per optimizer as
its implementation allocates them (torch.optim.AdamW, bitsandbytes' 8-bit AdamW, transformers'
Adafactor, torch SGD), and the extra bytes the optimizer step itself allocates. Sources:
docs/reference/finetune.md, "Parameters, gradients and optimizer states"."""

from __future__ import annotations

from math import ceil, prod

from sizer.finetune.setup import FinetuneSetup
from sizer.finetune.params import TrainedParams

FP32_BYTES = 4
# bitsandbytes 0.50.2 optim/optimizer.py Optimizer2State.init_state: a tensor under min_8bit_size
# elements keeps two float32 states; a larger one two uint8 states and a float32 absmax per block of
# 256 per state; the two quantization maps (256 float32 values each) are shared by every tensor.
BNB_MIN_8BIT_SIZE = 4096
BNB_OPTIMIZER_BLOCK = 256
BNB_QMAP_BYTES = 2 * 256 * FP32_BYTES
# Optimizer8bit.get_state_buffer: a paged optimizer allocates a tensor's states with cudaMallocManaged
# (outside torch's caching allocator) from 1e5 elements up; smaller ones through torch.
BNB_PAGED_MIN_ELEMENTS = 100_000

# How a torch AdamW step runs: Trainer's default optim (adamw_torch_fused) passes fused=True; with
# fused and foreach unset torch picks foreach for CUDA tensors and the per-tensor loop otherwise.
FUSED, FOREACH, FOR_LOOP = "fused", "foreach", "for-loop"
# Trainer `optim` values of the CLI's --optimizer names (transformers 5.25 trainer_optimizer.py)
TRAINER_OPTIM = {"adamw": "adamw_torch_fused", "adamw-8bit": "adamw_bnb_8bit", "paged-adamw-8bit": "paged_adamw_8bit",
                 "adafactor": "adafactor", "sgd": "sgd"}


def _numels(p: TrainedParams) -> list[int]:
    return [prod(s) for s in p.trainable_shapes]


def gradient_bytes(p: TrainedParams, in_backward: bool = False) -> int:
    """One gradient per trained parameter, in the parameter's dtype. With the optimizer step in the
    backward (torchtune optimizer_in_bwd: a post-accumulate-grad hook steps each parameter and drops
    its gradient) at most the largest trained tensor's gradient is alive at once."""
    if in_backward:
        return max((n * w for n, w in zip(_numels(p), p.widths())), default=0)
    return sum(n * w for n, w in zip(_numels(p), p.widths()))


def master_weight_bytes(p: TrainedParams, master_weights: bool) -> int:
    """fp32 copies of 16-bit trained parameters (mixed precision keeping fp32 masters)."""
    return p.trainable * FP32_BYTES if master_weights and p.param_bytes < FP32_BYTES else 0


def adam8bit_tensor_bytes(n: int) -> int:
    """bitsandbytes 8-bit AdamW states of one tensor of `n` elements (the shared maps apart)."""
    if n < BNB_MIN_8BIT_SIZE:
        return 2 * n * FP32_BYTES
    return 2 * (n + ceil(n / BNB_OPTIMIZER_BLOCK) * FP32_BYTES)


def adam8bit_bytes(p: TrainedParams) -> int:
    numels = _numels(p)
    maps = BNB_QMAP_BYTES if any(n >= BNB_MIN_8BIT_SIZE for n in numels) else 0
    return sum(adam8bit_tensor_bytes(n) for n in numels) + maps


def paged_state_bytes(p: TrainedParams) -> int:
    """The part of paged 8-bit AdamW's states in CUDA managed memory: the two state buffers of every
    tensor of 1e5 elements or more (8-bit or not). torch's allocator does not see them; the driver
    moves them to host memory when the GPU runs short, so they occupy free GPU memory but do not
    make a run fail."""
    total = 0
    for n in _numels(p):
        if n >= BNB_PAGED_MIN_ELEMENTS:
            total += 2 * n * (1 if n >= BNB_MIN_8BIT_SIZE else FP32_BYTES)
    return total


def _adafactor_values(shape: tuple[int, ...]) -> int:
    """transformers' Adafactor (beta1 None): a matrix keeps a row and a column of second moments,
    a vector its full second moment; plus its RMS, a 0-d tensor."""
    if len(shape) >= 2:
        return prod(shape[:-1]) + prod(shape[:-2]) * shape[-1] + 1
    return prod(shape) + 1


def optimizer_state_bytes(p: TrainedParams, optimizer: str, state_bytes: int | None = None,
                          step_scalar_bytes: int = FP32_BYTES) -> int:
    """The optimizer's states for every trained tensor. torch's AdamW makes exp_avg and exp_avg_sq
    like the parameter (its dtype; `state_bytes` overrides, e.g. 4 for fp32 master weights) plus a
    float32 step per tensor, `step_scalar_bytes` each where counted (CUDA's allocator gives each a
    512-byte block; 0 where they live on the host, as foreach and the loop keep them, or under DeepSpeed
    ZeRO, which steps one flat fp32 partition per parameter group); Adafactor's states are float32 whatever the parameter (it keeps them
    `.to(grad)` of the float32 gradient); SGD without momentum keeps none."""
    if optimizer == "adamw":
        widths = [state_bytes or w for w in p.widths()]
        steps = len(p.trainable_shapes) * step_scalar_bytes
        return sum(2 * n * w for n, w in zip(_numels(p), widths)) + steps
    if optimizer in ("adamw-8bit", "paged-adamw-8bit"):
        return adam8bit_bytes(p)
    if optimizer == "adafactor":
        return sum(_adafactor_values(s) for s in p.trainable_shapes) * FP32_BYTES
    return 0


def adamw_implementation(fused: bool, device: str) -> str:
    """Which torch AdamW runs: fused when asked (Trainer's default); else foreach on CUDA, the loop
    elsewhere (torch.optim.optimizer._default_to_fused_or_foreach)."""
    if fused:
        return FUSED
    return FOREACH if device == "cuda" else FOR_LOOP


def _dtype_groups(p: TrainedParams, state_bytes: int | None) -> list[int]:
    """Bytes of each dtype group of the parameters (Optimizer._group_tensors_by_device_and_dtype),
    in order of first appearance; a group's exp_avg_sq has the state's dtype."""
    groups: dict[int, int] = {}
    for n, w in zip(_numels(p), p.widths()):
        groups[w] = groups.get(w, 0) + n * (state_bytes or w)
    return list(groups.values())


def _pairs_peak(sizes: list[int]) -> int:
    """Peak of a loop where each step's result replaces the previous one's only once made."""
    return max((a + b for a, b in zip(sizes, sizes[1:])), default=max(sizes, default=0))


def adamw_step_bytes(p: TrainedParams, implementation: str, state_bytes: int | None = None) -> int:
    """Extra bytes at the peak of a torch AdamW step. fused: none (one kernel per group). foreach:
    `_foreach_sqrt(exp_avg_sqs)` per device/dtype group, held until the next group's replaces it.
    loop: per tensor `exp_avg_sq.sqrt()` and its quotient by the bias correction, together, while the
    previous tensor's quotient (`denom`) is still bound."""
    if implementation == FUSED:
        return 0
    if implementation == FOREACH:
        return _pairs_peak(_dtype_groups(p, state_bytes))
    peak = previous = 0
    for n, w in zip(_numels(p), p.widths()):
        denom = n * (state_bytes or w)
        peak, previous = max(peak, previous + 2 * denom), denom      # the last tensor's denom is still bound
    return peak


def adafactor_step_bytes(p: TrainedParams) -> int:
    """Extra bytes at the peak of transformers' Adafactor step, tensor by tensor: float32 copies of a
    16-bit gradient and parameter, then two float32 update-sized tensors at once (grad**2 and its sum
    with eps; the factored estimate, with its row and column factors, and the update it replaces;
    -update for the parameter). The
    previous tensor's update (and parameter copy) stay bound to their names until replaced."""
    peak = prev_param = prev_update = 0
    for shape, w in zip(p.trainable_shapes, p.widths()):
        n = prod(shape)
        copy = n * FP32_BYTES if w < FP32_BYTES else 0          # grad.float(), p.float()
        factors = _adafactor_values(shape) - 1 if len(shape) >= 2 else 0     # the row and column factors
        peak = max(peak, prev_param + prev_update + copy, prev_update + 2 * copy + 2 * n * FP32_BYTES,
                   2 * copy + (2 * n + factors) * FP32_BYTES)
        prev_param, prev_update = copy, n * FP32_BYTES
    return peak


def optimizer_step_bytes(p: TrainedParams, optimizer: str, fused: bool = True, device: str = "cuda",
                         state_bytes: int | None = None) -> int:
    """Peak extra bytes the optimizer step allocates above the gradients and states it updates.
    bitsandbytes' 8-bit step updates states and parameters in place in one CUDA kernel per tensor;
    SGD without momentum is an in-place add per tensor (`param.add_(grad, alpha=-lr)`)."""
    if optimizer == "adamw":
        return adamw_step_bytes(p, adamw_implementation(fused, device), state_bytes)
    if optimizer == "adafactor":
        return adafactor_step_bytes(p)
    return 0


def master_weights_default(setup: FinetuneSetup) -> bool:
    """fp32 masters when asked; else where the run keeps them: fp16 training (Trainer refuses to
    unscale fp16 gradients), DeepSpeed's ZeRO optimizer (fp32 partitions of whatever it trains) and
    accelerate's FSDP under mixed precision (it upcasts the trainable parameters to fp32)."""
    if setup.master_weights is not None:
        return setup.master_weights
    if setup.zero > 0:
        return True
    if setup.fsdp is not None and setup.framework == "transformers":
        return setup.precision != "fp32"
    return setup.method == "full" and setup.precision == "fp16"
