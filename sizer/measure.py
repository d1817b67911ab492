"""`sizer measure`: load a model the way users run it, profile memory and speed, compare with sizer.

torch, transformers and bitsandbytes are imported inside the functions here, never at module import,
so the calculator path stays light.

What is measured, per point (model, precision, context length, batch size):
- weights: parameters (each storage once: tied tensors count once) plus the quantization statistics
  bitsandbytes keeps beside them (int8 row scales SCB; 4-bit absmax, code and nested statistics, as
  serialized), counted as loaded, before the first forward (bitsandbytes' CPU backend then repacks
  4-bit weights for its kernel); buffers (rotary tables) are counted beside, not inside;
- KV cache: the bytes of the key and value tensors the cache object holds after the prefill;
- peak: on CUDA, torch's max_memory_allocated during the prefill (and separately the decode), the
  reserved peak, and the process's device memory from NVML (CUDA context included). On CPU, the
  counted weight bytes plus the peak of live tensor bytes torch allocated during the prefill (from
  the profiler's allocation events: deterministic, the CPU analogue of max_memory_allocated; see
  `counted_allocations` and `range_peaks`), and, as the process figure, the weights plus the growth of the resident set (VmHWM, reset through
  /proc/self/clear_refs after malloc_trim), which also holds glibc's and libraries' caching and
  varies by tens of MiB between runs.
- decode peak: absolute on both devices (weights, cache, the step's tensors). On CPU the prefill
  and the first decode step are one profile (`_CpuTrace`): the profiler records no free of a block
  allocated before it began, and each layer's cache update frees the prefill's tensors.
- time: the prefill forward (the last position's logits, as generate() computes them) and
  `new_tokens` greedy decode steps, each next token taken as generate() takes it (a float32 copy of
  the last logits, then argmax). On CPU the decode's peak is profiled on its first step only,
  and the speed and resident set are taken on the other steps, unprofiled: the profiler's event
  buffers grow with every operator (on GPTQ's op-heavy reference path, an 8-layer model of width
  2048 measured 6.1 GiB of resident growth over 16 profiled steps, under 0.2 GiB unprofiled). The
  resident set is read before a profile is processed.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from sizer.calc.estimate import estimate
from sizer.calc.kv import transformers_kv_cache_bytes
from sizer.calc.transformers_releases import spec_for_transformers
from sizer.calibration import Calibration, resolve
from sizer.errors import SizerError, UsageError
from sizer.hardware import cpu_name, nvml_process_memory
from sizer.procmem import release_free_memory, status_bytes
from sizer.quant import get_precision
from sizer.records import Record
from sizer.spec import ModelSpec

FLOAT_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
BNB_PRECISIONS = ("int8", "nf4", "nf4-dq", "fp4", "fp4-dq")
MEASURABLE = tuple(FLOAT_DTYPES) + BNB_PRECISIONS
GPTQ_PREFIX = "gptq-"      # gptq-<b>bit-g<G>: a GPTQ checkpoint folder, run by sizer's QuantLinear


def is_gptq(precision: str) -> bool:
    return precision.startswith(GPTQ_PREFIX)


TORCH_EXTRA = "pip install 'sizer-llm[torch]'"


def require_torch(command: str = "sizer measure"):
    """torch, after checking that the torch extra's packages import; `command` names who needs them."""
    try:
        import accelerate  # noqa: F401  (transformers needs it for device_map)
        import torch
        import transformers  # noqa: F401
    except ImportError as e:
        raise UsageError(f"{command} needs torch, transformers and accelerate ({e.name} is missing): "
                         f"{TORCH_EXTRA}") from None
    return torch


@dataclass
class Loaded:
    model: object
    spec: ModelSpec
    precision: str
    device: str
    source: str          # "synthetic" or the weights folder
    load_s: float
    attention: str       # the implementation in use (eager when the family has no SDPA path)
    weights_bytes: int = 0   # parameters + quantization statistics as loaded (before any forward)
    buffers_bytes: int = 0
    kernel: str = ""         # GPTQ: QuantLinear's path, "reference" or "int4"


# ---------------------------------------------------------------------------------------------
# Loading


