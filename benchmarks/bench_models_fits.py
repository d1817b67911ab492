"""Latency of `sizer models --fits GPUS`: the whole catalog planned at its best quantization.

Target: at most 10 s a command (whole process) on a 2-core machine. For comparison, `--baseline`
also times the direct way: one `fit` per catalog model over the whole ladder with fit's default
searches (longest context, most sequences), in process. Writes benchmarks/results/models_fits_latency.csv
with the machine beside every figure.
Run: python benchmarks/bench_models_fits.py [--runs 1] [--baseline]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_estimate import machine, time_command  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "models_fits_latency.csv"
TARGET_S = 10.0
GPUS = ("RTX-4060", "RTX-4090", "24GB", "m3-max-64gb", "2xRTX-3090", "H100")
COLUMNS = ("date", "machine", "what", "runs", "median_s", "max_s", "target_s", "models_planned", "models_run")


def baseline_seconds(gpus: str) -> tuple[float, int, int]:
    """One fit per model over the whole llama.cpp ladder, fit's default searches (no probing)."""
    from sizer.catalog import model_entries
    from sizer.errors import SizerError
    from sizer.plan.catalog_fit import ladder
    from sizer.plan.fit import fit

    start, runs = time.perf_counter(), 0
    names = list(model_entries())
    for name in names:
        try:
            result = fit(name, f"1x{gpus}", "llamacpp", ladder(None, "llamacpp", None), None, suggestions=False,
                         max_gpus=1)
        except SizerError:
            continue
        runs += any(o.verdict != "does-not-fit" for o in result.options)
    return time.perf_counter() - start, len(names), runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--baseline", action="store_true", help="also time one full fit per model (slow)")
    args = parser.parse_args()
    from sizer.plan.catalog_fit import fits_catalog

    date, where, rows = datetime.now(timezone.utc).strftime("%Y-%m-%d"), machine(), []
    for gpus in GPUS:
        argv = [sys.executable, "-m", "sizer", "models", "--fits", gpus, "--format", "csv"]
        times = time_command(argv, args.runs)
        result = fits_catalog(gpus, limit=None)
        rows.append({"date": date, "machine": where, "what": f"sizer models --fits {gpus} ({result.engine})",
                     "runs": args.runs, "median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
                     "target_s": TARGET_S, "models_planned": result.planned, "models_run": result.runnable})
        print(f"{rows[-1]['what']}: {rows[-1]['median_s']} s (target {TARGET_S} s); "
              f"{result.runnable} of {result.planned} run")
    if args.baseline:
        seconds, planned, runs = baseline_seconds("RTX-4090")
        rows.append({"date": date, "machine": where, "what": "baseline: one fit per model, whole ladder, "
                     "default searches (RTX-4090, llamacpp, in process)", "runs": 1, "median_s": round(seconds, 3),
                     "max_s": round(seconds, 3), "target_s": "", "models_planned": planned, "models_run": runs})
        print(f"{rows[-1]['what']}: {rows[-1]['median_s']} s")
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {RESULTS}")
    return 0 if all(r["max_s"] <= TARGET_S for r in rows if r["target_s"]) else 1


if __name__ == "__main__":
    sys.exit(main())
