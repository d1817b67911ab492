"""Renderings of result objects: table, JSON, CSV, markdown. Nothing here computes a number.

CSV headers are fixed and documented in docs/output.md and the README (spreadsheets depend on them): a column absent
for a model is 0, never missing.
"""

from __future__ import annotations

import json

from sizer.calc.estimate import Estimate
from sizer.render import to_csv
from sizer.spec import COMPONENTS
from sizer.units import UNITS_NOTE, fmt_gib, fmt_int, fmt_params

ESTIMATE_CSV_COLUMNS = (
    "model", "family", "params", "active_params", "precision", "kv_dtype", "context_length", "batch_size",
    "memory/weights", "memory/kv_cache", "memory/state", "memory/activations", "memory/overhead", "memory/total",
    *(f"weights/{c}" for c in COMPONENTS), "weights/other",
    "overhead/cuda_context", "overhead/cublas_workspace", "overhead/allocator_slack",
    "kv_cache_bytes_per_token", "state_bytes_per_sequence",
)


def estimate_to_dict(e: Estimate) -> dict:
    return {
        "model": e.model, "family": e.family, "params": e.params, "active_params": e.active_params,
        "precision": e.precision, "kv_dtype": e.kv_dtype, "context_length": e.context_length,
        "batch_size": e.batch_size, "memory": e.memory, "breakdown": dict(e.breakdown),
        "details": e.details, "units": "bytes",
    }


def estimate_csv_row(e: Estimate) -> dict:
    row = {k: v for k, v in estimate_to_dict(e).items() if k in ESTIMATE_CSV_COLUMNS}
    row.update({f"memory/{k}": v for k, v in e.memory.items()})
    row.update({col: e.breakdown.get(col, 0) for col in ESTIMATE_CSV_COLUMNS if "/" in col and not col.startswith("memory/")})
    row["kv_cache_bytes_per_token"] = e.details["kv_cache_bytes_per_token"]
    row["state_bytes_per_sequence"] = e.details["state_bytes_per_sequence"]
    return row


def _estimate_header(e: Estimate) -> list[str]:
    d = e.details
    params = fmt_params(e.params) + " parameters"
    if e.active_params != e.params:
        params += f" ({fmt_params(e.active_params)} active per token)"
    window = f", sliding window {d['sliding_window']:,} on {d['sliding_layers']} layers" if d.get("sliding_window") else ""
    lines = [
        f"{e.model} ({e.family}, {d['attention']}{window}) · {params}",
        f"weights {e.precision} · KV cache {e.kv_dtype} ({fmt_int(d['kv_cache_bytes_per_token'])} bytes/token) · "
        f"context {fmt_int(e.context_length)} tokens × batch {e.batch_size} · attention {d['attention_implementation']}",
        f"weights from: {d['weights_source']} · {UNITS_NOTE}",
    ]
    if d.get("state_bytes_per_sequence"):       # models with recurrent layers: the KV line splits per layer type
        parts = [f"{kind} × {c['layers']}: " + (f"{fmt_int(c['kv_cache_bytes_per_token'])} bytes/token"
                                               if c["kv_cache_bytes_per_token"] else "")
                 + (" + " if c["kv_cache_bytes_per_token"] and c["state_bytes_per_sequence"] else "")
                 + (f"{fmt_int(c['state_bytes_per_sequence'])} bytes/sequence" if c["state_bytes_per_sequence"] else "")
                 + ("" if c["kv_cache_bytes_per_token"] or c["state_bytes_per_sequence"] else "no cache")
                 for kind, c in d["cache_by_layer_type"].items()]
        lines.insert(2, f"KV cache and state: {fmt_int(d['kv_cache_bytes_per_token'])} bytes/token (grows with the "
                        f"context) + {fmt_int(d['state_bytes_per_sequence'])} bytes/sequence (constant) · "
                        + " · ".join(parts))
    return lines


def _estimate_rows(e: Estimate) -> list[list]:
    total = e.total_bytes or 1
    rows = [[key, fmt_gib(n), fmt_int(n), f"{100 * n / total:.1f}%"] for key, n in e.breakdown.items()]
    rows.append(["total", fmt_gib(e.total_bytes), fmt_int(e.total_bytes), "100.0%"])
    return rows


def render_estimate(e: Estimate, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(estimate_to_dict(e), indent=2) + "\n"
    if fmt == "csv":
        return to_csv([estimate_csv_row(e)], ESTIMATE_CSV_COLUMNS)
    from tabulate import tabulate

    headers = ["component", "GiB", "bytes", "share"]
    table = tabulate(_estimate_rows(e), headers=headers, tablefmt="github" if fmt == "markdown" else "simple",
                     colalign=("left", "right", "right", "right"), disable_numparse=True)
    lines = _estimate_header(e)
    notes = [f"note: {n}" for n in e.details.get("notes", [])]
    if fmt == "markdown":
        return "\n\n".join(["  \n".join(lines), table, *notes]) + "\n"
    return "\n".join([*lines, "", table, *notes]) + "\n"


def render_rows(rows: list[dict], columns: tuple[str, ...], fmt: str, title: str = "") -> str:
    """A list of flat dicts (models, GPUs) in any format; table and markdown show `columns`."""
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        return to_csv(rows, columns)
    from tabulate import tabulate

    table = tabulate([[r.get(c, "") for c in columns] for r in rows], headers=list(columns),
                     tablefmt="github" if fmt == "markdown" else "simple", disable_numparse=True)
    return (f"{title}\n\n" if title else "") + table + "\n"
