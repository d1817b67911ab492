"""`sizer check LOGFILE`: sizer's plan beside what a vLLM or SGLang startup log measured.

The log gives the engine, its release, the model, the settings and the measured numbers
(sizer.check.logs); sizer plans the same launch (the release's own accounting, the log's GPU memory
where it prints it) and prints each component predicted vs measured. The KV arithmetic is also
checked alone: the tokens sizer derives from the KV memory the log reports, against the log's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sizer.check.logs import EngineLog, with_settings
from sizer.errors import SizerError, UsageError
from sizer.plan.engine_args import DTYPES, KV_DTYPES
from sizer.plan.load_buffers import lora_slots
from sizer.plan.releases import version_tuple
from sizer.plan.vllm_releases import V0_ENGINE_OF_V1_RELEASES, bitsandbytes_format
from sizer.quant import get_precision
from sizer.spec import Workload
from sizer.units import fmt_gib

# (sizer's engine value, the log's measured quantity, unit) per engine
VLLM_ROWS = (("weights", "weights_bytes", "bytes"), ("activation_peak", "activation_peak_bytes", "bytes"),
             ("non_torch", "non_torch_bytes", "bytes"), ("cuda_graphs", "cuda_graph_bytes", "bytes"),
             ("available_kv_cache", "kv_cache_bytes", "bytes"), ("num_gpu_blocks", "num_gpu_blocks", "blocks"),
             ("gpu_kv_cache_tokens", "kv_tokens", "tokens"), ("max_concurrency", "max_concurrency", "x"))
SGLANG_ROWS = (("weights", "weights_bytes", "bytes"), ("kv_cache", "kv_bytes", "bytes"),
               ("max_total_num_tokens", "max_total_num_tokens", "tokens"),
               ("max_running_requests", "max_running_requests", "requests"))


@dataclass(frozen=True)
class CheckRow:
    component: str
    predicted: float | None
    measured: float | None
    unit: str

    @property
    def error(self) -> float | None:
        """(predicted - measured) / measured; None where either is missing or the measurement is 0."""
        if self.predicted is None or not self.measured:
            return None
        return (self.predicted - self.measured) / self.measured


@dataclass(frozen=True)
class CheckResult:
    origin: str
    engine: str
    version: str               # the release the log names ("" if none)
    modelled: str              # the release range sizer applied
    model: str
    gpu: str
    tensor_parallel: int
    pipeline_parallel: int
    context_length: int
    precision: str
    rows: tuple[CheckRow, ...]
    notes: tuple[str, ...] = ()


def check_log(log: EngineLog, model=None, gpus: str | None = None, engine: str | None = None,
              calibration=None, settings: dict | None = None) -> CheckResult:
    """Plan the launch `log` describes and compare. model: a MODEL reference or a ModelSpec (default:
    the log's model); gpus: the GPU kind when the log does not print its memory; engine: NAME==VERSION
    when the log does not say its release (SGLang never does); calibration: a file or Calibration whose
    vLLM constants to predict with (sizer calibrate); settings: launch settings the log does not print
    (vLLM's names, e.g. max_lora_rank from the launch command), below what the log says."""
    from sizer.inputs.resolve import get_model

    if settings:
        log = with_settings(log, settings, "the launch settings")
    name = model if model is not None else log.model
    if name is None:
        raise UsageError(f"{log.origin}: the log names no model; pass it with --model")
    spec = get_model(name) if isinstance(name, str) else name
    choice, notes = _engine_choice(log, engine)
    gpu, gpu_note = _gpu(log, gpus)
    notes += gpu_note
    tp, pp = int(log.settings.get("tensor_parallel_size") or 1), int(log.settings.get("pipeline_parallel_size") or 1)
    context = int(log.settings.get("max_model_len") or log.measured.get("max_concurrency_tokens")
                  or log.measured.get("context_len") or spec.max_context_length or 8192)
    precision = _precision(log, spec, choice)
    ev, modelled = _evaluate(log, choice, spec, gpu, tp, pp, context, precision, calibration)
    rows = _rows(log, ev.engine_values)
    return CheckResult(log.origin, log.engine, log.version or choice.version, modelled, spec.name, gpu.name, tp, pp, context,
                       getattr(precision, "name", precision), rows, tuple(notes) + log.notes)


def _engine_choice(log: EngineLog, engine: str | None):
    from sizer.plan.engines import parse_engine

    if engine:
        choice = parse_engine(engine)
        if choice.name != log.engine:
            raise UsageError(f"--engine {engine}: the log is {log.engine}'s")
        return choice, []
    if log.version and log.engine == "vllm" and _v0_lines(log):
        release = parse_engine(f"vllm=={log.version}")
        if release.vllm.engine == "V1":         # 0.8-0.10 still had V0 (VLLM_USE_V1=0): the log's lines say which
            choice = replace(release, vllm=V0_ENGINE_OF_V1_RELEASES)
            return choice, [f"the log's lines are V0's (VLLM_USE_V1=0): vLLM {log.version}'s V0 engine, modelled as "
                            "0.6.5-0.7.3 with the LoRA slots among the weights"]
    if log.version:
        try:
            return parse_engine(f"{log.engine}=={log.version}"), []
        except UsageError as e:
            return parse_engine(log.engine), [f"{e}; the newest modelled release is applied"]
    return parse_engine(log.engine), ["the log does not say its release: the newest modelled is applied"]


def _v0_lines(log: EngineLog) -> bool:
    """V0 prints "# GPU blocks: N, # CPU blocks: M" and its profiling summary; V1 neither."""
    return "num_cpu_blocks" in log.measured or ("non_torch_bytes" in log.measured and "kv_tokens" not in log.measured)


def _gpu(log: EngineLog, gpus: str | None):
    """The GPU: a catalog kind (--gpus), with the total memory the log prints where it does."""
    from sizer.gpuspec import generic_gpu, parse_gpus

    total = log.measured.get("total_gpu_memory_bytes") or _sglang_total(log)
    if gpus:
        gpu = parse_gpus(gpus).gpu
    elif total:
        gpu = replace(generic_gpu(total / 2**30), name=f"GPU of {fmt_gib(int(total))} GiB (the log's)")
    else:
        raise UsageError(f"{log.origin}: the log does not print the GPU's memory; name the GPU with --gpus "
                         "(e.g. --gpus H100)")
    if total:
        return replace(gpu, cuda_memory_bytes=int(total), memory_bytes=max(gpu.memory_bytes, int(total))), []
    return gpu, [f"GPU memory: the catalog's {gpu.name} (the log does not print it)"]


def _sglang_total(log: EngineLog) -> int | None:
    """SGLang prints the free memory before the weights ("Load weight begin. avail mem"; a log cut after
    it still says "Load weight end. avail mem=A GB, mem usage=W GB", W being that free memory less A,
    each to 0.01 GB): the GPU whose pool sizer computes from it is that plus what sizer sets aside
    before it (sizer.plan.sglang). A desktop GPU's display or another process shows here."""
    from sizer.calc.overhead import CUDA_CONTEXT_BYTES
    from sizer.plan.sglang import NCCL_BYTES

    m = log.measured
    free = m.get("avail_before_load_bytes")
    if not free and m.get("avail_after_load_bytes") and m.get("weights_bytes"):
        free = m["avail_after_load_bytes"] + m["weights_bytes"]
    if log.engine != "sglang" or not free:
        return None
    ranks = int(log.settings.get("tensor_parallel_size") or 1) * int(log.settings.get("pipeline_parallel_size") or 1)
    return free + CUDA_CONTEXT_BYTES + (NCCL_BYTES if ranks > 1 else 0)


def _precision(log: EngineLog, spec, choice):
    """The checkpoint as stored, or what --quantization fp8 / bitsandbytes / --dtype make of a 16-bit one
    (a precision name, or a format object where the log says more than a name holds)."""
    quantization = log.settings.get("quantization")
    stored = spec.checkpoint is not None or (spec.native_precision not in (None, "bf16", "fp16", "fp32"))
    native = str(spec.native_precision or "")
    if spec.checkpoint is None and native in BNB_4BIT_NAMES and log.engine == "vllm":     # quantized ahead
        return get_precision(bitsandbytes_format(version_tuple(choice.version), (native[:3], native.endswith("-dq"))))
    if stored:
        return spec.native_precision
    if quantization == "fp8":
        return "fp8"
    if quantization == "bitsandbytes":
        return _bitsandbytes_format(log, choice)
    return DTYPES.get(str(log.settings.get("dtype") or "").lower()) or spec.native_precision or "bf16"


# vLLM's BitsAndBytesConfig.from_config defaults, what it is made with when the checkpoint has no
# quantization_config (layers/quantization/bitsandbytes.py@v0.8.2: quant type "fp4", no double quant)
BNB_CONFIG_DEFAULTS = ("fp4", False, ())
BNB_4BIT_NAMES = ("nf4", "nf4-dq", "fp4", "fp4-dq")


def _bitsandbytes_format(log: EngineLog, choice):
    """The 4-bit format vLLM's loader leaves on the GPU (sizer.plan.vllm_releases.bitsandbytes_format):
    as the checkpoint's quantization_config says where the log prints it (Unsloth's "Bitsandbytes config
    using kwargs" line, with the decoder modules the checkpoint keeps 16-bit, which Unsloth's
    is_layer_skipped_bnb honours by prefix), else quantized while loading."""
    s = log.settings
    kept = tuple(m for m in s.get("llm_int8_skip_modules") or () if "layers." in str(m))
    printed = (s.get("bnb_4bit_quant_type"), bool(s.get("bnb_4bit_use_double_quant")), kept)
    stored = None if printed[0] is None or printed == BNB_CONFIG_DEFAULTS else printed[:2]
    fmt = get_precision(bitsandbytes_format(version_tuple(choice.version), stored))
    return replace(fmt, kept_modules=kept) if kept else fmt


def _evaluate(log: EngineLog, choice, spec, gpu, tp: int, pp: int, context: int, precision, calibration):
    from sizer.plan.engines import engine_spec, make_engine
    from sizer.plan.fit import Planner
    from sizer.plan.placement import Placement
    from sizer.quant import resolve_precision

    s = log.settings
    options = {"vllm": {"gpu_memory_utilization": s.get("gpu_memory_utilization"),
                        "max_num_seqs": s.get("max_num_seqs"), "max_num_batched_tokens": s.get("max_num_batched_tokens"),
                        "enforce_eager": bool(s.get("enforce_eager"))},
               "sglang": {"mem_fraction_static": s.get("mem_fraction_static"),
                          "chunked_prefill_size": s.get("chunked_prefill_size"),
                          "page_size": s.get("page_size") or 1,
                          "max_running_requests": s.get("max_running_requests")}}[log.engine]
    if calibration is not None and log.engine == "vllm":
        options["calibration"] = calibration
    if log.engine == "vllm" and s.get("enable_lora"):
        options["lora"] = lora_slots(s)
    engine = make_engine(log.engine, **{k: v for k, v in options.items() if v is not None}, **choice.engine_options)
    kv_dtype = KV_DTYPES.get(str(s.get("kv_cache_dtype") or "").lower()) or "bf16"
    spec = engine_spec(spec, choice)
    planner = Planner(spec, gpu, engine, kv_dtype, tp, pp)
    try:
        ev = planner.evaluate(resolve_precision(spec, precision), Placement(tp, pp), Workload(context, 1))
    except SizerError as e:
        raise UsageError(f"{log.origin}: sizer cannot plan this launch ({e})") from None
    return ev, engine.release.name


def _rows(log: EngineLog, values: dict) -> tuple[CheckRow, ...]:
    measured = dict(log.measured)
    if "weights_bytes" not in measured and {"avail_before_load_bytes", "avail_after_load_bytes"} <= set(measured):
        measured["weights_bytes"] = measured["avail_before_load_bytes"] - measured["avail_after_load_bytes"]
    if "activation_peak_bytes" not in measured and {"peak_torch_memory_bytes", "weights_bytes"} <= set(measured):
        # 0.6.4 prints torch's allocated peak since the weights loaded, the weights included
        # (docs/reference/vllm-versions-v0.md, section 1 B): the activation peak is the rest
        measured["activation_peak_bytes"] = measured["peak_torch_memory_bytes"] - measured["weights_bytes"]
    if "kv_k_bytes" in measured and "kv_v_bytes" in measured:
        measured["kv_bytes"] = measured["kv_k_bytes"] + measured["kv_v_bytes"]
    rows = VLLM_ROWS if log.engine == "vllm" else SGLANG_ROWS
    return tuple(CheckRow(mine, values.get(mine), measured[theirs], unit) for mine, theirs, unit in rows
                 if theirs in measured)
