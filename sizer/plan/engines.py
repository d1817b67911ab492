"""Engine profiles: how transformers, vLLM and llama.cpp budget each GPU's memory.

Facts from docs/reference/engines.md (gathered from the engines' source and logs). Every
constant is named, sourced, and calibratable by `sizer measure` / `sizer calibrate`.

Verdicts: `fits` (the fullest GPU keeps at least FIT_HEADROOM_FRACTION free), `marginal` (it fits,
but barely; for vLLM: it starts, but serves fewer concurrent sequences than asked),
`fits-with-offload` (it runs with part of the layers in system RAM: llama.cpp -ngl, transformers
device_map="auto" with CPU offload) and `does-not-fit` (out of memory, or vLLM refuses to start).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from math import ceil

from sizer.calc.activations import (FP32_BYTES, dense_mlp_bytes, peak_of, step_peak, transformers_attention,
                                    vllm_fused_moe_bytes, vllm_moe_workspace_bytes)
from sizer.calc.overhead import CUDA_CONTEXT_BYTES
from sizer.calc.kv import INDEXER_VLLM_FP8
from sizer.calc.transformers_releases import (MODELLED, NEWEST, Release, modelled_text, parse_release, release_text,
                                              spec_for_release)
from sizer.calc.calibration import Calibration, VllmCalibration, default_calibration
from sizer.plan.load_buffers import LoraSlots, lora_slot_bytes, rope_cache_bytes, vllm_rope_cache_bytes
from sizer.plan.multimodal import vllm_encoder_weight_bytes, vllm_profile_peak_bytes
from sizer.plan.llamacpp import (ALL_LAYERS, DEFAULT_N_UBATCH, FIT_MARGIN_BYTES, LlamaCppPlan, LlamaCppSettings, model_from_spec,
                                 plan_llamacpp, settings_from_flags)
from sizer.plan.placement import Placement
from sizer.plan.stages import Stage
from sizer.plan.sglang import (NCCL_BYTES as SGLANG_NCCL_BYTES, NEWEST as SGLANG_NEWEST, SglangRelease, graph_bytes,
                               prefill_activation_bytes, sglang_pool, sglang_release)
from sizer.plan.vllm_releases import (NEWEST as VLLM_NEWEST, VllmLogValues, VllmRelease, extensible_margin,
                                     load_buffers_note, release_for, vllm_log_lines)
from sizer.spec import STATE_KINDS, ModelSpec, Workload
from sizer.units import MiB, fmt_gib

FITS, MARGINAL, DOES_NOT_FIT = "fits", "marginal", "does-not-fit"
# part of the model stays in system RAM (llama.cpp -ngl below all layers, transformers device_map with CPU/disk)
FITS_WITH_OFFLOAD = "fits-with-offload"
VERDICT_ORDER = {FITS: 0, MARGINAL: 1, FITS_WITH_OFFLOAD: 2, DOES_NOT_FIT: 3}
VERDICTS = tuple(VERDICT_ORDER)
# System RAM sizer leaves to the OS and other processes when it checks a plan's host part against --ram
# (sizer's assumption, docs/calculation.md "Partial offload": a desktop session with a browser holds 2-4 GiB)
HOST_RESERVE_BYTES = 4 * 1024 * MiB
# A GPU filled beyond 95 % of its usable memory is "marginal": fragmentation, a longer prompt or a
# second process can push it over.
FIT_HEADROOM_FRACTION = 0.05


@dataclass(frozen=True)
class GpuUsage:
    """Bytes on one GPU (every GPU of a pipeline stage holds the same)."""

    stage: int
    weights: int
    kv_cache: int
    activations: int
    overhead: int
    capacity: int               # usable device memory (what CUDA lets the process allocate)
    state: int = 0              # recurrent state (per sequence, constant in the context); kv_cache grows with tokens

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.state + self.activations + self.overhead

    @property
    def free(self) -> int:
        return self.capacity - self.total


@dataclass(frozen=True)
class Evaluation:
    verdict: str
    reason: str
    per_gpu: tuple[GpuUsage, ...]          # one entry per pipeline stage
    kv_cache_tokens: int | None = None     # vLLM: tokens its KV pool holds
    max_concurrency: int | None = None     # vLLM: sequences of the context length the pool holds
    engine_log: tuple[str, ...] = ()       # what the engine will print at startup, with sizer's numbers
    engine_values: dict = field(default_factory=dict)   # the same numbers, by name (bytes, tokens)

    @property
    def fullest(self) -> GpuUsage:
        return max(self.per_gpu, key=lambda g: g.total / g.capacity)


def _gib(n: int) -> str:
    return fmt_gib(n, 1, unit=True)


def _layer_peak(stage: Stage, batch: int, q_len: int, kv_len: int, attention: str, logits: int, cb: int) -> int:
    """transformers: what lives through the forward plus the largest working set of one of this
    stage's layers (and the logits on the last stage); eager where the family has no SDPA path."""
    eager = transformers_attention(stage.rank_spec, attention) == "eager"
    parts = step_peak(stage.rank_spec, batch, q_len, kv_len, eager, logits, cb,
                      int8_mlp=stage.int8_mlp)
    return peak_of(parts, stage.last)


def capacity_verdict(total: int, capacity: int) -> str:
    """The verdict for the fullest GPU of engines whose usage does not depend on the GPU's size."""
    if total > capacity:
        return DOES_NOT_FIT
    return MARGINAL if capacity - total < FIT_HEADROOM_FRACTION * capacity else FITS


def _verdict_by_capacity(per_gpu: tuple[GpuUsage, ...], what: str) -> tuple[str, str]:
    worst = max(per_gpu, key=lambda g: g.total / g.capacity)
    where = f"GPU stage {worst.stage}" if len(per_gpu) > 1 else "the GPU"
    used = f"{_gib(worst.total)} of {_gib(worst.capacity)} usable on {where}"
    verdict = capacity_verdict(worst.total, worst.capacity)
    if verdict == DOES_NOT_FIT:
        big = max(("weights", worst.weights), ("KV cache", worst.kv_cache), ("activations", worst.activations),
                  ("recurrent state", worst.state), key=lambda kv: kv[1])
        return verdict, f"needs {used} ({big[0]} {_gib(big[1])}) for {what}"
    if verdict == MARGINAL:
        return verdict, f"uses {used}: less than {FIT_HEADROOM_FRACTION:.0%} left for {what}"
    return verdict, f"uses {used} for {what}"


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers: generate() with device_map="auto" (layers split over GPUs, run in turn)


