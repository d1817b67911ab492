"""A progress line with rate and ETA for long work, on stderr (redrawn in place on a terminal, one
line per step otherwise, so logs stay readable)."""

from __future__ import annotations

import sys
import time


def fmt_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    def __init__(self, label: str, total: int, stream=None, width: int = 24):
        self.label, self.total, self.width = label, total, width
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def line(self, done: int) -> str:
        elapsed = time.perf_counter() - self.start
        filled = self.width * done // max(self.total, 1)
        bar = "#" * filled + "-" * (self.width - filled)
        rate = elapsed / done if done else 0.0
        eta = rate * (self.total - done)
        return (f"{self.label} {done}/{self.total} [{bar}] {rate:.1f} s each, elapsed {fmt_duration(elapsed)}, "
                f"ETA {fmt_duration(eta)}")

    def update(self, done: int) -> None:
        """Report `done` steps finished; update(0) restarts the clock (setup before the first step
        would otherwise skew the rate)."""
        if done == 0:
            self.start = time.perf_counter()
            return
        text = self.line(done)
        if self.tty:
            self.stream.write("\r" + text + ("\n" if done >= self.total else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
