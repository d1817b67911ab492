"""The validation campaign: `sizer measure` across architectures, then `sizer calibrate`.

Two grids:
- CPU (the default; what ran here, where no GPU was lent): scaled-down versions of catalog
  architectures (the structure of each kept: MHA, GQA with a 128k vocabulary, MQA, sliding window,
  mixed sliding/full layers, tied embeddings, fused QKV, MoE, MLA + MoE, attention sinks) at bf16,
  int8 and nf4 (bitsandbytes, quantized on load), contexts 256-2048, batches 1 and 4.
- GPU (`--device cuda --full`): the full-size catalog models in GPU_MODELS, each fitting one 80 GB
  GPU at bf16, at bf16 / int8 / nf4, contexts 512-32k (up to each model's maximum), batches 1-16.
  Points whose predicted memory exceeds the GPU by more than NEAR_LIMIT are skipped (said, not run);
  the rest run, and one that runs out of memory is recorded as a measured does-not-fit, after which
  the points that need at least as much (longer and larger) are skipped for that precision.

The device tool lends a task 15 minutes of GPU time, the machine's start included, in calls of at
most 10 minutes. `--core` fits the campaign in one call: the same models on fewer points per load
(CORE_POINTS), every model's bf16 load first, then nf4, then int8. The full grid runs in parts:
`--models` picks models. Either way `--budget-s` stops before a load whose estimated time (printed
by `--plan`) would overrun the call, and every point is written to the output CSV as soon as it is
measured, so a killed call keeps what it measured. `--merge PART.csv ...` joins parts into
measure_<device>.csv and writes the summary.

Writes (under --out, default benchmarks/results) measure_<device>.csv (one record per point; with
--tag T, measure_<device>.T.csv), calibration_<device>.json and validation_<device>.md (the error
table the README quotes).
Run: python benchmarks/measure_campaign.py [--device cpu|cuda] [--full|--core] [--quick] [--plan]
     [--models A,B] [--budget-s S] [--out DIR] [--tag T] [--merge PART.csv ...] [--repredict]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from statistics import median

RESULTS = Path(__file__).resolve().parent / "results"

TINY_GQA = {"hidden_size": 256, "num_attention_heads": 8, "num_key_value_heads": 2}

# catalog model (or a name with the catalog model under "base") -> overrides that shrink it while
# keeping its structure
SCALED = {
    "llama-2-7b": {},                                          # dense MHA
    "llama3-8b": {"keep_vocab": True},                         # GQA, 128k vocabulary
    "falcon-7b": {},                                           # MQA, parallel attention
    "mistral-7b": {"sliding_window": 256},                     # sliding window on every layer
    "gemma-2-9b": {"sliding_window": 256},                     # alternating sliding / full layers
    "qwen3-0.6b": {},                                          # tied embeddings, q/k norms
    "phi-3-mini": {"sliding_window": 1024},                    # fused QKV and gate/up
    "qwen3-30b-a3b": {"num_experts": 8},                       # MoE (experts stay bf16 with bitsandbytes)
    "deepseek-v3": {"n_routed_experts": 8},                    # MLA + MoE with a shared expert
    "gpt-oss-20b": {"num_local_experts": 8, "sliding_window": 128},   # sinks, fp32 norms, MoE
    # tiny GQA shapes (issue 15): width 256, 8 query heads on 2 K/V heads; their decode activations
    # are small beside one MLP weight, so bitsandbytes' CPU fallback (each weight dequantized at its
    # product, sizer.calc.activations BNB_DEQUANTIZED_*) is the decode peak at batch 1
    "llama3-8b-tiny": {"base": "llama3-8b", **TINY_GQA, "intermediate_size": 688},
    "qwen2.5-7b-tiny": {"base": "qwen2.5-7b", **TINY_GQA, "intermediate_size": 704},        # q/k/v biases
    "mistral-7b-tiny": {"base": "mistral-7b", **TINY_GQA, "intermediate_size": 896, "sliding_window": 256},
}
CONTEXTS = (256, 1024, 2048)
BATCHES = (1, 4)
PRECISIONS = ("bf16", "int8", "nf4")

# full-size catalog model -> what it covers; each fits one 80 GB GPU at bf16 (the last two are
# the longest to load, so they come last and a budgeted part can leave them to the next call)
GPU_MODELS = {
    "Llama-2-7b-hf": "dense MHA, 4k context",
    "Llama-3.1-8B": "GQA, 128k vocabulary",
    "falcon-7b": "MQA, parallel attention, fused QKV",
    "Mistral-7B-v0.1": "sliding window (4096) on every layer",
    "gemma-2-9b": "alternating sliding / full layers, eager attention, 256k vocabulary",
    "gemma-3-1b-it": "MQA, 5:1 sliding / full layers, tied 262k embeddings",
    "Qwen3-4B": "tied embeddings, q/k norms",
    "Phi-3.5-mini-instruct": "fused QKV and gate/up, MHA, 128k context",
    "Qwen3-30B-A3B": "MoE, 128 experts (they stay bf16 under bitsandbytes: fused 3-D tensors)",
    "gpt-oss-20b": "MoE with attention sinks, alternating 128-token sliding layers",
}
GPU_CONTEXTS = (512, 2048, 8192, 32768)
GPU_BATCHES = (1, 4, 16)
GPU_MAX_POINT_TOKENS = 131072    # 32k x 4 and 8k x 16 run, 32k x 16 does not: it would take a third of the time
NEW_TOKENS = 8
NEAR_LIMIT = 1.15          # run points predicted to need up to 115 % of the device: an OOM there is data
GPU_FOR_ESTIMATES = "H100-SXM"   # the catalog GPU whose rates give --plan its time estimate

# --core: the whole GPU campaign in one device call (a task is lent 15 minutes of device time, the
# machine's start included, in calls of at most 10 minutes). Fewer points per load, together still
# spanning contexts 512-32k and batches 1-16, and the loads ordered precision by precision (every
# model at bf16, then nf4, then int8), so a budget stop leaves out int8 loads, never an architecture.
CORE_POINTS = {"bf16": ((512, 1), (2048, 4), (8192, 16), (32768, 1), (32768, 4)),
               "quantized": ((512, 16), (8192, 4), (32768, 1))}
CORE_PRECISIONS = ("bf16", "nf4", "int8")


def scaled_config(name: str) -> dict:
    """The catalog config with widths and depths shrunk; ratios, flags and layer patterns kept."""
    from sizer.catalog import get_catalog_model

    overrides = dict(SCALED[name])
    keep_vocab = overrides.pop("keep_vocab", False)
    cfg = dict(get_catalog_model(overrides.pop("base", name)).config)
    if "text_config" in cfg:
        cfg = {**cfg["text_config"]}
    cfg.pop("quantization_config", None)
    heads = cfg.get("num_attention_heads") or cfg.get("n_head")
    kv = cfg.get("num_key_value_heads") or cfg.get("num_kv_heads") or heads
    ratio = max(1, heads // kv)
    new_heads = 8 if ratio <= 8 else ratio
    cfg.update({"hidden_size": 512, "num_attention_heads": new_heads, "num_hidden_layers": 4,
                "max_position_embeddings": 4096})
    if "num_key_value_heads" in cfg or cfg.get("model_type") not in ("falcon",):
        cfg["num_key_value_heads"] = max(1, new_heads // ratio) if kv != heads else new_heads
    if cfg.get("model_type") == "falcon":
        cfg.update({"n_head": new_heads})
    if "head_dim" in cfg:
        cfg["head_dim"] = 64
    for key in ("intermediate_size",):
        if key in cfg:
            cfg[key] = 1536
    for key in ("moe_intermediate_size",):
        if key in cfg:
            cfg[key] = 256
    if cfg.get("model_type") == "deepseek_v3":
        cfg.update({"q_lora_rank": 256, "kv_lora_rank": 128, "qk_rope_head_dim": 32, "qk_nope_head_dim": 32,
                    "v_head_dim": 64, "first_k_dense_replace": 1, "n_group": 1, "topk_group": 1,
                    "num_key_value_heads": new_heads})
    if cfg.get("layer_types"):
        pattern = cfg["layer_types"]
        cfg["layer_types"] = [pattern[i % len(pattern)] for i in range(4)]
    if not keep_vocab:
        cfg["vocab_size"] = 32000
    cfg.update(overrides)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if isinstance(cfg.get(key), int) and cfg[key] >= cfg["vocab_size"]:
            cfg[key] = 0
    return cfg


def attention_for(spec) -> str:
    """The attention measure will use: SDPA, or eager for a family transformers has no SDPA path for
    (Gemma 2, gpt-oss)."""
    from sizer.calc.activations import transformers_attention

    return transformers_attention(spec, "sdpa")


def models(full: bool, names: list[str] | None) -> list[str]:
    chosen = list(GPU_MODELS if full else SCALED)
    if names:
        unknown = [n for n in names if n not in chosen]
        if unknown:
            raise SystemExit(f"--models: {', '.join(unknown)} not in this grid ({', '.join(chosen)})")
        chosen = [n for n in chosen if n in names]
    return chosen


def model_and_config(name: str, full: bool):
    from sizer.families import spec_from_config
    from sizer.inputs.resolve import get_config, get_model

    if full:
        return get_model(name), get_config(name)[0]
    config = scaled_config(name)
    return spec_from_config(config, f"{name} (scaled)", name), config


def core_grid(spec, precision: str) -> list[tuple[int, int]]:
    """--core's points for one load, fewest tokens first; a context beyond the model's maximum
    becomes that maximum (Llama 2's 4k), so every model keeps its long-context points."""
    points = CORE_POINTS["bf16" if precision == "bf16" else "quantized"]
    limit = spec.max_context_length or max(c for c, _ in points)
    clamped = {(min(c, limit), b) for c, b in points}
    return sorted(clamped, key=lambda p: (p[0] * p[1], p[0]))


def grid(spec, full: bool, quick: bool) -> list[tuple[int, int]]:
    """(context, batch) points, fewest tokens first; contexts beyond the model's maximum dropped."""
    contexts, batches = (GPU_CONTEXTS, GPU_BATCHES) if full else (CONTEXTS, BATCHES)
    if quick:
        contexts, batches = contexts[:2], batches[:1]
    if full and spec.max_context_length:
        contexts = tuple(c for c in contexts if c <= spec.max_context_length) or contexts[:1]
    points = [(c, b) for c in contexts for b in batches if not full or c * b <= GPU_MAX_POINT_TOKENS]
    return sorted(points, key=lambda p: (p[0] * p[1], p[0]))


def predicted_need(spec, precision: str, ctx: int, batch: int, device: str, attention: str, cal) -> int:
    """Bytes the point should take on the device: the process figure on CUDA, the peak on CPU."""
    from sizer.measure.predict import predict

    pred = predict(spec, precision, ctx, batch, device, attention, cal)
    return pred["process"] or pred["peak"]


def estimated_seconds(spec, precision: str, points: list[tuple[int, int]], device: str) -> float:
    """A rough wall time for one load and its points on GPU_FOR_ESTIMATES (for --plan and
    --budget-s): drawing the random weights at about 20 GB/s, and for bitsandbytes the copy to host
    memory and the quantized load at about 3 GB/s; each point its prefill at sizer's predicted rate,
    NEW_TOKENS decode steps and 1 s of setup."""
    from sizer.catalog import get_gpu
    from sizer.plan.engines import TransformersEngine
    from sizer.plan.placement import Placement
    from sizer.plan.stages import build_stages
    from sizer.plan.throughput import estimate_throughput
    from sizer.quant import get_precision
    from sizer.spec import Workload

    if device != "cuda":
        return float("nan")
    bf16_bytes = spec.params * 2
    seconds = 5 + bf16_bytes / 20e9 + (bf16_bytes / 3e9 if precision not in ("bf16", "fp16", "fp32") else 0)
    gpu, placement = get_gpu(GPU_FOR_ESTIMATES), Placement(1, 1)
    fmt = get_precision(precision)
    stages = build_stages(spec, fmt, placement, "bf16")
    for ctx, batch in points:
        t = estimate_throughput(spec, stages, placement, gpu, fmt, TransformersEngine(), Workload(ctx, batch))
        seconds += 1 + (t.time_to_first_token_s or 0) + NEW_TOKENS / max(t.decode_tokens_per_s or 1, 1e-9)
    return seconds


def work(names: list[str], full: bool, quick: bool, device: str, available: int, cal,
         core: bool = False) -> list[dict]:
    """Per model and precision (with `core`, per precision and model, on core_grid's points): the
    points to run and those skipped as predicted far beyond the device."""
    models_ = {name: model_and_config(name, full or core) for name in names}
    order = ([(n, p) for p in CORE_PRECISIONS for n in names] if core
             else [(n, p) for n in names for p in PRECISIONS])
    items = []
    for name, precision in order:
        spec, config = models_[name]
        attention = attention_for(spec)
        run_points, skipped = [], []
        for ctx, batch in (core_grid(spec, precision) if core else grid(spec, full, quick)):
            need = predicted_need(spec, precision, ctx, batch, device, attention, cal)
            (run_points if need <= NEAR_LIMIT * available else skipped).append((ctx, batch))
        items.append({"name": name, "spec": spec, "config": config, "precision": precision,
                      "points": run_points, "skipped": skipped,
                      "seconds": estimated_seconds(spec, precision, run_points, device)})
    return items


def print_plan(items: list[dict], available: int) -> None:
    total = 0.0
    print(f"device memory available: {available / 2**30:.1f} GiB; points predicted above "
          f"{NEAR_LIMIT:.0%} of it are skipped")
    for it in items:
        total += it["seconds"]
        timing = (f"  ~{it['seconds']:6.0f} s  (cumulative ~{total / 60:5.1f} min)" if it["seconds"] == it["seconds"]
                  else "")                                   # NaN: no time estimate off the GPU
        print(f"{it['name']:24s} {it['precision']:5s} run {len(it['points']):2d} skip {len(it['skipped']):2d}{timing}")


def dominated(point: tuple[int, int], failed: list[tuple[int, int]]) -> bool:
    """A point needing at least as much as one that ran out of memory (context and batch both >=)."""
    return any(point[0] >= c and point[1] >= b for c, b in failed)


def run(items: list[dict], device: str, out_csv: Path, budget_s: float | None) -> list:
    import time

    from sizer.calc.calibration import default_calibration
    from sizer.measure.load import load
    from sizer.measure.point import measure_point
    from sizer.measure.records import write_records
    from sizer.measure.run import release_device_memory, predicted_decode_tokens_per_s

    import torch

    cal, started, records = default_calibration(), time.perf_counter(), []
    for it in items:
        spec, precision = it["spec"], it["precision"]
        elapsed = time.perf_counter() - started
        if budget_s is not None and elapsed + it["seconds"] > budget_s:
            print(f"budget: stopping before {it['name']} {precision} (~{it['seconds']:.0f} s more, "
                  f"{elapsed:.0f} s used of {budget_s:.0f})", file=sys.stderr)
            break
        if not it["points"]:
            continue
        try:
            loaded = load(spec, it["config"], None, precision, device, attention_for(spec))
        except torch.OutOfMemoryError as e:
            print(f"does not load: {it['name']} {precision}: {str(e)[:120]}", file=sys.stderr)
            release_device_memory(torch, device)
            continue
        except Exception as e:  # a family bitsandbytes or this device cannot run: say so, go on
            print(f"skip {it['name']} {precision}: {e.__class__.__name__}: {str(e)[:120]}", file=sys.stderr)
            release_device_memory(torch, device)
            continue
        print(f"{spec.name} {precision}: loaded in {loaded.load_s:.1f} s", file=sys.stderr)
        failed = []
        for ctx, batch in it["points"]:
            if dominated((ctx, batch), failed):
                continue
            r = measure_point(loaded, ctx, batch, NEW_TOKENS, cal)
            if r.status != "ok":
                failed.append((ctx, batch))
            elif device == "cuda":
                r.predicted_decode_tokens_per_s = predicted_decode_tokens_per_s(spec, precision, ctx, batch, cal)
            records.append(r)
            write_records(out_csv, [r])          # kept even if the call is killed after this point
            err = (r.predicted_peak_bytes - r.measured_peak_bytes) / r.measured_peak_bytes if r.measured_peak_bytes else float("nan")
            print(f"{spec.name:28s} {precision:5s} {batch:2d} x {ctx:5d}: {r.status} weights "
                  f"{r.measured_weights_bytes == r.predicted_weights_bytes} kv "
                  f"{r.measured_kv_cache_bytes == r.predicted_kv_cache_bytes} peak {err:+.1%}", file=sys.stderr)
        del loaded
        release_device_memory(torch, device)
    return records


def repredict(records: list) -> list:
    """The same measurements with sizer's current predictions (after the model changes, no re-run),
    for the transformers release each record was measured with."""
    from sizer.calc.transformers_releases import spec_for_transformers
    from sizer.calc.calibration import default_calibration
    from sizer.families import spec_from_config
    from sizer.inputs.resolve import get_model
    from sizer.measure.predict import predict

    cal = default_calibration()
    for r in records:
        name = r.model.removesuffix(" (scaled)")
        spec = spec_from_config(scaled_config(name), r.model, name) if r.model.endswith(" (scaled)") else get_model(name)
        spec = spec_for_transformers(spec, r.transformers_version)
        pred = predict(spec, r.precision, r.context_length, r.batch_size, r.device, r.attention, cal,
                       r.kernel or "reference")      # GPTQ's path, or bitsandbytes' CPU fallback
        r.predicted_weights_bytes, r.predicted_kv_cache_bytes = pred["weights"], pred["kv"]
        r.predicted_activation_bytes, r.predicted_peak_bytes = pred["activations"], pred["peak"]
        r.predicted_process_bytes, r.predicted_decode_peak_bytes = pred["process"], pred["decode_peak"]
    return records


def _shown(path: Path) -> str:
    """A path relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(RESULTS.parents[1]))
    except ValueError:
        return str(path)


def summary(records, device: str, csv_path: Path | None = None) -> str:
    from sizer.measure.calibrate import fit_calibration, peak_errors, split
    from sizer.calc.calibration import default_calibration

    prior = default_calibration()
    report = fit_calibration(records, prior)
    ok = [r for r in records if r.status == "ok"]
    _, held = split(ok)

    def rel(a, b):
        return abs(a - b) / b if b else 0.0

    weights = [rel(r.predicted_weights_bytes, r.measured_weights_bytes) for r in ok]
    kv = [rel(r.predicted_kv_cache_bytes, r.measured_kv_cache_bytes) for r in ok]
    before_all = peak_errors(ok, prior, prior)
    lines = [
        f"# Validation of sizer's predictions ({device})", "",
        f"{len(ok)} points: {len({r.model for r in ok})} architectures x {sorted({r.precision for r in ok})} x "
        f"contexts {sorted({r.context_length for r in ok})} x batches {sorted({r.batch_size for r in ok})}; "
        f"{ok[0].cpu if device == 'cpu' else ok[0].gpu_name}, torch {ok[0].torch_version}, transformers "
        f"{ok[0].transformers_version}. Records: {_shown(csv_path or RESULTS / f'measure_{device}.csv')}.", "",
        "| quantity | median error | worst error |", "|---|---:|---:|",
        f"| weights (params + quantization statistics) | {median(weights):.2%} | {max(weights):.2%} |",
        f"| KV cache after prefill | {median(kv):.2%} | {max(kv):.2%} |",
        f"| peak memory, all points, uncalibrated | {before_all[0]:.2%} | {before_all[1]:.2%} |",
        f"| peak memory, {len(held)} held-out points, before calibration | {report.before[0]:.2%} | {report.before[1]:.2%} |",
        f"| peak memory, {len(held)} held-out points, after calibration | {report.after[0]:.2%} | {report.after[1]:.2%} |",
    ]
    decode = [rel(r.predicted_decode_peak_bytes, r.measured_decode_peak_bytes) for r in ok
              if r.predicted_decode_peak_bytes and r.measured_decode_peak_bytes]
    if decode:
        lines.append(f"| peak memory of the first decode step, uncalibrated | {median(decode):.2%} | "
                     f"{max(decode):.2%} |")
    process = [rel(r.predicted_process_bytes, r.measured_process_bytes) for r in ok
               if r.predicted_process_bytes and r.measured_process_bytes]
    if process:
        lines.append(f"| device memory of the process (NVML, CUDA context included), uncalibrated | "
                     f"{median(process):.2%} | {max(process):.2%} |")
    speed = [r.decode_tokens_per_s / r.predicted_decode_tokens_per_s for r in ok
             if r.decode_tokens_per_s and r.predicted_decode_tokens_per_s]
    if speed:
        lines.append(f"| decode tokens/s, measured / predicted (ratio, not error) | {median(speed):.2f} | "
                     f"{min(speed):.2f} (lowest) |")
    misfits = [r for r in records if r.status != "ok"]
    if misfits:
        lines += ["", f"{len(misfits)} points ran out of memory (measured does-not-fit), with sizer's predicted need:"]
        lines += [f"- {r.model} {r.precision} {r.batch_size} x {r.context_length:,}: predicted "
                  f"{(r.predicted_process_bytes or r.predicted_peak_bytes) / 2**30:.1f} GiB" for r in misfits]
    lines += ["", f"Fitted on {report.train} points: " + ", ".join(f"{k} = {getattr(report.calibration, k):.4g}"
                                                               for k in report.fitted) + ".", ""]
    return "\n".join(lines), report.calibration


def available_bytes(device: str) -> int:
    """Device memory this process can use: CUDA's free memory (the catalog's H100 total when
    planning without a GPU here), or available host memory."""
    if device == "cuda":
        try:
            import torch

            if torch.cuda.is_available():
                return torch.cuda.mem_get_info()[0]
        except ImportError:
            pass
        from sizer.catalog import get_gpu

        gpu = get_gpu(GPU_FOR_ESTIMATES)
        return gpu.cuda_memory_bytes or gpu.memory_bytes
    from sizer.env.proc import meminfo_available_bytes

    return meminfo_available_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--full", action="store_true", help="full-size catalog models (needs an 80 GB GPU)")
    parser.add_argument("--quick", action="store_true", help="fewer points (a smoke run)")
    parser.add_argument("--core", action="store_true",
                        help="the full-size models on fewer points, bf16 loads first: one device call")
    parser.add_argument("--models", help="comma-separated subset of the grid's models")
    parser.add_argument("--plan", action="store_true", help="print the points and estimated time, run nothing")
    parser.add_argument("--budget-s", type=float, help="stop before a load whose estimated time would pass this")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the CSV, summary and calibration")
    parser.add_argument("--tag", help="write measure_<device>.<tag>.csv only (one part of a campaign)")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="PART.csv",
                        help="join part CSVs into measure_<device>.csv and write the summary")
    parser.add_argument("--repredict", action="store_true",
                        help="keep the recorded measurements, recompute sizer's predictions, rewrite the summary")
    args = parser.parse_args()
    from sizer.calc.calibration import default_calibration
    from sizer.measure.records import read_records, records_to_csv

    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        records = [r for part in args.merge for r in read_records(part)]
        args.device = records[0].device if records else args.device
    elif args.repredict:
        records = repredict(read_records(args.out / f"measure_{args.device}.csv"))
    else:
        args.full = args.full or args.core
        names = models(args.full, args.models.split(",") if args.models else None)
        available = available_bytes(args.device)
        items = work(names, args.full, args.quick, args.device, available, default_calibration(), args.core)
        print_plan(items, available)
        if args.plan:
            return 0
        name = f"measure_{args.device}.{args.tag}.csv" if args.tag else f"measure_{args.device}.csv"
        out_csv = args.out / name
        if out_csv.exists():
            out_csv.unlink()
        records = run(items, args.device, out_csv, args.budget_s)
        if args.tag:
            return 0
    (args.out / f"measure_{args.device}.csv").write_text(records_to_csv(records))
    text, calibration = summary(records, args.device, args.out / f"measure_{args.device}.csv")
    (args.out / f"validation_{args.device}.md").write_text(text)
    (args.out / f"calibration_{args.device}.json").write_text(calibration.to_json())
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
