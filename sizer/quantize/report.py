"""Renderings of a GPTQ plan and run: the pre-flight summary, then the result as a table, JSON or
CSV (one row per quantized Linear; the columns below are stable, spreadsheets depend on them)."""

from __future__ import annotations

import json
from dataclasses import asdict

from tabulate import tabulate

from sizer.quantize.plan import VLLM_VERSION
from sizer.render import to_csv
from sizer.units import UNITS_NOTE, fmt_duration, fmt_gib

LINEAR_COLUMNS = ("layer", "linear", "in_features", "out_features", "error_inputs", "gptq_error", "rtn_error",
                  "damp_used", "damp_raised", "seconds")


def render_plan(plan) -> str:
    pre, est, settings, tensor_parallel = plan.preflight, plan.estimate, plan.settings, plan.tensor_parallel
    fmt = settings.format
    group = "per channel" if fmt.group_size == -1 else f"group {fmt.group_size}"
    order = ", act-order" + (" (static groups)" if fmt.static_groups else "") if fmt.desc_act else ""
    lines = [
        f"GPTQ {fmt.bits}-bit, {group}, {'symmetric' if fmt.sym else 'asymmetric'}{order}, "
        f"damp {fmt.damp_percent}: {sum(lin.count for lin in pre.linears)} Linear layers "
        f"({len(pre.linears)} per decoder layer)",
        f"calibration: {settings.samples} x {settings.seq_len} tokens, {settings.heldout_samples} held-out windows, "
        f"on {settings.device}, layer forwards in {settings.compute_dtype}",
        f"vLLM {VLLM_VERSION} kernels at tensor parallel {tensor_parallel}: "
        + (", ".join(pre.vllm_kernels) or "none (it will not load the checkpoint)"),
    ]
    lines += [f"  {why}" for why in pre.vllm_notes]
    lines += [f"warning: {w}" for w in pre.warnings]
    lines += [f"note: {n}" for n in plan.notes]
    lines.append(f"estimate: peak {fmt_gib(est.peak_bytes)} GiB (free now {fmt_gib(plan.available_bytes)} GiB), "
                 f"about {fmt_duration(est.seconds)} at {est.matmul_gflops:.0f} GFLOP/s measured; {UNITS_NOTE}")
    if est.peak_bytes > plan.available_bytes:
        top = sorted(((v, k) for k, v in est.parts.items() if k != "process baseline"), reverse=True)[:3]
        lines.append("warning: the estimated peak exceeds the free memory; largest parts: "
                     + ", ".join(f"{k} {fmt_gib(v)} GiB" for v, k in top)
                     + " (--samples and --seq-len shrink the cached hidden states; the Hessians and solver "
                       "grow with the widest Linear's in_features squared)")
    return "\n".join(lines) + "\n"


def linear_rows(result) -> list[dict]:
    rows = []
    for r in result.linears:
        rows.append({"layer": r.layer, "linear": r.name, "in_features": r.in_features, "out_features": r.out_features,
                     "error_inputs": r.error_inputs, "gptq_error": r.gptq_error, "rtn_error": r.rtn_error,
                     "damp_used": r.damp_used,
                     "damp_raised": r.damp_raised, "seconds": round(r.seconds, 4)})
    return rows


def render_csv(result) -> str:
    return to_csv(linear_rows(result), LINEAR_COLUMNS)


def render_json(result, plan) -> str:
    data = {k: v for k, v in asdict(result).items() if k != "linears"}
    data["output"] = str(result.output)
    data["estimate"] = {"peak_bytes": plan.estimate.peak_bytes, "seconds": plan.estimate.seconds,
                        "parts": plan.estimate.parts, "matmul_gflops": plan.estimate.matmul_gflops}
    data["vllm_version"] = VLLM_VERSION
    data["vllm_kernels"] = list(plan.preflight.vllm_kernels)
    data["vllm_notes"] = list(plan.preflight.vllm_notes)
    data["warnings"] = list(plan.preflight.warnings)
    data["linears"] = linear_rows(result)
    return json.dumps(data, indent=2) + "\n"


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def render_table(result, plan) -> str:
    """One row per decoder layer (mean over its Linears), then the totals."""
    by_layer: dict[int, list] = {}
    for r in result.linears:
        by_layer.setdefault(r.layer, []).append(r)
    rows = []
    for layer, items in by_layer.items():
        gptq, rtn = _mean(r.gptq_error for r in items), _mean(r.rtn_error for r in items)
        rows.append([layer, len(items), _fmt(gptq), _fmt(rtn), f"{gptq / rtn:.2f}" if rtn else "",
                     "yes" if any(r.damp_raised for r in items) else "", f"{sum(r.seconds for r in items):.2f}"])
    table = tabulate(rows, headers=["layer", "linears", "gptq error", "rtn error", "ratio", "damp raised", "solve s"],
                     tablefmt="simple")
    wins = sum(1 for r in result.linears if r.gptq_error < r.rtn_error)
    inputs = result.linears[0].error_inputs if result.linears else "held-out"
    lines = [table, "",
             f"relative output error ||XW - XQ|| / ||XW|| per Linear (mean per layer) on {inputs} inputs"
             + (" (text never calibrated on)" if inputs == "held-out" else ""),
             f"GPTQ below round-to-nearest on {wins} of {len(result.linears)} Linears"]
    if result.perplexity_before is not None:
        lines.append(f"perplexity on {result.heldout_tokens} held-out tokens: {result.perplexity_before:.3f} before, "
                     f"{result.perplexity_after:.3f} after")
    est = plan.estimate
    lines.append(f"time {fmt_duration(result.seconds)} (estimated {fmt_duration(est.seconds)}); peak resident "
                 f"{fmt_gib(result.peak_rss_bytes)} GiB (estimated {fmt_gib(est.peak_bytes)} GiB); "
                 f"wrote {fmt_gib(result.bytes_written)} GiB; {UNITS_NOTE}")
    if result.peak_device_bytes is not None:
        lines.append(f"peak GPU memory allocated by torch: {fmt_gib(result.peak_device_bytes)} GiB")
    raised = [r for r in result.linears if r.damp_raised]
    for r in raised:
        lines.append(f"note: layer {r.layer} {r.name}: Cholesky failed at --damp, raised to {r.damp_used:g}")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines) + "\n"
