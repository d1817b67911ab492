"""One measured point: prefill random prompts, decode greedily as generate() does, and record the
measured bytes and speed beside sizer's prediction.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import time
from datetime import datetime, timezone

from sizer.calc.calibration import Calibration, resolve
from sizer.env.hardware import cpu_name, nvml_process_memory
from sizer.env.torch_runtime import cuda_device_uuid, require_torch
from sizer.measure.count import cache_bytes
from sizer.measure.load import Loaded
from sizer.measure.meter import CpuTrace, Peak
from sizer.measure.predict import predict
from sizer.measure.records import Record


def measure_point(loaded: Loaded, context_length: int, batch_size: int, new_tokens: int,
                  calibration: Calibration | None = None) -> Record:
    """Prefill `batch_size` random prompts of `context_length` tokens, then `new_tokens` decode steps."""
    torch = require_torch("sizer measure")
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
    trace = CpuTrace() if device == "cpu" else None
    try:
        with torch.inference_mode():
            with trace or contextlib.nullcontext():
                with Peak(device, torch, trace, "prefill") as prefill:
                    inputs = prompt_inputs(model, spec.vocab_size, batch_size, context_length, device, torch)
                    start = time.perf_counter()
                    out = model(**inputs, use_cache=True, logits_to_keep=1)
                    next_ids = next_tokens(out, torch)
                    _sync(torch, device)
                    values["prefill_s"] = time.perf_counter() - start
                cache = output_cache(out)
                values["measured_kv_cache_bytes"] = cache_bytes(cache)
                inputs, out = {**inputs, "input_ids": next_ids}, None
                # CPU: the first step gives the profiled peak; the others, unprofiled, the time and resident set
                profiled = new_tokens if device == "cuda" else min(new_tokens, 1)
                with Peak(device, torch, trace, "decode") as decode:
                    cache, inputs, elapsed = decode_steps(model, inputs, cache, profiled, torch, device)
            timed, decode_resident = profiled, decode.resident
            if new_tokens > profiled:
                with Peak(device, torch) as rest:
                    cache, inputs, elapsed = decode_steps(model, inputs, cache, new_tokens - profiled, torch, device)
                timed, decode_resident = new_tokens - profiled, rest.resident
            values["decode_tokens_per_s"] = timed / elapsed if timed and elapsed > 0 else None
        values.update(_peaks(device, weights, prefill, decode, decode_resident,
                             lambda: nvml_process_memory(uuid)[0] or nvml_before))
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
        transformers_version=transformers.__version__, **_predicted(pred), cpu=cpu_name(),
        date=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), kernel=loaded.kernel, **values)


def _peaks(device: str, weights: int, prefill: Peak, decode: Peak, decode_resident: int | None,
           process_bytes) -> dict:
    """The measured peaks of a point. CUDA: the allocator's peaks and NVML's process figure
    (`process_bytes()`). CPU: above the weights, as CUDA's figures hold them: the prefill's own peak,
    the decode's absolute one, and the resident set's growth."""
    if device == "cuda":
        return {"measured_peak_bytes": prefill.allocated, "measured_decode_peak_bytes": decode.allocated,
                "measured_reserved_bytes": max(prefill.reserved, decode.reserved),
                "measured_process_bytes": process_bytes()}
    return {"measured_peak_bytes": weights + prefill.cpu_peaks()[0],
            "measured_decode_peak_bytes": weights + decode.cpu_peaks()[1],
            "measured_process_bytes": weights + max(prefill.resident, decode_resident)}


def _predicted(pred: dict) -> dict:
    """A prediction (sizer.measure.predict.predict) under the record's column names."""
    return {"predicted_weights_bytes": pred["weights"], "predicted_kv_cache_bytes": pred["kv"],
            "predicted_activation_bytes": pred["activations"], "predicted_peak_bytes": pred["peak"],
            "predicted_decode_peak_bytes": pred["decode_peak"], "predicted_process_bytes": pred["process"],
            "predicted_decode_tokens_per_s": None}


def prompt_inputs(model, vocab_size: int, batch: int, context: int, device: str, torch) -> dict:
    """Random prompts as generate() hands them to the model: ids, an all-ones 2-D attention mask and,
    where the forward takes them, the position ids derived from the mask (cumsum - 1); int64
    [batch, context] each."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(0, vocab_size, (batch, context), generator=generator).to(device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if "position_ids" in inspect.signature(model.forward).parameters:
        inputs["position_ids"] = inputs["attention_mask"].cumsum(-1) - 1
    return inputs


def decode_steps(model, inputs: dict, cache, steps: int, torch, device: str):
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
        cache, inputs["input_ids"] = output_cache(step), next_tokens(step, torch)
    _sync(torch, device)
    return cache, inputs, time.perf_counter() - start


def next_tokens(out, torch):
    """Greedy next tokens [batch, 1] as generate() takes them: the last position's logits copied to
    float32 while the forward's output still holds them, then argmax."""
    logits = out.logits[:, -1, :].to(copy=True, dtype=torch.float32)
    return logits.argmax(-1, keepdim=True)


def output_cache(out):
    """The cache a forward returned (transformers 5.24 renamed past_key_values to cache)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def _sync(torch, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
