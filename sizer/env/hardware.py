"""This machine: its GPUs (NVIDIA through NVML - the `pynvml` module of the nvidia-ml-py package, extra
`gpu` - or nvidia-smi; AMD through rocm-smi; Apple Silicon through sysctl), its RAM, a process's device
memory, and the CPU's name. The one place sizer probes hardware (torch-free, stdlib only: each tool runs
as a subprocess with a timeout, and its output is parsed by a pure function tested on recorded outputs)."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
from dataclasses import dataclass, replace

from sizer.env.proc import cpu_model_name, proc_field

MIB = 1 << 20
GIB = 1 << 30
TOOL_TIMEOUT_S = 10

# The commands, as documented by each vendor's tool
NVIDIA_SMI = ["nvidia-smi", "--query-gpu=name,memory.total,memory.free,driver_version", "--format=csv,noheader,nounits"]
ROCM_SMI = ["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--json"]
APPLE_SYSCTL = ["sysctl", "-n", "machdep.cpu.brand_string", "hw.memsize"]
APPLE_WIRED_LIMIT = ["sysctl", "-n", "iogpu.wired_limit_mb"]     # 0: the macOS default


@dataclass(frozen=True)
class LocalGpu:
    index: int
    name: str
    memory_bytes: int
    memory_free_bytes: int
    driver: str
    vendor: str = "nvidia"
    gpu_limit_bytes: int | None = None    # Apple: iogpu.wired_limit_mb when raised; None: the macOS default

    @property
    def unified(self) -> bool:
        return self.vendor == "apple"


def run_tool(argv: list[str], timeout_s: float = TOOL_TIMEOUT_S) -> str | None:
    """A tool's stdout, or None when it is missing, fails or runs past `timeout_s`."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_nvidia_smi_csv(text: str) -> list[LocalGpu]:
    """`nvidia-smi --query-gpu=name,memory.total[,memory.free,driver_version] --format=csv,noheader,nounits`
    (memory in MiB) -> one LocalGpu per line; lines that do not parse are skipped."""
    gpus = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 2 or not fields[0] or not re.fullmatch(r"\d+(?:\.\d+)?", fields[1]):
            continue
        total = int(float(fields[1]) * MIB)
        free = int(float(fields[2]) * MIB) if len(fields) > 2 and re.fullmatch(r"\d+(?:\.\d+)?", fields[2]) else 0
        driver = fields[3] if len(fields) > 3 else ""
        gpus.append(LocalGpu(len(gpus), fields[0], total, free, driver))
    return gpus


def parse_rocm_smi_json(text: str) -> list[LocalGpu]:
    """`rocm-smi --showproductname --showmeminfo vram --json` -> one LocalGpu per card. The product name
    is "Card Series" ("Card series" in older ROCm), e.g. "Radeon RX 7900 XTX" or, from the PCI ids
    database, "Navi 31 [Radeon RX 7900 XT/7900 XTX]"; memory is "VRAM Total Memory (B)"."""
    try:
        data = json.loads(text)
    except ValueError:
        return []
    gpus = []
    cards = sorted((k for k in data if re.fullmatch(r"card\d+", str(k))), key=lambda k: int(k[4:])) if isinstance(data, dict) else []
    for key in cards:
        card = {str(k).lower(): v for k, v in data[key].items()} if isinstance(data[key], dict) else {}
        total = str(card.get("vram total memory (b)", "")).strip()
        name = str(card.get("card series") or card.get("card sku") or card.get("card model") or "").strip()
        if not total.isdigit() or not name:
            continue
        used = str(card.get("vram total used memory (b)", "")).strip()
        free = int(total) - int(used) if used.isdigit() else 0
        gpus.append(LocalGpu(len(gpus), name, int(total), max(free, 0), "rocm", vendor="amd"))
    return gpus


def without_integrated(gpus: list[LocalGpu]) -> list[LocalGpu]:
    """The discrete GPUs: rocm-smi also lists an AMD CPU's integrated graphics, whose memory is a small
    carve-out of system RAM (e.g. 2 GiB next to a 24 GiB card); a device with under a quarter of the
    largest one's memory is taken for that."""
    largest = max((g.memory_bytes for g in gpus), default=0)
    kept = [g for g in gpus if g.memory_bytes * 4 >= largest]
    return [replace(g, index=i) for i, g in enumerate(kept)]


