"""Runtime memory outside weights, KV cache and activations: the uncalibrated prior, with sources.

These are the starting values of sizer/data/calibration.json (a test keeps the two equal while that file
says it is uncalibrated); `sizer calibrate` fits new values from `sizer measure` records, and the
calculator reads them through sizer.calc.calibration.
"""

from __future__ import annotations

MiB = 1 << 20

# CUDA context of one process (driver state, module images, loaded kernels): visible to NVML,
# outside torch's allocator statistics. "Several hundred MiB per process" (engines.md); 500 MiB is
# typical of CUDA 12 with lazy module loading on Hopper. Calibrated by measurement.
CUDA_CONTEXT_BYTES = 500 * MiB

# cuBLAS / cuBLASLt workspace per handle: PyTorch's default CUBLAS_WORKSPACE_CONFIG is ":4096:8"
# (8 x 4 MiB = 32 MiB) on Hopper and newer, ":4096:2:16:8" (about 8 MiB) before
# (aten/src/ATen/cuda/CublasHandlePool.cpp). The larger value is used.
CUBLAS_WORKSPACE_BYTES = 32 * MiB

# The caching allocator keeps freed blocks reserved and rounds large requests up to 2 MiB, so
# reserved memory exceeds the live tensors mostly around the short-lived activations and the
# growing KV cache. Fraction of (activations + KV cache); placeholder until calibrated.
ALLOCATOR_SLACK_FRACTION = 0.05

