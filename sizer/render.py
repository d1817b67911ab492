"""What every rendering shares: the output formats, and the one CSV writer (fixed columns, None as an
empty cell, "\\n" line ends) that estimate, fit, measure records and GPTQ reports all write through."""

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
