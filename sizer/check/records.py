"""`sizer check --record FILE` and `sizer calibrate CHECK-RECORDS`: the components of checked startup
logs kept in a CSV (the columns of `sizer check --format csv`), and the vLLM constants fitted from them.

Fitted (sizer.calc.calibration.VllmCalibration): the profiling run's peak and the non-torch memory as
the median of measured / predicted over the logs that print them (times the scale the prediction was
made with), CUDA-graph memory as the median measured. The report shows each component's median
absolute error before and after, on the same records.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass, replace
from pathlib import Path

from sizer.calc.calibration import Calibration, VllmCalibration
from sizer.check.compare import CheckResult
from sizer.check.report import CHECK_CSV_COLUMNS, check_csv_rows
from sizer.errors import InputFileError
from sizer.io import read_text_input, write_atomic
from sizer.render import to_csv

FITTED = ("activation_peak", "non_torch", "cuda_graphs")


def is_check_record_file(path: str | Path) -> bool:
    """Whether `path` is a CSV written by `sizer check --record` (its first line is that header)."""
    text = read_text_input(path, "record file")
    return text.split("\n", 1)[0].strip() == ",".join(CHECK_CSV_COLUMNS)


def read_check_records(path: str | Path) -> list[dict]:
    text = read_text_input(path, "record file")
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or tuple(rows[0]) != CHECK_CSV_COLUMNS:
        raise InputFileError(f"{path}: not a sizer check record file (the header of `sizer check --format csv`)")
    return rows


def append_check_records(path: str | Path, result: CheckResult) -> int:
    """Add the result's rows to `path` (created if absent), atomically; the number of rows added."""
    p = Path(path)
    existing = read_check_records(p) if p.exists() else []
    rows = check_csv_rows(result)
    write_atomic(p, to_csv(existing + rows, CHECK_CSV_COLUMNS), force=True)
    return len(rows)


@dataclass(frozen=True)
class VllmFit:
    calibration: Calibration
    before: dict[str, float]        # component -> median |error| with the prior
    after: dict[str, float]
    logs: int


def _ratios(rows: list[dict], component: str) -> list[float]:
    return [float(r["measured"]) / float(r["predicted"]) for r in rows
            if r["component"] == component and r["engine"] == "vllm" and r["predicted"] not in ("", "0", "0.0")
            and r["measured"] not in ("", "0")]


def fit_vllm(rows: list[dict], prior: Calibration) -> VllmFit:
    """The vLLM constants from check records; components without records keep the prior's."""
    old = prior.vllm or VllmCalibration()
    activation, non_torch = _ratios(rows, "activation_peak"), _ratios(rows, "non_torch")
    graphs = [float(r["measured"]) for r in rows if r["component"] == "cuda_graphs" and r["engine"] == "vllm"
              and r["measured"] not in ("", "0")]
    new = VllmCalibration(
        old.activation_scale * statistics.median(activation) if activation else old.activation_scale,
        old.non_torch_scale * statistics.median(non_torch) if non_torch else old.non_torch_scale,
        int(statistics.median(graphs)) if graphs else old.cuda_graph_bytes,
        len({r["log"] for r in rows if r["engine"] == "vllm"}),
        f"fitted by sizer calibrate from {len({r['log'] for r in rows})} startup log(s)")
    scales = {"activation_peak": new.activation_scale / old.activation_scale,
              "non_torch": new.non_torch_scale / old.non_torch_scale}
    before, after = {}, {}
    for component, ratios in (("activation_peak", activation), ("non_torch", non_torch)):
        if ratios:
            before[component] = statistics.median(abs(1 / q - 1) for q in ratios)
            after[component] = statistics.median(abs(scales[component] / q - 1) for q in ratios)
    if graphs:
        predicted = [float(r["predicted"]) for r in rows if r["component"] == "cuda_graphs" and r["engine"] == "vllm"
                     and r["measured"] not in ("", "0")]
        before["cuda_graphs"] = statistics.median(abs(p / g - 1) for p, g in zip(predicted, graphs))
        after["cuda_graphs"] = statistics.median(abs(new.cuda_graph_bytes / g - 1) for g in graphs)
    return VllmFit(replace(prior, vllm=new), before, after, new.records)


def render_vllm_fit(fit: VllmFit) -> str:
    v = fit.calibration.vllm
    lines = [f"vLLM constants from {fit.logs} startup log(s):",
             f"  activation_scale {v.activation_scale:.3f}, non_torch_scale {v.non_torch_scale:.3f}, "
             f"cuda_graph_bytes {'default' if v.cuda_graph_bytes is None else f'{v.cuda_graph_bytes:,}'}"]
    for component in FITTED:
        if component in fit.before:
            lines.append(f"  {component}: median |error| {fit.before[component]:.1%} before, "
                         f"{fit.after[component]:.1%} after (on the same records)")
    return "\n".join(lines) + "\n"
