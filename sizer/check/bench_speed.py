"""Published llama-bench rows against sizer's llama.cpp speed model (sizer.plan.local_speed).

A row names its model as llama-bench prints it ("llama 7B Q4_0", "qwen3next 80B.A3B Q5_K - Medium",
"gpt-oss 20B MXFP4 MoE"), with the file's size and parameter count: the bytes a token reads are the
file's size (exact) times the active share of the parameters (1 for dense models; for MoE the
catalog's active / total parameters, or the ".A3B" of the name when the catalog lacks the model);
the KV cache and attention FLOPs per cached token come from the catalog model (or the shape
recorded in tests/data/llamacpp/bench_devices.json). The device is a catalog GPU or a row of that
file. The constants are fitted per backend: decode by weighted least squares of
`1 / tokens_per_s = bytes / (bandwidth x e) + t0` in relative error, prompt processing as the one
factor `e` that minimises the relative error of `flops / (rate x e)`.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

from sizer.catalog import find_model, get_gpu
from sizer.check.llama_bench import parse_test
from sizer.families import spec_from_config
from sizer.plan.local_speed import (KERNEL_BLAS, KERNEL_CPU, KERNEL_MMQ, KERNEL_SHADER, BackendSpeed, DeviceRates, DeviceShare,
                                    decode_seconds, kernel_for, prefill_seconds_per_token)

F16_BYTES = 2
DESCRIPTION = re.compile(r"^(?P<arch>\S+) (?P<size>\S+) (?:mostly )?(?P<quant>.+)$")
ACTIVE_LABEL = re.compile(r"\.A(?P<active>\d+(?:\.\d+)?)B$")


@dataclass(frozen=True)
class BenchModel:
    """What the speed model needs of a llama-bench model."""

    arch: str
    size_label: str                # "7B", "80B.A3B"
    weight_type: str               # the GGUF base type: Q4_0, Q4_K, F16, IQ1_S, MXFP4
    weights_bytes: int             # the file's size as printed
    params: float                  # as printed
    active_params: float
    kv_bytes_per_token: float      # f16 K and V of every layer
    attention_flops_per_depth: float
    n_layers: int

    @property
    def active_weights_bytes(self) -> float:
        return self.weights_bytes * self.active_params / self.params


def weight_type_of(quant: str) -> str:
    """"Q4_K - Medium" -> Q4_K, "IQ1_S - 1.5625 bpw" -> IQ1_S, "MXFP4 MoE" -> MXFP4, "F16" -> F16."""
    return quant.split(" ")[0].upper()


def model_key(description: str, params_billions: float) -> str:
    m = DESCRIPTION.match(description)
    return f"{m['arch'].lower()} {m['size']}|{params_billions:.2f}" if m else description


def bench_model(record: dict, models: dict) -> BenchModel:
    """The model of a bench record, from its description, size and params and the models table."""
    m = DESCRIPTION.match(record["model"])
    if not m:
        raise ValueError(f"not a llama-bench model description: {record['model']!r}")
    params = record["params_billions"] * 1e9
    entry = models.get(model_key(record["model"], record["params_billions"]), {})
    if not entry:
        raise ValueError(f"no entry for {model_key(record['model'], record['params_billions'])!r} in the models table")
    active_share = 1.0
    if "catalog" in entry:
        cat = find_model(entry["catalog"])
        spec = spec_from_config(cat.config, cat.name, "catalog")
        active_share = spec.active_params / spec.params
        kv = spec.n_kv_layers * 2 * spec.n_kv_heads * spec.head_dim * F16_BYTES
        attention = 4 * spec.n_kv_layers * spec.n_heads * spec.head_dim
        n_layers = spec.n_layers
    else:
        n_layers = entry["n_layers"]
        kv = n_layers * 2 * entry["n_kv_heads"] * entry["head_dim"] * F16_BYTES
        attention = 4 * n_layers * entry["q_width"]
    label = ACTIVE_LABEL.search(m["size"])
    if label and "catalog" not in entry:
        active_share = float(label["active"]) * 1e9 / params
    return BenchModel(m["arch"], m["size"], weight_type_of(m["quant"]), record["size_bytes"], params,
                      params * active_share, kv, attention, n_layers)


def backend_of_record(record: dict) -> str:
    """"Metal,BLAS" -> Metal: the first backend named runs the layers."""
    return record["backend"].split(",")[0]


def device_rates(record: dict, devices: dict) -> DeviceRates:
    name = record["gpu"] or record["cpu"]
    entry = devices[name]
    if "catalog" in entry:
        return DeviceRates.of_gpu(get_gpu(entry["catalog"]))
    return DeviceRates(entry["memory_bandwidth_gbps"], entry.get("fp32"), entry.get("fp16"),
                       entry.get("fp16_acc16") or entry.get("fp16"), entry.get("int8"), entry.get("matrix_cores", True))


def excluded_reason(record: dict, excluded: list[dict]) -> str | None:
    for rule in excluded:
        when = dict(rule["when"])
        contains = when.pop("device_contains", None)
        if contains and not any(text in record["device"] for text in contains):
            continue
        if all(record.get(k) == v for k, v in when.items()):
            return rule["reason"]
    return None


def share_of(record: dict, table: dict) -> tuple[DeviceShare, BenchModel]:
    """The whole model on the record's one device (the rows the fit uses run -ngl 99, or CPU only)."""
    model = bench_model(record, table["models"])
    share = DeviceShare(device_rates(record, table["devices"]), backend_of_record(record),
                        model.active_weights_bytes, model.kv_bytes_per_token, model.active_params,
                        model.n_layers, model.attention_flops_per_depth)
    return share, model


