"""`sizer finetune`: per method, what one GPU holds, whether it fits, the largest micro-batch and
sequence length that do, the fewest GPUs, and the time and cost of the training tokens."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

from sizer.calc.overhead import CUBLAS_WORKSPACE_BYTES, CUDA_CONTEXT_BYTES
from sizer.catalog import GpuSpec
from sizer.errors import UsageError
from sizer.finetune.activations import CUDA, ActivationParts, activation_parts
from sizer.finetune.deepspeed import DeepSpeedEstimate, deepspeed_estimate
from sizer.finetune.frameworks import Framework, framework_for
from sizer.finetune.params import DTYPE_BYTES, TrainedParams, trained_params
from sizer.finetune.setup import FinetuneSetup
from sizer.finetune.sharding import ModelStates, layout_states, shard
from sizer.finetune.speed import StepTime, step_time
from sizer.finetune.states import (gradient_bytes, master_weight_bytes, master_weights_default,
                                    optimizer_state_bytes, optimizer_step_bytes, paged_state_bytes)
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
    optimizer_step: int = 0      # the optimizer step's own temporaries (sizer.finetune.states.optimizer_step_bytes)
    paged_optimizer_states: int = 0   # paged optimizers' states in CUDA managed memory: beside optimizer_states,
    #                                   not in total (the driver moves them to host memory when the GPU runs short)

    @property
    def total(self) -> int:
        """At the forward/backward peak the activations are alive; at the optimizer step (gradients and
        states alive, activations freed) its temporaries: whichever is larger."""
        return (self.weights + self.adapters + self.gradients + self.optimizer_states + self.overhead
                + max(self.activations, self.optimizer_step))

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
    suggestions: tuple[str, ...] = ()    # for a misfit: changes that make it fit (the flags to pass)
    launch: str = ""                     # the command (or script) that runs the plan; "" for a misfit
    deepspeed: DeepSpeedEstimate | None = None   # DeepSpeed's own model-states estimator for a ZeRO run

    @property
    def seconds_per_million_tokens(self) -> float | None:
        return None if not self.speed.tokens_per_s else 1e6 / self.speed.tokens_per_s

    def train_s(self, tokens: int) -> float | None:
        """Seconds to train on `tokens` tokens (one epoch of a dataset that size), all GPUs together."""
        return self.speed.epoch_s(tokens)

    def cost_usd(self, tokens: int) -> float | None:
        seconds = self.train_s(tokens)
        if seconds is None or self.price_per_hour_usd is None:
            return None
        return seconds / 3600 * self.price_per_hour_usd


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
    model_max_seq_len: int | None = None     # the model's maximum context (max_seq_len stops there)


@lru_cache(maxsize=1024)      # the same run's states for every GPU count and kind the planner tries
def model_states(spec: ModelSpec, setup: FinetuneSetup, fw: Framework, block_bytes: int = CUDA.block_bytes
                 ) -> tuple[ModelStates, TrainedParams]:
    """`block_bytes`: the device allocator's smallest block (a fused AdamW's step scalars live on the
    device, one block each)."""
    masters = master_weights_default(setup)
    if setup.zero > 0:      # DeepSpeed's engine casts every floating parameter to the 16-bit dtype
        fw = replace(fw, adapter_bytes=DTYPE_BYTES[setup.precision], kbit_upcast_fp32=False)
    p = trained_params(spec, setup, fw, masters and setup.zero == 0)
    state_bytes = 4 if masters else None               # None: each state in its parameter's dtype
    master = master_weight_bytes(p, masters and setup.zero > 0)
    scalar = 0 if setup.zero > 0 or not fw.fused_optimizer else max(4, block_bytes)   # ZeRO: flat partitions
    optimizer = optimizer_state_bytes(p, setup.optimizer, state_bytes, step_scalar_bytes=scalar) + master
    grads = gradient_bytes(p, steps_in_backward(setup, fw))
    if setup.method == "full":
        states = ModelStates(p.trainable_bytes, 0, grads, optimizer)
    else:
        states = ModelStates(p.frozen_bytes, p.trainable_bytes, grads, optimizer)
    return layout_states(states, spec, setup, fw, p, master), p


def steps_in_backward(setup: FinetuneSetup, fw: Framework) -> bool:
    """Whether each parameter is stepped (and its gradient freed) in the backward: asked for, or the
    framework's single-device full fine-tuning default (torchtune's optimizer_in_bwd, which refuses
    gradient accumulation)."""
    return setup.optimizer_in_backward or (fw.optimizer_in_backward and setup.method == "full"
                                           and setup.gradient_accumulation_steps == 1 and not setup.shard_stage)


def memory_per_gpu(spec: ModelSpec, setup: FinetuneSetup, fw: Framework, gpu: GpuSpec, gpus: int
                   ) -> tuple[FinetuneMemory, ActivationParts, TrainedParams]:
    states, p = model_states(spec, setup, fw)
    per_gpu, host = shard(states, setup, gpus)
    acts = activation_parts(spec, setup, fw, setup.micro_batch_size, setup.seq_len, per_gpu.gradients)
    # the allocator's slack grows with what comes and goes in the step: activations and gradients
    overhead = CUDA_CONTEXT_BYTES + CUBLAS_WORKSPACE_BYTES + int(acts.step_total * ALLOCATOR_SLACK_FRACTION)
    paged = paged_bytes(p, setup, per_gpu.optimizer_states, gpus)
    memory = FinetuneMemory(per_gpu.weights, per_gpu.adapters, per_gpu.gradients, per_gpu.optimizer_states - paged,
                            acts.peak, overhead, usable_memory_bytes(gpu), host + acts.host,
                            step_bytes(p, setup, fw, gpus), paged)
    return memory, acts, p


def paged_bytes(p: TrainedParams, setup: FinetuneSetup, optimizer_states_per_gpu: int, gpus: int) -> int:
    """The share of one GPU's optimizer states a paged optimizer keeps in CUDA managed memory (its
    large tensors' state buffers; none when the states are offloaded)."""
    if setup.optimizer != "paged-adamw-8bit" or setup.offload_optimizer:
        return 0
    return min(optimizer_states_per_gpu, _optimizer_share(paged_state_bytes(p), setup, gpus))


