"""`sizer models --fits`: one CatalogFit as table, JSON, CSV or markdown (docs/output.md)."""

from __future__ import annotations

import json
from dataclasses import asdict

from sizer.plan.catalog_fit import CatalogFit, ModelFit
from sizer.render import to_csv
from sizer.units import fmt_gib, fmt_params

CATALOG_FIT_CSV_COLUMNS = (
    "rank", "model", "family", "released", "recent", "params", "active_params", "quality_params", "precision",
    "verdict", "context_length", "max_context_length", "model_max_context_length", "decode_tokens_per_s",
    "prefill_tokens_per_s", "gpu_memory_bytes", "gpu_capacity_bytes", "host_bytes", "gpus", "engine", "launch",
)
TABLE_HEADERS = ("#", "model", "released", "params", "quant", "verdict", "max context", "decode tok/s",
                 "GPU GiB used / usable")


def row_dict(rank: int, row: ModelFit, result: CatalogFit) -> dict:
    """One row's fields as JSON carries them (launch: a list of {on, command})."""
    fields = asdict(row)
    fields["launch"] = [{"on": on, "command": command} for on, command in row.launch]
    return {"rank": rank, **fields, "gpus": result.gpus, "engine": result.engine}


def to_json(result: CatalogFit) -> str:
    out = {"gpus": result.gpus, "engine": result.engine, "context_length": result.context_length,
           "ranking": list(result.ranking), "recent_since": result.recent_since, "runnable": result.runnable,
           "shown": len(result.rows), "planned": result.planned, "models": [row_dict(i, r, result) for i, r in enumerate(result.rows, 1)],
           "skipped": [{"model": m, "reason": why} for m, why in result.skipped], "notes": list(result.notes)}
    return json.dumps(out, indent=2) + "\n"


def _csv_row(rank: int, row: ModelFit, result: CatalogFit) -> dict:
    fields = row_dict(rank, row, result)
    fields["launch"] = " ; ".join(f"[{s['on']}] {s['command']}" for s in fields["launch"])
    return {c: fields[c] for c in CATALOG_FIT_CSV_COLUMNS}


def _speed(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _params(row: ModelFit) -> str:
    text = fmt_params(row.params)
    return f"{text} ({fmt_params(row.active_params)} active)" if row.active_params < row.params else text


def _since(result: CatalogFit) -> str:
    return (f" (released {result.recent_since} or later first, older ones in 12-month bands)"
            if result.recent_since else "")


def _table(result: CatalogFit, fmt: str) -> str:
    from tabulate import tabulate

    body = [[i, r.model, r.released or "-", _params(r), r.precision, r.verdict, f"{r.max_context_length:,}",
             _speed(r.decode_tokens_per_s),
             f"{fmt_gib(r.gpu_memory_bytes, 1)} / {fmt_gib(r.gpu_capacity_bytes, 1)}"]
            for i, r in enumerate(result.rows, 1)]
    table = tabulate(body, headers=list(TABLE_HEADERS), tablefmt="github" if fmt == "markdown" else "simple",
                     disable_numparse=True)
    title = (f"What runs on {result.gpus} · engine {result.engine} · context {result.context_length:,} tokens "
             "(cut to each model's maximum) · best quantization per model")
    lines = [title, "", table, ""]
    more = result.runnable - len(result.rows)
    lines.append(f"{len(result.rows)} of {result.runnable} catalog models that run"
                 + (f" ({more} more: --limit {result.runnable})" if more > 0 else "")
                 + f"; {result.planned} planned. Ranked by verdict, then recency{_since(result)}, then size "
                 "(MoE: sqrt(total x active)), then speed.")
    if result.rows:
        lines += ["", "run:"]
        lines += [f"  {i}. {r.launch[-1][1] if r.launch else '-'}" for i, r in enumerate(result.rows, 1)]
    lines += [f"note: {n}" for n in result.notes]
    lines += [f"skipped {m}: {why}" for m, why in result.skipped]
    return "\n".join(lines) + "\n"


def render_catalog_fit(result: CatalogFit, fmt: str) -> str:
    if fmt == "json":
        return to_json(result)
    if fmt == "csv":
        return to_csv([_csv_row(i, r, result) for i, r in enumerate(result.rows, 1)], CATALOG_FIT_CSV_COLUMNS)
    return _table(result, fmt)
