"""Function lengths of the sizer package: median, 90th percentile and maximum, in lines.

    python tools/function_lengths.py [PACKAGE_DIR]        # default: sizer/ beside this folder

Counts every def (methods and nested functions included) from its `def` line to its last line,
decorators and docstring included. Used for the layout notes of issue 15.
"""

from __future__ import annotations

import ast
import statistics
import sys
from pathlib import Path


def function_lengths(package: Path) -> list[tuple[int, str]]:
    out = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(package.parent)}:{node.name}"))
    return out


def main(argv: list[str]) -> int:
    package = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "sizer"
    lengths = function_lengths(package)
    values = sorted(n for n, _ in lengths)
    p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
    print(f"functions {len(values)}  median {statistics.median(values):g}  p90 {p90}  max {values[-1]} lines")
    for n, where in sorted(lengths, reverse=True)[:5]:
        print(f"  {n:4d}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
