"""Peak memory of a block of work: CUDA's allocator statistics, or on CPU the profiler's allocation
events (the CPU analogue of max_memory_allocated) and the growth of the resident set.
"""

from __future__ import annotations

import os

from sizer.env.proc import peak_resident_bytes, reset_peak_resident


# Operators that only allocate their output: what is allocated inside one belongs to the operator
# that called it (a kernel's workspace is often an at::empty inside the kernel's operator)
FACTORY_OPERATORS = frozenset(f"aten::{name}" for name in (
    "empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "zeros", "zeros_like",
    "new_zeros", "ones", "ones_like", "new_ones", "full", "full_like", "new_full", "scalar_tensor"))


def counted_allocations(prof, paths: bool = False) -> list[tuple[int, int, str]]:
    """torch's CPU allocation events of a profile, in time order, as (time_ns, bytes, operator
    path) with frees negative, less each operator's own workspaces: a block freed before the
    innermost `aten::` operator that allocated it ends (a factory such as aten::empty stands for its
    caller). Those are the kernels' own buffers: oneDNN's and MKL's packing buffers in a matmul
    (cuBLAS keeps one workspace for the process), the CPU flash attention's per-thread blocks. What
    an operator's sub-operators return and it frees itself counts, as on CUDA, where the same
    composite code runs: softmax's float32 copy of a bf16 input (`softmax(x, dtype=float32)`
    converts first on any device; only CUDA's fp16 has a fused path), SDPA's bool mask converted to
    the compute dtype, the math SDPA's float32 scores. Frees between operators count when they
    happen, also inside a Python-level range such as a custom autograd Function (Bloom's GELU),
    whose temporaries are the model's own. `paths`: name each event's enclosing operators (for
    benchmarks/allocation_timeline.py; "" otherwise)."""
    blocks = []                                      # [time, bytes, ptr, end of the owning operator, path]
    stack = [(node, None, "") for node in prof.profiler.kineto_results.experimental_event_tree()]
    while stack:
        node, owner_end, path = stack.pop()
        if node.name == "[memory]":
            blocks.append((node.start_time_ns, node.extra_fields.alloc_size, node.extra_fields.ptr, owner_end, path))
            continue
        if node.name.startswith("aten::") and node.name not in FACTORY_OPERATORS:
            owner_end = node.end_time_ns
        child_path = f"{path}/{node.name.removeprefix('aten::')}" if paths else ""
        stack.extend((child, owner_end, child_path) for child in node.children)
    blocks.sort(key=lambda b: b[0])
    pending, counted = {}, [True] * len(blocks)      # ptr -> index of its live allocation
    for k, (t, nbytes, ptr, _, _) in enumerate(blocks):
        if nbytes > 0:
            pending[ptr] = k
        elif ptr in pending:
            a = pending.pop(ptr)
            if blocks[a][3] is not None and t <= blocks[a][3]:
                counted[a] = counted[k] = False      # a workspace of the operator that allocated it
    return [(t, nbytes, path) for (t, nbytes, _, _, path), keep in zip(blocks, counted) if keep]


def profiler_peak(prof) -> int:
    """Peak of live tensor bytes above the start (the CPU analogue of CUDA's max_memory_allocated)
    over `counted_allocations`."""
    live = peak = 0
    for _, nbytes, _ in counted_allocations(prof):
        live += nbytes
        peak = max(peak, live)
    return peak


TRACE_RANGE = "sizer::"


def range_peaks(prof) -> dict[str, tuple[int, int]]:
    """For each `record_function(TRACE_RANGE + label)` range of a profile: (the peak of live tensor
    bytes above the range's start, the peak above the profile's start), over `counted_allocations`."""
    ranges = {node.name.removeprefix(TRACE_RANGE): (node.start_time_ns, node.end_time_ns)
              for node in prof.profiler.kineto_results.experimental_event_tree() if node.name.startswith(TRACE_RANGE)}
    events = counted_allocations(prof)
    out = {}
    for label, (t0, t1) in ranges.items():
        live = sum(nbytes for t, nbytes, _ in events if t < t0)
        base = peak = live
        for t, nbytes, _ in events:
            if t0 <= t <= t1:
                live += nbytes
                peak = max(peak, live)
        out[label] = (peak - base, peak)
    return out


KINETO_QUIET_LEVEL = 99        # above Kineto's highest log level: nothing printed


class CpuTrace:
    """One profile over a point's prefill and its profiled decode step (CPU), each a named range.
    The profiler records no free of a block allocated before it started ("profiler results will not
    include the deallocation event"), so a decode profiled on its own would miss the frees of the
    prefill's cache tensors that each layer's torch.cat replaces. Traced together, the decode's peak
    is absolute: the weights (allocated before) plus every tensor alive since the prefill began."""

    def __init__(self):
        from torch.profiler import ProfilerActivity, profile

        # Kineto logs "USDT ... profiler_start/stop" to stderr at every profile unless told otherwise
        # (read when the profiler starts; a user's own setting wins)
        os.environ.setdefault("KINETO_LOG_LEVEL", str(KINETO_QUIET_LEVEL))
        self.prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self.peaks: dict[str, tuple[int, int]] = {}

    def __enter__(self):
        self.prof.__enter__()
        return self

    def __exit__(self, *exc):
        self.prof.__exit__(*exc)
        self.peaks = range_peaks(self.prof) if exc[0] is None else {}
        self.prof = None                                                # its events are freed
        return False


class Peak:
    """Peak memory of a block of work on `device`.

    CUDA: torch's max_memory_allocated / max_memory_reserved (absolute). CPU: a range of `trace`
    (`CpuTrace`; its peaks are read once the trace ends), and the growth of the resident set
    (VmHWM, relative) as the process figure; without a trace, the resident set alone."""

    def __init__(self, device: str, torch, trace: CpuTrace | None = None, label: str = ""):
        self.device, self.torch, self.trace, self.label, self.range = device, torch, trace, label, None

    def __enter__(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()
        else:
            self.start = reset_peak_resident()
            if self.trace is not None:
                self.range = self.torch.profiler.record_function(TRACE_RANGE + self.label)
                self.range.__enter__()
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            self.torch.cuda.synchronize()
            self.allocated = self.torch.cuda.max_memory_allocated()
            self.reserved = self.torch.cuda.max_memory_reserved()
            self.resident = None
        else:
            self.resident = peak_resident_bytes() - self.start   # before the profile is processed
            self.reserved = None
            if self.range is not None:
                self.range.__exit__(*exc)
        return False

    def cpu_peaks(self) -> tuple[int, int]:
        """(the range's peak above its start, above the trace's start); zeros if the trace failed."""
        return self.trace.peaks.get(self.label, (0, 0))
