"""The dtype GPTQ's layer forwards run in, chosen by measuring this device's matrix products.
"""

from __future__ import annotations

import time


def measure_matmul_gflops(device: str, dtype: str = "float32") -> float:
    """Best of a few 1024x1024 matrix products in `dtype` on `device` (about 20 ms on 2 CPU cores)."""
    import torch

    n = 1024
    a = torch.randn(n, n, device=device).to(getattr(torch, dtype))
    b = torch.randn(n, n, device=device).to(getattr(torch, dtype))
    best = float("inf")
    for _ in range(4):
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
    bf16 = measure_matmul_gflops(device, "bfloat16")
    if requested == "auto" and device != "cuda" and bf16 <= fp32:
        return "float32", fp32, fp32
    return "bfloat16", bf16, fp32
