"""`sizer finetune`: per method, what one GPU holds, whether it fits, the largest micro-batch and
sequence length that do, the fewest GPUs, and the time and cost of the training tokens."""

from __future__ import annotations

from dataclasses import dataclass, replace

from sizer.calc.overhead import CUBLAS_WORKSPACE_BYTES, CUDA_CONTEXT_BYTES
from sizer.catalog import GpuSpec
from sizer.errors import UsageError
from sizer.finetune.activations import CUDA, ActivationParts, activation_parts
from sizer.finetune.frameworks import Framework, get_framework
from sizer.finetune.params import TrainedParams, trained_params
from sizer.finetune.setup import FinetuneSetup
from sizer.finetune.sharding import ModelStates, shard
from sizer.finetune.speed import StepTime, step_time
from sizer.finetune.states import gradient_bytes, master_weight_bytes, optimizer_state_bytes, optimizer_step_bytes
from sizer.gpuspec import GpuSelection, parse_gpus, usable_memory_bytes
from sizer.spec import ModelSpec

FITS, DOES_NOT_FIT = "fits", "does-not-fit"
ALLOCATOR_SLACK_FRACTION = 0.05      # the caching allocator's reserve above live tensors, of the activations
GPU_COUNTS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
MAX_MICRO_BATCH = 1 << 12
DEFAULT_MAX_GPUS = 64


@dataclass(frozen=True)
class FinetuneMemory:
    """Bytes on one GPU (the fullest; every data-parallel rank holds the same)."""

    weights: int
    adapters: int
    gradients: int
    optimizer_states: int
    activations: int
    overhead: int
    capacity: int
    host: int = 0                # bytes moved to host memory (offloaded states, offloaded checkpoints)

    @property
    def total(self) -> int:
        return self.weights + self.adapters + self.gradients + self.optimizer_states + self.activations + self.overhead

    @property
    def free(self) -> int:
        return self.capacity - self.total


@dataclass(frozen=True)
class FinetuneOption:
    method: str
    gpu: str
    gpu_count: int
    verdict: str
    reason: str
    per_gpu: FinetuneMemory
    activation_parts: ActivationParts
    trainable_params: int
    max_seq_len: int | None
    max_micro_batch_size: int | None
    min_gpus: int | None
    speed: StepTime
    price_per_hour_usd: float | None     # all GPUs
    setup: FinetuneSetup

    @property
    def seconds_per_million_tokens(self) -> float | None:
        return None if not self.speed.tokens_per_s else 1e6 / self.speed.tokens_per_s

    def cost_usd(self, tokens: int) -> float | None:
        if not self.speed.tokens_per_s or self.price_per_hour_usd is None:
            return None
        return tokens / self.speed.tokens_per_s / 3600 * self.price_per_hour_usd


@dataclass(frozen=True)
class FinetuneResult:
    model: str
    family: str
    params: int
    gpus: str
    framework: str
    options: tuple[FinetuneOption, ...]
    dataset_tokens: int | None
    notes: tuple[str, ...] = ()


def master_weights_default(setup: FinetuneSetup) -> bool:
    """fp32 masters when asked; else where the run needs them: fp16 training (Trainer refuses to
    unscale fp16 gradients) and DeepSpeed's bf16/fp16 optimizers under ZeRO."""
    if setup.master_weights is not None:
        return setup.master_weights
    return setup.method == "full" and (setup.precision == "fp16" or setup.zero > 0)


def model_states(spec: ModelSpec, setup: FinetuneSetup, fw: Framework, block_bytes: int = CUDA.block_bytes
                 ) -> tuple[ModelStates, TrainedParams]:
    """`block_bytes`: the device allocator's smallest block (the optimizer's step scalars)."""
    masters = master_weights_default(setup)
    p = trained_params(spec, setup, fw, masters and setup.zero == 0)
    state_bytes = 4 if masters else p.param_bytes
    optimizer = optimizer_state_bytes(p, setup.optimizer, state_bytes) + master_weight_bytes(p, masters and setup.zero > 0)
    if fw.fused_optimizer and setup.zero == 0:
        optimizer += optimizer_step_bytes(p, setup.optimizer, block_bytes)
    gathered = p.largest_layer_params * 2 if setup.shard_stage >= 3 else 0
    if setup.method == "full":
        return ModelStates(p.trainable_bytes, 0, gradient_bytes(p), optimizer, gathered), p
    return ModelStates(p.frozen_bytes, p.trainable_bytes, gradient_bytes(p), optimizer, gathered), p


