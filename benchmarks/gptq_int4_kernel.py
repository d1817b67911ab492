"""sizer's QuantLinear on a 4-bit GPTQ Linear: the reference path against the int4 kernel.

For the Linear shapes of an 8B Llama (q/o 4096 x 4096, gate/up 4096 -> 14336, down 14336 -> 4096),
4-bit, group 128, bf16 activations of M rows (1 = a decode step, 512 = a prefill chunk), times per call:

- reference : dequantize the packed weight to bf16, then matmul (QuantLinear's default path)
- int4      : torch's fused int4 matmul on the repacked weight (QuantLinear.use_int4_kernel)
- bf16      : a plain bf16 matmul on the dequantized weight: what an unquantized Linear costs

and the error of each quantized path against the exact product (float64 on the same weights), so
"faster and equal" is read from one table. One row per (shape, M, path) to
benchmarks/results/gptq_int4_kernel.csv, the machine named.

--end-to-end: a synthetic Llama (8 layers, hidden 2048, d_ff 5632, random bf16 weights) quantized by
sizer (4-bit, group 128, 8 x 256 calibration tokens) and measured by `sizer measure` with each kernel
(512-token prompts, batches 1 and 4, 16 new tokens); the records, with their `kernel` column, are
appended to benchmarks/results/gptq_int4_measure.csv.
Run: python benchmarks/gptq_int4_kernel.py [--device cpu|cuda] [--rows 1,16,128,512] [--end-to-end]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = Path(__file__).resolve().parent / "results" / "gptq_int4_kernel.csv"
MEASURE_RESULTS = Path(__file__).resolve().parent / "results" / "gptq_int4_measure.csv"
E2E_LLAMA = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 8, "num_attention_heads": 16,
             "num_key_value_heads": 8, "vocab_size": 8192, "max_position_embeddings": 4096}
COLUMNS = ("timestamp", "machine", "device", "torch_version", "threads", "in_features", "out_features", "rows",
           "path", "milliseconds_per_call", "speedup_vs_reference", "max_relative_error_vs_exact")
SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096))    # (in_features, out_features)
GROUP = 128
MIN_SECONDS = 0.5


def _layer(k: int, n: int, device: str):
    """A 4-bit group-128 QuantLinear with random codes, zeros and scales, and its exact float64 weight."""
    import torch

    from sizer.kernels.gptq_pack import pack_gptq_v1
    from sizer.kernels.quant_linear import QuantLinear

    gen = torch.Generator().manual_seed(k + n)
    groups = k // GROUP
    codes = torch.randint(0, 16, (n, k), generator=gen)
    zeros = torch.randint(1, 16, (groups, n), generator=gen)
    scales = (torch.rand(groups, n, generator=gen) * 0.01 + 0.001).to(torch.float16)
    g_idx = torch.arange(k, dtype=torch.int32) // GROUP
    layer = QuantLinear(k, n, 4, GROUP, bias=False)
    layer.load_state_dict(pack_gptq_v1(codes, zeros, scales, g_idx, 4))
    exact = scales.double()[g_idx.long()].t() * (codes.double() - zeros.double()[g_idx.long()].t())
    return layer.to(device), exact


def time_call(fn, device: str) -> float:
    """Milliseconds per call: the best of repeated runs over at least MIN_SECONDS."""
    import torch

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()
    best, spent = float("inf"), 0.0
    while spent < MIN_SECONDS:
        t = time.perf_counter()
        fn()
        sync()
        took = time.perf_counter() - t
        best, spent = min(best, took), spent + took
    return best * 1e3


def measure_shape(k: int, n: int, rows: list[int], device: str) -> list[dict]:
    import torch

    layer, exact = _layer(k, n, device)
    dense = layer.dequantized(torch.bfloat16)
    exact = exact.to(device)
    results = []
    xs = {m: torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(device, torch.bfloat16) for m in rows}
    reference = {m: (time_call(lambda x=xs[m]: layer(x), device), layer(xs[m])) for m in rows}
    bf16 = {m: time_call(lambda x=xs[m], w=dense: x @ w.t(), device) for m in rows}
    del dense
    layer.use_int4_kernel(torch.bfloat16)
    for m in rows:
        truth = xs[m].double() @ exact.t()
        scale = float(truth.abs().max())
        int4_ms = time_call(lambda x=xs[m]: layer(x), device)
        ref_ms, ref_out = reference[m]
        for path, ms, out in (("reference", ref_ms, ref_out), ("int4", int4_ms, layer(xs[m])), ("bf16", bf16[m], None)):
            error = float((out.double() - truth).abs().max()) / scale if out is not None else None
            results.append({"in_features": k, "out_features": n, "rows": m, "path": path,
                            "milliseconds_per_call": round(ms, 4), "speedup_vs_reference": round(ref_ms / ms, 2),
                            "max_relative_error_vs_exact": None if error is None else f"{error:.3e}"})
    return results


def end_to_end(device: str, results: Path) -> None:
    """Quantize E2E_LLAMA with sizer, then `sizer measure` it on each kernel; records appended to `results`."""
    import tempfile

    from sizer.quantize.run import GptqSettings, run_gptq
    from sizer.measure.records import write_records
    from sizer.measure.run import run_measure
    from sizer.testing import help_text_documents, make_llama

    with tempfile.TemporaryDirectory() as tmp:
        source, checkpoint = make_llama(Path(tmp) / "source", E2E_LLAMA), Path(tmp) / "gptq"
        checkpoint.mkdir()
        run_gptq(source, checkpoint, GptqSettings(samples=8, seq_len=256, heldout_samples=1, device=device),
                 help_text_documents())
        for kernel in ("reference", "int4"):
            records = run_measure(str(checkpoint), None, [512], [1, 4], 16, device, None, "sdpa", False, None,
                                  gptq_kernel=kernel)
            write_records(results, records)
            for r in records:
                print(f"{kernel:9s} batch {r.batch_size}: prefill {r.prefill_s:.2f} s, decode "
                      f"{r.decode_tokens_per_s:.2f} tokens/s per sequence, peak {r.measured_peak_bytes / 2**30:.3f} "
                      f"GiB (predicted {r.predicted_peak_bytes / 2**30:.3f})")
    print(f"records appended to {results}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rows", default="1,16,128,512", help="activation rows per call (tokens x batch)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--end-to-end", action="store_true", help="quantize and measure a synthetic Llama instead")
    args = parser.parse_args()
    import torch

    if args.end_to_end:
        return end_to_end(args.device, MEASURE_RESULTS if args.results == RESULTS else args.results)

    from bench_gptq import append_rows, machine_name

    rows = [int(r) for r in args.rows.split(",")]
    common = {"timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "machine": machine_name(args.device), "device": args.device, "torch_version": torch.__version__,
              "threads": torch.get_num_threads()}
    out = []
    for k, n in SHAPES:
        for r in measure_shape(k, n, rows, args.device):
            out.append({**common, **r})
            err = r["max_relative_error_vs_exact"] or "-"
            print(f"{k:5d} -> {n:5d}  M {r['rows']:4d}  {r['path']:9s} {r['milliseconds_per_call']:10.3f} ms  "
                  f"x{r['speedup_vs_reference']:<7} error {err}")
    append_rows(args.results, out, COLUMNS)
    print(f"{len(out)} rows appended to {args.results} ({common['machine']})")


if __name__ == "__main__":
    main()
