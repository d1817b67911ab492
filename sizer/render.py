"""What every rendering shares: the output formats, the one CSV writer (fixed columns, None as an
empty cell, "\\n" line ends) that estimate, fit, finetune, measure records and GPTQ reports all write
through, the layout of a table report, and the `--plot` file's checks and atomic write."""

from __future__ import annotations

import csv
import io

FORMATS = ("table", "json", "csv", "markdown")


def to_csv(rows: list[dict], columns: tuple[str, ...] | list[str]) -> str:
    """`rows` as CSV under a header of `columns` (a row's missing or None value is an empty cell)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def report_text(head: list[str], table: str, lines: list[str], fmt: str) -> str:
    """A table report as fit and finetune print it: the header lines, the table, the lines under it
    (markdown: the header lines with hard breaks, every part its own paragraph)."""
    sep = "\n\n" if fmt == "markdown" else "\n"
    text = ("  \n" if fmt == "markdown" else "\n").join(head)
    return sep.join([text, "", table, "", *lines]).replace("\n\n\n", "\n\n") + "\n"


def plot_target(path: str, force: bool):
    """(pyplot, target path) for `--plot PATH`: a .png or .svg, never overwritten without --force,
    matplotlib present (one clear line otherwise); SVG text kept as text."""
    from pathlib import Path

    from sizer.errors import UsageError

    target = Path(path)
    if target.suffix.lower() not in (".png", ".svg"):
        raise UsageError(f"--plot {path}: the file must end in .png or .svg")
    if target.exists() and not force:
        raise UsageError(f"{target}: already exists (use --force to overwrite)")
    try:
        import matplotlib
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'sizer-llm[plot]'") from None
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"      # SVG text stays text (searchable, smaller)
    import matplotlib.pyplot as plt

    return plt, target


def save_plot(plt, fig, target) -> None:
    """Write the figure atomically (a temporary file beside it, then a rename)."""
    tmp = target.with_name(f".{target.name}.tmp{target.suffix}")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(target)
