"""What Linux's /proc says about this process and this machine, read in one place: the resident set
now and at its peak (and resetting that peak), the memory available to a new process, the CPU's
model name; and handing freed heap memory back to the OS. Used by `measure` (CPU peaks), the
streamed GPTQ run and the records (the CPU's name)."""

from __future__ import annotations

import gc
import resource
from pathlib import Path

PROC = Path("/proc")
KIB = 1024


def proc_field(name: str, key: str) -> str | None:
    """The value of the first `key:` line of /proc/`name` ("self/status", "meminfo", "cpuinfo"),
    stripped; None where the file or the line is missing."""
    try:
        with open(PROC / name, encoding="utf-8", errors="replace") as f:
            for line in f:
                field, sep, value = line.partition(":")
                if sep and field.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return None


def _kib_field(name: str, key: str) -> int | None:
    value = proc_field(name, key)                     # "123456 kB"
    return int(value.split()[0]) * KIB if value else None


def status_bytes(key: str) -> int | None:
    """A size field of /proc/self/status (VmRSS, VmHWM, ...) in bytes; None where it is missing."""
    return _kib_field("self/status", key)


def peak_resident_bytes() -> int:
    """Peak resident set (Linux VmHWM; elsewhere getrusage's ru_maxrss)."""
    peak = status_bytes("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB


def resident_bytes() -> int:
    """Resident set now (0 where /proc is missing)."""
    return status_bytes("VmRSS") or 0


def reset_peak_resident() -> int:
    """Give freed memory back to the OS and reset the peak resident set (VmHWM) to the current one
    (writing 5 to /proc/self/clear_refs); the resident set now."""
    gc.collect()
    release_free_memory()
    try:
        with open(PROC / "self" / "clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return resident_bytes()


def meminfo_available_bytes() -> int:
    """MemAvailable of /proc/meminfo: what a new allocation can get without swapping (0 if unknown)."""
    return _kib_field("meminfo", "MemAvailable") or 0


def cpu_model_name() -> str | None:
    """The first CPU's "model name" in /proc/cpuinfo; None where there is none (not Linux, some ARM)."""
    return proc_field("cpuinfo", "model name") or None


def release_free_memory() -> None:
    """Hand freed heap memory back to the OS: glibc keeps freed pages otherwise, and the resident set
    creeps up over repeated large allocations."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
