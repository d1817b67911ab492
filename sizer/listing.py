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
            "aliases": " ".join(entry.aliases),
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
            "price_date": g.price_date, "full_name": g.full_name,
        })
    return rows


def local_gpu_text() -> tuple[str, list[dict]]:
    from sizer.env.hardware import local_gpus

    found, reason = local_gpus()
    if not found:
        return reason, []
    rows = [{"index": g.index, "name": g.name, "memory_gib": round(g.memory_bytes / GiB, 2),
             "memory_bytes": g.memory_bytes, "free_bytes": g.memory_free_bytes, "driver": g.driver} for g in found]
    lines = [f"local GPU {r['index']}: {r['name']}, {r['memory_gib']} GiB ({r['memory_bytes']:,} bytes), driver {r['driver']}"
             for r in rows]
    return "\n".join(lines), rows