def _quantization_config(precision: str, torch):
    from transformers import BitsAndBytesConfig

    if precision == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    kind = precision.split("-")[0]
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=kind, bnb_4bit_compute_dtype=torch.bfloat16,
                              bnb_4bit_use_double_quant=precision.endswith("-dq"))


def _hf_config(config: dict):
    import transformers

    raw = dict(config)
    raw.pop("quantization_config", None)
    if raw.get("model_type") == "gemma3" and "text_config" in raw:   # measure the language model
        raw = {**raw["text_config"], "model_type": "gemma3_text"}
    family = raw.get("model_type")
    try:
        return transformers.AutoConfig.for_model(**raw)
    except (ValueError, KeyError) as e:
        raise UsageError(f"transformers cannot build a {family!r} model from this config ({e})") from None


def load(spec: ModelSpec, config: dict, weights_folder, precision: str, device: str, attention: str,
         kernel: str = "reference") -> Loaded:
    """The model on `device`: real weights from `weights_folder`, else random weights built in place.
    A family without an SDPA path in transformers (Gemma 2) is loaded with eager attention. `kernel`
    is the QuantLinear path of a GPTQ checkpoint (sizer.gptq_load)."""
    if precision not in MEASURABLE and not is_gptq(precision):
        raise UsageError(f"sizer measure supports {', '.join(MEASURABLE)} and GPTQ checkpoints (gptq-<b>bit-g<G>); "
                         f"got {precision!r}")
    import transformers

    spec = spec_for_transformers(spec, transformers.__version__)
    try:
        loaded = _load(spec, config, weights_folder, precision, device, attention, kernel)
    except ValueError as e:
        if attention != "sdpa" or "attention implementation" not in str(e):
            raise
        loaded = _load(spec, config, weights_folder, precision, device, "eager", kernel)
    # Count before the first forward: bitsandbytes' CPU backend then repacks 4-bit weights for its
    # kernel (absmax to bf16, nested statistics dropped) and moves int8 scales into module state.
    loaded.weights_bytes, loaded.buffers_bytes = weight_bytes(loaded.model)
    _warm_up(loaded)
    return loaded


def _warm_up(loaded: Loaded) -> None:
    """One short forward, so lazily created kernels and workspaces are not measured as activations."""
    torch = require_torch()
    with torch.inference_mode():
        loaded.model(input_ids=torch.zeros((1, 8), dtype=torch.long, device=loaded.device), use_cache=True,
                     logits_to_keep=1)
    gc.collect()


def _load(spec: ModelSpec, config: dict, weights_folder, precision: str, device: str, attention: str,
          kernel: str) -> Loaded:
    torch = require_torch()
    import transformers

    start = time.perf_counter()
    hf_config = _hf_config(config)
    dtype = getattr(torch, FLOAT_DTYPES.get(precision, "bfloat16"))
    common = {"dtype": dtype, "attn_implementation": attention}
    if precision in BNB_PRECISIONS:
        common["quantization_config"] = _quantization_config(precision, torch)
    if is_gptq(precision):
        model, source = _load_gptq(spec, weights_folder, precision, device, kernel, torch), str(weights_folder)
    elif weights_folder is not None:
        model = transformers.AutoModelForCausalLM.from_pretrained(weights_folder, device_map=device, **common)
        source = str(weights_folder)
    elif precision in BNB_PRECISIONS:
        # bitsandbytes quantizes while loading: hand from_pretrained a state dict of random bf16
        # weights (held in host memory, never written to disk) and let it quantize them on the way in.
        model_class, state = _random_state_dict(hf_config, spec, device, torch)
        model = model_class.from_pretrained(None, config=hf_config, state_dict=state, device_map=device, **common)
        del state
        source = "synthetic"
    else:
        # Allocate and initialise every tensor directly on the target device.
        with torch.device(device):
            model = transformers.AutoModelForCausalLM.from_config(hf_config, **common)
        source = "synthetic"
    model.eval()
    actual = getattr(model.config, "_attn_implementation", None) or attention
    return Loaded(model, spec, precision, device, source, time.perf_counter() - start,
                  "eager" if actual == "eager" else "sdpa" if actual == "sdpa" else attention,
                  kernel=kernel if is_gptq(precision) else "")


