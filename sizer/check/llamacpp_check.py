"""`sizer check LOGFILE` for llama.cpp: the buffers a startup log prints, beside sizer's plan of the same run.

The model's shape comes from the loader's summary in the log (print_info / llm_load_print_meta) or,
where the log does not hold it, from a model sizer knows (--model); the settings (n_ctx, n_ubatch,
flash attention, slots, KV types, offloaded layers, pipeline copies) from the context lines. Each
buffer is compared per device: model, KV and compute buffers on every GPU and in host memory, the
output buffer. Model buffers are predicted only with --model (the log does not list its tensors).
"""

from __future__ import annotations

import re

from sizer.check.compare import CheckResult, CheckRow
from sizer.check.llamacpp_log import LlamaCppLog
from sizer.errors import SizerError, UsageError
from sizer.plan.llamacpp import (HOST, LlamaCppPlan, LlamaCppSettings, LlamaModel, model_from_spec, plan_llamacpp)
from sizer.plan.llamacpp_graph import GraphShape

GPU_BUFFER = re.compile(r"^(?:CUDA|ROCm|Vulkan|SYCL|Metal|MTL|OpenCL|CANN|MUSA|RPC\[.*\])(?P<index>\d*)$")
# builds up to this one count -ngl from the last repeating layer (the output head last); later ones
# give the output head to the GPU first (llama_model::load_tensors, i_gpu_start)
LAST_OUTPUT_LAST_BUILD = 4581
ARCH_GRAPHS = {"gptneox": "gptneox", "bert": "bert", "nomic-bert": "bert", "jina-bert-v2": "bert"}


def is_llamacpp_log(log: LlamaCppLog) -> bool:
    return bool(log.model_info or log.compute_buffer_bytes or log.kv_buffer_bytes or log.model_buffer_bytes)


def gpu_index(buffer: str) -> int | None:
    """CUDA0 -> 0, Metal -> 0, Vulkan1 -> 1; None for host buffers (CPU, CPU_Mapped, CUDA_Host, ...)."""
    m = GPU_BUFFER.match(buffer)
    return None if m is None else int(m["index"] or 0)


def _device_count(log: LlamaCppLog) -> int:
    indices = {gpu_index(b) for table in (log.model_buffer_bytes, log.kv_buffer_bytes, log.compute_buffer_bytes)
               for b in table}
    indices.discard(None)
    return max(indices) + 1 if indices else 0


def shape_from_log(log: LlamaCppLog) -> LlamaModel | None:
    """The model as the loader's summary describes it (None when the log lacks those lines)."""
    info = log.model_info
    need = ("n_layer", "n_embd", "n_head", "n_vocab")
    if not all(isinstance(info.get(k), int) for k in need):
        return None
    n_head = info["n_head"]
    n_head_kv = info.get("n_head_kv") if isinstance(info.get("n_head_kv"), int) else n_head
    head_k = info.get("n_embd_head_k") or info["n_embd"] // n_head
    head_v = info.get("n_embd_head_v") or head_k
    arch = str(info.get("arch", "llama"))
    n_expert = info.get("n_expert") or 0
    shape = GraphShape(ARCH_GRAPHS.get(arch, "llama"), info["n_layer"], info["n_embd"], n_head, n_head_kv, head_k,
                       head_v, info["n_vocab"], int(info.get("n_ff") or 0), n_expert, info.get("n_expert_used") or 0,
                       int(info.get("n_ff") or 0) if n_expert else 0,
                       causal=ARCH_GRAPHS.get(arch) != "bert", has_output=ARCH_GRAPHS.get(arch) != "bert")
    k = info.get("n_embd_k_gqa") or n_head_kv * head_k
    v = info.get("n_embd_v_gqa") or n_head_kv * head_v
    return LlamaModel(shape, ((k, v),) * shape.n_layer, (None,) * shape.n_layer)


def settings_from_log(log: LlamaCppLog, model: LlamaModel, overrides: dict | None = None) -> LlamaCppSettings:
    """llama.cpp's settings as the log prints them; `overrides` (a record's settings) fill what it does not."""
    s = {**{k: v for k, v in (overrides or {}).items() if v is not None}, **log.settings}
    n_ctx = s.get("n_ctx") or s.get("kv_size")
    if not n_ctx:
        raise UsageError("the log prints no n_ctx (nor kv_size): give the launch line, e.g. --command \"llama-server -m M.gguf -c 8192\"")
    n_batch = int(s.get("n_batch") or 512)
    n_layer = model.shape.n_layer
    ngl = log.offloaded_layers if log.offloaded_layers is not None else s.get("n_gpu_layers")
    ngl = n_layer + 1 if ngl is None else int(ngl)
    output_first = log.build_number is None or log.build_number > LAST_OUTPUT_LAST_BUILD
    if not output_first and log.offloaded_layers is not None and log.offloaded_layers > n_layer:
        ngl = n_layer + 1
    return LlamaCppSettings(
        n_ctx=int(n_ctx), n_batch=n_batch, n_ubatch=int(s.get("n_ubatch") or n_batch),
        n_gpu_layers=ngl, flash_attn="on" if s.get("flash_attn") is True else "off",
        n_seq_max=int(s.get("n_seq_max") or 1), type_k=str(s.get("type_k") or "f16"),
        type_v=str(s.get("type_v") or "f16"), kv_offload=bool(s.get("kv_offload", True)),
        output_first=output_first, pipeline_copies=log.pipeline_copies or 1,
        tensor_split=tuple(float(x) for x in str(s["tensor_split"]).split(",")) if s.get("tensor_split") else ())


