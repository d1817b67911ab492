"""Renderings of a FinetuneResult: table, JSON, CSV (fixed, documented header), markdown, and a plot.
Per-GPU figures are one data-parallel rank's (every rank holds the same)."""

from __future__ import annotations

import json
from dataclasses import asdict

from sizer.finetune.plan import FinetuneOption, FinetuneResult
from sizer.finetune.sharding import host_bytes_per_node
from sizer.render import plot_target, report_text, save_plot, to_csv
from sizer.units import UNITS_NOTE, GiB, fmt_gib

FINETUNE_CSV_COLUMNS = (
    "model", "framework", "method", "gpu", "gpu_count", "verdict", "seq_len", "micro_batch_size", "precision",
    "optimizer", "lora_rank", "gradient_checkpointing", "sharding", "trainable_params",
    "usable_memory_per_gpu_bytes", "weights_per_gpu_bytes", "adapters_per_gpu_bytes", "gradients_per_gpu_bytes",
    "optimizer_states_per_gpu_bytes", "activations_per_gpu_bytes", "optimizer_step_per_gpu_bytes", "paged_optimizer_states_per_gpu_bytes", "overhead_per_gpu_bytes", "total_per_gpu_bytes",
    "free_per_gpu_bytes", "host_bytes", "max_seq_len", "max_micro_batch_size", "min_gpus", "step_time_s",
    "tokens_per_s", "seconds_per_million_tokens", "price_per_hour_usd", "cost_per_million_tokens_usd",
    "dataset_tokens", "epoch_time_s", "cost_per_epoch_usd", "reason", "host_bytes_per_node",
    "deepspeed_estimate_gpu_bytes", "deepspeed_estimate_host_bytes_per_node", "suggestions", "launch",
)


def _round(x: float | None, digits: int = 2):
    return None if x is None else round(x, digits)


def sharding_label(o: FinetuneOption) -> str:
    s = o.setup
    label = f"fsdp-{s.fsdp}" if s.fsdp else (f"zero-{s.zero}" if s.zero else "none")
    offload = [name for name, on in (("optimizer", s.offload_optimizer), ("params", s.offload_params)) if on]
    return label + (f"+offload-{'-'.join(offload)}" if offload else "")


def option_to_dict(o: FinetuneOption, dataset_tokens: int | None) -> dict:
    m, a = o.per_gpu, o.activation_parts
    epoch_s = None if dataset_tokens is None or not o.speed.tokens_per_s else dataset_tokens / o.speed.tokens_per_s
    return {
        "method": o.method, "verdict": o.verdict, "reason": o.reason, "gpu": o.gpu, "gpu_count": o.gpu_count,
        "trainable_params": o.trainable_params,
        "per_gpu": {"weights": m.weights, "adapters": m.adapters, "gradients": m.gradients,
                    "optimizer_states": m.optimizer_states, "activations": m.activations,
                    "optimizer_step": m.optimizer_step, "paged_optimizer_states": m.paged_optimizer_states,
                    "overhead": m.overhead,
                    "total": m.total, "free": m.free, "usable_memory": m.capacity},
        "activations_detail": {"saved": a.saved, "layer": a.layer, "logits": a.logits, "backward": a.backward},
        "host_bytes": m.host,
        "max_seq_len": o.max_seq_len, "max_micro_batch_size": o.max_micro_batch_size, "min_gpus": o.min_gpus,
        "step_time_s": _round(o.speed.step_time_s, 4), "tokens_per_s": _round(o.speed.tokens_per_s, 1),
        "seconds_per_million_tokens": _round(o.seconds_per_million_tokens, 1),
        "price_per_hour_usd": _round(o.price_per_hour_usd, 4),
        "cost_per_million_tokens_usd": _round(o.cost_usd(1_000_000), 4),
        "epoch_time_s": _round(epoch_s, 1),
        "cost_per_epoch_usd": None if dataset_tokens is None else _round(o.cost_usd(dataset_tokens), 2),
        "sharding": sharding_label(o), "suggestions": list(o.suggestions), "settings": asdict(o.setup),
        "host_bytes_per_node": host_bytes_per_node(m.host, o.gpu_count, o.setup.gpus_per_node),
        "deepspeed_estimate": None if o.deepspeed is None else {
            "stage": o.deepspeed.stage, "gpu_bytes": o.deepspeed.gpu_bytes,
            "host_bytes_per_node": o.deepspeed.host_bytes_per_node, "options": o.deepspeed.options},
        "launch": o.launch,
    }


