"""The house: sub-packages by verb, no import cycles (in-function imports included), no module
reaching into another's private names, the numeric core below everything, and one place for each
probe of the machine."""

import ast
import importlib.util
import re

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
import_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_graph)

PYTHON_FILES = sorted(p for folder in ("sizer", "tests", "benchmarks", "tools") for p in (ROOT / folder).rglob("*.py"))
SIZER_FILES = sorted((ROOT / "sizer").rglob("*.py"))
VERBS = ("calc", "plan", "inputs", "quantize", "measure", "env", "kernels")


def test_import_graph_has_no_cycle():
    edges = import_graph.graph()
    assert "sizer.quantize.gptq" in edges and "sizer.measure.point" in edges     # the graph is read
    assert import_graph.cycles(edges) == []


def test_cycle_finder_finds_a_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_graph.cycles(edges) == [["a", "b", "c"]]


def test_no_module_imports_a_private_name():
    assert import_graph.private_imports(PYTHON_FILES) == []


def test_private_import_finder_finds_one(tmp_path):
    probe = ROOT / "tests" / "data" / "private_import_probe.py"
    probe.write_text("from sizer.env.proc import _kib_field\nfrom sizer import __version__\n")
    try:
        assert import_graph.private_imports([probe]) == ["tests/data/private_import_probe.py: "
                                                         "sizer.env.proc._kib_field"]
    finally:
        probe.unlink()


def test_no_private_attribute_of_a_sizer_module():
    """`module._name` and monkeypatch.setattr(module, "_name") on a sizer module, tests included."""
    found = []
    for path in PYTHON_FILES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
                   for a in n.names if a.name.startswith("sizer")}
        aliases |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                    and (n.module or "").startswith("sizer") for a in n.names
                    if f"{n.module}.{a.name}" in import_graph.sizer_modules()}
        for n in ast.walk(tree):
            if (isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases
                    and n.attr.startswith("_") and not n.attr.startswith("__")):
                found.append(f"{path.relative_to(ROOT)}:{n.lineno} {n.value.id}.{n.attr}")
    assert found == []


@pytest.mark.parametrize("verb", VERBS)
def test_each_verb_is_a_package(verb):
    assert (ROOT / "sizer" / verb / "__init__.py").is_file()


def test_numeric_core_imports_only_itself():
    """sizer.kernels imports nothing from the planners, the CLI or anything else of sizer's."""
    edges = import_graph.graph()
    outside = {m: sorted(t for t in targets if not t.startswith("sizer.kernels"))
               for m, targets in edges.items() if m.startswith("sizer.kernels")}
    assert {m: t for m, t in outside.items() if t} == {}


def test_kernel_layout_is_torch_free():
    tree = ast.parse((ROOT / "sizer" / "kernels" / "layout.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


@pytest.mark.parametrize("probe, pattern", [
    ("/proc", r"[\"']/proc\b"),
    ("NVML", r"\bpynvml\b"),
    ("CPU name", r"cpuinfo|platform\.processor"),
])
def test_machine_probes_live_in_env(probe, pattern):
    users = sorted(str(p.relative_to(ROOT)) for p in SIZER_FILES
                   if re.search(pattern, p.read_text(encoding="utf-8")))
    assert users and all(u.startswith("sizer/env/") for u in users), users


def test_one_csv_writer():
    writers = sorted(str(p.relative_to(ROOT)) for p in SIZER_FILES
                     if re.search(r"csv\.(DictWriter|writer)\(", p.read_text(encoding="utf-8")))
    assert writers == ["sizer/render.py"]


def test_one_gib_formatter():
    """Byte counts are turned into GiB/MiB text in sizer/units.py only."""
    pattern = re.compile(r"/ (GiB|MiB|2 ?\*\* ?30|1024 ?\*\* ?3)[^\n]*:[,.0-9]*f\}")
    users = sorted(str(p.relative_to(ROOT)) for p in SIZER_FILES if pattern.search(p.read_text(encoding="utf-8")))
    assert users == []