def parse_apple_sysctl(text: str, wired_limit_mb: str | None = None) -> LocalGpu | None:
    """`sysctl -n machdep.cpu.brand_string hw.memsize` ("Apple M3 Max" and bytes, one a line) -> the Mac's
    GPU with all unified memory; `iogpu.wired_limit_mb` (0 = macOS default) when raised. None on an Intel Mac."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].startswith("Apple M") or not lines[1].isdigit():
        return None
    wired = wired_limit_mb.strip() if wired_limit_mb else ""
    limit = int(wired) * MIB if wired.isdigit() and int(wired) > 0 else None
    return LocalGpu(0, lines[0], int(lines[1]), 0, f"macOS {platform.mac_ver()[0]}".strip(), vendor="apple",
                    gpu_limit_bytes=limit)


def parse_meminfo_total(text: str) -> int | None:
    """/proc/meminfo's "MemTotal:  16318424 kB" -> bytes."""
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


def system_ram_bytes() -> int | None:
    """This machine's RAM: /proc/meminfo on Linux, hw.memsize on macOS; None when neither answers."""
    total = proc_field("meminfo", "MemTotal")
    if total:
        return parse_meminfo_total(f"MemTotal: {total}")
    out = run_tool(["sysctl", "-n", "hw.memsize"]) if platform.system() == "Darwin" else None
    return int(out.strip()) if out and out.strip().isdigit() else None


def local_gpus() -> tuple[list[LocalGpu], str]:
    """(the GPUs of this machine, a plain sentence on why the list is empty when it is). Tried in turn:
    NVML (when pynvml imports), nvidia-smi, rocm-smi, Apple Silicon (sysctl)."""
    gpus, nvml_reason = _nvml_gpus()
    if not gpus:
        gpus = parse_nvidia_smi_csv(run_tool(NVIDIA_SMI) or "")
    if not gpus:
        gpus = without_integrated(parse_rocm_smi_json(run_tool(ROCM_SMI) or ""))
    if not gpus and platform.system() == "Darwin":
        mac = parse_apple_sysctl(run_tool(APPLE_SYSCTL) or "", run_tool(APPLE_WIRED_LIMIT))
        gpus = [mac] if mac else []
    return gpus, "" if gpus else cpu_only_text(system_ram_bytes(), cpu_model_name() or platform.machine(), nvml_reason)


def cpu_only_text(ram_bytes: int | None, cpu: str, nvml_reason: str = "") -> str:
    """The one line that says this machine has no GPU sizer can plan for, and what it has instead."""
    ram = f"{ram_bytes / GIB:.1f} GiB RAM" if ram_bytes else "RAM unknown"
    why = f"; {nvml_reason}" if nvml_reason else ""
    return (f"no local GPUs found: CPU-only ({cpu}, {ram}); no NVIDIA GPU (NVML, nvidia-smi), no AMD GPU (rocm-smi), "
            f"not Apple Silicon{why}")


def _nvml_gpus() -> tuple[list[LocalGpu], str]:
    """The GPUs NVML sees, or ([], why not)."""
    try:
        import pynvml
    except ImportError:
        return [], ""
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: no NVIDIA driver here
        return [], f"NVML: no NVIDIA driver ({e.__class__.__name__})"
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(LocalGpu(i, _text(pynvml.nvmlDeviceGetName(handle)), int(mem.total), int(mem.free), driver))
    finally:
        pynvml.nvmlShutdown()
    return gpus, "" if gpus else "NVML: the NVIDIA driver reports no GPU"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvml_uuid(torch_uuid: str) -> str:
    """NVML's spelling of a GPU's UUID ("GPU-" + the UUID torch reports) for nvmlDeviceGetHandleByUUID."""
    text = str(torch_uuid).strip()
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def nvml_process_memory(gpu_uuid: str | None) -> tuple[int | None, str, str]:
    """(this process's memory on the GPU with `gpu_uuid` as NVML counts it, the GPU's name, the
    driver); (None, "", "") without NVML. The GPU is found by UUID, not by an index into
    CUDA_VISIBLE_DEVICES, which may hold UUIDs and renumbers the GPUs torch sees."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:                      # no nvidia-ml-py, no driver
        return None, "", ""
    try:
        handle = (pynvml.nvmlDeviceGetHandleByUUID(nvml_uuid(gpu_uuid)) if gpu_uuid
                  else pynvml.nvmlDeviceGetHandleByIndex(0))
        used = None
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid():
                used = int(proc.usedGpuMemory)
        return used, _text(pynvml.nvmlDeviceGetName(handle)), _text(pynvml.nvmlSystemGetDriverVersion())
    except Exception:                      # NVMLError: unknown UUID, no permission
        return None, "", ""
    finally:
        pynvml.nvmlShutdown()


def cpu_name() -> str:
    """The CPU's model name and core count, for records and benchmark results."""
    name = cpu_model_name() or platform.processor() or platform.machine()
    return f"{name} ({os.cpu_count()} cores)"