def step_bytes(p: TrainedParams, setup: FinetuneSetup, fw: Framework, gpus: int) -> int:
    """The optimizer step's temporaries on one GPU: the step runs on each rank's shard of the states
    when ZeRO/FSDP shards them, on the host when they are offloaded."""
    if setup.offload_optimizer:
        return 0
    state_bytes = 4 if master_weights_default(setup) else None
    whole = optimizer_step_bytes(p, setup.optimizer, fused=fw.fused_optimizer, device="cuda", state_bytes=state_bytes)
    return _optimizer_share(whole, setup, gpus)


def _optimizer_share(whole: int, setup: FinetuneSetup, gpus: int) -> int:
    """One GPU's part of something the optimizer holds per state: a shard when ZeRO/FSDP divides the
    states over several GPUs (every stage divides them), else all of it."""
    return -(-whole // gpus) if setup.shard_stage and gpus > 1 else whole


def _fits(spec, setup, fw, gpu, gpus) -> bool:
    return memory_per_gpu(spec, setup, fw, gpu, gpus)[0].free >= 0


def largest_true(ok, low: int, high: int) -> int | None:
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
    fw = framework_for(setup)
    gpu = selection.gpu
    fewest = min_gpus(spec, setup, fw, gpu, max_gpus)
    count = selection.count or fewest or 1
    memory, acts, p = memory_per_gpu(spec, setup, fw, gpu, count)
    verdict = FITS if memory.free >= 0 else DOES_NOT_FIT
    max_ctx = spec.max_context_length or (1 << 20)
    max_seq = largest_true(lambda n: _fits(spec, replace(setup, seq_len=n), fw, gpu, count), 1, max_ctx)
    max_batch = largest_true(lambda n: _fits(spec, replace(setup, micro_batch_size=n), fw, gpu, count), 1, MAX_MICRO_BATCH)
    speed = step_time(spec, setup, gpu, count)
    price = None if gpu.price_per_hour_usd is None else gpu.price_per_hour_usd * count
    reason = _reason(verdict, memory, fewest, count)
    hints = () if verdict == FITS else suggestions(spec, setup, fw, gpu, count, max_gpus)
    return FinetuneOption(setup.method, gpu.name, count, verdict, reason, memory, acts, p.trainable, max_seq,
                          max_batch, fewest, speed, price, setup, hints, _launch(spec, setup, count, verdict),
                          deepspeed_estimate(spec, setup, count, setup.gpus_per_node))


def _launch(spec: ModelSpec, setup: FinetuneSetup, gpus: int, verdict: str) -> str:
    """The launch line of a plan that fits; a combination the framework cannot run says why instead."""
    from sizer.finetune.launch import launch_command

    if verdict != FITS:
        return ""
    try:
        return launch_command(spec, setup, gpus)
    except UsageError as e:
        return f"# not launched: {e}"


def _changes(setup: FinetuneSetup) -> list[tuple[str, FinetuneSetup]]:
    """What users change to make a run fit, cheapest in quality and speed first, as the flags they pass."""
    out = []
    if not setup.gradient_checkpointing:
        out.append(("--gradient-checkpointing", replace(setup, gradient_checkpointing=True)))
    if setup.micro_batch_size > 1:
        steps = setup.gradient_accumulation_steps * setup.micro_batch_size
        out.append((f"-b 1 --gradient-accumulation-steps {steps}",
                    replace(setup, micro_batch_size=1, gradient_accumulation_steps=steps)))
    if setup.optimizer == "adamw":
        out.append(("--optimizer adamw-8bit", replace(setup, optimizer="adamw-8bit")))
    if setup.method in ("full", "lora", "dora"):
        out.append(("--method qlora", replace(setup, method="qlora")))
    if setup.method == "full":
        out.append(("--method lora", replace(setup, method="lora")))
    return out


def suggestions(spec, setup: FinetuneSetup, fw: Framework, gpu: GpuSpec, count: int, max_gpus: int) -> tuple[str, ...]:
    """Up to three single changes that make a misfit fit on the same GPUs, then sharding over more."""
    hints = [flag for flag, changed in _changes(setup) if _fits(spec, changed, fw, gpu, count)][:3]
    if not setup.shard_stage:
        sharded = replace(setup, zero=3) if setup.fsdp is None else setup
        fewest = min_gpus(spec, sharded, fw, gpu, max_gpus)
        if fewest is not None and fewest > 1:
            hints.append(f"--zero 3 on {fewest}x{gpu.name}")
    return tuple(hints)


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
    if selection.gpus_per_node:
        setups = [s if s.gpus_per_node else replace(s, gpus_per_node=selection.gpus_per_node) for s in setups]
    options = tuple(plan_method(spec, s, selection, max_gpus) for s in setups)
    return FinetuneResult(spec.name, spec.family, spec.params, selection.text, setups[0].framework, options,
                          dataset_tokens, spec.notes, spec.max_context_length)


def _cost_rank(option: FinetuneOption) -> tuple:
    """Cheapest training tokens first; unpriced configurations last; then the cheaper hour."""
    cost = option.cost_usd(1_000_000)
    price = option.price_per_hour_usd
    return (cost if cost is not None else float("inf"), price if price is not None else float("inf"), option.gpu_count)


def recommend_finetune(model, setups: list[FinetuneSetup], dataset_tokens: int | None = None,
                       max_gpus: int = 8) -> FinetuneResult:
    """Every rentable catalog GPU, at the fewest GPUs (up to max_gpus) that hold each setup, ranked by
    the cost of a million training tokens. Configurations that fit on none are left out."""
    from sizer.inputs.resolve import get_model
    from sizer.plan.recommend import rentable_gpus

    spec = get_model(model) if isinstance(model, str) else model
    options = []
    for gpu in rentable_gpus():
        for setup in setups:
            fewest = min_gpus(spec, setup, framework_for(setup), gpu, max_gpus)
            if fewest is not None:
                options.append(plan_method(spec, setup, GpuSelection(gpu, fewest, f"{fewest}x{gpu.name}"), max_gpus))
    options.sort(key=_cost_rank)
    return FinetuneResult(spec.name, spec.family, spec.params, "catalog", setups[0].framework, tuple(options),
                          dataset_tokens, spec.notes, spec.max_context_length)