def _random_state_dict(hf_config, spec: ModelSpec, device: str, torch) -> tuple[type, dict]:
    """(model class, random bf16 state dict in host memory) for `hf_config`.

    The weights are drawn on the GPU when their bf16 bytes fit in 90 % of its free memory (on CPU
    cores transformers initialises about 80 M parameters a second on 2 cores, measured on a
    0.49B-parameter Llama: over a minute and a half for an 8B model), then copied to host memory and the GPU emptied before the quantized load;
    otherwise they are drawn on the CPU."""
    import transformers

    build = "cpu"
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        build = "cuda" if spec.params * 2 < 0.9 * free else "cpu"
    with torch.device(build):
        base = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16)
    state = {name: tensor.to("cpu") for name, tensor in base.state_dict().items()}
    model_class = type(base)
    del base
    gc.collect()
    if build == "cuda":
        torch.cuda.empty_cache()
    return model_class, state


def _load_gptq(spec: ModelSpec, weights_folder, precision: str, device: str, kernel: str, torch):
    """A GPTQ checkpoint on sizer's QuantLinear (bfloat16 compute, the `kernel` path), after checking
    it is the one asked for."""
    from sizer.gptq_load import load_gptq

    if weights_folder is None:
        raise UsageError(f"--precision {precision}: sizer measures GPTQ from a checkpoint folder (written by "
                         "`sizer quantize --method gptq`), not from synthetic weights")
    stored = spec.checkpoint.quantization if spec.checkpoint else None
    if stored != precision:
        raise UsageError(f"--precision {precision}: the checkpoint in {weights_folder} is {stored or 'not GPTQ'}")
    return load_gptq(weights_folder, device=device, dtype=torch.bfloat16, kernel=kernel)


# ---------------------------------------------------------------------------------------------
# Counting bytes


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
    params += sum(_quant_state_bytes(m) for m in model.modules())
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


# ---------------------------------------------------------------------------------------------
# Process memory


def _status_bytes(key: str) -> int:
    value = status_bytes(key)
    if value is None:
        raise SizerError(f"/proc/self/status has no {key}")
    return value


def _trim_and_reset_peak() -> int:
    """Give freed memory back to the OS, reset the peak resident set, return the current one."""
    gc.collect()
    release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return _status_bytes("VmRSS")


# Operators that only allocate their output: what is allocated inside one belongs to the operator
# that called it (a kernel's workspace is often an at::empty inside the kernel's operator)
FACTORY_OPERATORS = frozenset(f"aten::{name}" for name in (
    "empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "zeros", "zeros_like",
    "new_zeros", "ones", "ones_like", "new_ones", "full", "full_like", "new_full", "scalar_tensor"))


def counted_allocations(prof, paths: bool = False) -> list[tuple[int, int, str]]:
    """torch's CPU allocation events of a profile, in time order, as (time_ns, bytes, operator
    path) with frees negative, less each operator's own workspaces: a block freed before the
    innermost `aten::` operator that allocated it ends (a factory such as aten::empty stands for its
    caller). Those are the kernels' own buffers: oneDNN's and MKL's packing buffers in a matmul
    (cuBLAS keeps one workspace for the process), the CPU flash attention's per-thread blocks. What
    an operator's sub-operators return and it frees itself counts, as on CUDA, where the same
    composite code runs: softmax's float32 copy of a bf16 input (`softmax(x, dtype=float32)`
    converts first on any device; only CUDA's fp16 has a fused path), SDPA's bool mask converted to
    the compute dtype, the math SDPA's float32 scores. Frees between operators count when they
    happen, also inside a Python-level range such as a custom autograd Function (Bloom's GELU),
    whose temporaries are the model's own. `paths`: name each event's enclosing operators (for
    benchmarks/allocation_timeline.py; "" otherwise)."""
    blocks = []                                      # [time, bytes, ptr, end of the owning operator, path]
    stack = [(node, None, "") for node in prof.profiler.kineto_results.experimental_event_tree()]
    while stack:
        node, owner_end, path = stack.pop()
        if node.name == "[memory]":
            blocks.append((node.start_time_ns, node.extra_fields.alloc_size, node.extra_fields.ptr, owner_end, path))
            continue
        if node.name.startswith("aten::") and node.name not in FACTORY_OPERATORS:
            owner_end = node.end_time_ns
        child_path = f"{path}/{node.name.removeprefix('aten::')}" if paths else ""
        stack.extend((child, owner_end, child_path) for child in node.children)
    blocks.sort(key=lambda b: b[0])
    pending, counted = {}, [True] * len(blocks)      # ptr -> index of its live allocation
    for k, (t, nbytes, ptr, _, _) in enumerate(blocks):
        if nbytes > 0:
            pending[ptr] = k
        elif ptr in pending:
            a = pending.pop(ptr)
            if blocks[a][3] is not None and t <= blocks[a][3]:
                counted[a] = counted[k] = False      # a workspace of the operator that allocated it
    return [(t, nbytes, path) for (t, nbytes, _, _, path), keep in zip(blocks, counted) if keep]


