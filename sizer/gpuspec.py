"""`--gpus`: which GPUs, how many. `2x48GB`, `2xA100-80GB`, `8xH100`, `2x8xH100`, `H100`, `48GB`, `local`.

`NODESxGPUSxKIND` (`2x8xH100`) is NODES nodes of GPUS GPUs each; a plain count beyond what one node
of that kind holds (the catalog's node_gpus, 8 for servers) spans ceil(count / node_gpus) nodes.

A bare size like `48GB` (or `48GiB`, `48G`) means a GPU with 48 GiB of device memory, as GPUs are
marketed; it has no bandwidth or throughput figures, so throughput and price are left empty. A GPU
without a count (`H100`, `48GB`) lets sizer find the minimum count that serves the workload.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from sizer.catalog import GpuSpec, get_gpu
from sizer.errors import UsageError
from sizer.units import GiB

_SPEC_RE = re.compile(r"^\s*(?:(?P<nodes>[+-]?\d+)\s*[x×*]\s*(?=\d+\s*[x×*]))?(?:(?P<count>[+-]?\d+)\s*[x×*]\s*)?"
                      r"(?P<what>.+?)\s*$", re.IGNORECASE)
_SIZE_RE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>gb|gib|g)$", re.IGNORECASE)

# NVML's total includes memory the driver reserves; CUDA (cudaMemGetInfo, torch, vLLM) sees less.
# Measured on H100 SXM 80GB: NVML 81,559 MiB, vLLM "total_gpu_memory (79.22GiB)" (vllm PR #10511),
# i.e. 0.54 % less. Applied to GPUs without a measured `cuda_memory_bytes`.
DRIVER_RESERVED_FRACTION = 0.0054
MAX_GPUS = 1024
MAX_GPU_GIB = 1 << 20       # 1 PiB: far beyond any accelerator, and no overflow in byte arithmetic


@dataclass(frozen=True)
class GpuSelection:
    """`count` GPUs of one kind; count None means "find the minimum"."""

    gpu: GpuSpec
    count: int | None
    text: str                   # as the user wrote it
    gpus_per_node: int | None = None    # NODESxGPUSxKIND: GPUS; else the catalog's node size
    fabric_gbits: float | None = None   # --fabric-gbps: the network between nodes, Gb/s per node

    @property
    def node_size(self) -> int:
        """GPUs per node: as written (2x8xH100), else the most one node of this kind holds."""
        return self.gpus_per_node or self.gpu.node_gpus

    @property
    def nodes(self) -> int:
        return -(-(self.count or 1) // self.node_size)

    @property
    def fabric(self) -> float | None:
        """Gb/s between nodes, per node: --fabric-gbps, else the catalog's."""
        return self.fabric_gbits or self.gpu.fabric_gbits

    @property
    def label(self) -> str:
        if self.count and self.gpus_per_node and self.nodes > 1:
            return f"{self.nodes}x{self.gpus_per_node}x{self.gpu.name}"
        return f"{self.count}x{self.gpu.name}" if self.count else self.gpu.name


def usable_memory_bytes(gpu: GpuSpec) -> int:
    """Device memory CUDA lets a process allocate from (torch.cuda.mem_get_info total)."""
    if gpu.cuda_memory_bytes:
        return gpu.cuda_memory_bytes
    return int(gpu.memory_bytes * (1 - DRIVER_RESERVED_FRACTION))


def generic_gpu(memory_gib: float) -> GpuSpec:
    name = f"{memory_gib:g}GB"
    return GpuSpec(name=name, full_name=f"a GPU with {memory_gib:g} GiB of memory", aliases=(), vendor="",
                   architecture="", memory_gib_marketed=memory_gib, memory_bytes=int(memory_gib * GiB),
                   memory_bandwidth_gbps=None, dense_tflops={}, tdp_watts=None, interconnect="",
                   price_per_hour_usd=None, price_source="", price_date="", source="--gpus " + name)


def parse_gpus(text: str) -> GpuSelection:
    """Parse one `--gpus` value; raise UsageError with a one-line reason when it cannot."""
    m = _SPEC_RE.match(text or "")
    if not m or not m.group("what"):
        raise UsageError(f"--gpus {text!r}: expected COUNTxGPU (2x48GB, 8xH100), a GPU (H100, 48GB) or 'local'")
    count = int(m.group("count")) if m.group("count") is not None else None
    nodes = int(m.group("nodes")) if m.group("nodes") is not None else None
    if nodes is not None and count is not None:
        if nodes < 1 or count < 1:
            raise UsageError(f"--gpus {text!r}: NODESxGPUSxKIND takes positive counts, e.g. 2x8xH100")
        selection = parse_gpus(f"{nodes * count}x{m.group('what')}")
        return replace(selection, text=text, gpus_per_node=count)
    if count is not None and not 1 <= count <= MAX_GPUS:
        raise UsageError(f"--gpus {text!r}: the GPU count must be between 1 and {MAX_GPUS}, got {count}")
    what = m.group("what")
    if what.lower() == "local":
        return _local(text, count)
    size = _SIZE_RE.match(what)
    if size:
        gib = float(size.group("n"))
        if not 0 < gib <= MAX_GPU_GIB:
            raise UsageError(f"--gpus {text!r}: a GPU's memory must be more than 0 and at most {MAX_GPU_GIB:,} GiB")
        return GpuSelection(generic_gpu(gib), count, text)
    if re.match(r"^\d", what):       # a GPU people name by its number (4090, 3090), else a malformed size
        try:
            return GpuSelection(get_gpu(what), count, text)
        except UsageError:
            raise UsageError(f"--gpus {text!r}: cannot read {what!r} as a memory size; write sizes like 48GB or "
                             "80GiB (GiB of device memory, as GPUs are marketed)") from None
    return GpuSelection(get_gpu(what), count, text)


def _local(text: str, count: int | None) -> GpuSelection:
    from sizer.env.hardware import local_gpus

    found, reason = local_gpus()
    if not found:
        raise UsageError(f"--gpus local: {reason}; name GPUs with --gpus (e.g. --gpus 2xH100 or --gpus 48GB) "
                         "or rank the catalog with --recommend")
    names = {g.name for g in found}
    if len(names) > 1:
        raise UsageError(f"--gpus local: this machine mixes GPU models ({', '.join(sorted(names))}); "
                         "name the ones to plan for, e.g. --gpus 2xH100")
    first = found[0]
    gpu = _catalog_match(first.name) or generic_gpu(first.memory_bytes / GiB)
    gpu = replace(gpu, memory_bytes=first.memory_bytes, cuda_memory_bytes=None,
                  full_name=f"{first.name} (local, driver {first.driver})")
    if count is not None and count > len(found):
        raise UsageError(f"--gpus {text!r}: this machine has {len(found)} GPU(s)")
    return GpuSelection(gpu, count or len(found), text)


def _catalog_match(nvml_name: str) -> GpuSpec | None:
    """The catalog entry for an NVML device name ("NVIDIA H100 80GB HBM3"): the catalog lists those
    names among its aliases."""
    try:
        return get_gpu(nvml_name)
    except UsageError:
        return None
