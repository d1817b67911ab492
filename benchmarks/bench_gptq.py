"""sizer's GPTQ against GPTQModel on the same model, calibration and machine.

Both quantize one synthetic Llama (random bf16 weights, tokenizer trained on CPython's help text) at
4-bit, group 128, symmetric, damp 0.01, no act-order, from the same calibration windows. Each tool
runs in a fresh process; GPTQModel is warmed up first on a tiny model so its one-time C++ build is
not counted. Time: the tool's own quantize time (sizer: the whole streamed run including reading
shards; GPTQModel: quantize + save, excluding its load) and the process wall time. Memory: the
process's peak resident set (VmHWM).

Error is judged the same way for both checkpoints, by sizer (GPTQModel's sym v1 checkpoints load in
sizer's loader): per-Linear relative output error ||XW - XQ|| / ||XW|| with X the inputs of the
original model on held-out text (never calibrated on), and held-out perplexity.

Writes benchmarks/results/gptq_vs_gptqmodel.csv (one row per tool, the machine named).
Usage: python benchmarks/bench_gptq.py [--layers 8 --hidden 1024 --samples 32 --seq-len 512] [--device cpu|cuda]
       [--results FILE.csv]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "gptq_vs_gptqmodel.csv"
COLUMNS = ("timestamp", "machine", "cpu_count", "tool", "version", "model", "bits", "group_size", "samples", "seq_len",
           "quantize_s", "process_wall_s", "peak_rss_bytes", "mean_heldout_error", "median_heldout_error",
           "max_heldout_error", "heldout_perplexity", "linears", "device", "peak_device_bytes")


def run(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} failed:\n{proc.stderr[-4000:]}")
    return proc, time.perf_counter() - start


def heldout_errors(source: Path, checkpoint: Path, windows: list[list[int]], device: str = "cpu"
                   ) -> tuple[list[float], float]:
    """Per-Linear held-out relative error of `checkpoint` against the original weights, and its
    held-out perplexity (both loaded in float32 on `device`)."""
    import math

    import torch
    import transformers

    from sizer.quantize.load import load_gptq
    from sizer.kernels.gptq import HessianAccumulator, hessian_relative_error

    original = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, device_map=device)
    accumulators, handles = {}, []
    for name, module in original.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in name:
            accumulators[name] = HessianAccumulator(module.in_features)
            handles.append(module.register_forward_hook(accumulators[name].hook))
    with torch.no_grad():
        for w in windows:
            original(input_ids=torch.tensor([w], device=device))
    for h in handles:
        h.remove()
    del original.model.embed_tokens, original.lm_head          # the Linears' weights are all that is needed now
    quantized = load_gptq(checkpoint, device=device)
    errors = []
    for name, acc in accumulators.items():
        weight = original.get_submodule(name).weight
        dequantized = quantized.get_submodule(name).dequantized(torch.float32)
        errors.append(hessian_relative_error(weight, dequantized, acc.hessian))
    nll, count = 0.0, 0
    with torch.no_grad():
        for w in windows:
            ids = torch.tensor([w], device=device)
            logits = quantized(input_ids=ids).logits[0, :-1]
            nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += len(w) - 1
    return errors, math.exp(nll / count)


def machine_name(device: str) -> str:
    """The GPU's name for a CUDA run, else the CPU's (model and cores)."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name()
    from sizer.env.hardware import cpu_name

    return cpu_name()