def _profiler_peak(prof) -> int:
    """Peak of live tensor bytes above the start (the CPU analogue of CUDA's max_memory_allocated)
    over `counted_allocations`."""
    live = peak = 0
    for _, nbytes, _ in counted_allocations(prof):
        live += nbytes
        peak = max(peak, live)
    return peak


TRACE_RANGE = "sizer::"


def range_peaks(prof) -> dict[str, tuple[int, int]]:
    """For each `record_function(TRACE_RANGE + label)` range of a profile: (the peak of live tensor
    bytes above the range's start, the peak above the profile's start), over `counted_allocations`."""
    ranges = {node.name.removeprefix(TRACE_RANGE): (node.start_time_ns, node.end_time_ns)
              for node in prof.profiler.kineto_results.experimental_event_tree() if node.name.startswith(TRACE_RANGE)}
    events = counted_allocations(prof)
    out = {}
    for label, (t0, t1) in ranges.items():
        live = sum(nbytes for t, nbytes, _ in events if t < t0)
        base = peak = live
        for t, nbytes, _ in events:
            if t0 <= t <= t1:
                live += nbytes
                peak = max(peak, live)
        out[label] = (peak - base, peak)
    return out


KINETO_QUIET_LEVEL = 99        # above Kineto's highest log level: nothing printed


class _CpuTrace:
    """One profile over a point's prefill and its profiled decode step (CPU), each a named range.
    The profiler records no free of a block allocated before it started ("profiler results will not
    include the deallocation event"), so a decode profiled on its own would miss the frees of the
    prefill's cache tensors that each layer's torch.cat replaces. Traced together, the decode's peak
    is absolute: the weights (allocated before) plus every tensor alive since the prefill began."""

    def __init__(self):
        from torch.profiler import ProfilerActivity, profile

        # Kineto logs "USDT ... profiler_start/stop" to stderr at every profile unless told otherwise
        # (read when the profiler starts; a user's own setting wins)
        os.environ.setdefault("KINETO_LOG_LEVEL", str(KINETO_QUIET_LEVEL))
        self.prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self.peaks: dict[str, tuple[int, int]] = {}

    def __enter__(self):
        self.prof.__enter__()
        return self

    def __exit__(self, *exc):
        self.prof.__exit__(*exc)
        self.peaks = range_peaks(self.prof) if exc[0] is None else {}
        self.prof = None                                                # its events are freed
        return False


