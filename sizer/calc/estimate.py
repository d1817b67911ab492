"""`estimate`: the memory of one model at one precision, KV dtype, context length and batch size.

Returns one `Estimate` with integer bytes; the table, JSON, CSV and markdown renderings
(sizer/calc/report.py) all print this object, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sizer.calc.activations import activation_peaks, attention_notes, recurrent_notes, transformers_attention
from sizer.calc.kv import (kv_cache_bytes, kv_cache_bytes_per_token, kv_dtype_bytes, kv_layer_bytes_per_token,
                           state_bytes_per_layer, state_bytes_per_sequence, window_of)
from sizer.calc.transformers_releases import NEWEST, spec_for_release
from sizer.calc.calibration import Calibration, resolve
from sizer.calc.weights import checkpoint_bytes_by_component, weight_bytes_by_component
from sizer.quant import precision_notes, resolve_precision
from sizer.spec import KV_KINDS, STATE_KINDS, ModelSpec, Workload, check_context_length


@dataclass(frozen=True)
class Estimate:
    """Memory of one configuration, in bytes. `breakdown` leaves sum exactly to `total_bytes`."""

    model: str
    family: str
    params: int
    active_params: int
    precision: str
    kv_dtype: str
    context_length: int
    batch_size: int
    weights_bytes: int
    kv_cache_bytes: int
    activation_bytes: int
    overhead_bytes: int
    breakdown: dict[str, int]
    details: dict = field(default_factory=dict)
    state_bytes: int = 0        # recurrent state: per sequence, constant in the context (kv_cache grows with tokens)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.state_bytes + self.activation_bytes + self.overhead_bytes

    @property
    def memory(self) -> dict[str, int]:
        return {"weights": self.weights_bytes, "kv_cache": self.kv_cache_bytes, "state": self.state_bytes,
                "activations": self.activation_bytes, "overhead": self.overhead_bytes, "total": self.total_bytes}


def cache_by_layer_type(spec: ModelSpec, kv_dtype: str, state_dtype_bytes: int) -> dict[str, dict]:
    """Per layer kind: its layers, the bytes one token adds to their KV cache and the bytes of one
    sequence's recurrent state in them, and the window that caps their tokens (None: the context)."""
    state_layer = state_bytes_per_layer(spec, state_dtype_bytes)
    out = {}
    for kind, n in spec.layer_kind_counts().items():
        kv = sum(kv_layer_bytes_per_token(spec, i, kv_dtype) for i, lt in enumerate(spec.layer_types) if lt == kind)
        out[kind] = {"layers": n,
                     "kv_cache_bytes_per_token": int(kv) if kind in KV_KINDS else 0,
                     "state_bytes_per_sequence": n * state_layer if kind in STATE_KINDS else 0,
                     "window": window_of(spec, kind)}
    return out


def _weights(spec: ModelSpec, fmt, asked: str | None) -> tuple[dict[str, int], str]:
    """(bytes by component, where the numbers come from) of `fmt` (resolve_precision's object)."""
    if fmt.stored:
        ckpt = spec.checkpoint
        return checkpoint_bytes_by_component(spec), f"{ckpt.format} headers ({ckpt.path})"
    source = "computed from the architecture"
    if asked is None and spec.native_precision:
        source += f" at the checkpoint's own precision ({spec.native_precision}, from its quantization_config)"
    return weight_bytes_by_component(spec, fmt), source


def estimate(model: ModelSpec | str, precision: str | None = None, kv_dtype: str = "bf16",
             context_length: int | None = None, batch_size: int = 1, attention: str = "sdpa",
             logits: str = "last", calibration: Calibration | str | None = None, kernels: str = "cuda",
             allow_long_context: bool = False) -> Estimate:
    """Memory of `model` (a ModelSpec, catalog name, config.json, safetensors folder or .gguf path).

    precision None means the checkpoint's own storage when the model was read from files, else the
    format its config's quantization_config names (gpt-oss: mxfp4; DeepSeek-V3: fp8-block128), else bf16.
    context_length None means the model's maximum context (or 4096 when the config has none); a context
    beyond the model's maximum is refused (sizer.spec.check_context_length) unless allow_long_context,
    which plans it and says so in details["notes"].
    calibration: a Calibration or a calibration file; None means the shipped sizer/data/calibration.json.
    kernels: the device whose kernels run the model, "cuda" (GPUs: what sizer plans) or "cpu" (sizer
    measure on CPU); it matters where they hold different temporaries (bitsandbytes int8).
    The transformers terms follow the spec's transformers_release, else the newest release sizer
    models (transformers_releases).
    """
    from sizer.inputs.resolve import get_model

    spec = get_model(model) if isinstance(model, str) else model
    if spec.transformers_release is None:          # activations as the newest modelled transformers runs them
        spec = spec_for_release(spec, NEWEST)
    workload = Workload(context_length or spec.max_context_length or 4096, batch_size,
                        transformers_attention(spec, attention), logits)
    long_note = check_context_length(spec, workload.context_length, allow_long_context)
    kv_dtype_bytes(kv_dtype)
    fmt = resolve_precision(spec, precision)
    label = fmt.name
    by_component, weights_source = _weights(spec, fmt, precision)
    kv = kv_cache_bytes(spec, kv_dtype, workload.context_length, workload.batch_size)
    # the recurrent state in the model's compute dtype, as vLLM keeps it by default (mamba_cache_dtype auto)
    state_per_sequence = state_bytes_per_sequence(spec, fmt.compute_bytes)
    state = workload.batch_size * state_per_sequence
    peaks = activation_peaks(spec, workload, fmt.compute_bytes, kernels, fmt.int8_mlp(spec))
    cal = resolve(calibration)
    activations = cal.activation_bytes(peaks.peak_bytes)
    overhead = cal.overhead_parts(activations, kv + state)
    breakdown = {f"weights/{c}": n for c, n in by_component.items()}
    breakdown["kv_cache"] = kv
    if state:
        breakdown["state"] = state
    breakdown["activations"] = activations
    breakdown.update({f"overhead/{k}": n for k, n in overhead.items()})
    details = {
        "attention": spec.attention_kind,
        "kv_cache_bytes_per_token": kv_cache_bytes_per_token(spec, kv_dtype),
        "state_bytes_per_sequence": state_per_sequence,
        "cache_by_layer_type": cache_by_layer_type(spec, kv_dtype, fmt.compute_bytes),
        "prefill_activation_bytes": peaks.prefill_bytes,
        "decode_activation_bytes": peaks.decode_bytes,
        "activation_parts": dict(peaks.parts),
        "attention_implementation": workload.attention,
        "logits": workload.logits,
        "weights_source": weights_source,
        "sliding_window": spec.sliding_window,
        "sliding_layers": spec.n_sliding_layers,
        "model_max_context_length": spec.max_context_length,
        "notes": (list(spec.notes) + ([long_note] if long_note else []) + attention_notes(spec, attention)
                  + recurrent_notes(spec) + precision_notes(spec, [label])),
        "calibration": cal.source,
    }
    return Estimate(model=spec.name, family=spec.family, params=spec.params, active_params=spec.active_params,
                    precision=label, kv_dtype=kv_dtype.lower(), context_length=workload.context_length,
                    batch_size=workload.batch_size, weights_bytes=sum(by_component.values()), kv_cache_bytes=kv,
                    activation_bytes=activations, overhead_bytes=sum(overhead.values()),
                    breakdown=breakdown, details=details, state_bytes=state)