def finetune_to_dict(r: FinetuneResult) -> dict:
    return {"model": r.model, "family": r.family, "params": r.params, "gpus": r.gpus, "framework": r.framework,
            "model_max_seq_len": r.model_max_seq_len,
            "dataset_tokens": r.dataset_tokens, "options": [option_to_dict(o, r.dataset_tokens) for o in r.options],
            "notes": list(r.notes), "units": "bytes"}


def _blank(x):
    return "" if x is None else x


def finetune_csv_rows(r: FinetuneResult) -> list[dict]:
    rows = []
    for o in r.options:
        d, s, g = option_to_dict(o, r.dataset_tokens), o.setup, o.per_gpu
        row = {"model": r.model, "framework": r.framework, "seq_len": s.seq_len, "micro_batch_size": s.micro_batch_size,
               "precision": s.precision, "optimizer": s.optimizer, "lora_rank": s.lora_rank if s.adapters else "",
               "gradient_checkpointing": s.gradient_checkpointing, "usable_memory_per_gpu_bytes": g.capacity,
               "dataset_tokens": _blank(r.dataset_tokens)}
        row.update({f"{k}_per_gpu_bytes": v for k, v in d["per_gpu"].items() if k != "usable_memory"})
        row.update({k: _blank(d[k]) for k in FINETUNE_CSV_COLUMNS if k in d})
        ds = d["deepspeed_estimate"] or {}
        row.update(deepspeed_estimate_gpu_bytes=_blank(ds.get("gpu_bytes")),
                   deepspeed_estimate_host_bytes_per_node=_blank(ds.get("host_bytes_per_node")),
                   suggestions="; ".join(o.suggestions))
        rows.append(row)
    return rows


def _g(n: int) -> str:
    return fmt_gib(n, 1)


