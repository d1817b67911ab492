"""Renderings of a FitResult: table, JSON, CSV (fixed, documented header), markdown, and a plot.

Per-GPU figures are those of the fullest GPU of a configuration (every GPU of a pipeline stage holds
the same share); JSON also lists each stage.
"""

from __future__ import annotations

import json

from sizer.gpuspec import usable_memory_bytes
from sizer.plan.engines import FITS_WITH_OFFLOAD, GpuUsage
from sizer.plan.fit import FitOption, FitResult
from sizer.render import plot_target, report_text, save_plot, to_csv
from sizer.units import UNITS_NOTE, GiB, fmt_gib

FIT_CSV_COLUMNS = (
    "model", "engine", "precision", "gpu", "gpu_count", "tensor_parallel", "pipeline_parallel",
    "usable_memory_per_gpu_bytes", "verdict", "context_length", "batch_size", "kv_dtype",
    "weights_per_gpu_bytes", "kv_cache_per_gpu_bytes", "state_per_gpu_bytes", "activations_per_gpu_bytes", "overhead_per_gpu_bytes",
    "total_per_gpu_bytes", "free_per_gpu_bytes", "max_context_length", "max_concurrency", "kv_cache_tokens",
    "min_gpus", "decode_tokens_per_s", "decode_tokens_per_s_total", "prefill_tokens_per_s",
    "time_to_first_token_s", "price_per_hour_usd", "cost_per_million_tokens_usd", "reason", "layouts_compared",
    "nodes", "launch", "data_parallel", "expert_parallel", "layout",
    "n_gpu_layers", "host_weights_bytes", "host_kv_cache_bytes", "host_total_bytes", "ram_bytes", "ram_free_bytes",
)


ENGINE_NAMES = {"vllm": "vLLM", "sglang": "SGLang", "llamacpp": "llama.cpp"}


def _usage(g: GpuUsage) -> dict:
    return {"weights": g.weights, "kv_cache": g.kv_cache, "state": g.state, "activations": g.activations, "overhead": g.overhead,
            "total": g.total, "free": g.free, "usable_memory": g.capacity}


def _round(x: float | None, digits: int = 2):
    return None if x is None else round(x, digits)


def option_to_dict(o: FitOption) -> dict:
    t = o.throughput
    return {
        "precision": o.precision, "verdict": o.verdict, "reason": o.reason, "gpu": o.gpu, "gpu_count": o.gpu_count,
        "tensor_parallel": o.tensor_parallel, "pipeline_parallel": o.pipeline_parallel,
        "data_parallel": o.data_parallel, "expert_parallel": o.expert_parallel, "layout": o.layout,
        "per_gpu": _usage(o.fullest), "per_stage": [_usage(g) for g in o.per_gpu],
        "max_context_length": o.max_context_length, "max_concurrency": o.max_concurrency,
        "kv_cache_tokens": o.kv_cache_tokens,
        "max_concurrency_x": None if o.kv_cache_tokens is None else round(o.kv_cache_tokens / o.context_length, 2),
        "min_gpus": o.min_gpus,
        "decode_tokens_per_s": _round(t.decode_tokens_per_s), "decode_tokens_per_s_total": _round(t.decode_tokens_per_s_total),
        "prefill_tokens_per_s": _round(t.prefill_tokens_per_s), "time_to_first_token_s": _round(t.time_to_first_token_s, 4),
        "price_per_hour_usd": o.price_per_hour, "cost_per_million_tokens_usd": _round(o.cost_per_million_tokens, 4),
        "host_memory_bytes": o.host_bytes, "suggestions": list(o.suggestions),
        "n_gpu_layers": o.engine_values.get("n_gpu_layers"), "host": o.engine_values.get("host"),
        "layouts_compared": [{"layout": c.layout, "verdict": c.verdict, "max_concurrency": c.max_concurrency,
                              "max_context_length": c.max_context_length,
                              "decode_tokens_per_s_total": _round(c.decode_tokens_per_s_total)}
                             for c in o.layouts_compared],
        "nodes": o.nodes, "launch": [step.as_dict() for step in o.launch],
        "engine_log": {"lines": list(o.engine_log), "values": dict(o.engine_values)},
    }