@dataclass(frozen=True)
class TransformersEngine:
    name: str = "transformers"
    usage_depends_on_capacity = False
    prefers_tensor_parallel: bool = False
    embedding_on_host: bool = False
    tied_copy_on_last: bool = False
    attention: str = "sdpa"
    logits: str = "last"
    calibration: Calibration | None = None
    offload: bool = False                     # device_map="auto" may put layers on the CPU / disk (fit's plans)
    host_ram_bytes: int | None = None         # --ram: the CPU budget accelerate gets (90 % of it)

    def evaluate(self, stages: list[Stage], placement: Placement, capacity: int, workload: Workload,
                 precision) -> Evaluation:
        context_length, batch_size = workload.context_length, workload.batch_size
        compute_bytes = precision.compute_bytes
        logit_positions = context_length if self.logits == "all" else 1
        cal = self.calibration or default_calibration()
        per_gpu = []
        for s in stages:
            kv = s.kv_bytes(context_length, batch_size)
            # transformers' LinearAttentionLayer: conv_states (kernel columns) and fp32 recurrent_states per sequence
            state = batch_size * s.state_layers * s.transformers_state_layer_bytes
            act = cal.activation_bytes(max(
                _layer_peak(s, batch_size, context_length, context_length, self.attention, logit_positions,
                            compute_bytes),
                _layer_peak(s, batch_size, 1, context_length, self.attention, 1, compute_bytes)))
            overhead = sum(cal.overhead_parts(act, kv + state).values())
            per_gpu.append(GpuUsage(s.index, s.weights_bytes, kv, act, overhead, capacity, state))
        per_gpu = tuple(per_gpu)
        verdict, reason = _verdict_by_capacity(per_gpu, f"{batch_size} x {context_length:,} tokens")
        if verdict == DOES_NOT_FIT and self.offload and placement.tensor_parallel == 1:
            return self._offloaded(stages, per_gpu, capacity, precision, placement.gpu_count, reason)
        return Evaluation(verdict, reason, per_gpu)

    def _offloaded(self, stages: list[Stage], on_gpus: tuple[GpuUsage, ...], capacity: int, precision,
                   n_gpus: int, why: str) -> Evaluation:
        """device_map="auto" with the max_memory sizer chooses (sizer.plan.device_map): accelerate's placement
        over the GPUs, the CPU and disk. Offloaded layers run on GPU 0 with
        their weights copied in for each forward (accelerate's AlignDevicesHook), so their KV cache and
        the largest offloaded layer's weights sit on GPU 0 as well."""
        from sizer.plan.device_map import (CPU, DISK, balanced_max_memory, bytes_by_device, infer_device_map,
                                           layers_by_device, module_tree)

        spec = stages[0].rank_spec
        tree = module_tree(spec, precision)
        kv_total = sum(g.kv_cache for g in on_gpus)
        # max_memory sizer passes: what each GPU can give the weights once the CUDA context, the overhead,
        # the activations and the KV cache (all of it on GPU 0, where offloaded layers run) are set aside;
        # the CPU: the RAM less the OS reserve (unknown RAM: no limit, nothing on disk)
        budget: dict = {}
        for d in range(n_gpus):
            ref = on_gpus[min(d, len(on_gpus) - 1)]
            kv = kv_total if d == 0 else kv_total // n_gpus
            budget[d] = max(0, (capacity - ref.overhead - ref.activations - kv) // MiB * MiB)
        budget[CPU] = (self.host_ram_bytes - HOST_RESERVE_BYTES) // MiB * MiB if self.host_ram_bytes else tree.size
        budget = balanced_max_memory(tree, budget, user_set=True)
        placed = infer_device_map(tree, budget)
        layers, sizes = layers_by_device(placed, tree), bytes_by_device(placed, tree)
        n_layers = spec.n_layers
        off = [i for d in (CPU, DISK) for i in layers.get(d, [])]
        largest_off = max((m.size for m in _tree_layers(tree) if int(m.name.rsplit(".", 1)[1]) in off), default=0)
        kv_per_layer = [g.kv_cache // max(1, len(s.layers)) for g, s in zip(on_gpus, stages)]
        per_gpu = []
        for d in range(n_gpus):
            mine = layers.get(d, [])
            kv = kv_per_layer[0] * (len(mine) + (len(off) if d == 0 else 0))
            ref = on_gpus[min(d, len(on_gpus) - 1)]
            per_gpu.append(GpuUsage(d, sizes.get(d, 0) + (largest_off if d == 0 else 0), kv, ref.activations,
                                    ref.overhead, capacity))
        per_gpu = tuple(per_gpu)
        on_gpu_layers = sum(len(layers.get(d, [])) for d in range(n_gpus))
        host_bytes, disk_bytes = sizes.get(CPU, 0), sizes.get(DISK, 0)
        verdict, reason = _verdict_by_capacity(per_gpu, f"{len(off)} offloaded layers' KV cache and a copied-in layer")
        if verdict != DOES_NOT_FIT:
            verdict = FITS_WITH_OFFLOAD
            disk = f", {_gib(disk_bytes)} on disk" if disk_bytes else ""
            reason = (f"device_map=\"auto\": {on_gpu_layers}/{n_layers} decoder layers on the GPU"
                      + ("s" if n_gpus > 1 else "") + f", {_gib(host_bytes)} in system RAM{disk}; {reason}")
            verdict, reason = _host_ram_verdict(verdict, reason, host_bytes, self.host_ram_bytes)
        else:
            reason = f"{why}; with device_map=\"auto\" offload: {reason}"
        values = {"n_gpu_layers": on_gpu_layers, "layer_slots": n_layers,
                  "host": {"weights": host_bytes, "kv_cache": 0, "compute": 0, "output": 0, "total": host_bytes,
                           "free": None if self.host_ram_bytes is None else self.host_ram_bytes - host_bytes},
                  "disk_bytes": disk_bytes, "offloaded_bytes": host_bytes + disk_bytes,
                  "max_memory": {str(k): int(v) for k, v in budget.items() if self.host_ram_bytes or k != CPU},
                  "layers_by_device": {str(k): [v[0], v[-1]] for k, v in layers.items() if v}}
        return Evaluation(verdict, reason, per_gpu, engine_values=values)


def _tree_layers(tree):
    stack, out = [tree], []
    while stack:
        m = stack.pop()
        if m.no_split:
            out.append(m)
        stack.extend(m.children)
    return out


# ---------------------------------------------------------------------------------------------
# vLLM (V1 engine)

VLLM_BLOCK_SIZE = 16
# Non-torch memory (NCCL, cuBLAS, attention workspaces) seen by the profiler: about 0.1-0.15 GiB at
# TP=1 and about 0.5 GiB at TP=2 in published H100 runs (engines.md); the difference is NCCL's, which
# the releases that take their baseline before NCCL starts charge to the budget (vllm_releases).
VLLM_NON_TORCH_BYTES_TP1 = 150 * MiB
VLLM_NON_TORCH_BYTES_TP = VLLM_NON_TORCH_BYTES_TP1 + SGLANG_NCCL_BYTES    # 0.5 GiB: NCCL's buffers added
# Before Hopper the non-torch memory a worker adds is smaller than the 0.14 GiB of H100 runs. It is what
# the CUDA driver and the libraries allocate outside torch's allocator while loading and profiling
# (kernel modules loaded on first use, library handles and workspaces), which no vLLM source sizes: the
# figures are the published logs', per architecture where several logs of it agree
# (docs/reference/vllm-versions-v0.md, "Non-torch memory by architecture"): Turing (T4) 0.05 GiB in
# three of four V0 logs (0.03 in the fourth); Ampere (A100, two logs) 0.09 and Ada (RTX 4090, one) 0.08.
VLLM_NON_TORCH_BYTES_TP1_TURING = 51 * MiB          # 0.05 GiB: compute capability below 8.0
VLLM_NON_TORCH_BYTES_TP1_AMPERE = 88 * MiB          # 0.086 GiB: 8.0 up to Hopper
# CUDA-graph memory ("Graph capturing finished ... took 0.5 GiB" is typical of dense 8B-70B models):
# subtracted before sizing the KV cache from 0.20.2, captured in the headroom before. Placeholder
# until calibrated.
VLLM_CUDA_GRAPH_BYTES = 512 * MiB
# The profiling run's dummy sampler where it is added to the forward (V0 up to 0.6.3, whose figure is
# the memory the allocator keeps reserved; 0.34, whose second sampler pass is not modelled): fp32
# logits, probabilities, log-probabilities and the top-k/top-p sort (values and int64 indices), about
# 32 bytes per logit. With the forward pass this
# reproduces the published observation that the activation peak is nearly constant per family.
VLLM_SAMPLER_BYTES_PER_LOGIT = 32
# The dummy sampler after the forward (V0 from 0.6.4, V1 up to 0.33; docs/reference/vllm-versions-v0.md,
# "The profile sampler's peak", and -v1.md section 2): its peak is the sort of _apply_top_k_top_p
# (model_executor/layers/sampler.py@v0.7.1, v1/sample/ops/topk_topp_sampler.py@0.10.2), while the runner holds
# the model-dtype logits and Sampler.forward their float32 copy. torch's stable sort of a
# [rows, vocab] float32 tensor (aten/src/ATen/native/cuda/SortStable.cu) allocates its outputs (float32
# values, int64 indices) and, by the number of rows:
TORCH_SORT_FULL_SORT_MAX_ROWS = 127         # 2-127 rows: segmented_sort_pairs_by_full_sort
TORCH_SORT_LARGE_SEGMENT = 1_000_000        # a row this long (or a single row) sorts alone
INT64_BYTES = 8
# >= 128 rows (segmented_sort_pairs): int64 reverse indices, and cub's DeviceSegmentedRadixSort::SortPairs
# (keys and values not overwritable) alternate buffers for the float32 keys and int64 values
TORCH_SORT_SEGMENTED_TEMP_BYTES_PER_LOGIT = INT64_BYTES + FP32_BYTES + INT64_BYTES
# 2-127 rows: two int2 (index, segment) arrays, the float32 keys radix_sort_pairs allocates (keys_out
# nullptr), and cub DeviceRadixSort::SortPairs' alternate float32 keys and int2 values
TORCH_SORT_FULL_SORT_TEMP_BYTES_PER_LOGIT = 2 * INT64_BYTES + FP32_BYTES + FP32_BYTES + INT64_BYTES
# bitsandbytes 4-bit Linears in vLLM (0.6.4-0.10.2, model_executor/layers/quantization/bitsandbytes.py,
# _apply_4bit_weight / _apply_bnb_4bit): the input is copied to bfloat16, a bfloat16 output of all the
# shards is allocated, and each shard's matmul_4bit over more than one row goes through MatMul4Bit
# (bitsandbytes/autograd/_functions.py@0.45.3: `F.dequantize_4bit(B, quant_state)` then `linear`): the
# shard's weight dequantized to 16 bits, with double quantization its absmax as float32 (one per block
# of 64), and the shard's product.
BNB_LINEAR_BYTES = 2                    # vLLM computes bitsandbytes Linears in bfloat16
BNB_ABSMAX_BLOCK = 64
# vLLM's fused add+RMSNorm keeps the hidden state and the residual: two hidden-sized tensors.
VLLM_RESIDUAL_COPIES = 2
# Families whose vLLM model builds embed_tokens and lm_head with no is_first_rank / is_last_rank guard,
# so every pipeline stage holds both (models/qwen3_moe.py, qwen2_moe.py, mixtral.py, olmoe.py, gpt_oss.py,
# minicpm.py @ 0.8.5, 0.10.1.1, 0.18.1; gemma2.py's embedding, its lm_head tied; docs/reference/vllm-versions-v1.md)
VLLM_VOCAB_ON_EVERY_STAGE = frozenset({"qwen2_moe", "qwen3_moe", "mixtral", "olmoe", "gpt_oss", "minicpm", "gemma2"})


def vllm_bnb4_linear_bytes(tokens: int, in_features: int, shards: tuple[int, ...], double_quant: bool) -> int:
    """Peak bytes of one vLLM bitsandbytes 4-bit Linear over `tokens` rows whose fused weight has
    output `shards` (gate and up; q, k and v): the bfloat16 input and output, and the largest shard's
    dequantized weight, float32 absmax and product (BNB_LINEAR_BYTES)."""
    def shard_bytes(out: int) -> int:
        absmax = -(-out * in_features // BNB_ABSMAX_BLOCK) * FP32_BYTES if double_quant else 0
        return out * in_features * BNB_LINEAR_BYTES + absmax + tokens * out * BNB_LINEAR_BYTES
    return tokens * (in_features + sum(shards)) * BNB_LINEAR_BYTES + max(shard_bytes(o) for o in shards)


def vllm_bnb4_mlp_bytes(spec: ModelSpec, tokens: int, cb: int, double_quant: bool) -> int:
    """The dense MLP's moment with bitsandbytes 4-bit Linears: the gate/up product over the layer's
    input, or the down product beside the gate/up output and its activation."""
    if spec.is_moe or not spec.d_ff:
        return 0
    up = (spec.d_ff, spec.d_ff) if spec.gated_mlp else (spec.d_ff,)
    gate_up = tokens * spec.hidden_size * cb + vllm_bnb4_linear_bytes(tokens, spec.hidden_size, up, double_quant)
    down = (tokens * (sum(up) + spec.d_ff) * cb
            + vllm_bnb4_linear_bytes(tokens, spec.d_ff, (spec.hidden_size,), double_quant))
    return max(gate_up, down)


def bnb4_double_quant(precision) -> bool | None:
    """For bitsandbytes 4-bit weights (a sizer.quant format, or a checkpoint labelled as one) whether
    they are double-quantized; None for any other format."""
    fmt = getattr(precision, "like", None) or precision
    if not getattr(fmt, "is_bitsandbytes", False) or not hasattr(fmt, "double_quant"):
        return None
    return fmt.double_quant


FP8_W8A8_CAPABILITY = (8, 9)    # below it vLLM's fp8 MoE runs Marlin, weights only (fp8.py use_marlin)


def fp8_activation_group(precision, capability: tuple[int, int] | None = None) -> int | None:
    """How vLLM's fp8 w8a8 fused MoE quantizes its activations for these weights: per token group
    of the weights' block width (block-quantized checkpoints: per_token_group_quant_fp8 with
    block_k), 0 for one dynamic per-tensor scale; None where the activations stay 16-bit (not fp8
    weights, or a GPU below compute capability 8.9, where the fp8 MoE runs Marlin)."""
    fmt = getattr(precision, "like", None) or precision
    if not str(getattr(fmt, "name", "")).startswith("fp8"):
        return None
    if capability is not None and capability < FP8_W8A8_CAPABILITY:
        return None
    return getattr(fmt, "block", 0) or 0


def vllm_non_torch_tp1_bytes(capability: tuple[int, int] | None) -> int:
    """Non-torch memory one worker adds by its profiling run, by the GPU's compute capability (Hopper's
    where it is not known)."""
    if capability is None or capability >= (9, 0):
        return VLLM_NON_TORCH_BYTES_TP1
    return VLLM_NON_TORCH_BYTES_TP1_TURING if capability < (8, 0) else VLLM_NON_TORCH_BYTES_TP1_AMPERE


def torch_sort_temp_bytes(rows: int, vocab: int) -> int:
    """What torch's CUDA sort of a [rows, vocab] float32 tensor allocates besides its outputs."""
    if rows == 1 or vocab >= TORCH_SORT_LARGE_SEGMENT:       # segmented_sort_large_segments: a row at a time
        return vocab * (INT64_BYTES + FP32_BYTES + INT64_BYTES)
    per_logit = (TORCH_SORT_FULL_SORT_TEMP_BYTES_PER_LOGIT if rows <= TORCH_SORT_FULL_SORT_MAX_ROWS
                 else TORCH_SORT_SEGMENTED_TEMP_BYTES_PER_LOGIT)
    return rows * vocab * per_logit


def sampler_sort_peak_bytes(rows: int, vocab: int, logits_bytes: int) -> int:
    """Peak bytes of vLLM's dummy sampler over `rows` requests at its sort: the runner's model-dtype logits
    (`logits_bytes` each), their float32 copy, the sort's float32 values and int64 indices, and the
    sort's own buffers (torch_sort_temp_bytes)."""
    held = rows * vocab * (logits_bytes + FP32_BYTES)
    return held + rows * vocab * (FP32_BYTES + INT64_BYTES) + torch_sort_temp_bytes(rows, vocab)


@dataclass(frozen=True)
class VllmBudget:
    """One GPU's budget as vLLM computes it: what is charged before the KV cache, and what is left."""

    budget: int              # total x gpu_memory_utilization
    charged: int             # weights, activation peak, non-torch and (where charged) CUDA graphs
    available: int           # for the KV cache (and state)
    outside: int             # CUDA graphs captured after the KV cache, in the headroom (older releases)


@dataclass(frozen=True)
class VllmEngine:
    name: str = "vllm"
    usage_depends_on_capacity = True
    prefers_tensor_parallel: bool = True
    embedding_on_host: bool = False
    tied_copy_on_last: bool = True
    indexer_cache: str = INDEXER_VLLM_FP8     # sparse-attention indexer keys: fp8 + fp32 scale per 128 (sizer.calc.kv)
    gpu_memory_utilization: float | None = None   # None: the release's default
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    release: VllmRelease = VLLM_NEWEST
    enforce_eager: bool = False
    gpu_name: str = ""                        # the GPU's catalog name (0.9+ gives an A100 the small-GPU defaults)
    gpu_capability: tuple[int, int] | None = None   # compute capability (non-torch memory before Hopper)
    calibration: VllmCalibration | None = None  # fitted from startup logs (sizer calibrate); None: the constants
    lora: LoraSlots | None = None             # --enable-lora (--max-lora-rank, --max-loras); None: off
    vocab_on_every_stage: frozenset = VLLM_VOCAB_ON_EVERY_STAGE

    @property
    def utilization(self) -> float:
        return self.gpu_memory_utilization or self.release.gpu_memory_utilization

    def load_buffers_bytes(self, stage: Stage, compute_bytes: int, tensor_parallel: int = 1) -> int:
        """What vLLM allocates while loading besides the weights, inside the profiler that measures
        them (sizer.plan.load_buffers): the RoPE cos/sin table in the model dtype (M-RoPE: 4x the positions), and with LoRA on
        the releases that create the LoRA manager there, its slot buffers."""
        rope = vllm_rope_cache_bytes(stage.rank_spec, compute_bytes)
        if self.lora is None or not self.release.lora_in_weights:
            return rope
        return rope + lora_slot_bytes(stage.rank_spec, len(stage.layers), stage.first, stage.last, self.lora,
                                      compute_bytes, tensor_parallel)

    def scheduler_limits(self, capacity: int, max_model_len: int = 8192) -> tuple[int, int]:
        tokens, seqs = self.release.scheduler_defaults(capacity, self.gpu_name, max_model_len)
        return self.max_num_batched_tokens or tokens, self.max_num_seqs or seqs

    def profile_peak(self, stage: Stage, capacity: int, compute_bytes: int, max_model_len: int = 8192,
                     bnb4_nested: bool | None = None, tensor_parallel: int = 1,
                     fp8_group: int | None = None) -> int:
        """Torch peak of the profiling run: one forward over max_num_batched_tokens (this GPU's
        shard of each layer) and, on the last stage, the dummy sampler (vllm_releases: its rows), after
        the forward where the release measures the allocated peak (V0 from 0.6.4, V1 up to 0.33), else
        added to it; a vision-language model's encoder is profiled first (sizer.plan.multimodal).
        bnb4_nested: the weights are bitsandbytes 4-bit (double-quantized or not; None: not
        bitsandbytes 4-bit), whose Linears dequantize in the forward. An MoE layer's moment is vLLM's
        fused MoE (vllm_fused_moe_bytes, the release's cache layout; fp8_group: fp8_activation_group),
        not transformers' experts."""
        tokens, seqs = self.scheduler_limits(capacity, max_model_len)
        spec = stage.rank_spec
        parts = step_peak(spec, 1, tokens, tokens, False, 1, compute_bytes, VLLM_RESIDUAL_COPIES,
                          torch_sdpa=False)
        if spec.is_moe:
            parts["mlp"] = max(dense_mlp_bytes(spec, tokens, compute_bytes),
                               vllm_fused_moe_bytes(spec, tokens, compute_bytes, self.release.moe_layout,
                                                    self.release.moe_chunk_tokens, fp8_group,
                                                    with_workspace=not self.release.persistent_workspace))
        if bnb4_nested is not None:             # bitsandbytes 4-bit weights, double-quantized or not
            parts["mlp"] = max(parts["mlp"], vllm_bnb4_mlp_bytes(stage.rank_spec, tokens, compute_bytes, bnb4_nested))
        # vLLM's kernels build neither transformers' 4-D masks nor its per-forward RoPE tables
        forward = peak_of({**parts, "positions": 0, "masks": 0}, stage.last)
        rows = self.release.sampler_rows(seqs, tokens)
        scale = self.calibration.activation_scale if self.calibration else 1.0
        if self.release.sampler_after_forward:
            language = max(forward, self._sampler_step_bytes(stage, tokens, rows, compute_bytes))
        else:
            language = forward + (rows * stage.rank_spec.vocab_size * VLLM_SAMPLER_BYTES_PER_LOGIT if stage.last else 0)
        return vllm_profile_peak_bytes(int(language * scale), stage.rank_spec.vision,
                                       tensor_parallel=tensor_parallel, dtype_bytes=compute_bytes,
                                       max_num_batched_tokens=tokens, max_num_seqs=seqs, max_model_len=max_model_len,
                                       release_first=self.release.first, first_stage=stage.first)

    def with_encoder_weights(self, stage: Stage, capacity: int, compute_bytes: int, max_model_len: int,
                             tensor_parallel: int) -> Stage:
        """The stage with a vision-language model's vision tower loaded beside its layers (sizer.plan.multimodal)."""
        tokens, _ = self.scheduler_limits(capacity, max_model_len)
        extra = vllm_encoder_weight_bytes(stage.rank_spec.vision, tensor_parallel=tensor_parallel,
                                          dtype_bytes=compute_bytes, max_num_batched_tokens=tokens,
                                          first_stage=stage.first)
        return replace(stage, weights_bytes=stage.weights_bytes + extra) if extra else stage

    def persistent_bytes(self, stage: Stage, capacity: int, compute_bytes: int, max_model_len: int = 8192) -> int:
        """What the profiling run leaves allocated besides the weights where the release takes only
        its transient headroom as the activation figure (VllmRelease.persistent_workspace): the
        workspace manager's buffer, the largest fused-MoE caches of the run (one buffer for all layers)."""
        if not (self.release.persistent_workspace and stage.rank_spec.is_moe):
            return 0
        tokens, _ = self.scheduler_limits(capacity, max_model_len)
        return vllm_moe_workspace_bytes(stage.rank_spec, tokens, compute_bytes, self.release.moe_layout,
                                        self.release.moe_chunk_tokens)

    def _sampler_step_bytes(self, stage: Stage, tokens: int, rows: int, compute_bytes: int) -> int:
        """The forward has ended when the dummy sampler runs: the runner holds the hidden states of the
        `tokens` (V0 model_runner.py@v0.7.1 execute_model; V1 profile_run, which also keeps the `rows`
        it indexes out of them for the sampler, gpu_model_runner.py@0.10.2) and the logits; the sampler's
        peak, its sort, adds to them."""
        if not stage.last:
            return 0
        spec = stage.rank_spec
        held = tokens + (rows if self.release.engine == "V1" else 0)
        return held * spec.hidden_size * compute_bytes + sampler_sort_peak_bytes(rows, spec.vocab_size, compute_bytes)

    def non_torch_bytes(self, gpu_count: int) -> int:
        """Non-torch memory the release charges to the budget (vllm_releases)."""
        charged = vllm_non_torch_tp1_bytes(self.gpu_capability)
        if gpu_count > 1 and self.release.charges_nccl:
            charged += VLLM_NON_TORCH_BYTES_TP - VLLM_NON_TORCH_BYTES_TP1
        if self.release.charges_cuda_context:
            charged += CUDA_CONTEXT_BYTES
        return int(charged * (self.calibration.non_torch_scale if self.calibration else 1.0))

    def graph_bytes(self) -> int:
        if self.enforce_eager:
            return 0
        fitted = self.calibration.cuda_graph_bytes if self.calibration else None
        return VLLM_CUDA_GRAPH_BYTES if fitted is None else fitted

    def budget(self, weights: int, activations: int, capacity: int, gpu_count: int, persistent: int = 0) -> VllmBudget:
        """What vLLM leaves for the KV cache on one GPU (the release's arithmetic); `persistent`: what
        the profiling run leaves allocated outside the activation figure (persistent_bytes)."""
        budget = int(self.utilization * capacity)
        graphs = self.graph_bytes()
        charged = weights + activations + self.non_torch_bytes(gpu_count) + persistent
        if self.release.charges_cuda_graphs:
            charged += graphs
        available = budget - charged
        if self.release.extensible_kv_cache:       # 0.34: within the free memory less a margin
            free = capacity - CUDA_CONTEXT_BYTES - charged - extensible_margin(activations)
            available = min(available, free)
        return VllmBudget(budget, charged, max(0, available), 0 if self.release.charges_cuda_graphs else graphs)

    def block_size(self, stage: Stage) -> int:
        return self.release.mla_block_size if stage.rank_spec.is_mla else self.release.block_size

    def evaluate(self, stages: list[Stage], placement: Placement, capacity: int, workload: Workload,
                 precision) -> Evaluation:
        context_length, batch_size = workload.context_length, workload.batch_size
        compute_bytes = precision.compute_bytes
        tokens_per_step, _ = self.scheduler_limits(capacity, context_length)
        per_gpu, kv_tokens, concurrency, short, first, blocks = [], None, None, None, None, []
        for s in stages:
            s = self.with_encoder_weights(s, capacity, compute_bytes, context_length, placement.tensor_parallel)
            act = self.profile_peak(s, capacity, compute_bytes, context_length, bnb4_double_quant(precision),
                                    tensor_parallel=placement.tensor_parallel,
                                    fp8_group=fp8_activation_group(precision, self.gpu_capability))
            kept = self.persistent_bytes(s, capacity, compute_bytes, context_length)
            weights = s.weights_bytes + self.load_buffers_bytes(s, compute_bytes, placement.tensor_parallel)
            b = self.budget(weights, act, capacity, placement.gpu_count, kept)
            first = first or (s, act, b, weights, kept)
            state = 0
            if s.state_layers:
                kv, state, pool = vllm_hybrid_pool(s, b.available, context_length, tokens_per_step, batch_size)
                kv -= state
                tokens = pool.tokens if self.release.tokens_from_concurrency else pool.tokens_before_0_20
                fits_requests = pool.requests
                blocks.append((pool.num_blocks, pool.blocks_per_request, pool.block_size))
            else:
                kv, tokens, fits_requests, n_blocks = self._kv_pool(s, b.available, context_length, tokens_per_step)
                block = self.block_size(s)
                blocks.append((n_blocks, -(-context_length // block), block))
            if s.state_layers or s.kv_bytes_per_token_all_layers:    # a stage of KV-sharing layers only holds no pool
                kv_tokens = tokens if kv_tokens is None else min(kv_tokens, tokens)
                concurrency = fits_requests if concurrency is None else min(concurrency, fits_requests)
            else:
                blocks.pop()
            if short is None and (b.charged > b.budget or (b.outside and b.budget + b.outside > capacity - CUDA_CONTEXT_BYTES)):
                short = (s, b)
            overhead = self.non_torch_bytes(placement.gpu_count) + self.graph_bytes() + CUDA_CONTEXT_BYTES
            if self.release.charges_cuda_context:
                overhead -= CUDA_CONTEXT_BYTES          # counted once
            per_gpu.append(GpuUsage(s.index, weights, kv, act + kept, overhead, capacity, state))
        kv_tokens, concurrency = kv_tokens or 0, (concurrency or 0) * placement.data_parallel  # a pool per DP rank
        verdict, reason = self._verdict(short, kv_tokens, concurrency, workload, capacity)
        values = self._log_values(first, min(blocks, default=(0, 1, self.release.block_size)), kv_tokens, capacity,
                                  placement, context_length)
        return Evaluation(verdict, reason, tuple(per_gpu), kv_tokens, concurrency,
                          vllm_log_lines(self.release, values), values.as_dict())

    def _blocks(self, s: Stage, available: int) -> int:
        """The KV blocks a worker of this stage finds room for."""
        page = self.block_size(s) * s.kv_bytes_per_token_all_layers
        return available // page if page else 0

    def _log_values(self, first, pool: tuple[int, int, int], kv_tokens: int, capacity: int, placement: Placement,
                    context_length: int) -> VllmLogValues:
        """What the first worker prints: its weights (with what loading makes beside them), activations
        and KV memory; the blocks, token count and concurrency after the minimum over workers (V0's
        executor and V1's engine core both take the smallest worker's block count before logging them).
        `pool`: (blocks, blocks one request of context_length takes, tokens per block) of the worker
        with the fewest blocks."""
        s, act, b, weights, kept = first
        blocks, blocks_per_request, block = pool
        logged_act = act + (self.graph_bytes() if self.release.persistent_workspace else 0)
        return VllmLogValues(capacity, self.utilization, weights, self.non_torch_bytes(placement.gpu_count) + kept,
                             logged_act, self.graph_bytes(), b.available, blocks, kv_tokens, context_length,
                             round(blocks * block / context_length if self.release.engine == "V0"
                                   else blocks / blocks_per_request, 2), weights - s.weights_bytes)

    def _kv_pool(self, s: Stage, available: int, context_length: int,
                 tokens_per_step: int) -> tuple[int, int, int, int]:
        """(KV bytes, the tokens vLLM logs as "GPU KV cache size", requests of context_length it holds, blocks)."""
        block = self.block_size(s)
        page = block * s.kv_bytes_per_token_all_layers
        blocks = self._blocks(s, available)
        per_request = s.kv_bytes(context_length, 1, tokens_per_step)
        fits_requests = blocks * page // per_request if per_request else 0
        tokens = blocks * block
        if self.release.tokens_from_concurrency and per_request:
            blocks_per_request = -(-context_length // block)
            tokens = int(blocks / blocks_per_request * context_length)
        return blocks * page, tokens, fits_requests, blocks

    def _verdict(self, short, kv_tokens, concurrency, workload: Workload, capacity: int) -> tuple[str, str]:
        context_length, batch_size = workload.context_length, workload.batch_size
        util = f"{self.utilization:g} x {_gib(capacity)}"
        if short:
            s, b = short
            if b.charged > b.budget:
                return DOES_NOT_FIT, (f"weights {_gib(s.weights_bytes)} + profiling peak and runtime "
                                      f"{_gib(b.charged - s.weights_bytes)} exceed the budget {util} = {_gib(b.budget)}")
            return DOES_NOT_FIT, (f"CUDA graphs ({_gib(b.outside)}) are captured after the KV cache and do not fit "
                                  f"beside the budget {util} (lower --gpu-memory-utilization or --enforce-eager)")
        if concurrency < 1:
            return DOES_NOT_FIT, (f"the KV cache holds {kv_tokens:,} tokens, fewer than one sequence of "
                                  f"{context_length:,} (vLLM refuses to start)")
        if concurrency < batch_size:
            return MARGINAL, (f"the KV cache holds {kv_tokens:,} tokens: {concurrency} concurrent "
                              f"sequences of {context_length:,}, fewer than the {batch_size} asked")
        return FITS, (f"the KV cache holds {kv_tokens:,} tokens: {concurrency} concurrent sequences "
                      f"of {context_length:,} (budget {util}, vLLM {self.release.name})")


@dataclass(frozen=True)
class SglangEngine:
    """SGLang's KV pool (sizer.plan.sglang): mem_fraction_static of the free memory before the weights
    holds weights and pool; the rest is for one chunked-prefill step's activations and CUDA graphs."""

    name: str = "sglang"
    usage_depends_on_capacity = True
    prefers_tensor_parallel: bool = True
    embedding_on_host: bool = False
    tied_copy_on_last: bool = True
    indexer_cache: str = INDEXER_VLLM_FP8
    release: SglangRelease = SGLANG_NEWEST
    mem_fraction_static: float | None = None
    chunked_prefill_size: int | None = None
    page_size: int = 1
    max_running_requests: int | None = None   # --max-running-requests (over all DP workers)
    gpu_total_bytes: int = 0                  # the driver's total: SGLang's defaults read nvidia-smi's

    def evaluate(self, stages: list[Stage], placement: Placement, capacity: int, workload: Workload,
                 precision) -> Evaluation:
        tp, pp = placement.tensor_parallel, placement.pipeline_parallel
        gpu_bytes = self.gpu_total_bytes or capacity
        chunk = self.chunked_prefill_size or self.release.chunked_prefill_size(gpu_bytes / MiB)
        per_gpu, tokens, running, problem = [], None, None, None
        user_running = self.max_running_requests
        if user_running is not None and placement.dp_attention:
            user_running //= placement.data_parallel          # tp_worker: "// dp_size if enable_dp_attention"
        for s in stages:
            cell = s.kv_bytes_per_token_all_layers
            weights = s.weights_bytes + self.load_buffers_bytes(s, precision.compute_bytes)
            pool = sglang_pool(self.release, gpu_bytes, capacity, weights, cell, tp, pp,
                               workload.context_length, self.mem_fraction_static, self.page_size, user_running)
            act = prefill_activation_bytes(s, chunk, precision.compute_bytes)
            graphs = graph_bytes(self.release, gpu_bytes, tp)
            tokens = pool.tokens if tokens is None else min(tokens, pool.tokens)
            running = pool.max_running_requests if running is None else min(running, pool.max_running_requests)
            if problem is None and pool.rest == 0:
                problem = (DOES_NOT_FIT, f"weights {_gib(weights)} exceed mem_fraction_static "
                                         f"{pool.mem_fraction_static:.3f} x {_gib(pool.pre_load)} free")
            elif problem is None and act + graphs > pool.slack:
                problem = (MARGINAL, f"a {chunk:,}-token prefill step and CUDA graphs ({_gib(act + graphs)}) exceed "
                                     f"the {_gib(pool.slack)} SGLang keeps outside the pool")
            overhead = CUDA_CONTEXT_BYTES + graphs + (SGLANG_NCCL_BYTES if tp * pp > 1 else 0)
            per_gpu.append(GpuUsage(s.index, weights, pool.tokens * cell, act, overhead, capacity, 0))
        concurrency = min(tokens // workload.context_length, running) * placement.data_parallel   # a pool per DP rank
        verdict, reason = self._verdict(problem, tokens, concurrency, workload)
        buffers = self.load_buffers_bytes(stages[0], precision.compute_bytes)
        lines, values = self._log(per_gpu[0], buffers, tokens, running, chunk, workload.context_length)
        return Evaluation(verdict, reason, tuple(per_gpu), tokens, concurrency, lines, values)

    def load_buffers_bytes(self, stage: Stage, compute_bytes: int) -> int:
        """What SGLang allocates while loading besides the weights, inside its "mem usage" (free memory
        before minus after): the RoPE cos/sin table, float32 from 0.4.2 (sizer.plan.load_buffers)."""
        return rope_cache_bytes(stage.rank_spec, FP32_BYTES if self.release.rope_cache_fp32 else compute_bytes)

    @staticmethod
    def _log(first: GpuUsage, load_buffers: int, tokens: int, running: int, chunk: int,
             context_length: int) -> tuple[tuple, dict]:
        """The lines SGLang prints about its pool (0.4.3.post4+ format), with sizer's numbers."""
        half = fmt_gib(first.kv_cache // 2)
        values = {"weights": first.weights, "load_buffers": load_buffers, "kv_cache": first.kv_cache,
                  "max_total_num_tokens": tokens, "chunked_prefill_size": chunk, "max_prefill_tokens": 16384,
                  "max_running_requests": running, "context_len": context_length}
        lines = (f"Load weight end. mem usage={fmt_gib(first.weights)} GB.{load_buffers_note(first.weights, load_buffers)}",
                 f"KV Cache is allocated. #tokens: {tokens}, K size: {half} GB, V size: {half} GB",
                 f"max_total_num_tokens={tokens}, chunked_prefill_size={chunk}, max_prefill_tokens=16384, "
                 f"max_running_requests={running}, context_len={context_length}")
        return lines, values

    def _verdict(self, problem, tokens: int, concurrency: int, workload: Workload) -> tuple[str, str]:
        context_length, batch_size = workload.context_length, workload.batch_size
        pool = f"max_total_num_tokens={tokens:,} (SGLang {self.release.name})"
        if problem and problem[0] == DOES_NOT_FIT:
            return problem
        if concurrency < 1:
            return DOES_NOT_FIT, f"{pool}: fewer than one sequence of {context_length:,}"
        if concurrency < batch_size:
            return MARGINAL, f"{pool}: {concurrency} concurrent sequences of {context_length:,}, fewer than {batch_size}"
        if problem:
            return MARGINAL, f"{pool}; {problem[1]}"
        return FITS, f"{pool}: {concurrency} concurrent sequences of {context_length:,}"


# vLLM's hybrid KV cache manager (models with Mamba / Gated DeltaNet layers beside attention), read from
# vLLM's source; docs/reference/vllm-hybrid.md quotes every line used here with its path and commit.
# * vllm/platforms/interface.py Platform._align_hybrid_block_size (HybridAttentionMambaModelConfig.
#   verify_and_update_config in vllm/model_executor/models/config.py before the move): without
#   mamba_cache_mode "all", `attn_block_size = kernel_block_alignment_size * cdiv(mamba_page_size,
#   kernel_block_alignment_size * attn_page_size_1_token)` with `kernel_block_alignment_size =
#   max(min(backend kernel block sizes), cache_config.block_size)` (16 and 16 for the CUDA backends at
#   the default block size; a user --block-size becomes the grain); the block size only grows, and
#   the Mamba page is padded to the attention page (`mamba_page_size_padded`).
# * vllm/model_executor/layers/mamba/mamba_utils.py: a layer's state is the conv state
#   (conv_kernel - 1 + num_spec columns of conv_dim / tp) and the SSM / recurrent state, in
#   mamba_cache_dtype and mamba_ssm_cache_dtype ("auto": the model dtype) - sizer.calc.kv.
# * vllm/v1/core/kv_cache_utils.py _get_kv_cache_groups_uniform_page_size: the layers of one spec
#   (full attention, one window, Mamba) split into groups of `group_size` layers, the fewest layers
#   of any spec (the most when max < 1.5 x min); layer i of a spec goes to its group i % groups.
#   get_kv_cache_config_from_groups / get_num_blocks: `num_blocks = available_memory // page_size
#   // group_size`, the group size of the layers on this worker; the workers take the smallest.
# * vllm/v1/kv_cache_interface.py max_memory_usage_bytes: a request of max_model_len takes
#   cdiv(max_model_len, block) pages of a full-attention group, cdiv(min(window - 1 +
#   max_num_batched_tokens, max_model_len), block) + 1 of a sliding-window group, and of a Mamba
#   group 1 + num_speculative_blocks pages (mamba_cache_mode "none", the default: vLLM's
#   ModelConfig.is_prefix_caching_supported is False for hybrid models), 2 + num_speculative_blocks
#   ("align").
# * get_max_concurrency_for_kv_cache_config: num_blocks / (the sum over groups of those pages).
#   _report_kv_cache_config: "GPU KV cache size" is int(max_concurrency * max_model_len) in the
#   version modelled (0.32; since 0.2x, after vllm-project/vllm#40691); releases up to 0.19 logged
#   num_blocks // len(groups) * min block size (`tokens_before_0_20`).
VLLM_KERNEL_BLOCK_ALIGNMENT = 16
VLLM_MAMBA_CACHE_MODES = {"none": 1, "align": 2}      # pages a Mamba group holds per request


@dataclass(frozen=True)
class VllmHybridPool:
    """The KV pool of one GPU of a model with recurrent layers, as vLLM lays it out."""

    block_size: int                 # tokens per attention block (raised until a page holds a state)
    page_bytes: int                 # one layer's page; the Mamba page is padded to it
    group_size: int                 # layers per KV cache group (padding layers included)
    layers_per_tensor: int          # the most layers of one group on this GPU: pages per block here
    n_groups: int                   # KV cache groups of the whole model (attention and Mamba)
    state_groups: int               # the Mamba groups among them
    num_blocks: int                 # blocks of the shared pool
    blocks_per_request: int         # blocks one request of max_model_len takes, summed over groups
    state_blocks_per_request: int   # the Mamba groups' share of them
    max_model_len: int

    @property
    def block_bytes(self) -> int:
        return self.page_bytes * self.layers_per_tensor

    @property
    def pool_bytes(self) -> int:
        return self.num_blocks * self.block_bytes

    @property
    def max_concurrency(self) -> float:
        """vLLM's "Maximum concurrency for max_model_len tokens per request" (printed with %.2f)."""
        return self.num_blocks / self.blocks_per_request if self.blocks_per_request else 0.0

    @property
    def requests(self) -> int:
        """Whole requests of max_model_len the pool holds at once."""
        return self.num_blocks // self.blocks_per_request if self.blocks_per_request else 0

    @property
    def tokens(self) -> int:
        """vLLM 0.32's "GPU KV cache size: N tokens": int(max_concurrency * max_model_len)."""
        return int(self.max_concurrency * self.max_model_len)

    @property
    def tokens_before_0_20(self) -> int:
        """The same line in vLLM 0.10-0.19: num_blocks // len(kv_cache_groups) * min(block_size)."""
        return self.num_blocks // self.n_groups * self.block_size if self.n_groups else 0


def _vllm_groups(spec: ModelSpec, state_layers: bool) -> list[tuple[int | None | str, list[int]]]:
    """vLLM's KV cache groups of the whole model: (kind, layer indices); kind is a window (None: full
    attention) or "mamba". A HYBRID layer (Falcon-H1) registers an attention and a Mamba layer."""
    from sizer.calc.kv import window_of
    from sizer.spec import KV_KINDS, STATE_KINDS

    by_kind: dict[int | None | str, list[int]] = {}
    for i, kind in enumerate(spec.layer_types):
        if kind in KV_KINDS:
            by_kind.setdefault(window_of(spec, kind), []).append(i)
        if state_layers and kind in STATE_KINDS:
            by_kind.setdefault("mamba", []).append(i)
    if not by_kind:
        return []
    counts = [len(v) for v in by_kind.values()]
    group_size = min(counts)
    if max(counts) < 1.5 * group_size:
        group_size = max(counts)
    groups = []
    for kind, layers in by_kind.items():
        n = ceil(len(layers) / group_size)
        groups.extend((kind, layers[i::n]) for i in range(n))
    return groups


def vllm_hybrid_layout(s: Stage, available: int, max_model_len: int, max_num_batched_tokens: int, *,
                       mamba_cache_mode: str = "none", num_speculative_blocks: int = 0,
                       block_size: int | None = None,
                       kernel_alignment: int = VLLM_KERNEL_BLOCK_ALIGNMENT) -> VllmHybridPool:
    """vLLM's KV pool on the GPU of stage `s` given `available` bytes ("Available KV cache memory").

    mamba_cache_mode: "none" (the default: no prefix caching for hybrid models) or "align"
    (--enable-prefix-caching --mamba-cache-mode align); block_size: a user --block-size."""
    if mamba_cache_mode not in VLLM_MAMBA_CACHE_MODES:
        raise ValueError(f"mamba_cache_mode {mamba_cache_mode!r} is not modelled (known: "
                         f"{', '.join(VLLM_MAMBA_CACHE_MODES)}; 'all' sizes blocks to the Mamba chunk)")
    attn_token, state_page = s.kv_layer_bytes_per_token, s.state_layer_bytes
    groups = _vllm_groups(s.rank_spec, s.state_layers > 0)
    if attn_token and any(kind != "mamba" for kind, _ in groups):
        grain = max(kernel_alignment, block_size or VLLM_BLOCK_SIZE)
        block = max(block_size or VLLM_BLOCK_SIZE, grain * ceil(state_page / (grain * attn_token)))
        page = block * attn_token
    else:                                   # attention-free: every layer a Mamba page
        block, page = max_model_len, state_page
    mamba_pages = VLLM_MAMBA_CACHE_MODES[mamba_cache_mode] + num_speculative_blocks
    per_request = state_per_request = 0
    for kind, _ in groups:
        if kind == "mamba":
            per_request += mamba_pages
            state_per_request += mamba_pages
        elif kind is None:
            per_request += ceil(max_model_len / block)
        else:                               # SlidingWindowSpec.max_memory_usage_bytes
            per_request += ceil(min(kind - 1 + max_num_batched_tokens, max_model_len) / block) + 1
    here = set(s.layers)
    layers_here = max((sum(1 for i in layers if i in here) for _, layers in groups), default=0)
    num_blocks = available // page // layers_here if layers_here and page else 0
    group_size = max((len(layers) for _, layers in groups), default=0)
    return VllmHybridPool(block, page, group_size, layers_here, len(groups),
                          sum(1 for kind, _ in groups if kind == "mamba"), num_blocks, per_request,
                          state_per_request, max_model_len)


def vllm_hybrid_pool(s: Stage, available: int, context_length: int, tokens_per_step: int,
                     batch_size: int) -> tuple[int, int, VllmHybridPool]:
    """(pool bytes, state bytes among them for the sequences served, the layout) of one GPU of a model
    with recurrent layers."""
    p = vllm_hybrid_layout(s, available, context_length, tokens_per_step)
    state = min(batch_size, p.requests) * p.state_blocks_per_request * p.block_bytes
    return p.pool_bytes, state, p


# ---------------------------------------------------------------------------------------------
# llama.cpp (llama-server / llama-cli): sizer.plan.llamacpp places layers, KV cache and compute buffers

LLAMACPP_UBATCH = DEFAULT_N_UBATCH    # n_ubatch default: the micro-batch the compute buffer is sized for
LLAMACPP_FIT_MARGIN_BYTES = FIT_MARGIN_BYTES   # --fit keeps 1024 MiB free per device


@dataclass(frozen=True)
class LlamaCppEngine:
    name: str = "llamacpp"
    prefers_tensor_parallel: bool = False
    embedding_on_host: bool = True
    tied_copy_on_last: bool = True
    flash_attention: bool = True      # -fa auto enables it on GPUs that support it
    settings: LlamaCppSettings = field(default_factory=LlamaCppSettings)
    device_capacities: tuple[int, ...] = ()   # mixed GPUs: each device's usable memory (else all `capacity`)
    host_ram_bytes: int | None = None         # --ram (or the machine's): None when unknown
    layers_margin_bytes: int | None = None    # what the layer search keeps free per GPU (None: --fit's target)
    cpu_only: bool = False                    # no GPU: every layer on the CPU (-ngl 0), `capacity` is the RAM
    unified_memory: bool = False              # Apple: the GPU's part and the host's share host_ram_bytes

    @property
    def usage_depends_on_capacity(self) -> bool:
        """--fit (llama.cpp's default) chooses -ngl by each GPU's memory."""
        return self.settings.auto_layers and not self.cpu_only

    @property
    def keeps_layers_on_host(self) -> bool:
        """-ngl below every layer (or experts kept on the CPU): part of the weights never reach a GPU."""
        s = self.settings
        return s.n_gpu_layers < ALL_LAYERS or s.cpu_moe or s.n_cpu_moe > 0 or bool(s.override_tensor)

    @property
    def margin_bytes(self) -> int:
        return self.settings.fit_target_bytes if self.layers_margin_bytes is None else self.layers_margin_bytes

    def plan(self, spec: ModelSpec, precision, n_devices: int, workload: Workload,
             layer_counts: tuple[int, ...] | None = None) -> LlamaCppPlan:
        """Per device what llama.cpp allocates (sizer.plan.llamacpp). layer_counts: the layers (output
        head counted) of each GPU, as --fit sets -ngl and --tensor-split."""
        # the plan's context and slots decide n_ctx (-c arrives as the context per slot, so that sizer's
        # searches for the longest context and the most sequences can vary it)
        s = replace(self.settings, n_ctx=None)
        if s.n_seq_max is None:
            s = replace(s, n_seq_max=workload.batch_size)
        if not self.flash_attention and s.flash_attn == "auto":
            s = replace(s, flash_attn="off")
        free = self.device_capacities if len(self.device_capacities) == n_devices else ()
        if layer_counts is not None:
            s = replace(s, n_gpu_layers=sum(layer_counts), tensor_split=tuple(float(n) for n in layer_counts)
                        if n_devices > 1 else ())
        return plan_llamacpp(model_from_spec(spec, precision), s, n_devices, workload.context_length, free)

    def fit_layers(self, spec: ModelSpec, precision, n_devices: int, workload: Workload,
                   usage) -> tuple[int, ...]:
        """The layers per GPU llama.cpp's --fit chooses (common/fit.cpp, step 3, dense models): from the
        last device to the first, the most of the still unassigned layer slots (n_layer + 1, the output
        head the first) for which the device's projected use stays within its free memory less the
        margin. usage(plan) -> per-GPU GpuUsage."""
        counts = [0] * n_devices
        slots = spec.n_layers + 1
        for device in range(n_devices - 1, -1, -1):
            unassigned = slots - sum(counts[device + 1:])

            def fits(n: int, device=device) -> bool:
                trial = tuple(counts[:device]) + (n,) + tuple(counts[device + 1:])
                g = usage(self.plan(spec, precision, n_devices, workload, trial))[device]
                return g.total + self.margin_bytes <= g.capacity

            counts[device] = _largest_fitting(fits, unassigned)
        return tuple(counts)

    def evaluate(self, stages: list[Stage], placement: Placement, capacity: int, workload: Workload,
                 precision) -> Evaluation:
        context_length, batch_size = workload.context_length, workload.batch_size
        spec = stages[0].rank_spec
        engine = self
        kv_type = _llamacpp_kv_type(stages, spec)
        if kv_type and (self.settings.type_k, self.settings.type_v) == ("f16", "f16"):
            engine = replace(self, settings=replace(self.settings, type_k=kv_type, type_v=kv_type))
        n_devices = 0 if self.cpu_only else placement.gpu_count
        state_layer = stages[0].state_layer_bytes_llamacpp
        usage = lambda plan: engine._usage(plan, spec, capacity, batch_size, state_layer)    # noqa: E731
        plan = engine.plan(spec, precision, n_devices, workload)
        per_gpu = usage(plan)
        searched = False
        if n_devices and self.settings.auto_layers and any(g.free < self.margin_bytes for g in per_gpu):
            # --fit (on by default, -ngl auto): fewer layers on the GPUs until each keeps the margin free
            plan = engine.plan(spec, precision, n_devices, workload, engine.fit_layers(spec, precision, n_devices,
                                                                                      workload, usage))
            per_gpu, searched = usage(plan), True
        slots = self.settings.n_seq_max or batch_size
        what = f"n_ctx {plan.n_ctx:,} ({slots} x {context_length:,})"
        verdict, reason = _verdict_by_capacity(per_gpu, what)
        host = plan.host
        n_slots = spec.n_layers + 1
        if self.cpu_only:
            reason = reason.replace("on the GPU", "in system RAM (less the OS reserve)")
        on_host = bool(host.layers) or host.output_head
        if on_host and not self.cpu_only and verdict != DOES_NOT_FIT:
            verdict = FITS_WITH_OFFLOAD
            gpus = "GPU" + ("s" if len(per_gpu) > 1 else "")
            how = "--fit lowered -ngl" if searched else "-ngl as set"
            reason = (f"{plan.n_gpu_layers}/{n_slots} layers on the {gpus} ({how}), {_gib(host.total)} in system "
                      f"RAM; {reason}")
        elif host.weights and not self.cpu_only:
            reason += (f"; {plan.n_gpu_layers}/{n_slots} layers on the GPU" + ("s" if len(per_gpu) > 1 else "")
                       + f", {_gib(host.total)} in host memory")
        if verdict != DOES_NOT_FIT and not self.cpu_only:
            gpu_part = sum(g.total for g in per_gpu) if self.unified_memory else 0
            verdict, reason = _host_ram_verdict(verdict, reason, host.total, self.host_ram_bytes, gpu_part)
        values = {"n_gpu_layers": plan.n_gpu_layers, "n_ctx": plan.n_ctx, "flash_attn": plan.flash_attn,
                  "pipeline_copies": plan.pipeline_copies,
                  "host": {"weights": host.weights, "kv_cache": host.kv_cache, "compute": host.compute,
                           "output": host.output, "total": host.total,
                           "free": None if self.host_ram_bytes is None else self.host_ram_bytes - host.total},
                  "host_layers": len(host.layers), "host_read_bytes": host.weights - plan.input_bytes,
                  "device_layers": [len(d.layers) for d in plan.devices],
                  "device_slots": [len(d.layers) + d.output_head for d in plan.devices],
                  "layer_slots": n_slots, "compute_buffers": [d.compute for d in plan.devices]}
        return Evaluation(verdict, reason, per_gpu, engine_values=values)

    def _usage(self, plan: LlamaCppPlan, spec: ModelSpec, capacity: int, batch_size: int,
               state_layer: int) -> tuple[GpuUsage, ...]:
        """Each GPU's use; CPU-only: the host's, against `capacity` (the RAM less the reserve)."""
        if self.cpu_only:
            h = plan.host
            return (GpuUsage(0, h.weights, h.kv_cache, h.compute + h.output, 0, capacity),)
        overhead = CUDA_CONTEXT_BYTES + (LLAMACPP_FIT_MARGIN_BYTES if self.settings.fit else 0)
        # llama_memory_recurrent: one float32 state per sequence in each recurrent layer, with its layer
        slots = self.settings.n_seq_max or batch_size
        kinds = spec.layer_types
        capacities = (self.device_capacities if len(self.device_capacities) == len(plan.devices)
                      else (capacity,) * len(plan.devices))
        per_gpu = tuple(GpuUsage(d.device, d.weights, d.kv_cache, d.compute, overhead, capacities[d.device],
                                 slots * state_layer * sum(1 for il in d.layers if kinds[il] in STATE_KINDS)
                                 if spec.recurrent else 0)
                        for d in plan.devices)
        if not per_gpu:
            raise ValueError("llama.cpp on GPUs: at least one device")
        return per_gpu


def _largest_fitting(ok, limit: int) -> int:
    """The largest n in [0, limit] with ok(n), for ok true then false; 0 when only ok(0) or none."""
    if ok(limit):
        return limit
    lo, hi = 0, limit          # hi does not fit; lo = 0 is the floor (llama.cpp then keeps the device empty)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def _host_ram_verdict(verdict: str, reason: str, host_bytes: int, ram_bytes: int | None,
                      gpu_bytes: int = 0) -> tuple[str, str]:
    """A plan whose host part (weights kept in system RAM, page cache with mmap included, host KV,
    compute and output buffers) and HOST_RESERVE_BYTES exceed the RAM does not fit. gpu_bytes: on
    unified memory (Apple), what the GPU's part takes of the same RAM."""
    if ram_bytes is None:
        if verdict == FITS_WITH_OFFLOAD:
            reason += f"; system RAM not given (--ram): needs {_gib(host_bytes + HOST_RESERVE_BYTES)} with the OS reserve"
        return verdict, reason
    gpu_text = f" beside the GPU's {_gib(gpu_bytes)} of the same memory" if gpu_bytes else ""
    if host_bytes + gpu_bytes + HOST_RESERVE_BYTES > ram_bytes:
        return DOES_NOT_FIT, (f"needs {_gib(host_bytes)} of system RAM{gpu_text} + {_gib(HOST_RESERVE_BYTES)} for the "
                              f"OS and other processes, more than the {_gib(ram_bytes)} of RAM; {reason}")
    if verdict == FITS_WITH_OFFLOAD:
        reason += (f"; {_gib(host_bytes)}{gpu_text} of {_gib(ram_bytes)} RAM ({_gib(HOST_RESERVE_BYTES)} kept for "
                   "the OS)")
    return verdict, reason


def _llamacpp_kv_type(stages: list[Stage], spec: ModelSpec) -> str | None:
    """The llama.cpp cache type (-ctk/-ctv) of the KV dtype the stages were sized with (sizer's --kv-dtype)."""
    from sizer.calc.kv import kv_layer_bytes_per_token

    f16 = sum(kv_layer_bytes_per_token(spec, i, "fp16") for i in range(spec.n_layers))
    sized = sum(s.kv_bytes_per_token_all_layers for s in stages)
    if not f16 or not sized:
        return None
    ratio = sized / f16
    types = {"f16": 1.0, "f32": 2.0, "q8_0": 34 / 64, "q4_0": 18 / 64}
    best = min(types, key=lambda t: abs(types[t] - ratio))
    return best if abs(types[best] - ratio) < 0.02 else None


# ---------------------------------------------------------------------------------------------
# Hardware rules: what each engine does with a weight format on a GPU of a given compute capability

FP8_NATIVE_CAPABILITY = (8, 9)      # FP8 tensor cores (Ada, Hopper and later)
VLLM_FP8_MARLIN_CAPABILITY = (8, 0)  # vLLM's weight-only FP8 Marlin path below 8.9
MODELOPT_FP8_CAPABILITY = (8, 9)     # vLLM ModelOptFp8Config.get_min_capability: 89 (no Marlin path)
NVFP4_MIN_CAPABILITY = (8, 0)        # vLLM ModelOptNvFp4Config.get_min_capability: 80 (Marlin FP4 below Blackwell)
NVFP4_NATIVE_CAPABILITY = (10, 0)    # FP4 tensor cores (Blackwell): CUTLASS / FlashInfer FP4 GEMMs
FBGEMM_TRANSFORMERS_CAPABILITY = (9, 0)  # transformers FbgemmFp8HfQuantizer: compute capability >= 9.0


@dataclass(frozen=True)
class HardwareRule:
    """How an engine runs a weight format on one GPU kind: the format its weights occupy in memory,
    why it cannot run it at all (refusal: the verdict is does-not-fit), and what to tell the reader."""

    weights: object                 # the sizer.quant format the weights are planned in
    refusal: str = ""
    note: str = ""


def _capability_text(gpu) -> str:
    return f"{gpu.name} has compute capability {gpu.compute_capability}"


def hardware_rule(engine: str, precision, gpu) -> HardwareRule:
    """Each engine's hardware rules for `precision` (a sizer.quant format) on `gpu` (a GpuSpec).
    Rules need the GPU's compute capability (sizer/data/gpus.json); a GPU without one (a bare size,
    an AMD part) gets only the vendor rules.

    transformers: FineGrainedFP8HfQuantizer.validate_environment (transformers 5.25,
      quantizers/quantizer_finegrained_fp8.py) sets `dequantize = True` on a CUDA GPU of compute
      capability below 8.9 ("FP8 quantized models is only supported on GPUs with compute capability
      >= 8.9 ... We will default to dequantizing the model to bf16"): the weights sit in memory as
      bf16. (The fbgemm_fp8 quantizer instead raises below 9.0; sizer's fp8 is the fine-grained one.)
    vLLM: FP8 runs natively from 8.9 and as weight-only FP8 through Marlin from 8.0 (its fp8 Marlin
      check, has_device_capability(80)), the weights staying FP8; below 8.0 there is no FP8 kernel.
      GPTQ/AWQ run through Machete (9.0) or Marlin (marlin_utils.query_marlin_supported_quant_types:
      `if device_capability < 75: return []`), sizer.quantize.plan.MARLIN_MIN_CAPABILITY /
      MACHETE_CAPABILITY; below 7.5 vLLM has no kernel for them.
    bitsandbytes (transformers, older vLLM): built for CUDA; on AMD it needs its ROCm build
      (transformers' validate_bnb_backend_availability checks the installed backend).
    llama.cpp: loads GGUF files only (gguf_init_from_file); bitsandbytes tensors (Linear4bit /
      Linear8bitLt states) have no GGUF type, so it cannot run them on any GPU: refused.
    """
    from sizer.quant import get_precision
    from sizer.quantize.plan import MARLIN_MIN_CAPABILITY

    cc = gpu.capability
    if engine == "llamacpp" and precision.is_bitsandbytes:
        return HardwareRule(precision, refusal=(
            f"llama.cpp loads GGUF files and cannot load bitsandbytes ({precision.name}) weights: plan a GGUF type "
            "(Q8_0, Q6_K, Q5_K_M, Q4_K_M, ...) instead"))
    if gpu.vendor == "apple" and engine in ("vllm", "sglang"):
        return HardwareRule(precision, refusal=(
            f"{ENGINE_TITLES[engine]} has no Apple GPU (Metal) backend, so it cannot use {gpu.name}'s GPU: plan "
            "--engine llamacpp (llama.cpp, Ollama, LM Studio) or transformers on MPS"))
    if gpu.vendor == "apple" and precision.is_bitsandbytes:
        return HardwareRule(precision, refusal=(
            f"bitsandbytes ({precision.name}) has no Apple GPU (MPS) kernels: plan a GGUF type with --engine llamacpp, "
            "or bf16 / fp16"))
    if precision.is_bitsandbytes and gpu.vendor == "amd":
        return HardwareRule(precision, note=f"{precision.name}: bitsandbytes is built for CUDA; on {gpu.name} (AMD) it "
                                            "needs bitsandbytes' ROCm build (sized as on CUDA)")
    method = checkpoint_method(precision)
    if engine in ("transformers", "llamacpp") and method == "modelopt":
        return HardwareRule(precision, refusal=(
            f"{engine} has no NVIDIA ModelOpt loader ({precision.name}): vLLM, SGLang and TensorRT-LLM run these "
            "checkpoints"))
    if cc is None:
        return HardwareRule(precision)
    scaled = _scaled_checkpoint_rule(engine, precision, method, gpu)
    if scaled is not None:
        return scaled
    if engine == "transformers" and precision.is_fp8 and cc < FP8_NATIVE_CAPABILITY:
        return HardwareRule(get_precision("bf16"), note=(
            f"{precision.name} on {gpu.name}: transformers dequantizes FP8 weights to bf16 below compute capability "
            f"8.9 ({_capability_text(gpu)}; FineGrainedFP8HfQuantizer.validate_environment): bf16 weight memory planned"))
    if engine in ("vllm", "sglang") and precision.is_fp8 and cc < FP8_NATIVE_CAPABILITY:
        if cc < VLLM_FP8_MARLIN_CAPABILITY:
            return HardwareRule(precision, refusal=(
                f"vLLM has no FP8 kernel below compute capability 8.0 ({_capability_text(gpu)}): FP8 runs natively "
                "from 8.9 and weight-only through Marlin from 8.0"))
        return HardwareRule(precision, note=(
            f"{precision.name} on {gpu.name}: vLLM runs FP8 weight-only through Marlin below compute capability 8.9 "
            f"({_capability_text(gpu)}): the weights stay FP8, the matmuls run in 16-bit"))
    marlin = tuple(int(x) for x in MARLIN_MIN_CAPABILITY.split("."))
    if engine in ("vllm", "sglang") and precision.kind == "group" and cc < marlin:
        return HardwareRule(precision, refusal=(
            f"vLLM runs GPTQ/AWQ through Machete (compute capability 9.0) or Marlin (>= {MARLIN_MIN_CAPABILITY}); "
            f"{_capability_text(gpu)}"))
    return HardwareRule(precision)


def checkpoint_method(precision) -> str:
    """"modelopt", "fbgemm" or "" for a format (or a checkpoint as stored that is like one)."""
    name = getattr(getattr(precision, "like", None) or precision, "name", "")
    return "modelopt" if name.startswith(("modelopt-", "nvfp4")) else "fbgemm" if name.startswith("fbgemm-") else ""


def _scaled_checkpoint_rule(engine: str, precision, method: str, gpu) -> HardwareRule | None:
    """The compute-capability rules of FBGEMM FP8 and ModelOpt checkpoints (None: the common FP8 rules apply).

    transformers FbgemmFp8HfQuantizer.validate_environment raises below compute capability 9.0 (it needs
    fbgemm-gpu's FP8 kernels). vLLM 0.10.2 modelopt.py: ModelOptFp8Config.get_min_capability is 89
    (per-tensor torch._scaled_mm, no Marlin path); ModelOptNvFp4Config.get_min_capability is 80 and
    ModelOptNvFp4LinearMethod picks FlashInfer / CUTLASS FP4 GEMMs (Blackwell) or else Marlin
    (apply_fp4_marlin_linear: the FP4 weights stay packed, the matmuls run in 16-bit)."""
    cc, kind = gpu.capability, getattr(precision, "kind", "")
    if engine == "transformers" and method == "fbgemm" and cc < FBGEMM_TRANSFORMERS_CAPABILITY:
        return HardwareRule(precision, refusal=(
            f"transformers runs FBGEMM FP8 only from compute capability 9.0 ({_capability_text(gpu)}; "
            "FbgemmFp8HfQuantizer.validate_environment)"))
    if engine not in ("vllm", "sglang") or method != "modelopt":
        return None
    if kind == "fp8" and cc < MODELOPT_FP8_CAPABILITY:
        return HardwareRule(precision, refusal=(
            f"vLLM runs ModelOpt FP8 checkpoints from compute capability 8.9 ({_capability_text(gpu)}; "
            "ModelOptFp8Config.get_min_capability)"))
    if kind == "nvfp4" and cc < NVFP4_MIN_CAPABILITY:
        return HardwareRule(precision, refusal=(
            f"vLLM runs NVFP4 from compute capability 8.0 ({_capability_text(gpu)}; ModelOptNvFp4Config)"))
    if kind == "nvfp4" and cc < NVFP4_NATIVE_CAPABILITY:
        return HardwareRule(precision, note=(
            f"{precision.name} on {gpu.name}: without FP4 tensor cores (Blackwell) vLLM runs NVFP4 weight-only "
            f"through Marlin ({_capability_text(gpu)}): the weights stay 4-bit, the matmuls run in 16-bit"))
    return HardwareRule(precision)


ENGINES = ("transformers", "vllm", "sglang", "llamacpp")
ENGINE_TITLES = {"transformers": "transformers", "vllm": "vLLM", "sglang": "SGLang", "llamacpp": "llama.cpp"}


@dataclass(frozen=True)
class EngineChoice:
    """An engine as the user names it: `transformers`, `transformers==5.24`, `vllm`, `llamacpp`."""

    name: str
    release: Release | None = None      # transformers: the release modelled
    vllm: VllmRelease | None = None     # vLLM: the range of releases modelled
    vllm_version: str | None = None     # vLLM: the release asked for (None: the newest modelled)
    sglang: SglangRelease | None = None
    sglang_version: str | None = None
    profile: str = ""                   # "ollama" or "lmstudio": llama.cpp as that application configures it
    profile_version: str | None = None  # Ollama: the release asked for (None: the newest modelled)

    @property
    def label(self) -> str:
        """The engine as the user named it (ollama, lmstudio) or its name."""
        return self.profile or self.name

    @property
    def version(self) -> str:
        """The modelled release: transformers' ("5.25"), vLLM's (the one asked for, else the newest
        modelled); "" for llama.cpp."""
        if self.vllm is not None:
            return self.vllm_version or self.vllm.last
        if self.sglang is not None:
            return self.sglang_version or self.sglang.last
        if self.profile == "ollama":
            from sizer.plan.ollama import ollama_release

            return self.profile_version or ollama_release(None).last
        return release_text(self.release) if self.release else ""

    @property
    def engine_options(self) -> dict:
        """What make_engine needs to model this choice."""
        release = self.vllm or self.sglang
        return {"release": release} if release is not None else {}


def parse_engine(text: str | EngineChoice) -> EngineChoice:
    """`name` or `transformers==<release>` (an EngineChoice passes through, so the CLI parses once);
    the transformers release defaults to the newest modelled (transformers_releases)."""
    from sizer.errors import UsageError

    if isinstance(text, EngineChoice):
        return text
    name, pinned, version = text.strip().partition("==")
    name = name.strip().lower()
    if name in PROFILES:
        return _profile_choice(text, name, version.strip() if pinned else None)
    if name in MLX_ENGINES:
        if pinned:
            raise UsageError(f"--engine {text}: mlx-lm is modelled at one release (docs/reference/mlx.md)")
        return EngineChoice("mlx", profile=name)
    if name not in ENGINES:
        raise UsageError(f"unknown engine {text!r} (known: {', '.join(ENGINES + PROFILES + MLX_ENGINES)}; "
                         "transformers==<release> "
                         f"for one of {modelled_text()})")
    if name == "vllm":
        return EngineChoice(name, vllm=release_for(version.strip() if pinned else None),
                            vllm_version=version.strip() if pinned else None)
    if name == "sglang":
        return EngineChoice(name, sglang=sglang_release(version.strip() if pinned else None),
                            sglang_version=version.strip() if pinned else None)
    if not pinned:
        return EngineChoice(name, NEWEST if name == "transformers" else None)
    if name != "transformers":
        raise UsageError(f"--engine {text}: transformers, vLLM and SGLang are modelled per release "
                         f"(transformers=={release_text(NEWEST)}, vllm=={VLLM_NEWEST.last}, "
                         f"sglang=={SGLANG_NEWEST.last}), {name} is not")
    try:
        release = parse_release(version)
    except ValueError:
        raise UsageError(f"--engine {text}: {version!r} is not a transformers release") from None
    if release not in MODELLED:
        raise UsageError(f"--engine {text}: sizer models transformers {modelled_text()}")
    return EngineChoice(name, release)


PROFILES = ("ollama", "lmstudio")     # llama.cpp as Ollama / LM Studio configure it (sizer.plan.ollama, lmstudio)
MLX_ENGINES = ("mlx", "lmstudio-mlx")  # mlx-lm on a Mac: mlx_lm.server, or LM Studio's MLX runtime (sizer.plan.mlx)


def _profile_choice(text: str, name: str, version: str | None) -> EngineChoice:
    from sizer.errors import UsageError

    if name == "ollama":
        from sizer.plan.ollama import ollama_release

        ollama_release(version)                      # refuses a release outside the modelled ranges
        return EngineChoice("llamacpp", profile=name, profile_version=version)
    if version:
        raise UsageError(f"--engine {text}: LM Studio is modelled by its load settings, not per release")
    return EngineChoice("llamacpp", profile=name)


def engine_spec(spec: ModelSpec, choice: EngineChoice) -> ModelSpec:
    """The model as the engine runs it (transformers: as its modelled release loads it)."""
    return spec_for_release(spec, choice.release) if choice.release else spec


def make_engine(name: str, **options):
    from sizer.errors import UsageError

    if name == "transformers":
        from sizer.calc.calibration import resolve

        chosen = {k: v for k, v in options.items() if k in ("attention", "logits", "offload", "host_ram_bytes")}
        return TransformersEngine(**chosen, calibration=resolve(options.get("calibration")))
    if name == "vllm":
        chosen = {k: v for k, v in options.items()
                  if k in ("gpu_memory_utilization", "max_num_batched_tokens", "max_num_seqs", "release", "enforce_eager",
                           "lora")}
        if options.get("calibration") is not None:
            from sizer.calc.calibration import resolve

            chosen["calibration"] = resolve(options["calibration"]).vllm
        return VllmEngine(**chosen)
    if name == "sglang":
        return SglangEngine(**{k: v for k, v in options.items()
                               if k in ("release", "mem_fraction_static", "chunked_prefill_size", "page_size",
                                        "max_running_requests")})
    if name == "llamacpp":
        chosen = {k: v for k, v in options.items() if k in ("flash_attention", "device_capacities", "host_ram_bytes",
                                                             "cpu_only", "unified_memory", "layers_margin_bytes")}
        if isinstance(chosen.get("flash_attention"), str):
            chosen["flash_attention"] = chosen["flash_attention"] != "off"
        if options.get("llamacpp_settings"):
            chosen["settings"] = settings_from_flags(options["llamacpp_settings"])
        if options.get("n_gpu_layers") is not None:       # Ollama's num_gpu, LM Studio's offload
            chosen["settings"] = replace(chosen.get("settings", LlamaCppSettings()), n_gpu_layers=options["n_gpu_layers"],
                                         n_gpu_layers_set=True)
        if chosen.get("cpu_only"):
            chosen["settings"] = replace(chosen.get("settings", LlamaCppSettings()), n_gpu_layers=0)
        return LlamaCppEngine(**chosen)
    if name in MLX_ENGINES:
        raise UsageError(f"--engine {name} is planned by sizer.plan.mlx.plan_mlx (the command line: sizer fit MODEL "
                         f"--engine {name}); fit() and the engine profiles do not take it yet")
    raise UsageError(f"unknown engine {name!r} (known: {', '.join(ENGINES)})")