def _num(x: float | None, fmt: str = "{:,.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def _hours(seconds: float | None) -> str:
    from sizer.units import fmt_duration

    return "-" if seconds is None else fmt_duration(seconds)


def _header(r: FinetuneResult) -> list[str]:
    s = r.options[0].setup
    batch = f"micro-batch {s.micro_batch_size} x {s.seq_len:,} tokens" + (" (packed)" if s.packing else "")
    steps = f", {s.gradient_accumulation_steps} accumulation steps" if s.gradient_accumulation_steps > 1 else ""
    ckpt = "gradient checkpointing" if s.gradient_checkpointing else "no gradient checkpointing"
    return [f"{r.model} ({r.family}) · {r.params / 1e9:,.2f} B parameters · framework {r.framework}",
            f"GPUs: {r.gpus} · {batch}{steps} · {s.precision} · {s.optimizer} · {ckpt}",
            f"per-GPU figures of one data-parallel rank · {UNITS_NOTE}"]


def _row(o: FinetuneOption) -> list:
    g = o.per_gpu
    return [o.method, o.verdict, f"{o.gpu_count}x{o.gpu}", f"{o.trainable_params / 1e6:,.1f} M", _g(g.weights),
            _g(g.adapters), _g(g.gradients), _g(g.optimizer_states), _g(g.activations), _g(g.overhead), _g(g.total),
            _g(g.free), _num(o.max_seq_len, "{:,}"), _num(o.max_micro_batch_size, "{:,}"),
            _num(o.speed.tokens_per_s), _hours(o.seconds_per_million_tokens), _num(o.cost_usd(1_000_000), "{:,.2f}")]


def _lines(o: FinetuneOption, r: FinetuneResult) -> list[str]:
    a = o.activation_parts
    lines = [f"- {o.method}: {o.reason}; largest micro-batch at {o.setup.seq_len:,} tokens: "
             f"{_num(o.max_micro_batch_size, '{:,}')}; longest sequence at micro-batch {o.setup.micro_batch_size}: "
             f"{_num(o.max_seq_len, '{:,}')} tokens" + (" (the model's maximum)" if o.max_seq_len and o.max_seq_len ==
                                                        r.model_max_seq_len else "")
             + (f". Would fit: {'; '.join(o.suggestions)}" if o.suggestions else ""),
             f"  activations (GiB): {_g(a.saved)} kept for the backward, {_g(a.logits)} logits and loss, "
             f"{_g(a.layer + a.backward)} one layer's backward" + (f"; {_g(a.host)} in host memory" if a.host else "")
             + (f"; the optimizer step's temporaries, {_g(o.per_gpu.optimizer_step)}, exceed them (the total counts "
                "the larger)" if o.per_gpu.optimizer_step > o.per_gpu.activations else "")]
    if o.per_gpu.paged_optimizer_states:
        lines.append(f"  paged optimizer states: {_g(o.per_gpu.paged_optimizer_states)} GiB in CUDA managed memory, beside "
                     "the total: they use free GPU memory and move to host memory when the GPU runs short")
    if o.speed.step_time_s is not None:
        lines.append(f"  time: {o.speed.step_time_s:,.2f} s per optimizer step ({o.speed.tokens_per_step:,} tokens per "
                     f"GPU), {_hours(o.seconds_per_million_tokens)} per 1M training tokens")
    if o.deepspeed is not None:
        model_states = o.per_gpu.weights + o.per_gpu.adapters + o.per_gpu.gradients + o.per_gpu.optimizer_states
        lines.append(f"  DeepSpeed's estimator (ZeRO-{o.deepspeed.stage}, {o.deepspeed.options}): "
                     f"{_g(o.deepspeed.gpu_bytes)} GiB per GPU, {_g(o.deepspeed.host_bytes_per_node)} GiB host per node; "
                     f"sizer's model states {_g(model_states)} GiB per GPU (buffers included)")
    if r.dataset_tokens and o.speed.tokens_per_s:
        cost = o.cost_usd(r.dataset_tokens)
        lines.append(f"  epoch of {r.dataset_tokens:,} tokens: {_hours(r.dataset_tokens / o.speed.tokens_per_s)}"
                     + ("" if cost is None else f", ${cost:,.2f}"))
    if o.launch and "\n" not in o.launch:
        lines.append(f"  launch: {o.launch}")
    elif o.launch:
        lines.append("  launch (Python):")
        lines += [f"    {line}" for line in o.launch.splitlines()]
    return lines


def render_finetune(r: FinetuneResult, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(finetune_to_dict(r), indent=2) + "\n"
    if fmt == "csv":
        return to_csv(finetune_csv_rows(r), FINETUNE_CSV_COLUMNS)
    from tabulate import tabulate

    headers = ["method", "verdict", "GPUs", "trainable", "weights", "adapters", "grads", "optim.", "activ.",
               "overhead", "total", "free", "max seq", "max micro-batch", "tok/s", "per 1M tok", "$/1M tok"]
    table = tabulate([_row(o) for o in r.options], headers=headers, disable_numparse=True,
                     tablefmt="github" if fmt == "markdown" else "simple")
    lines = [line for o in r.options for line in _lines(o, r)] + [f"note: {n}" for n in r.notes]
    return report_text(_header(r), table, lines, fmt)


def plot_finetune(r: FinetuneResult, path: str, force: bool = False) -> None:
    """Stacked bars per method: weights, adapters, gradients, optimizer states, activations, overhead, free."""
    plt, target = plot_target(path, force)

    names = ("weights", "adapters", "gradients", "optimizer_states", "activations", "overhead")
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(r.options) + 2), 4.8))
    bottoms = [0.0] * len(r.options)
    for name in names:
        heights = [getattr(o.per_gpu, name) / GiB for o in r.options]
        ax.bar(range(len(r.options)), heights, bottom=bottoms, label=name.replace("_", " "))
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    for x, o in enumerate(r.options):
        ax.hlines(o.per_gpu.capacity / GiB, x - 0.4, x + 0.4, colors="black", linestyles="dashed", linewidth=1,
                  label="usable memory" if x == 0 else None)
    ax.set_xticks(range(len(r.options)), [f"{o.method}\n{o.gpu_count}x{o.gpu}" for o in r.options], fontsize=8)
    ax.set_ylabel("GiB per GPU (1 GiB = 2^30 bytes)")
    ax.set_title(f"{r.model} · fine-tuning · {r.framework}", fontsize=10)
    ax.legend(fontsize=8, ncols=4, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    fig.tight_layout()
    save_plot(plt, fig, target)