def memory_per_gpu(spec: ModelSpec, setup: FinetuneSetup, fw: Framework, gpu: GpuSpec, gpus: int
                   ) -> tuple[FinetuneMemory, ActivationParts, TrainedParams]:
    states, p = model_states(spec, setup, fw)
    per_gpu, host = shard(states, setup, gpus)
    acts = activation_parts(spec, setup, fw, setup.micro_batch_size, setup.seq_len, per_gpu.gradients)
    overhead = CUDA_CONTEXT_BYTES + CUBLAS_WORKSPACE_BYTES + int(acts.peak * ALLOCATOR_SLACK_FRACTION)
    memory = FinetuneMemory(per_gpu.weights, per_gpu.adapters, per_gpu.gradients, per_gpu.optimizer_states, acts.peak,
                            overhead, usable_memory_bytes(gpu), host + acts.host)
    return memory, acts, p


def _fits(spec, setup, fw, gpu, gpus) -> bool:
    return memory_per_gpu(spec, setup, fw, gpu, gpus)[0].free >= 0


def _largest(ok, low: int, high: int) -> int | None:
    """The largest n in [low, high] with ok(n), for ok true up to some n and false beyond."""
    if not ok(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if ok(mid) else (low, mid - 1)
    return low


def min_gpus(spec, setup, fw, gpu, max_gpus: int) -> int | None:
    """The fewest GPUs whose per-GPU share fits; without sharding more GPUs hold the same, so 1 or None."""
    counts = [n for n in GPU_COUNTS if n <= max_gpus] if setup.shard_stage else [1]
    return next((n for n in counts if _fits(spec, setup, fw, gpu, n)), None)


def plan_method(spec: ModelSpec, setup: FinetuneSetup, selection: GpuSelection, max_gpus: int) -> FinetuneOption:
    fw = get_framework(setup.framework)
    gpu = selection.gpu
    fewest = min_gpus(spec, setup, fw, gpu, max_gpus)
    count = selection.count or fewest or 1
    memory, acts, p = memory_per_gpu(spec, setup, fw, gpu, count)
    verdict = FITS if memory.free >= 0 else DOES_NOT_FIT
    max_ctx = spec.max_context_length or (1 << 20)
    max_seq = _largest(lambda n: _fits(spec, replace(setup, seq_len=n), fw, gpu, count), 1, max_ctx)
    max_batch = _largest(lambda n: _fits(spec, replace(setup, micro_batch_size=n), fw, gpu, count), 1, MAX_MICRO_BATCH)
    speed = step_time(spec, setup, gpu.dense_tflops.get(setup.precision) if gpu.dense_tflops else None, count)
    price = None if gpu.price_per_hour_usd is None else gpu.price_per_hour_usd * count
    reason = _reason(verdict, memory, fewest, count)
    return FinetuneOption(setup.method, gpu.name, count, verdict, reason, memory, acts, p.trainable, max_seq,
                          max_batch, fewest, speed, price, setup)


def _reason(verdict: str, memory: FinetuneMemory, fewest: int | None, count: int) -> str:
    from sizer.units import fmt_gib

    if verdict == FITS:
        return f"{fmt_gib(memory.free, 1, unit=True)} free per GPU"
    over = f"needs {fmt_gib(memory.total, 1, unit=True)} of {fmt_gib(memory.capacity, 1, unit=True)} per GPU"
    if fewest and fewest > count:
        return f"{over}; fits on {fewest} GPUs"
    return over


def finetune(model, gpus: str | GpuSelection, setups: list[FinetuneSetup], dataset_tokens: int | None = None,
             max_gpus: int = DEFAULT_MAX_GPUS) -> FinetuneResult:
    """Plan each setup (one per method) of fine-tuning `model` on `gpus`."""
    from sizer.inputs.resolve import get_model

    spec = get_model(model) if isinstance(model, str) else model
    selection = parse_gpus(gpus) if isinstance(gpus, str) else gpus
    if selection.devices:
        raise UsageError("fine-tuning plans identical GPUs (data parallel): name one kind, e.g. 2xRTX-4090")
    if dataset_tokens is not None and dataset_tokens < 1:
        raise UsageError(f"--dataset-tokens must be positive, got {dataset_tokens}")
    options = tuple(plan_method(spec, s, selection, max_gpus) for s in setups)
    return FinetuneResult(spec.name, spec.family, spec.params, selection.text, setups[0].framework, options,
                          dataset_tokens, spec.notes)
