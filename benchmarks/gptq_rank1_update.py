"""The GPTQ solver's inner step, timed three ways on this machine.

Each quantized column updates the rest of its block with a rank-1 product:
block[:, i+1:] -= error x hinv[i, i+1:]. The view is strided (a column slice of a row-major block),
and torch's `addr_` on such a view takes a slow path on CPU. This times, per call, for the stacked
row counts the solver sees (q/k/v of a 4096-wide model is 6144 rows; gate/up 28672):

- addr_  : block[:, i+1:].addr_(error, hinv_row, alpha=-1)
- addmm_ : block[:, i+1:].addmm_(error[:, None], hinv_row[None, :], alpha=-1)   (what kernels/gptq.py uses)
- outer  : block[:, i+1:] -= torch.outer(error, hinv_row)                          (allocates the product)

and checks that addmm_ gives the same block as addr_ to float32 rounding. One row per (method,
rows) to benchmarks/results/gptq_rank1_update.csv, the machine named.
Run: python benchmarks/gptq_rank1_update.py [--device cpu|cuda] [--rows 256,1024,4096,6144]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = Path(__file__).resolve().parent / "results" / "gptq_rank1_update.csv"
COLUMNS = ("timestamp", "machine", "device", "torch_version", "threads", "method", "rows", "block_columns",
           "microseconds_per_update", "max_abs_difference_vs_addr")
BLOCK = 128


def _updates(method: str):
    import torch

    def addr(block, error, hinv, i):
        block[:, i + 1:].addr_(error, hinv[i, i + 1:], alpha=-1.0)

    def addmm(block, error, hinv, i):
        block[:, i + 1:].addmm_(error[:, None], hinv[i:i + 1, i + 1:], alpha=-1.0)

    def outer(block, error, hinv, i):
        block[:, i + 1:] -= torch.outer(error, hinv[i, i + 1:])

    return {"addr": addr, "addmm": addmm, "outer": outer}[method]


def time_method(method: str, rows: int, device: str, repeats: int) -> tuple[float, object]:
    """Microseconds per rank-1 update over a whole block's columns, and the final block."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(rows)
    start_block = torch.randn(rows, BLOCK, generator=gen).to(device)
    errors = torch.randn(BLOCK, rows, generator=gen).to(device)
    hinv = torch.randn(BLOCK, BLOCK, generator=gen).triu().to(device) * 0.1
    update = _updates(method)
    best = float("inf")
    for _ in range(repeats):
        block = start_block.clone()
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(BLOCK - 1):
            update(block, errors[i], hinv, i)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t) / (BLOCK - 1) * 1e6)
    return best, block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rows", default="256,1024,4096,6144")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    import torch

    from bench_gptq import append_rows, machine_name

    machine = machine_name(args.device)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows_out = []
    for rows in (int(r) for r in args.rows.split(",")):
        reference = None
        for method in ("addr", "addmm", "outer"):
            micros, block = time_method(method, rows, args.device, args.repeats)
            if reference is None:
                reference = block
            diff = float((block - reference).abs().max())
            rows_out.append({"timestamp": now, "machine": machine, "device": args.device,
                             "torch_version": torch.__version__, "threads": torch.get_num_threads(),
                             "method": method, "rows": rows, "block_columns": BLOCK,
                             "microseconds_per_update": round(micros, 2), "max_abs_difference_vs_addr": diff})
            print(f"{method:6s} rows {rows:6d}: {micros:9.1f} us per update (max |diff| vs addr_ {diff:.2e})")
    append_rows(args.results, rows_out, COLUMNS)
    print(f"{len(rows_out)} rows appended to {args.results} ({machine}, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
