"""Predicted vs published fine-tuning throughput; writes benchmarks/results/finetune_speed.csv.

Every record of tests/data/finetune/published_speed.json is planned with sizer's step-time model
(sizer.finetune.speed) at its framework profile's MFU times its GPU architecture's factor. The MFUs
are fitted (median implied MFU) on the records of FIT_SOURCES, the Hopper factor on LLM Foundry's
paired A100 / H100 runs (ARCHITECTURE_SOURCE); the other sources are held out. Run: python benchmarks/finetune_speed.py [--check]  (--check: fail if the fitted values
differ from the constants in sizer/finetune/speed.py).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from statistics import median

from sizer.finetune.speed import ARCHITECTURE_EFFICIENCY, MFU
from sizer.finetune.speed_records import (ARCHITECTURE_SOURCE, FIT_SOURCES, MAX_PLAUSIBLE_MFU, PROFILE,
                                          fitted_architecture_efficiency, fitted_mfu, implied_mfu, tokens_per_gpu_s)

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "tests" / "data" / "finetune" / "published_speed.json"
OUT = ROOT / "benchmarks" / "results" / "finetune_speed.csv"
COLUMNS = ("id", "role", "source", "framework", "profile", "model", "method", "gpu", "gpu_count", "seq_len",
           "micro_batch_size", "gradient_checkpointing", "measured_tokens_per_s_per_gpu",
           "predicted_tokens_per_s_per_gpu", "error", "implied_mfu", "plausible")


def role(source: str) -> str:
    if source in FIT_SOURCES:
        return "fit-mfu"
    return "fit-architecture" if source == ARCHITECTURE_SOURCE else "holdout"


def row(record: dict) -> dict:
    predicted = tokens_per_gpu_s(record)
    measured = record["measured_tokens_per_s_per_gpu"]
    mfu = implied_mfu(record)
    return {"id": record["id"], "role": role(record["source"]),
            "source": record["source"], "framework": record["framework"], "profile": PROFILE[record["framework"]],
            "model": record.get("model") or "config", "method": record["method"], "gpu": record["gpu"],
            "gpu_count": record["gpu_count"], "seq_len": record["seq_len"],
            "micro_batch_size": record["micro_batch_size"], "gradient_checkpointing": record["gradient_checkpointing"],
            "measured_tokens_per_s_per_gpu": round(measured, 1), "predicted_tokens_per_s_per_gpu": round(predicted, 1),
            "error": round(predicted / measured - 1, 3), "implied_mfu": round(mfu, 3),
            "plausible": mfu <= MAX_PLAUSIBLE_MFU}


def summary(rows: list[dict], label: str) -> str:
    errors = [abs(r["error"]) for r in rows]
    if not errors:
        return f"{label}: no records"
    worst = max(rows, key=lambda r: abs(r["error"]))
    return (f"{label}: {len(rows)} records, median |error| {median(errors):.0%}, "
            f"worst {worst['error']:+.0%} ({worst['id']})")


def main(argv: list[str]) -> int:
    records = json.loads(RECORDS.read_text())["records"]
    rows = [row(r) for r in records]
    with OUT.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    for kind in ("fit-mfu", "fit-architecture", "holdout"):
        print(summary([r for r in rows if r["role"] == kind], f"{kind} (all)"))
        print(summary([r for r in rows if r["role"] == kind and r["plausible"]], f"{kind} (plausible)"))
    for source in sorted({r["source"] for r in rows}):
        print(summary([r for r in rows if r["source"] == source], f"  {source}"))
    fitted, hopper = fitted_mfu(records), fitted_architecture_efficiency(records)
    print(f"fitted MFU {fitted}, hopper {hopper}; in sizer/finetune/speed.py {MFU}, {ARCHITECTURE_EFFICIENCY}")
    if "--check" in argv and (fitted != MFU or hopper != ARCHITECTURE_EFFICIENCY["hopper"]):
        print("the fitted values differ from sizer/finetune/speed.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