class _Peak:
    """Peak memory of a block of work on `device`.

    CUDA: torch's max_memory_allocated / max_memory_reserved (absolute). CPU: a range of `trace`
    (`_CpuTrace`; its peaks are read once the trace ends), and the growth of the resident set
    (VmHWM, relative) as the process figure; without a trace, the resident set alone."""

    def __init__(self, device: str, torch, trace: _CpuTrace | None = None, label: str = ""):
        self.device, self.torch, self.trace, self.label, self.range = device, torch, trace, label, None

    def __enter__(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        else:
            self.start = _trim_and_reset_peak()
            if self.trace is not None:
                self.range = self.torch.profiler.record_function(TRACE_RANGE + self.label)
                self.range.__enter__()
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            self.torch.cuda.synchronize()
            self.allocated = self.torch.cuda.max_memory_allocated()
            self.reserved = self.torch.cuda.max_memory_reserved()
            self.resident = None
        else:
            self.resident = _status_bytes("VmHWM") - self.start   # before the profile is processed
            self.reserved = None
            if self.range is not None:
                self.range.__exit__(*exc)
        return False

    def cpu_peaks(self) -> tuple[int, int]:
        """(the range's peak above its start, above the trace's start); zeros if the trace failed."""
        return self.trace.peaks.get(self.label, (0, 0))


def cuda_device_uuid() -> str | None:
    """The UUID of the GPU torch runs on (NVML finds it by that, whatever CUDA_VISIBLE_DEVICES holds)."""
    torch = require_torch()
    try:
        return str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
    except (AttributeError, RuntimeError, AssertionError):
        return None


# ---------------------------------------------------------------------------------------------
# One point


def predict(spec: ModelSpec, precision: str, context_length: int, batch_size: int, device: str,
            attention: str, calibration: Calibration, kernel: str = "reference") -> dict:
    """sizer's prediction for what `measure_point` measures (transformers' own cache layout). A GPTQ
    model on the int4 kernel holds its weights in that kernel's layout and no dequantized copy."""
    e = estimate(spec, precision, "bf16" if precision not in ("fp16", "fp32") else precision, context_length,
                 batch_size, attention, "last", calibration, kernels=device)
    kv_dtype = e.kv_dtype
    kv = transformers_kv_cache_bytes(spec, kv_dtype, context_length, batch_size)
    kv_storage = transformers_kv_cache_bytes(spec, kv_dtype, context_length, batch_size, storage=True)
    activations = e.activation_bytes          # the same workload, compute dtype and calibration
    weights = e.weights_bytes
    if is_gptq(precision) and kernel == "int4":
        from sizer.gptq_plan import int4_kernel_extra_bytes

        weights += int4_kernel_extra_bytes(spec, get_precision(precision), _gptq_permuted(spec))
    elif is_gptq(precision):
        from sizer.gptq_plan import gptq_reference_workspace_bytes

        activations = max(activations, _mlp_moment_bytes(spec, context_length, batch_size, attention)
                          + gptq_reference_workspace_bytes(spec))
    peak = weights + kv_storage + activations
    decode = weights + _decode_bytes(spec, precision, context_length, batch_size, device, attention, kv_dtype, kernel)
    process = None
    if device == "cuda":
        parts = calibration.overhead_parts(activations, kv)
        peak += parts["cublas_workspace"]
        decode += parts["cublas_workspace"]
        process = peak + parts["cuda_context"] + parts["allocator_slack"]
    return {"weights": weights, "kv": kv, "kv_dtype": kv_dtype, "activations": activations, "peak": peak,
            "decode_peak": decode, "process": process}


def _decode_bytes(spec: ModelSpec, precision: str, context_length: int, batch_size: int, device: str,
                  attention: str, kv_dtype: str, kernel: str) -> int:
    """The first decode step's peak above the weights (cache included; `decode_peak_bytes`); on
    GPTQ's reference path at least the updated cache plus one Linear's dequantization workspace.
    Uncalibrated: `sizer calibrate` fits the prefill's activations."""
    from sizer.calc.activations import decode_peak_bytes, transformers_attention
    from sizer.calc.kv import transformers_decode_cache
    from sizer.quant import bnb_int8_mlp

    fmt = get_precision(precision)
    eager = transformers_attention(spec, attention) == "eager"
    decode = decode_peak_bytes(spec, batch_size, context_length, fmt.compute_bytes, eager, kv_dtype, device,
                               bnb_int8_mlp(spec, fmt.name))
    if is_gptq(precision) and kernel != "int4":
        from sizer.gptq_plan import gptq_reference_workspace_bytes

        after = transformers_decode_cache(spec, kv_dtype, context_length, batch_size).after_bytes
        decode = max(decode, after + gptq_reference_workspace_bytes(spec))
    return decode


def _gptq_permuted(spec: ModelSpec) -> bool:
    """Whether the GPTQ checkpoint behind `spec` scatters its groups (act-order without static
    groups), which gives each Linear an input permutation on the int4 kernel."""
    from pathlib import Path

    from sizer.gptq_load import read_gptq_config

    if spec.checkpoint is None:
        return False
    q = read_gptq_config(Path(spec.checkpoint.path))
    return bool(q.get("desc_act")) and not q.get("static_groups", False)


def _mlp_moment_bytes(spec: ModelSpec, context_length: int, batch_size: int, attention: str) -> int:
    """Activations live when the reference path dequantizes an MLP weight: what lives through the
    forward and the MLP's own peak less the output that Linear has not yet allocated (one [tokens,
    d_ff] tensor)."""
    from sizer.calc.activations import step_peak

    parts = step_peak(spec, batch_size, context_length, context_length, attention == "eager", 1, 2)
    return (parts["residual"] + parts["positions"] + parts["masks"] + parts["mlp"]
            - batch_size * context_length * spec.d_ff * 2)


def measure_point(loaded: Loaded, context_length: int, batch_size: int, new_tokens: int,
                  calibration: Calibration | None = None) -> Record:
    """Prefill `batch_size` random prompts of `context_length` tokens, then `new_tokens` decode steps."""
    torch = require_torch()
    import transformers

    cal = resolve(calibration)
    spec, device, model, attention = loaded.spec, loaded.device, loaded.model, loaded.attention
    pred = predict(spec, loaded.precision, context_length, batch_size, device, attention, cal, loaded.kernel)
    weights, buffers = loaded.weights_bytes, loaded.buffers_bytes
    uuid = cuda_device_uuid() if device == "cuda" else None
    nvml_before, gpu_name, driver = nvml_process_memory(uuid) if device == "cuda" else (None, "", "")
    values = dict(measured_weights_bytes=weights, measured_buffers_bytes=buffers, measured_kv_cache_bytes=None,
                  measured_peak_bytes=None, measured_decode_peak_bytes=None, measured_reserved_bytes=None,
                  measured_process_bytes=None, prefill_s=None, decode_tokens_per_s=None, status="ok")
    out = cache = inputs = None
    trace = _CpuTrace() if device == "cpu" else None
    try:
        with torch.inference_mode():
            with trace or contextlib.nullcontext():
                with _Peak(device, torch, trace, "prefill") as prefill:
                    inputs = _prompt_inputs(model, spec.vocab_size, batch_size, context_length, device, torch)
                    start = time.perf_counter()
                    out = model(**inputs, use_cache=True, logits_to_keep=1)
                    next_ids = _next_tokens(out, torch)
                    _sync(torch, device)
                    values["prefill_s"] = time.perf_counter() - start
                cache = _output_cache(out)
                values["measured_kv_cache_bytes"] = cache_bytes(cache)
                inputs, out = {**inputs, "input_ids": next_ids}, None
                # CPU: the first step gives the profiled peak; the others, unprofiled, the time and resident set
                profiled = new_tokens if device == "cuda" else min(new_tokens, 1)
                with _Peak(device, torch, trace, "decode") as decode:
                    cache, inputs, elapsed = _decode_steps(model, inputs, cache, profiled, torch, device)
            timed, decode_resident = profiled, decode.resident
            if new_tokens > profiled:
                with _Peak(device, torch) as rest:
                    cache, inputs, elapsed = _decode_steps(model, inputs, cache, new_tokens - profiled, torch, device)
                timed, decode_resident = new_tokens - profiled, rest.resident
            values["decode_tokens_per_s"] = timed / elapsed if timed and elapsed > 0 else None
        if device == "cuda":
            values["measured_peak_bytes"] = prefill.allocated
            values["measured_decode_peak_bytes"] = decode.allocated
            values["measured_reserved_bytes"] = max(prefill.reserved, decode.reserved)
            values["measured_process_bytes"] = nvml_process_memory(uuid)[0] or nvml_before
        else:       # above the weights, as CUDA's figures hold them: the prefill's own peak, the decode's absolute
            values["measured_peak_bytes"] = weights + prefill.cpu_peaks()[0]
            values["measured_decode_peak_bytes"] = weights + decode.cpu_peaks()[1]
            values["measured_process_bytes"] = weights + max(prefill.resident, decode_resident)
    except (torch.OutOfMemoryError, MemoryError):
        values["status"] = "does-not-fit"
    finally:
        out = cache = inputs = None
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return Record(
        model=spec.name, family=spec.family, precision=loaded.precision, kv_dtype=pred["kv_dtype"],
        context_length=context_length, batch_size=batch_size, new_tokens=new_tokens, attention=attention,
        device=device, gpu_name=gpu_name, driver=driver, torch_version=torch.__version__,
        transformers_version=transformers.__version__, predicted_weights_bytes=pred["weights"],
        predicted_kv_cache_bytes=pred["kv"], predicted_activation_bytes=pred["activations"],
        predicted_peak_bytes=pred["peak"], predicted_decode_peak_bytes=pred["decode_peak"],
        predicted_process_bytes=pred["process"],
        predicted_decode_tokens_per_s=None, cpu=cpu_name(),
        date=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), kernel=loaded.kernel, **values)