def append_rows(path: Path, rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> None:
    """Add rows to a results CSV, rewriting an older file's header when columns were added since
    (its rows keep their values; new columns are empty there)."""
    old = []
    if path.exists():
        with path.open(newline="") as f:
            old = list(csv.DictReader(f))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(old + rows)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--intermediate", type=int, default=2816)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--heldout", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sizer-bench-gptq"))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where both tools quantize (and the errors are computed)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="CSV to append the rows to")
    parser.add_argument("--tools", default="sizer,gptqmodel",
                        help="comma-separated: sizer alone where GPTQModel is not installed")
    args = parser.parse_args()

    from sizer.quantize.text import read_calibration_text, token_windows, tokenize_documents
    from sizer.testing import help_text_documents, make_llama, write_calibration_file

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    source = make_llama(args.work / "source", config=dict(hidden_size=args.hidden, intermediate_size=args.intermediate,
                                                          num_hidden_layers=args.layers, num_attention_heads=16,
                                                          num_key_value_heads=4, vocab_size=args.vocab))
    docs = help_text_documents()
    cut = int(len(docs) * 0.8)
    calibration = write_calibration_file(args.work / "calibration.txt", docs[:cut])
    heldout_file = write_calibration_file(args.work / "heldout.txt", docs[cut:])
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    windows = token_windows(tokenize_documents(tokenizer, read_calibration_text(str(heldout_file))), args.seq_len,
                            0, args.heldout)[1]
    common = ["--bits", "4", "--group-size", "128", "--samples", str(args.samples), "--seq-len", str(args.seq_len)]
    env = dict(os.environ)
    if args.device == "cpu":
        env.update({"CUDA_VISIBLE_DEVICES": "", "GPTQMODEL_CPU_WORKERS": str(os.cpu_count() or 1)})
    device_args = ["--device", args.device]
    tools = ROOT / "benchmarks" / "gptqmodel_tools.py"

    runs = []      # (tool, version, folder, quantize seconds, process wall, peak RSS, peak device bytes)
    if "gptqmodel" in args.tools:
        # On the GPU, GPTQModel's post-quantization kernel is its torch one: its CUDA kernels would be
        # compiled at first use (minutes), which is not quantization.
        backend = ["--backend", "torch"] if args.device == "cuda" else []
        # GPTQModel: warm its one-time kernel build on a tiny model first.
        tiny = make_llama(args.work / "tiny")
        run([sys.executable, str(tools), "quantize", str(tiny), "--calibration", str(calibration), "--bits", "4",
             "--group-size", "128", "--samples", "4", "--seq-len", "64", "--damp-percent", "0.01",
             "--out", str(args.work / "tiny-out"), "--csv", str(args.work / "warm.csv"), *device_args, *backend],
            env, args.work)
        proc, gm_wall = run([sys.executable, str(tools), "quantize", str(source), "--calibration", str(calibration),
                             *common, "--damp-percent", "0.01", "--out", str(args.work / "gptqmodel"), "--csv",
                             str(args.work / "gptqmodel.csv"), *device_args, *backend], env, args.work)
        with (args.work / "gptqmodel.csv").open() as f:
            gm = list(csv.DictReader(f))[-1]
        import gptqmodel  # (version only)

        runs.append(("gptqmodel", gptqmodel.__version__, args.work / "gptqmodel", float(gm["wall_s"]), gm_wall,
                     int(gm["peak_rss_bytes"]), gm.get("peak_device_bytes") or None))

    proc, ours_wall = run([sys.executable, "-m", "sizer", "quantize", str(source), "--method", "gptq", "--calibration-text",
                           str(calibration), *common, "--heldout-samples", "0", "--damp", "0.01", *device_args,
                           "--output", str(args.work / "sizer"), "--format", "json"], env, ROOT)
    ours = json.loads(proc.stdout)
    import sizer

    runs.insert(0, ("sizer", sizer.__version__, args.work / "sizer", ours["seconds"], ours_wall, ours["peak_rss_bytes"],
                    ours.get("peak_device_bytes")))

    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    model = f"llama-synthetic-{args.layers}x{args.hidden}"
    rows = []
    machine = machine_name(args.device)
    for tool, version, folder, seconds, wall, peak, peak_device in runs:
        errors, ppl = heldout_errors(source, folder, windows, args.device)
        rows.append({"timestamp": now, "machine": machine, "cpu_count": os.cpu_count(), "tool": tool,
                     "version": version, "model": model, "bits": 4, "group_size": 128, "samples": args.samples,
                     "seq_len": args.seq_len, "quantize_s": round(seconds, 2), "process_wall_s": round(wall, 2),
                     "peak_rss_bytes": peak, "mean_heldout_error": round(statistics.mean(errors), 6),
                     "median_heldout_error": round(statistics.median(errors), 6),
                     "max_heldout_error": round(max(errors), 6), "heldout_perplexity": round(ppl, 4),
                     "linears": len(errors), "device": args.device,
                     "peak_device_bytes": int(peak_device) if peak_device else ""})
    append_rows(args.results, rows)
    for row in rows:
        print(json.dumps(row))
    if len(rows) == 2:
        print(f"time ratio sizer/gptqmodel: {rows[0]['quantize_s'] / rows[1]['quantize_s']:.2f} (target <= 0.8); "
              f"mean error ratio {rows[0]['mean_heldout_error'] / rows[1]['mean_heldout_error']:.3f}")


if __name__ == "__main__":
    main()
