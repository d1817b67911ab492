"""The dtype GPTQ's layer forwards run in, chosen by measuring this device's matrix products.
"""

from __future__ import annotations

import time

PROBE_SIZE = 256          # the dtype race runs on products this wide: 1/64 of a full measurement's work
PROBE_ROUNDS = 3          # float32 and bfloat16 alternately, best of each: load hits both alike



def measure_matmul_gflops(device: str, dtype: str = "float32", n: int = 1024, repeats: int = 8) -> float:
    """Best of a few n x n products in `dtype` on `device`, through torch.nn.functional.linear, the op
    the layer forwards run (n=1024: ~15 ms each in float32 on 2 CPU cores). The op matters on CPUs
    without bfloat16 instructions: there `a @ b` in bfloat16 ran at ~1 GFLOP/s and linear at ~19
    (torch 2.13, 2-core EPYC), and the run's forwards go at linear's rate. The best of 8 because a
    shared machine's single products vary by +-15 %."""
    import torch
    from torch.nn.functional import linear

    a = torch.randn(n, n, device=device).to(getattr(torch, dtype))
    b = torch.randn(n, n, device=device).to(getattr(torch, dtype))
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        linear(a, b).sum().item()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def choose_compute_dtype(device: str, requested: str) -> tuple[str, float, float]:
    """(dtype of the layer forwards, its measured matmul GFLOP/s, float32's). "auto": bfloat16 on
    CUDA; on a CPU, bfloat16 when it multiplies faster than float32 (AMX / AVX512-BF16: 4.5x on the
    CI Xeon), else float32. Hessians, the solver and the errors are float32 whatever this is."""
    fp32 = measure_matmul_gflops(device, "float32")
    if requested in ("fp32", "float32"):
        return "float32", fp32, fp32
    if requested == "auto" and device != "cuda" and not bfloat16_wins(device):
        return "float32", fp32, fp32       # (bfloat16 is not measured in full: seconds on such CPUs)
    bf16 = measure_matmul_gflops(device, "bfloat16")
    if requested == "auto" and device != "cuda" and bf16 <= fp32:
        return "float32", fp32, fp32
    return "bfloat16", bf16, fp32


def bfloat16_wins(device: str) -> bool:
    """Whether bfloat16 products beat float32 ones on `device`, raced on small products in alternation
    (a loaded machine slows both alike; measured apart, a slowed float32 could lose to a slow bfloat16)."""
    best = {"float32": 0.0, "bfloat16": 0.0}
    for _ in range(PROBE_ROUNDS):
        for dtype in best:
            best[dtype] = max(best[dtype], measure_matmul_gflops(device, dtype, PROBE_SIZE, repeats=1))
    return best["bfloat16"] > best["float32"]
