"""Orchestration of `sizer measure`: which weights, which device, one load per precision, every point."""

from __future__ import annotations

import gc
from datetime import datetime, timezone
from itertools import product
from pathlib import Path
from typing import Callable

from sizer.calc.transformers_releases import outside_note
from sizer.calc.calibration import resolve
from sizer.errors import UsageError
from sizer.measure.records import Record
from sizer.spec import check_context_length


def _weights_folder(weights: str | None, default: Path | None) -> Path | None:
    if weights is None:
        return default
    if weights == "synthetic":
        return None
    folder = Path(weights).expanduser()
    if not folder.is_dir() or not any(folder.glob("*.safetensors")):
        raise UsageError(f"--weights {weights}: not a folder of *.safetensors files (or 'synthetic')")
    return folder


def _oom_record(spec, precision, ctx, batch, new_tokens, device, attention, cal, kernel, torch) -> Record:
    """A point that ran out of memory while loading: the prediction, and a measured does-not-fit."""
    import transformers

    from sizer.env.hardware import cpu_name
    from sizer.measure.predict import predict

    pred = predict(spec, precision, ctx, batch, device, attention, cal, kernel)
    return Record(spec.name, spec.family, precision, pred["kv_dtype"], ctx, batch, new_tokens, attention, device, "", "",
                  torch.__version__, transformers.__version__, "does-not-fit", pred["weights"], None, None, pred["kv"],
                  None, pred["activations"], pred["peak"], None, None, None, pred["process"], None, None, None, None,
                  cpu_name(), datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), kernel)


def predicted_decode_tokens_per_s(spec, precision, ctx, batch, cal) -> float | None:
    """sizer's decode roofline for the GPU this process runs on (None if the catalog lacks it)."""
    from sizer.catalog import get_gpu
    from sizer.env.hardware import nvml_process_memory
    from sizer.env.torch_runtime import cuda_device_uuid
    from sizer.plan.engines import TransformersEngine
    from sizer.plan.placement import Placement
    from sizer.plan.stages import build_stages
    from sizer.plan.throughput import estimate_throughput
    from sizer.quant import get_precision
    from sizer.spec import Workload

    _, name, _ = nvml_process_memory(cuda_device_uuid())
    try:
        gpu = get_gpu(name)
    except UsageError:
        return None
    fmt = get_precision(precision)
    stages = build_stages(spec, fmt, Placement(1, 1), "bf16")
    tput = estimate_throughput(spec, stages, Placement(1, 1), gpu, fmt, TransformersEngine(calibration=cal),
                               Workload(ctx, batch))
    return tput.decode_tokens_per_s


DEFAULT_CONTEXT_LENGTH = 1024     # prompt tokens when none are given (the model's maximum when smaller)


def run_measure(model: str, precisions: list[str] | None, contexts: list[int] | None, batches: list[int],
                new_tokens: int, device: str | None, weights: str | None, attention: str, force: bool, calibration,
                progress: Callable[[str], None] = lambda text: None, gptq_kernel: str = "reference",
                allow_long_context: bool = False) -> list[Record]:
    """Measure every (precision, context, batch) point of `model`; a context beyond the model's maximum
    follows estimate's and fit's rule (sizer.spec.check_context_length)."""
    from sizer.inputs.resolve import get_config, get_model
    from sizer.env.torch_runtime import check_device, require_torch
    from sizer.measure.load import bnb_kernel, is_gptq, load
    from sizer.measure.point import measure_point
    from sizer.measure.predict import refuse_if_too_large

    torch = require_torch("sizer measure")
    import transformers

    outside = outside_note(transformers.__version__)
    if outside:
        progress(outside)
    spec = get_model(model)
    contexts = contexts or [min(DEFAULT_CONTEXT_LENGTH, spec.max_context_length or DEFAULT_CONTEXT_LENGTH)]
    long_note = check_context_length(spec, max(contexts), allow_long_context)
    if long_note:
        progress(long_note)
    stored = spec.checkpoint.quantization if spec.checkpoint else None
    precisions = precisions or [stored if stored and is_gptq(stored) else "bf16"]
    config, default_folder = get_config(model)
    folder = _weights_folder(weights, default_folder)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    available = check_device(device, "sizer measure")
    cal = resolve(calibration)
    points = list(product(contexts, batches))
    total, done, records = len(points) * len(precisions), 0, []
    if gptq_kernel != "reference" and not all(is_gptq(p) for p in precisions):
        raise UsageError(f"--gptq-kernel {gptq_kernel} applies to GPTQ checkpoints (gptq-<b>bit-g<G> precisions)")
    for precision in precisions:
        kernel = gptq_kernel if is_gptq(precision) else bnb_kernel(precision, device)
        if not force:
            refuse_if_too_large(spec, precision, max(contexts), max(batches), device, attention, available, cal, kernel)
        progress(f"loading {spec.name} at {precision} on {device} ({folder or 'synthetic weights'})")
        try:
            loaded = load(spec, config, folder, precision, device, attention, kernel)
        except (torch.OutOfMemoryError, MemoryError):
            records += [_oom_record(spec, precision, c, b, new_tokens, device, attention, cal, kernel, torch)
                        for c, b in points]
            done += len(points)
            release_device_memory(torch, device)
            continue
        progress(f"loaded in {loaded.load_s:.1f} s" + (" (eager attention: the family has no SDPA path)"
                                                        if loaded.attention != attention else ""))
        for ctx, batch in points:
            done += 1
            progress(f"[{done}/{total}] {precision}, {batch} x {ctx:,} tokens, {new_tokens} new")
            record = measure_point(loaded, ctx, batch, new_tokens, cal)
            if device == "cuda" and record.status == "ok":
                record.predicted_decode_tokens_per_s = predicted_decode_tokens_per_s(spec, precision, ctx, batch, cal)
            records.append(record)
        del loaded
        release_device_memory(torch, device)
    return records


def release_device_memory(torch, device: str) -> None:
    """Free what a finished load left behind (and CUDA's cached blocks) before the next one."""
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
