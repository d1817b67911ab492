"""The dtype GPTQ's layer forwards run in, chosen by measuring this device's matrix products.
"""

from __future__ import annotations

import time

PROBE_SIZE = 256          # a bfloat16 product this wide first: 1/64 of the full measurement's work
PROBE_MARGIN = 4          # a small product runs slower per FLOP; bfloat16 must lose by more than this



def measure_matmul_gflops(device: str, dtype: str = "float32", n: int = 1024, repeats: int = 4) -> float:
    """Best of a few n x n matrix products in `dtype` on `device` (n=1024: about 20 ms each in float32
    on 2 CPU cores, but seconds each in bfloat16 where the CPU has no bfloat16 instructions)."""
    import torch

    a = torch.randn(n, n, device=device).to(getattr(torch, dtype))
    b = torch.randn(n, n, device=device).to(getattr(torch, dtype))
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def choose_compute_dtype(device: str, requested: str) -> tuple[str, float, float]:
    """(dtype of the layer forwards, its measured matmul GFLOP/s, float32's). "auto": bfloat16 on
    CUDA; on a CPU, bfloat16 when it multiplies faster than float32 (AMX / AVX512-BF16: 4.5x on the
    CI Xeon), else float32. Hessians, the solver and the errors are float32 whatever this is."""
    fp32 = measure_matmul_gflops(device, "float32")
    if requested in ("fp32", "float32"):
        return "float32", fp32, fp32
    if requested == "auto" and device != "cuda":
        probe = measure_matmul_gflops(device, "bfloat16", PROBE_SIZE, repeats=2)
        if probe * PROBE_MARGIN < fp32:     # far slower: not worth the full measurement (seconds here)
            return "float32", fp32, fp32
    bf16 = measure_matmul_gflops(device, "bfloat16")
    if requested == "auto" and device != "cuda" and bf16 <= fp32:
        return "float32", fp32, fp32
    return "bfloat16", bf16, fp32
