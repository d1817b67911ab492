"""`sizer check` output: one CheckResult as a table, JSON, CSV or markdown (one object, four renderings)."""

from __future__ import annotations

import json

from sizer.check.compare import CheckResult, CheckRow
from sizer.render import to_csv
from sizer.units import MIB_NOTE, UNITS_NOTE, fmt_gib, fmt_mib

CHECK_CSV_COLUMNS = ("log", "engine", "version", "modelled", "model", "gpu", "tensor_parallel", "pipeline_parallel",
                     "context_length", "precision", "component", "unit", "predicted", "measured", "error")


def _value(row: CheckRow, x, mib: bool = False) -> str:
    if x is None:
        return "-"
    if row.unit == "bytes" and mib:                # llama.cpp prints its buffers in MiB
        return fmt_mib(x)
    if row.unit == "bytes":
        return fmt_gib(x, 2)
    if row.unit == "x":
        return f"{x:,.2f}"
    return f"{int(x):,}"


def check_to_dict(r: CheckResult) -> dict:
    return {"log": r.origin, "engine": r.engine, "version": r.version, "modelled": r.modelled, "model": r.model,
            "gpu": r.gpu, "tensor_parallel": r.tensor_parallel, "pipeline_parallel": r.pipeline_parallel,
            "context_length": r.context_length, "precision": r.precision,
            "components": [{"component": row.component, "unit": row.unit, "predicted": row.predicted,
                            "measured": row.measured, "error": None if row.error is None else round(row.error, 4)}
                           for row in r.rows],
            "notes": list(r.notes)}


def check_csv_rows(r: CheckResult) -> list[dict]:
    head = {k: v for k, v in check_to_dict(r).items() if k not in ("components", "notes")}
    return [{**head, **{k: "" if v is None else v for k, v in c.items()}} for c in check_to_dict(r)["components"]]


def render_check(r: CheckResult, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(check_to_dict(r), indent=2) + "\n"
    if fmt == "csv":
        return to_csv(check_csv_rows(r), CHECK_CSV_COLUMNS)
    from tabulate import tabulate

    mib = r.engine == "llamacpp"
    rows = [[row.component, _value(row, row.predicted, mib), _value(row, row.measured, mib),
             "-" if row.error is None else f"{row.error:+.1%}"] for row in r.rows]
    table = tabulate(rows, headers=["component", "sizer", "log", "error"], disable_numparse=True,
                     tablefmt="github" if fmt == "markdown" else "simple")
    release = f"{r.engine} {r.version}" if r.version else r.engine
    context = "n_ctx" if mib else "max_model_len"
    head = [f"{r.origin}: {release} (sizer models {r.modelled}) · {r.model} · {r.gpu} · TP{r.tensor_parallel}"
            f"xPP{r.pipeline_parallel} · {context} {r.context_length:,} · {r.precision}",
            MIB_NOTE if mib else f"memory in GiB · {UNITS_NOTE}"]
    if not r.rows:
        table = "the log prints none of the quantities sizer predicts"
    sep = "\n\n" if fmt == "markdown" else "\n"
    return sep.join([*head, "", table, "", *[f"note: {n}" for n in r.notes]]).rstrip() + "\n"