def _prompt_inputs(model, vocab_size: int, batch: int, context: int, device: str, torch) -> dict:
    """Random prompts as generate() hands them to the model: ids, an all-ones 2-D attention mask and,
    where the forward takes them, the position ids derived from the mask (cumsum - 1); int64
    [batch, context] each."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, vocab_size, (batch, context), generator=generator).to(device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if "position_ids" in inspect.signature(model.forward).parameters:
        inputs["position_ids"] = inputs["attention_mask"].cumsum(-1) - 1
    return inputs


def _decode_steps(model, inputs: dict, cache, steps: int, torch, device: str):
    """`steps` greedy decode steps as generate() runs them (the 2-D mask grows by one column, the
    position ids, where taken, move on by one): (cache, the next step's inputs, seconds)."""
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    start = time.perf_counter()
    for _ in range(steps):      # in place: the old mask and position ids are freed before the forward, as in generate()
        mask = inputs.pop("attention_mask")
        inputs["attention_mask"] = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
        del mask
        if "position_ids" in inputs:
            inputs["position_ids"] = inputs["position_ids"][:, -1:] + 1
        step = model(**inputs, use_cache=True, **{cache_arg: cache})
        cache, inputs["input_ids"] = _output_cache(step), _next_tokens(step, torch)
    _sync(torch, device)
    return cache, inputs, time.perf_counter() - start


def _next_tokens(out, torch):
    """Greedy next tokens [batch, 1] as generate() takes them: the last position's logits copied to
    float32 while the forward's output still holds them, then argmax."""
    logits = out.logits[:, -1, :].to(copy=True, dtype=torch.float32)
    return logits.argmax(-1, keepdim=True)


def _output_cache(out):
    """The cache a forward returned (transformers 5.24 renamed past_key_values to cache)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _sync(torch, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# Before loading: is there a device, and does the model fit it?


def check_device(device: str) -> int:
    """Bytes the device can give this process; UsageError when the device is absent."""
    torch = require_torch()
    if device == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here (torch sees none); use --device cpu")
        free, _total = torch.cuda.mem_get_info()
        return free
    if device != "cpu":
        raise UsageError(f"--device must be cpu or cuda, got {device!r}")
    return _meminfo_available()


def _meminfo_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable"):
                return int(line.split()[1]) * 1024
    return 0


def refuse_if_too_large(spec: ModelSpec, precision: str, context_length: int, batch_size: int, device: str,
                        attention: str, available: int, calibration: Calibration, kernel: str = "reference") -> int:
    pred = predict(spec, precision, context_length, batch_size, device, attention, calibration, kernel)
    need = pred["process"] or pred["peak"]
    if need > available:
        raise UsageError(f"{spec.name} at {precision} with {batch_size} x {context_length:,} tokens needs about "
                         f"{need / 2**30:.1f} GiB, but {device} has {available / 2**30:.1f} GiB available "
                         "(sizer's prediction; use --force to try anyway)")
    return need
