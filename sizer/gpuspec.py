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

from sizer.catalog import GpuSpec, get_gpu, gpu_candidates, gpu_entries
from sizer.errors import UsageError
from sizer.units import GiB, fmt_gib

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
    devices: tuple[GpuSpec, ...] = ()   # mixed GPUs in one box (RTX-3090,RTX-3060): each one, in order

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


# macOS lets the GPU wire (keep resident) only part of unified memory: Metal's
# MTLDevice.recommendedMaxWorkingSetSize, which llama.cpp logs at start ("recommendedMaxWorkingSetSize =
# N MB", N = bytes / 1e6). Public logs give exactly 2/3 of 16 GiB (11453.25 MB) and of 32 GiB (22906.50 MB),
# and exactly 3/4 of 36 GiB (28991.03 MB) and of 64 GiB (51539.61 MB, an M2 Max); gpustack/gpustack issue
# #1375 reads it as "75% of total RAM"; exo-explore/exo PR #1672: "~10.67 GB on 16GB M4". Newer macOS
# releases grant more on some machines (13.32 GiB of 18 GiB on an M3 Pro, 24.96 of 32 on an M4, 51.84 of
# 64 on an M3 Max, 107.52 of 128 GiB on macOS 26 per antirez/ds4 PR #893), so the rule is the conservative
# default. `sudo sysctl iogpu.wired_limit_mb=N` raises it until reboot; `--gpus local` reads that setting.
# The logged values are those fractions rounded up to whole 16 KiB pages (Apple Silicon's page size):
# 2/3 of 32 GiB is 22,906,492,245 B, which would print 22906.49; the page-rounded 22,906,503,168 prints 22906.50.
APPLE_SMALL_MAC_BYTES = 32 * GiB
APPLE_PAGE_BYTES = 16 * 1024


