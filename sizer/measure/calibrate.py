"""`sizer calibrate`: fit the transformers profile's constants to `sizer measure` records.

Fitted, each from the records that measure it:
- activation_scale and activation_offset_bytes: the measured activation peak (measured peak -
  measured weights - measured KV cache) against sizer's predicted activations, fitted for the least
  absolute relative error of the peak (robust to the families the activation model misses);
- cuda_context_bytes: the median of NVML's process memory minus torch's reserved peak (CUDA records);
- decode_bandwidth_efficiency: the median ratio of measured to predicted decode speed, times the
  efficiency the prediction used (records with a predicted speed).
Records are split deterministically: every fourth point (in a stable order) is held out, the rest
fit; the report shows the peak-memory error on the held-out points before and after.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from statistics import median

from sizer.calc.calibration import Calibration
from sizer.errors import UsageError
from sizer.measure.records import Record

HOLD_OUT_EVERY = 4


@dataclass(frozen=True)
class CalibrationReport:
    calibration: Calibration
    fitted: tuple[str, ...]          # the constants the records could fit
    train: int
    held_out: int
    before: tuple[float, float]      # (median, worst) relative peak error on held-out records
    after: tuple[float, float]


def _usable(records: list[Record]) -> list[Record]:
    return [r for r in records if r.status == "ok" and r.measured_peak_bytes and r.measured_weights_bytes is not None
            and r.measured_kv_cache_bytes is not None]


def split(records: list[Record]) -> tuple[list[Record], list[Record]]:
    ordered = sorted(records, key=lambda r: (r.model, r.precision, r.device, r.context_length, r.batch_size, r.date))
    held = [r for i, r in enumerate(ordered) if i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1]
    train = [r for i, r in enumerate(ordered) if i % HOLD_OUT_EVERY != HOLD_OUT_EVERY - 1]
    return train, held


def _raw_activation(r: Record, cal: Calibration) -> float:
    """The uncalibrated activation prediction behind a record (undoing the calibration it was made with)."""
    return (r.predicted_activation_bytes - cal.activation_offset_bytes) / cal.activation_scale


def _other_predicted_bytes(r: Record) -> int:
    """What a predicted peak holds besides weights, KV and activations (the cuBLAS workspace on CUDA)."""
    return r.predicted_peak_bytes - r.predicted_weights_bytes - r.predicted_kv_cache_bytes - r.predicted_activation_bytes


def predicted_peak(r: Record, cal: Calibration, made_with: Calibration) -> int:
    """The record's peak as `cal` predicts it (weights and KV unchanged; activations recalibrated)."""
    return (r.predicted_weights_bytes + r.predicted_kv_cache_bytes + _other_predicted_bytes(r)
            + cal.activation_bytes(round(_raw_activation(r, made_with))))


def peak_errors(records: list[Record], cal: Calibration, made_with: Calibration) -> tuple[float, float]:
    errors = [abs(predicted_peak(r, cal, made_with) - r.measured_peak_bytes) / r.measured_peak_bytes for r in records]
    return (median(errors), max(errors)) if errors else (float("nan"), float("nan"))


IRLS_ITERATIONS = 50


def _robust_fit(xs: list[float], ys: list[float], totals: list[float]) -> tuple[float, float]:
    """scale, offset minimising the sum of |scale x + offset - y| / total: least absolute relative
    error, by iteratively reweighted least squares. Relative, so large points do not dominate; L1,
    so a family the activation model misses (an outlier) does not drag the fit for the rest."""
    import numpy as np

    x, y, t = (np.asarray(v, dtype=float) for v in (xs, ys, totals))
    a = np.vstack([x, np.ones(len(x))]).T / t[:, None]
    b = y / t
    weights = np.ones(len(x))
    coef = np.zeros(2)
    for _ in range(IRLS_ITERATIONS):
        sw = np.sqrt(weights)
        coef, *_ = np.linalg.lstsq(a * sw[:, None], b * sw, rcond=None)
        weights = 1.0 / np.maximum(np.abs(a @ coef - b), 1e-6)
    return float(coef[0]), float(coef[1])


def fit_calibration(records: list[Record], prior: Calibration, source: str = "") -> CalibrationReport:
    """Fit on the training records; report errors on the held-out ones. `prior` is the calibration
    the records' predictions were made with (the shipped one unless measure used --calibration)."""
    usable = _usable(records)
    if len(usable) < 3:
        raise UsageError(f"calibration needs at least 3 measured records, got {len(usable)} usable of {len(records)}")
    train, held = split(usable)
    if not held:
        held = train
    xs = [_raw_activation(r, prior) for r in train]
    ys = [r.measured_peak_bytes - r.measured_weights_bytes - r.measured_kv_cache_bytes - _other_predicted_bytes(r)
          for r in train]
    fitted = []
    values = {}
    if len(set(xs)) >= 2:
        scale, offset = _robust_fit(xs, ys, [r.measured_peak_bytes for r in train])
        if scale > 0:
            values.update(activation_scale=scale, activation_offset_bytes=int(offset))
            fitted += ["activation_scale", "activation_offset_bytes"]
    cuda = [r for r in train if r.device == "cuda" and r.measured_process_bytes and r.measured_reserved_bytes]
    if cuda:
        values["cuda_context_bytes"] = int(median(r.measured_process_bytes - r.measured_reserved_bytes for r in cuda))
        fitted.append("cuda_context_bytes")
    speed = [r for r in train if r.decode_tokens_per_s and r.predicted_decode_tokens_per_s]
    if speed:
        ratio = median(r.decode_tokens_per_s / r.predicted_decode_tokens_per_s for r in speed)
        values["decode_bandwidth_efficiency"] = min(1.0, prior.decode_bandwidth_efficiency * ratio)
        fitted.append("decode_bandwidth_efficiency")
    devices = sorted({r.device for r in usable})
    cal = replace(prior, **values, records=len(train),
                  source=source or f"fitted by sizer calibrate from {len(train)} records ({', '.join(devices)}); "
                                   f"{len(held)} held out")
    return CalibrationReport(cal, tuple(fitted), len(train), len(held), peak_errors(held, prior, prior),
                             peak_errors(held, cal, prior))


def render_report(report: CalibrationReport) -> str:
    from tabulate import tabulate

    c = report.calibration
    rows = [["median peak error (held out)", f"{report.before[0]:.2%}", f"{report.after[0]:.2%}"],
            ["worst peak error (held out)", f"{report.before[1]:.2%}", f"{report.after[1]:.2%}"]]
    errors = tabulate(rows, headers=["", "before", "after"], disable_numparse=True)
    constants = tabulate([[name, getattr(c, name)] for name in report.fitted] or [["(nothing to fit)", ""]],
                         headers=["fitted constant", "value"], disable_numparse=True)
    return (f"calibration from {report.train} records, tested on {report.held_out} held-out records\n\n"
            f"{errors}\n\n{constants}\n")
