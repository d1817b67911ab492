"""Renderings of measure records: predicted vs measured per component, absolute and relative error."""

from __future__ import annotations

from sizer.measure.records import Record, records_to_csv, records_to_json
from sizer.units import UNITS_NOTE, GiB, fmt_gib

COMPONENTS = (  # (label, predicted field, measured field)
    ("weights (params + quantization statistics)", "predicted_weights_bytes", "measured_weights_bytes"),
    ("buffers (rotary tables; not predicted)", None, "measured_buffers_bytes"),
    ("kv_cache (after prefill)", "predicted_kv_cache_bytes", "measured_kv_cache_bytes"),
    ("peak during prefill", "predicted_peak_bytes", "measured_peak_bytes"),
    ("peak during decode (first step)", "predicted_decode_peak_bytes", "measured_decode_peak_bytes"),
    ("reserved peak (torch)", None, "measured_reserved_bytes"),
    ("process memory (GPU: NVML; CPU: resident set)", "predicted_process_bytes", "measured_process_bytes"),
)


def _gib(n) -> str:
    return "-" if n is None else fmt_gib(n, 3)


def relative_error(predicted, measured) -> float | None:
    if predicted is None or not measured:
        return None
    return (predicted - measured) / measured


def comparison_rows(r: Record) -> list[list[str]]:
    rows = []
    for label, pred_field, meas_field in COMPONENTS:
        pred = getattr(r, pred_field) if pred_field else None
        meas = getattr(r, meas_field)
        if pred is None and meas is None:
            continue
        err = relative_error(pred, meas)
        rows.append([label, _gib(pred), _gib(meas), "-" if err is None else f"{(pred - meas) / GiB:+,.3f}",
                     "-" if err is None else f"{err:+.2%}"])
    return rows


def _title(r: Record) -> str:
    where = r.gpu_name or r.cpu
    return (f"{r.model} · {r.precision} · {r.batch_size} x {r.context_length:,} tokens + {r.new_tokens} new · "
            f"{r.device} ({where}) · attention {r.attention} · {r.status}")


def render_records(records: list[Record], fmt: str) -> str:
    if fmt == "json":
        return records_to_json(records)
    if fmt == "csv":
        return records_to_csv(records)
    from tabulate import tabulate

    tablefmt = "github" if fmt == "markdown" else "simple"
    blocks = []
    for r in records:
        table = tabulate(comparison_rows(r), headers=["component", "predicted GiB", "measured GiB", "abs error GiB", "rel error"],
                         disable_numparse=True, tablefmt=tablefmt)
        speed = f"prefill {r.prefill_s:.3f} s" if r.prefill_s is not None else "prefill -"
        if r.decode_tokens_per_s:
            speed += f" · decode {r.decode_tokens_per_s:,.1f} tokens/s per sequence"
            if r.predicted_decode_tokens_per_s:
                speed += f" (predicted {r.predicted_decode_tokens_per_s:,.1f})"
        blocks.append(f"{_title(r)}\n\n{table}\n{speed}")
    return "\n\n".join(blocks) + f"\n\n{UNITS_NOTE}\n"