def test_kind(record: dict) -> str:
    run = parse_test(record["test"])
    return "pp" if not run.n_gen else "tg" if not run.n_prompt else "pp+tg"


def predicted_tokens_per_s(record: dict, table: dict, speed: BackendSpeed) -> float | None:
    """llama-bench's t/s for the record's test: tokens / seconds over the prompt and the generation."""
    share, model = share_of(record, table)
    run = parse_test(record["test"])
    seconds = 0.0
    if run.n_prompt:
        per_token = prefill_seconds_per_token(share, model.weight_type, run.depth + run.n_prompt / 2, speed)
        if per_token is None:
            return None
        seconds += run.n_prompt * per_token
    if run.n_gen:
        seconds += run.n_gen * decode_seconds(share, run.depth + run.n_prompt + run.n_gen / 2, speed)
    return (run.n_prompt + run.n_gen) / seconds


# ---------------------------------------------------------------------------------------------
# Fitting


def fit_decode(points: list[tuple[float, float, int]], with_overhead: bool = True) -> tuple[float, float]:
    """(efficiency, overhead_s per layer) from (seconds at full bandwidth, measured seconds, layers)
    per token, minimising the relative error of `x / e + t0 x layers` with e in (0, 1] (no kernel
    beats the memory's peak) and t0 >= 0 (0 without overhead): e on a grid of 0.005, t0 in closed
    form for each e."""
    best = None
    for step in range(20, 201):
        e = step / 200
        num = sum(n / y * (1 - x / (e * y)) for x, y, n in points)
        den = sum((n / y) ** 2 for x, y, n in points)
        t0 = max(0.0, num / den) if den and with_overhead else 0.0
        loss = sum(((x / e + t0 * n) / y - 1) ** 2 for x, y, n in points)
        if best is None or loss < best[0] - 1e-12:
            best = (loss, e, t0)
    return best[1], best[2]


def fit_prefill(points: list[tuple[float, float]]) -> float:
    """Efficiency e from (seconds at the peak rate, measured seconds) per token, minimising the
    relative error of `x / e`."""
    r = [x / y for x, y in points]
    return sum(v * v for v in r) / sum(r)