def fit_to_dict(r: FitResult) -> dict:
    gpus = {"label": r.gpus}
    if r.gpus != "catalog":
        gpus.update(gpu=r.gpu.name, memory_bytes=r.gpu.memory_bytes, usable_memory_bytes=usable_memory_bytes(r.gpu))
    if r.links is not None and r.gpus != "catalog":
        gpus.update(node_size=r.links.node_size, node_link=r.links.node_link, node_link_gbps=r.links.node_link_gbps,
                    fabric_gbits=r.links.fabric_gbits)
    return {
        "model": r.model, "family": r.family, "params": r.params, "active_params": r.active_params, "gpus": gpus,
        "engine": r.engine, "engine_version": r.engine_version,
        "workload": {"context_length": r.context_length, "batch_size": r.batch_size, "kv_dtype": r.kv_dtype},
        "model_max_context_length": r.model_max_context_length,
        "ram_bytes": r.host.ram_bytes if r.host else None, "ram_free_bytes": r.host.free_bytes if r.host else None,
        "host_memory": None if r.host is None else {
            "ram_bytes": r.host.ram_bytes, "ram_source": r.host.ram_source, "reserve_bytes": r.host.reserve_bytes,
            "ram_free_bytes": r.host.free_bytes, "bandwidth_gbps": r.host.bandwidth_gbps,
            "bandwidth_source": r.host.bandwidth_source},
        "options": [option_to_dict(o) for o in r.options], "notes": list(r.notes), "units": "bytes",
    }


def fit_csv_rows(r: FitResult) -> list[dict]:
    rows = []
    for o in r.options:
        d, g = option_to_dict(o), o.fullest
        rows.append({
            "model": r.model, "engine": r.engine, "precision": o.precision, "gpu": o.gpu, "gpu_count": o.gpu_count,
            "tensor_parallel": o.tensor_parallel, "pipeline_parallel": o.pipeline_parallel,
            "usable_memory_per_gpu_bytes": g.capacity, "verdict": o.verdict, "context_length": r.context_length,
            "batch_size": r.batch_size, "kv_dtype": r.kv_dtype, "weights_per_gpu_bytes": g.weights,
            "kv_cache_per_gpu_bytes": g.kv_cache, "state_per_gpu_bytes": g.state, "activations_per_gpu_bytes": g.activations,
            "overhead_per_gpu_bytes": g.overhead, "total_per_gpu_bytes": g.total, "free_per_gpu_bytes": g.free,
            "max_context_length": o.max_context_length, "max_concurrency": o.max_concurrency,
            "kv_cache_tokens": "" if o.kv_cache_tokens is None else o.kv_cache_tokens,
            "min_gpus": "" if o.min_gpus is None else o.min_gpus,
            **{k: "" if d[k] is None else d[k] for k in ("decode_tokens_per_s", "decode_tokens_per_s_total",
                                                           "prefill_tokens_per_s", "time_to_first_token_s")},
            "price_per_hour_usd": "" if o.price_per_hour is None else o.price_per_hour,
            "cost_per_million_tokens_usd": "" if d["cost_per_million_tokens_usd"] is None else d["cost_per_million_tokens_usd"],
            "reason": o.reason, "layouts_compared": ";".join(c.layout for c in o.layouts_compared),
            "nodes": o.nodes, "launch": " ; ".join(f"[{s.on}] {s.command}" for s in o.launch),
            "data_parallel": o.data_parallel, "expert_parallel": o.expert_parallel, "layout": o.layout,
            "n_gpu_layers": _blank(d["n_gpu_layers"]), **_host_columns(d["host"]),
            "ram_bytes": _blank(r.host.ram_bytes if r.host else None),
            "ram_free_bytes": _blank(r.host.free_bytes if r.host else None),
        })
    return rows


def _blank(x):
    return "" if x is None else x


def _host_columns(host: dict | None) -> dict:
    host = host or {}
    return {f"host_{k}_bytes": _blank(host.get(k)) for k in ("weights", "kv_cache", "total")}


