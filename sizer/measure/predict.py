"""sizer's prediction for what `sizer measure` measures (transformers' own cache layout), and the
refusal to load a model the device cannot hold.
"""

from __future__ import annotations

from sizer.calc.calibration import Calibration
from sizer.calc.estimate import estimate
from sizer.calc.kv import transformers_kv_cache_bytes
from sizer.errors import UsageError
from sizer.measure.load import BNB_DEQUANTIZE_KERNEL, is_gptq
from sizer.quant import get_precision
from sizer.spec import ModelSpec
from sizer.units import fmt_gib


def predict(spec: ModelSpec, precision: str, context_length: int, batch_size: int, device: str,
            attention: str, calibration: Calibration, kernel: str = "reference") -> dict:
    """sizer's prediction for what `measure_point` measures (transformers' own cache layout). A GPTQ
    model on the int4 kernel holds its weights in that kernel's layout and no dequantized copy.
    `kernel`: GPTQ's QuantLinear path, or for bitsandbytes BNB_DEQUANTIZE_KERNEL where it runs on
    its CPU fallback (sizer.measure.load.bnb_kernel): each Linear's weight dequantized at its product,
    at the prefill and at every decode step."""
    e = estimate(spec, precision, "bf16" if precision not in ("fp16", "fp32") else precision, context_length,
                 batch_size, attention, "last", calibration, kernels=device,
                 allow_long_context=True)      # the command applied the rule (run_measure) before measuring
    kv_dtype = e.kv_dtype
    kv = transformers_kv_cache_bytes(spec, kv_dtype, context_length, batch_size)
    kv_storage = transformers_kv_cache_bytes(spec, kv_dtype, context_length, batch_size, storage=True)
    activations = e.activation_bytes          # the same workload, compute dtype and calibration
    weights = e.weights_bytes
    if is_gptq(precision) and kernel == "int4":
        from sizer.quantize.plan import int4_kernel_extra_bytes

        weights += int4_kernel_extra_bytes(spec, get_precision(precision), _gptq_permuted(spec))
    elif is_gptq(precision):
        from sizer.quantize.plan import gptq_reference_workspace_bytes

        activations = max(activations, _mlp_moment_bytes(spec, context_length, batch_size, attention)
                          + gptq_reference_workspace_bytes(spec))
    dequantized = bnb_dequantized(precision, kernel)
    if dequantized:
        from sizer.calc.activations import peak_of, step_peak

        parts = step_peak(spec, batch_size, context_length, context_length, _eager(spec, attention), 1,
                          get_precision(precision).compute_bytes, int8_mlp=get_precision(precision).int8_mlp(spec),
                          kernels=device, bnb_dequantized=dequantized)
        activations = max(activations, peak_of(parts))
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
    from sizer.calc.activations import decode_peak_bytes
    from sizer.calc.kv import transformers_decode_cache

    from sizer.calc.kv import transformers_state_bytes

    fmt = get_precision(precision)
    decode = decode_peak_bytes(spec, batch_size, context_length, fmt.compute_bytes, _eager(spec, attention), kv_dtype,
                               device, fmt.int8_mlp(spec), bnb_dequantized(precision, kernel))
    # the recurrent layers' state, every layer's, alive through the step (their own temporaries, a few copies
    # of one layer's state, are not modelled)
    decode += transformers_state_bytes(spec, fmt.compute_bytes, batch_size)
    if is_gptq(precision) and kernel != "int4":
        from sizer.quantize.plan import gptq_reference_workspace_bytes

        after = transformers_decode_cache(spec, kv_dtype, context_length, batch_size).after_bytes
        decode = max(decode, after + gptq_reference_workspace_bytes(spec))
    return decode


def bnb_dequantized(precision: str, kernel: str) -> str | None:
    """What bitsandbytes' CPU fallback materializes per Linear (sizer.calc.activations
    BNB_DEQUANTIZED_*), or None where its native kernels run (`kernel` is not BNB_DEQUANTIZE_KERNEL)."""
    from sizer.calc.activations import BNB_DEQUANTIZED_4BIT, BNB_DEQUANTIZED_4BIT_NESTED, BNB_DEQUANTIZED_INT8

    if kernel != BNB_DEQUANTIZE_KERNEL or is_gptq(precision):
        return None
    fmt = get_precision(precision)
    if fmt.name == "int8":
        return BNB_DEQUANTIZED_INT8
    return BNB_DEQUANTIZED_4BIT_NESTED if getattr(fmt, "double_quant", False) else BNB_DEQUANTIZED_4BIT


def _eager(spec: ModelSpec, attention: str) -> bool:
    from sizer.calc.activations import transformers_attention

    return transformers_attention(spec, attention) == "eager"


def _gptq_permuted(spec: ModelSpec) -> bool:
    """Whether the GPTQ checkpoint behind `spec` scatters its groups (act-order without static
    groups), which gives each Linear an input permutation on the int4 kernel."""
    from pathlib import Path

    from sizer.quantize.load import read_gptq_config

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


def refuse_if_too_large(spec: ModelSpec, precision: str, context_length: int, batch_size: int, device: str,
                        attention: str, available: int, calibration: Calibration, kernel: str = "reference") -> int:
    pred = predict(spec, precision, context_length, batch_size, device, attention, calibration, kernel)
    need = pred["process"] or pred["peak"]
    if need > available:
        raise UsageError(f"{spec.name} at {precision} with {batch_size} x {context_length:,} tokens needs about "
                         f"{fmt_gib(need, 1, unit=True)}, but {device} has {fmt_gib(available, 1, unit=True)} available "
                         "(sizer's prediction; use --force to try anyway)")
    return need