def apple_gpu_wired_limit_bytes(unified_memory_bytes: int) -> int:
    """The unified memory macOS lets the GPU wire by default: 2/3 up to 32 GiB, 3/4 above, in whole pages."""
    num, den = (2, 3) if unified_memory_bytes <= APPLE_SMALL_MAC_BYTES else (3, 4)
    pages = -(-unified_memory_bytes * num // (den * APPLE_PAGE_BYTES))
    return pages * APPLE_PAGE_BYTES


def usable_memory_bytes(gpu: GpuSpec) -> int:
    """Device memory CUDA lets a process allocate from (torch.cuda.mem_get_info total); on a Mac, the
    unified memory macOS lets the GPU wire."""
    if gpu.gpu_memory_limit_bytes:
        return gpu.gpu_memory_limit_bytes
    if gpu.cuda_memory_bytes:
        return gpu.cuda_memory_bytes
    return int(gpu.memory_bytes * (1 - DRIVER_RESERVED_FRACTION))


def generic_gpu(memory_gib: float) -> GpuSpec:
    name = f"{memory_gib:g}GB"
    return GpuSpec(name=name, full_name=f"a GPU with {memory_gib:g} GiB of memory", aliases=(), vendor="",
                   architecture="", memory_gib_marketed=memory_gib, memory_bytes=int(memory_gib * GiB),
                   memory_bandwidth_gbps=None, dense_tflops={}, tdp_watts=None, interconnect="",
                   price_per_hour_usd=None, price_source="", price_date="", source="--gpus " + name)


CPU_NAMES = ("cpu", "none")     # --gpus cpu / none: no GPU, every layer in system RAM (llama.cpp -ngl 0)


def cpu_device(ram_bytes: int | None = None, bandwidth_gbps: float | None = None, note: str = "") -> GpuSpec:
    """The machine's CPU and system RAM as the one "device" of a CPU-only plan (vendor "cpu": llama.cpp's
    CPU backend). Memory and bandwidth are filled in by `fit` from --ram and the host memory's bandwidth."""
    return GpuSpec(name="CPU", full_name="CPU only (system RAM)" + (f": {note}" if note else ""), aliases=(),
                   vendor="cpu", architecture="", memory_gib_marketed=(ram_bytes or 0) / GiB,
                   memory_bytes=ram_bytes or 0, memory_bandwidth_gbps=bandwidth_gbps, dense_tflops={},
                   tdp_watts=None, interconnect="", price_per_hour_usd=None, price_source="", price_date="",
                   source="--gpus cpu", node_gpus=1, market="consumer")


def parse_gpus(text: str) -> GpuSelection:
    """Parse one `--gpus` value; raise UsageError with a one-line reason when it cannot."""
    if "," in (text or ""):
        return _mixed_gpus(text)
    if (text or "").strip().lower() in CPU_NAMES:
        return GpuSelection(cpu_device(), 1, text)
    named = _named_gpu(text or "")
    if named:
        return named
    m = _SPEC_RE.match(text or "")
    if not m or not m.group("what"):
        raise UsageError(f"--gpus {text!r}: expected COUNTxGPU (2x48GB, 8xH100), a GPU (H100, 48GB), 'local' or 'cpu'")
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
    if re.match(r"^\d", what) and not gpu_candidates(what):   # a malformed size, not a GPU's number (4090)
        try:
            return GpuSelection(get_gpu(what), count, text)
        except UsageError:
            raise UsageError(f"--gpus {text!r}: cannot read {what!r} as a memory size; write sizes like 48GB or "
                             "80GiB (GiB of device memory, as GPUs are marketed)") from None
    return GpuSelection(get_gpu(what), count, text)


def _mixed_gpus(text: str) -> GpuSelection:
    """`RTX-3090,RTX-3060` or `2xRTX-3090,RTX-3060`: different GPUs in one box, each with its own memory.
    The selection's `gpu` is the smallest (what an engine that gives every GPU the same share is bound by)."""
    devices: list[GpuSpec] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise UsageError(f"--gpus {text!r}: an empty name between commas")
        one = parse_gpus(part)
        if one.gpus_per_node or one.devices or part.lower() == "local":
            raise UsageError(f"--gpus {text!r}: list GPUs of one box as KIND or COUNTxKIND, comma-separated")
        devices += [one.gpu] * (one.count or 1)
    if len(devices) > MAX_GPUS:
        raise UsageError(f"--gpus {text!r}: at most {MAX_GPUS} GPUs")
    smallest = min(devices, key=usable_memory_bytes)
    return GpuSelection(smallest, len(devices), text, devices=tuple(devices))


def _named_gpu(text: str) -> GpuSelection | None:
    """`text` as a catalog GPU, or COUNT x a catalog GPU, when the name itself starts with digits and an
    x ("7900xtx", "2x7900xtx") that the COUNTxKIND pattern would otherwise split; None when it is not."""
    whole = text.strip()
    if gpu_candidates(whole):
        return GpuSelection(get_gpu(whole), None, text)
    m = re.match(r"^([+-]?\d+)\s*[x×*]\s*(.+)$", whole, re.IGNORECASE)
    if m and re.match(r"^\d", m.group(2)) and gpu_candidates(m.group(2)):
        count = int(m.group(1))
        if not 1 <= count <= MAX_GPUS:
            raise UsageError(f"--gpus {text!r}: the GPU count must be between 1 and {MAX_GPUS}, got {count}")
        return GpuSelection(get_gpu(m.group(2)), count, text)
    return None


def _local(text: str, count: int | None) -> GpuSelection:
    from sizer.env.hardware import local_gpus

    found, reason = local_gpus()
    if not found:                       # a CPU-only machine: plan llama.cpp on its CPU and RAM
        return GpuSelection(cpu_device(note=reason), 1, text)
    names = {g.name for g in found}
    if len(names) > 1:
        raise UsageError(f"--gpus local: this machine mixes GPU models ({', '.join(sorted(names))}); "
                         "name the ones to plan for, e.g. --gpus 2xH100")
    if count is not None and count > len(found):
        raise UsageError(f"--gpus {text!r}: this machine has {len(found)} GPU(s)")
    return GpuSelection(local_spec(found[0]), count or len(found), text)


def local_spec(local) -> GpuSpec:
    """The catalog entry for a detected GPU (a sizer.env.hardware.LocalGpu), with the memory the machine
    reports; a bare-memory GPU when the catalog does not know it."""
    gpu = _catalog_match(local.name, local.memory_bytes) or generic_gpu(local.memory_bytes / GiB)
    gpu = replace(gpu, memory_bytes=local.memory_bytes, cuda_memory_bytes=None)
    if local.unified:
        limit = local.gpu_limit_bytes or apple_gpu_wired_limit_bytes(local.memory_bytes)
        how = "iogpu.wired_limit_mb" if local.gpu_limit_bytes else "the macOS default; raise it with sudo sysctl iogpu.wired_limit_mb=N"
        return replace(gpu, vendor="apple", gpu_memory_limit_bytes=limit,
                       full_name=f"{local.name} (local, {fmt_gib(local.memory_bytes, 0, unit=True)} unified memory, "
                                 f"{fmt_gib(limit, 1, unit=True)} for the GPU: {how})")
    return replace(gpu, full_name=f"{local.name} (local, driver {local.driver})")


def _catalog_match(device_name: str, memory_bytes: int) -> GpuSpec | None:
    """The catalog entry for a device name as drivers report it ("NVIDIA H100 80GB HBM3", "Radeon RX 7900
    XTX", "Apple M3 Max"); where the name fits several memory sizes (a Mac, "RTX 4060 Ti", or rocm-smi's
    "Navi 31 [Radeon RX 7900 XT/7900 XTX]"), the one whose memory is nearest the device's."""
    spellings = [device_name, f"{device_name} {round(memory_bytes / GiB)}GB"]
    bracket = re.search(r"\[(.+)\]", device_name)
    if bracket:                         # the PCI ids name: every product it lists
        first, *rest = bracket.group(1).split("/")
        number = re.search(r"\S*\d", first)
        prefix = first[:number.start()].strip() if number else ""
        spellings += [first, *(f"{prefix} {r}" for r in rest)]
    names = {n for spelling in spellings for n in gpu_candidates(spelling)}
    if not names:
        return None
    return gpu_entries()[min(names, key=lambda n: (abs(gpu_entries()[n].memory_bytes - memory_bytes), n))]
