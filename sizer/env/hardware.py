"""This machine: its GPUs through NVML (the `pynvml` module of the nvidia-ml-py package, extra `gpu`),
a process's device memory, and the CPU's name. The one place sizer probes hardware (torch-free)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

from sizer.env.proc import cpu_model_name


@dataclass(frozen=True)
class LocalGpu:
    index: int
    name: str
    memory_bytes: int
    memory_free_bytes: int
    driver: str


def local_gpus() -> tuple[list[LocalGpu], str]:
    """(GPUs NVML sees, a plain sentence on why the list is empty when it is)."""
    try:
        import pynvml
    except ImportError:
        return [], "no local GPUs found: NVML is not available (install the extra: pip install 'sizer-llm[gpu]')"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: no NVIDIA driver here
        return [], f"no local GPUs found: no NVIDIA driver ({e.__class__.__name__})"
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(LocalGpu(i, _text(pynvml.nvmlDeviceGetName(handle)), int(mem.total), int(mem.free), driver))
    finally:
        pynvml.nvmlShutdown()
    return gpus, "" if gpus else "no local GPUs found: the NVIDIA driver reports none"


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
