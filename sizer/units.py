"""The one unit rule: sizes print in GiB (2^30 bytes); marketed GPU sizes like "48GB" mean GiB."""

from __future__ import annotations

GiB = 1 << 30
UNITS_NOTE = "sizes in GiB (1 GiB = 2^30 bytes)"


def gib(n_bytes: int) -> float:
    return n_bytes / GiB


def fmt_gib(n_bytes: int, decimals: int = 2, unit: bool = False) -> str:
    """Bytes as GiB text, the one formatter of sizes: fmt_gib(3 << 29) == "1.50";
    fmt_gib(n, 1, unit=True) == "1.5 GiB" (for sentences)."""
    text = f"{n_bytes / GiB:,.{decimals}f}"
    return f"{text} GiB" if unit else text


def fmt_int(n: int) -> str:
    return f"{n:,}"


def fmt_params(n: int) -> str:
    """12,345,678,901 -> '12.35 B'; small counts in M."""
    return f"{n / 1e9:,.2f} B" if n >= 1e9 else f"{n / 1e6:,.1f} M"
MiB = 1 << 20
MIB_NOTE = "memory in MiB, as llama.cpp prints it (1 MiB = 2^20 bytes)"


def fmt_mib(n_bytes: int, decimals: int = 2) -> str:
    """Bytes as MiB text, two decimals as llama.cpp prints its buffers: fmt_mib(3 << 19) == "1.50"."""
    return f"{n_bytes / MiB:,.{decimals}f}"


def fmt_duration(seconds: float) -> str:
    """A duration as people read it: 45s, 3m07s, 2h05m."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
