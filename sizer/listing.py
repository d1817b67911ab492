"""Rows for `sizer models` and `sizer gpus`: flat dicts, rendered by sizer.calc.report."""

from __future__ import annotations

from sizer.calc.kv import kv_cache_bytes_per_token
from sizer.catalog import gpu_entries, model_entries
from sizer.errors import UsageError
from sizer.families import spec_from_config
from sizer.units import GiB


def model_rows(family: str | None = None) -> list[dict]:
    """The catalog's models (of one family); an unknown family is refused with the known ones."""
    specs = {name: spec_from_config(entry.config, name, f"catalog entry {name}")
             for name, entry in model_entries().items()}
    known = sorted({spec.family for spec in specs.values()})
    if family and family not in known:
        raise UsageError(f"no catalog model of family {family!r} (families: {', '.join(known)})")
    rows = []
    for name, entry in model_entries().items():
        spec = specs[name]
        if family and spec.family != family:
            continue
        rows.append({
            "name": name, "family": spec.family, "params": spec.params, "active_params": spec.active_params,
            "layers": spec.n_layers, "attention": spec.attention_kind, "heads": spec.n_heads,
            "kv_heads": spec.n_kv_heads, "head_dim": spec.head_dim, "context": spec.max_context_length,
            "kv_bytes_per_token_bf16": kv_cache_bytes_per_token(spec, "bf16"), "hf_id": entry.hf_id,
            "released": entry.released, "aliases": " ".join(entry.aliases),
        })
    return rows


def gpu_rows() -> list[dict]:
    rows = []
    for name, g in gpu_entries().items():
        rows.append({
            "name": name, "vendor": g.vendor, "memory_gib": round(g.memory_bytes / GiB, 2),
            "memory_bytes": g.memory_bytes, "bandwidth_gb_s": g.memory_bandwidth_gbps,
            "bf16_tflops": g.dense_tflops.get("bf16"), "fp16_tflops": g.dense_tflops.get("fp16"), "fp8_tflops": g.dense_tflops.get("fp8"),
            "int8_tops": g.dense_tflops.get("int8"), "price_per_hour_usd": g.price_per_hour_usd,
            "price_date": g.price_date, "full_name": g.full_name, "market": g.market,
            "launch_price_usd": g.launch_price_usd, "gpu_memory_limit_bytes": g.gpu_memory_limit_bytes,
        })
    return rows


def local_gpu_text() -> tuple[str, list[dict]]:
    """What this machine has, one line a GPU (or one CPU-only line), and the rows for JSON."""
    from sizer.env.hardware import local_gpus
    from sizer.gpuspec import local_spec, usable_memory_bytes

    found, reason = local_gpus()
    if not found:
        return reason, []
    rows, lines = [], []
    for g in found:
        spec = local_spec(g)
        row = {"index": g.index, "name": g.name, "vendor": g.vendor, "memory_gib": round(g.memory_bytes / GiB, 2),
               "memory_bytes": g.memory_bytes, "free_bytes": g.memory_free_bytes, "driver": g.driver,
               "catalog": spec.name, "usable_memory_bytes": usable_memory_bytes(spec)}
        rows.append(row)
        if g.unified:
            lines.append(f"local GPU {g.index}: {spec.full_name}; catalog {spec.name}")
        else:
            lines.append(f"local GPU {g.index}: {g.name}, {row['memory_gib']} GiB ({g.memory_bytes:,} bytes), "
                         f"driver {g.driver}; catalog {spec.name}")
    return "\n".join(lines), rows
