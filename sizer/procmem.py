"""This process's memory, as Linux reports it: resident set now and at its peak, and handing freed
heap memory back to the OS. Used by `measure` (CPU peaks) and the streamed GPTQ run."""

from __future__ import annotations

import resource
from pathlib import Path


def status_bytes(key: str) -> int | None:
    """A size field of /proc/self/status (VmRSS, VmHWM, ...) in bytes; None where it is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_resident_bytes() -> int:
    """Peak resident set (Linux VmHWM; elsewhere getrusage's ru_maxrss)."""
    peak = status_bytes("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def resident_bytes() -> int:
    """Resident set now (0 where /proc is missing)."""
    return status_bytes("VmRSS") or 0


def release_free_memory() -> None:
    """Hand freed heap memory back to the OS: glibc keeps freed pages otherwise, and the resident set
    creeps up over repeated large allocations."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
