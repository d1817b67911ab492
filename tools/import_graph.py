"""sizer's import graph, in-function imports included: each module and the sizer modules it imports.

    python tools/import_graph.py            # the graph by package, then any cycle

Also the checks tests/test_layout.py runs: cycles (strongly connected components of more than one
module) and imports of another module's private names.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sizer_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted((root / "sizer").rglob("*.py"))}


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, module: str, known: dict[str, Path]) -> list[tuple[str, str | None]]:
    """(sizer module imported, the name taken from it or None), for every import in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name in known]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, path.name == "__init__.py")
            for a in node.names:
                if f"{source}.{a.name}" in known:
                    out.append((f"{source}.{a.name}", None))
                elif source in known:
                    out.append((source, a.name))
    return out


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    known = sizer_modules(root)
    return {m: {target for target, _ in imports_of(p, m, known) if target != m} for m, p in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def private_imports(files: list[Path], root: Path = ROOT) -> list[str]:
    """`file: module.name` for each `from sizer.x import _name` in `files` (dunders allowed)."""
    known = sizer_modules(root)
    out = []
    for path in files:
        module = module_name(path, root) if path.is_relative_to(root / "sizer") else path.stem
        for target, name in imports_of(path, module, known):
            if name and name.startswith("_") and not name.startswith("__") and target != module:
                out.append(f"{path.relative_to(root)}: {target}.{name}")
    return out


def main() -> int:
    edges = graph()
    for m in sorted(edges):
        print(f"{m} -> {', '.join(sorted(edges[m])) or '-'}")
    found = cycles(edges)
    print("cycles:", "; ".join(" <-> ".join(c) for c in found) if found else "none")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