def offload_line(o: FitOption, r: FitResult) -> str:
    """The table's line for a plan with layers in system RAM: layers on the GPUs, RAM used, speed."""
    v, t = o.engine_values, o.throughput
    gpus = "GPU" + ("s" if o.gpu_count > 1 else "")
    of = f" (of {fmt_gib(r.host.ram_bytes, 1, unit=True)})" if r.host and r.host.ram_bytes else " (RAM not given)"
    speed = "" if t.decode_tokens_per_s is None else f", ~{_speed(t.decode_tokens_per_s)} tok/s decode"
    if t.prefill_tokens_per_s is not None:
        speed += f", ~{_speed(t.prefill_tokens_per_s)} tok/s prompt"
    return (f"  offload: {v['n_gpu_layers']}/{v['layer_slots']} layers on the {gpus}, "
            f"{fmt_gib(v['host']['total'], 1, unit=True)} in system RAM{of}{speed}")


def _speed(x: float) -> str:
    return f"{x:,.1f}" if x < 10 else f"{x:,.0f}"


def _g(n: int) -> str:
    return fmt_gib(n, 1)


def _num(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def _header(r: FitResult) -> list[str]:
    params = f"{r.params / 1e9:,.2f} B parameters" + (
        f" ({r.active_params / 1e9:,.2f} B active)" if r.active_params != r.params else "")
    if r.gpus == "catalog":
        gpus = "every catalog GPU, fewest that serve the workload, cheapest first"
    elif r.gpu_count is None:
        gpus = f"the fewest {r.gpu.name} that serve the workload ({_g(usable_memory_bytes(r.gpu))} GiB usable per GPU)"
    else:
        gpus = f"{r.gpus} ({_g(usable_memory_bytes(r.gpu))} GiB usable per GPU)"
    if r.links is not None and any(o.nodes > 1 for o in r.options):
        nodes = max(o.nodes for o in r.options)
        link = f"{r.links.node_link} {r.links.node_link_gbps:g} GB/s per GPU" if r.links.node_link_gbps else r.links.node_link
        fabric = f"{r.links.fabric_gbits:g} Gb/s per node" if r.links.fabric_gbits else "an unknown network"
        gpus += f" · {nodes} nodes of {r.links.node_size}: {link} inside a node, {fabric} between nodes"
    return [f"{r.model} ({r.family}) · {params}",
            f"GPUs: {gpus} · engine {r.engine}" + (f" {r.engine_version}" if r.engine_version else ""),
            f"workload: {r.batch_size} x {r.context_length:,} tokens, KV cache {r.kv_dtype} · per-GPU figures of the "
            f"fullest GPU · {UNITS_NOTE}"]


TABLE_PRECISION_CHARS = 40     # longer names (a checkpoint's list of 16-bit modules) are cut in the table


def table_precision(name: str) -> str:
    """The precision as the table shows it: a name whose "-keep-" list of 16-bit modules would widen
    the table past TABLE_PRECISION_CHARS keeps its format and "-keep-..."; the notes under the
    table, JSON and CSV give the whole name."""
    if len(name) <= TABLE_PRECISION_CHARS or "-keep-" not in name:
        return name
    return name.split("-keep-", 1)[0] + "-keep-..."


def _row(o: FitOption, with_gpu: bool) -> list:
    g, t = o.fullest, o.throughput
    row = [table_precision(o.precision), o.verdict]
    if with_gpu:
        row.append(f"{o.gpu_count}x{o.gpu}")
    row += [o.layout or f"TP{o.tensor_parallel}xPP{o.pipeline_parallel}", _g(g.weights), _g(g.kv_cache + g.state), _g(g.activations),
            _g(g.overhead), _g(g.total), _g(g.free), f"{o.max_context_length:,}", f"{o.max_concurrency:,}",
            f"{_tok(t.decode_tokens_per_s)} / {_tok(t.decode_tokens_per_s_total)}",
            _num(o.price_per_hour, "{:,.2f}"), _num(o.cost_per_million_tokens, "{:,.2f}")]
    return row


def _tok(x: float | None) -> str:
    """Tokens/s in the table: whole numbers, one decimal below 10 (a partial offload runs at 1-5 tok/s)."""
    return "-" if x is None else _speed(x)


def _fewer_gpus(o: FitOption) -> str:
    """Where fewer GPUs than asked serve the workload (`min_gpus`), the table's reader hears it too."""
    if o.min_gpus is None or o.min_gpus >= o.gpu_count:
        return ""
    return f"; {o.min_gpus}x{o.gpu} would serve it too (min_gpus)"


def _layouts(o: FitOption) -> str:
    """Where fit compared several layouts of the GPU count, which (the chosen first; fit.LAYOUT_PREFERENCE)."""
    if len(o.layouts_compared) < 2:
        return ""
    first, *rest = o.layouts_compared
    return f"; layouts compared: {first.layout} (chosen), {', '.join(c.layout for c in rest)}"


def render_fit(r: FitResult, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(fit_to_dict(r), indent=2) + "\n"
    if fmt == "csv":
        return to_csv(fit_csv_rows(r), FIT_CSV_COLUMNS)
    from tabulate import tabulate

    with_gpu = r.gpu_count is None
    headers = ["precision", "verdict"] + (["GPUs"] if with_gpu else []) + [
        "layout", "weights", "KV", "activ.", "overhead", "total", "free", "max context", "max conc.",
        "decode tok/s (seq / all)", "$/hour", "$/M tokens"]
    table = tabulate([_row(o, with_gpu) for o in r.options], headers=headers, disable_numparse=True,
                     tablefmt="github" if fmt == "markdown" else "simple")
    lines = []
    for o in r.options:
        lines.append(f"- {o.precision}" + (f" on {o.gpu_count}x{o.gpu}" if with_gpu else "") + f": {o.reason}"
                     + (f". Would fit: {'; '.join(o.suggestions)}" if o.suggestions else "") + _fewer_gpus(o)
                     + _layouts(o))
        if o.verdict == FITS_WITH_OFFLOAD and "layer_slots" in o.engine_values:
            lines.append(offload_line(o, r))
        if o.launch:
            lines += [f"  {ENGINE_NAMES.get(r.engine, r.engine)} {r.engine_version} would log: {line}"
                      for line in o.engine_log]
        lines += [f"  launch ({step.on}): {step.command}" for step in o.launch]
    if not r.options:
        lines = ["- no configuration serves this workload"]
    lines += [f"note: {n}" for n in r.notes]
    return report_text(_header(r), table, lines, fmt)


def plot_fit(r: FitResult, path: str, force: bool = False) -> None:
    """Stacked bars of each configuration's GPUs: weights, KV cache, activations, overhead, free."""
    plt, target = plot_target(path, force)

    labels, stacks = [], []
    for o in r.options:
        for g in o.per_gpu:
            stage = f"\npipeline stage {g.stage + 1} of {len(o.per_gpu)}" if len(o.per_gpu) > 1 else ""
            labels.append(f"{o.precision}\n{o.gpu_count}x{o.gpu}{stage}")
            stacks.append((g.weights, g.kv_cache + g.state, g.activations, g.overhead, max(0, g.free), g.capacity))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels) + 2), 4.8))
    names = ("weights", "KV cache", "activations", "overhead", "free")
    colors = ("#4C72B0", "#DD8452", "#55A868", "#8172B3", "#DDDDDD")
    bottoms = [0.0] * len(stacks)
    for i, (name, color) in enumerate(zip(names, colors)):
        heights = [s[i] / GiB for s in stacks]
        ax.bar(range(len(stacks)), heights, bottom=bottoms, label=name, color=color, edgecolor="white", linewidth=0.5)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    for x, s in enumerate(stacks):
        ax.hlines(s[5] / GiB, x - 0.4, x + 0.4, colors="black", linestyles="dashed", linewidth=1,
                  label="usable memory" if x == 0 else None)
        over = sum(s[:4]) - s[5]
        if over > 0:                  # the bar rises above the dashed line: say by how much
            ax.annotate(f"over by\n{fmt_gib(over, 1, unit=True)}", (x, sum(s[:4]) / GiB), ha="center", va="bottom",
                        fontsize=7, color="#C44E52")
    ax.set_xticks(range(len(stacks)), labels, fontsize=8)
    ax.set_ylabel("GiB per GPU (1 GiB = 2^30 bytes)")
    ax.set_title(f"{r.model} · {r.engine} · {r.batch_size} x {r.context_length:,} tokens", fontsize=10)
    ax.legend(fontsize=8, ncols=6, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    fig.tight_layout()
    save_plot(plt, fig, target)