def _host_total(table: dict[str, int]) -> int | None:
    host = [v for b, v in table.items() if gpu_index(b) is None]
    return sum(host) if host else None


def compare_rows(log: LlamaCppLog, plan: LlamaCppPlan, weights_known: bool) -> list[CheckRow]:
    """Predicted vs measured per buffer and device (only what the log prints)."""
    rows = []
    tables = (("model_buffer", log.model_buffer_bytes, "weights"), ("kv_buffer", log.kv_buffer_bytes, "kv_cache"),
              ("compute_buffer", log.compute_buffer_bytes, "compute"))
    for component, table, attr in tables:
        if component == "model_buffer" and not weights_known:
            continue
        for buffer, measured in sorted(table.items()):
            index = gpu_index(buffer)
            if index is not None and index < len(plan.devices):
                rows.append(CheckRow(f"{component} {buffer}", getattr(plan.devices[index], attr), measured, "bytes"))
        host = _host_total(table)
        if host is not None:
            rows.append(CheckRow(f"{component} host", getattr(plan.host, attr), host, "bytes"))
    if log.output_buffer_bytes:
        rows.append(CheckRow("output_buffer", plan.host.output, sum(log.output_buffer_bytes.values()), "bytes"))
    return rows


def check_llamacpp_log(log: LlamaCppLog, origin: str, model=None, precision: str | None = None,
                       overrides: dict | None = None) -> CheckResult:
    """Plan the run a llama.cpp log describes and compare each buffer. model: a MODEL reference or
    ModelSpec for logs without the loader's summary (and for model buffers); precision: its GGUF type."""
    spec = None
    if model is not None:
        from sizer.inputs.resolve import get_model

        spec = get_model(model) if isinstance(model, str) else model
    from_log = shape_from_log(log)
    resolved = None
    if spec is not None:
        resolved = _gguf_precision(spec, precision or log.file_type)
        modelled = model_from_spec(spec, resolved)
        if from_log is not None and from_log.shape.n_layer != modelled.shape.n_layer:
            raise UsageError(f"--model {spec.name}: {modelled.shape.n_layer} layers, the log's model has "
                             f"{from_log.shape.n_layer}")
    elif from_log is not None:
        modelled = from_log
    else:
        raise UsageError(f"{origin}: the log does not hold the model loader's summary (print_info lines); "
                         "name the model with --model")
    settings = settings_from_log(log, modelled, overrides)
    n_devices = _device_count(log)
    free = tuple(log.device_free_bytes[k] for k in sorted(log.device_free_bytes)) if len(log.device_free_bytes) == n_devices else ()
    plan = plan_llamacpp(modelled, settings, n_devices, settings.n_ctx, free)
    rows = compare_rows(log, plan, modelled.weights is not None)
    notes = []
    if modelled.weights is None and spec is None:
        notes.append("model buffers not predicted: the log does not list its tensors' types (give --model)")
    elif modelled.weights is None:
        notes.append("model buffers not predicted: the log does not print its GGUF file type")
    if not settings.output_first:
        notes.append(f"build {log.build_number}: -ngl counts the output head last (builds up to {LAST_OUTPUT_LAST_BUILD})")
    version = f"b{log.build_number}" if log.build_number else ""
    name = spec.name if spec is not None else str(log.model_info.get("general.name") or log.model_info.get("arch") or "?")
    gpu = ", ".join(log.gpu_names) or ("CPU" if n_devices == 0 else f"{n_devices} GPU(s)")
    return CheckResult(origin, "llamacpp", version, "llama.cpp", name, gpu, 1, max(1, n_devices), settings.n_ctx,
                       str(resolved.name if resolved is not None else log.file_type or "-"), tuple(rows), tuple(notes))


def _gguf_precision(spec, file_type: str | None):
    """The GGUF type the log prints ("Q4_K - Medium", "Q4_0", "F16") as sizer's precision."""
    from sizer.quant import resolve_precision

    text = (file_type or "").upper().replace(" - MEDIUM", "_M").replace(" - SMALL", "_S").replace(" - LARGE", "_L")
    text = text.replace("MOSTLY ", "").replace(" (GUESSED)", "").strip()
    name = {"F16": "fp16", "BF16": "bf16", "ALL F32": "fp32", "F32": "fp32"}.get(text, text or None)
    if name is None:
        return None
    try:
        return resolve_precision(spec, name)
    except SizerError:
        return None


__all__ = ["HOST", "check_llamacpp_log", "compare_rows", "is_llamacpp_log", "settings_from_log", "shape_from_log"]