def decode_point(record: dict, table: dict) -> tuple[float, float, int]:
    share, _ = share_of(record, table)
    run = parse_test(record["test"])
    read = share.weights_bytes + share.kv_bytes_per_token * (run.depth + run.n_gen / 2)
    return read / (share.rates.bandwidth_gbps * 1e9), 1 / record["tokens_per_s"], share.n_layers


def prefill_point(record: dict, table: dict) -> tuple[float, float] | None:
    unit = BackendSpeed(1.0, 0.0, {KERNEL_MMQ: 1.0, KERNEL_BLAS: 1.0, KERNEL_SHADER: 1.0, KERNEL_CPU: 1.0})
    share, model = share_of(record, table)
    run = parse_test(record["test"])
    x = prefill_seconds_per_token(share, model.weight_type, run.depth + run.n_prompt / 2, unit)
    return None if x is None else (x, 1 / record["tokens_per_s"])


def fit_backend(records: list[dict], table: dict) -> BackendSpeed:
    """The constants of one backend from its usable rows (tg rows for decode, pp rows for prompt
    processing, per kernel family)."""
    tg = [decode_point(r, table) for r in records if test_kind(r) == "tg"]
    # the CPU backend launches no kernels: its threads meet at spin barriers, so no per-layer term
    gpu = all(backend_of_record(r) != "CPU" for r in records)
    efficiency, overhead = fit_decode(tg, with_overhead=gpu) if tg else (None, None)
    prefill: dict[str, float] = {}
    for r in records:
        if test_kind(r) != "pp":
            continue
        share, model = share_of(r, table)
        prefill.setdefault(kernel_for(share.backend, model.weight_type), [])
    for kernel in list(prefill):
        points = [p for r in records if test_kind(r) == "pp"
                  and kernel_for(backend_of_record(r), bench_model(r, table["models"]).weight_type) == kernel
                  and (p := prefill_point(r, table))]
        prefill[kernel] = fit_prefill(points)
    return BackendSpeed(efficiency, overhead, prefill)


def usable(records: list[dict], table: dict) -> list[dict]:
    return [r for r in records if excluded_reason(r, table["excluded"]) is None]


def fit_all(records: list[dict], table: dict) -> dict[str, BackendSpeed]:
    by_backend: dict[str, list[dict]] = {}
    for r in usable(records, table):
        by_backend.setdefault(backend_of_record(r), []).append(r)
    return {b: fit_backend(rows, table) for b, rows in sorted(by_backend.items())}


def held_out_predictions(records: list[dict], table: dict) -> dict[int, float | None]:
    """Leave one source out: each usable row (by index in `records`) predicted with its backend's constants fitted on the other
    sources' rows (None where its backend has no other source, or the other sources lack its test kind)."""
    rows = usable(records, table)
    out: dict[int, float | None] = {}
    for source in sorted({r["source"] for r in rows}):
        train = [r for r in rows if r["source"] != source]
        for i, r in enumerate(records):
            if r["source"] != source or excluded_reason(r, table["excluded"]):
                continue
            peers = [t for t in train if backend_of_record(t) == backend_of_record(r)]
            kind = test_kind(r)
            needs_tg = kind in ("tg", "pp+tg") and any(test_kind(t) == "tg" for t in peers)
            needs_pp = kind in ("pp", "pp+tg") and any(test_kind(t) == "pp" for t in peers)
            if not peers or (kind != "pp" and not needs_tg) or (kind != "tg" and not needs_pp):
                out[i] = None
                continue
            speed = fit_backend(peers, table)
            out[i] = predicted_tokens_per_s(r, table, speed)
    return out


def relative_error(predicted: float, measured: float) -> float:
    return predicted / measured - 1


def summary(errors: list[float]) -> tuple[float, float]:
    """(median, worst) of absolute relative errors."""
    absolute = [abs(e) for e in errors]
    return statistics.median(absolute), max(absolute)
