"""The checkout never hides an installed package, and sizer runs from wherever a user starts Python.

Python puts the current folder first on sys.path (`python -m pytest`, `python -c`, a notebook). A
top-level folder with an __init__.py there is a regular package and hides any installed distribution
of the same name: our old `kernels/` hid PyPI's `kernels`, which transformers 5.25 imports for every
model class. Each check runs in a fresh interpreter started in the folder a user would start it in.
"""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IGNORED_IN_COPIES = shutil.ignore_patterns(".git", ".venv", "*.egg-info", "__pycache__", ".pytest_cache",
                                           ".hypothesis", "build", "dist", "results")


def run_python(args: list[str], cwd: Path, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    """A new interpreter in `cwd`; `extra_path` goes on PYTHONPATH, after the current folder, where an
    installed package's folder sits."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if extra_path is not None:
        env["PYTHONPATH"] = str(extra_path)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def top_level_names() -> list[str]:
    """Names a top-level entry of the checkout could be imported as."""
    names = []
    for entry in ROOT.iterdir():
        if entry.name.startswith(".") or entry.name == "sizer":
            continue
        if entry.is_dir() and entry.name.isidentifier():
            names.append(entry.name)
        elif entry.suffix == ".py":
            names.append(entry.stem)
    return sorted(names)


def test_the_card_folders_are_there_and_none_is_a_package():
    names = top_level_names()
    assert {"kernels", "data", "tests", "benchmarks"} <= set(names)
    packages = [n for n in names if (ROOT / n / "__init__.py").exists() or (ROOT / f"{n}.py").exists()]
    assert packages == []


def test_no_top_level_folder_hides_an_installed_package(tmp_path):
    """For every top-level name, an installed regular package of that name is the one imported
    from the repository root (this failed while kernels/ and data/ had an __init__.py)."""
    site = tmp_path / "site-packages"
    names = top_level_names()
    for name in names:
        (site / name).mkdir(parents=True)
        (site / name / "__init__.py").write_text("INSTALLED = True\n")
    code = ("import importlib, json, sys; names = sys.argv[1:]; "
            "print(json.dumps({n: getattr(importlib.import_module(n), 'INSTALLED', False) for n in names}))")
    out = run_python(["-c", code, *names], cwd=ROOT, extra_path=site)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {name: True for name in names}


def test_transformers_builds_a_model_from_the_repository_root():
    """transformers >= 5.25 imports PyPI's `kernels` for every model class; from the repository
    root that must be the installed one, not a folder of ours."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    try:
        importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("PyPI's kernels is not installed (transformers < 5.25 does not need it)")
    code = ("import kernels, transformers, transformers.activations\n"
            "config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,\n"
            "    num_attention_heads=2, num_key_value_heads=1, vocab_size=64)\n"
            "model = transformers.LlamaForCausalLM(config)\n"
            "print(kernels.__file__, sum(p.numel() for p in model.parameters()))\n")
    out = run_python(["-c", code], cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    kernels_file, params = out.stdout.split()
    assert not Path(kernels_file).resolve().is_relative_to(ROOT)
    assert int(params) == 64 * 32 * 2 + 2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 64 + 3 * 32


def test_python_dash_m_sizer_from_the_repository_root():
    out = run_python(["-m", "sizer", "estimate", "phi-2", "--format", "json"], cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["params"] == 2_779_683_840


def test_a_plain_checkout_has_its_kernels_and_data(tmp_path):
    """Before any install: sizer, sizer.kernels and sizer.data come from the checkout itself."""
    clone = tmp_path / "checkout"
    shutil.copytree(ROOT, clone, ignore=IGNORED_IN_COPIES)
    code = ("import importlib.util, json, sizer, sizer.data, sizer.kernels, sizer.catalog\n"
            "origins = [sizer.__file__, sizer.data.__file__, importlib.util.find_spec('sizer.kernels.gptq').origin]\n"
            "print(json.dumps({'origins': origins, 'models': len(sizer.catalog.model_entries())}))\n")
    out = run_python(["-c", code], cwd=clone)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert all(Path(o).resolve().is_relative_to(clone.resolve()) for o in result["origins"]), result
    assert result["models"] == len(list((ROOT / "sizer" / "data" / "models").glob("*.json")))


def test_python_dash_m_sizer_above_a_clone_named_sizer(tmp_path):
    """`git clone ... sizer` then `python -m sizer` one folder up: the clone's root is not a package,
    so the installed sizer runs."""
    shutil.copytree(ROOT, tmp_path / "sizer", ignore=IGNORED_IN_COPIES)
    out = run_python(["-m", "sizer", "estimate", "phi-2", "--format", "csv"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("model,family,params")


def test_no_code_reads_outside_the_repository():
    """Everything tests and modules read is in the checkout (tests/data, docs/reference, sizer/data)."""
    # the markers are joined here so that this guard itself does not match a grep for them
    outside = ("/".join(("..", "shared")), "/".join(("shared", "reference")), "parents[2]", "ROOT.parent",
               "parent.parent.parent")
    offenders = [f"{path.relative_to(ROOT)}: {marker}"
                 for folder in ("sizer", "tests", "benchmarks", "tools") for path in (ROOT / folder).rglob("*.py")
                 for marker in outside if marker in path.read_text() and path != Path(__file__).resolve()]
    assert offenders == []


def test_the_wheel_ships_the_package_data_and_kernels(tmp_path):
    """What `pip install .` installs: sizer with its catalogs, calibration and kernels, nothing else."""
    import zipfile

    pytest.importorskip("setuptools")
    source = tmp_path / "source"                 # a copy: building leaves build/ and *.egg-info behind
    shutil.copytree(ROOT, source, ignore=IGNORED_IN_COPIES)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    names = zipfile.ZipFile(next((tmp_path / "wheel").glob("sizer_llm-*.whl"))).namelist()
    assert {n.split("/")[0] for n in names} == {"sizer", "sizer_llm-0.1.0.dist-info"}
    shipped = {n for n in names if n.startswith("sizer/data/")}
    expected = {f"sizer/data/{p.relative_to(ROOT / 'sizer' / 'data')}" for p in (ROOT / "sizer" / "data").rglob("*")
                if p.is_file() and p.suffix in (".json", ".md", ".py")}
    assert shipped == expected
    assert {f"sizer/kernels/{m}.py" for m in ("gptq", "gptq_pack", "int4_matmul", "quant_linear")} <= set(names)
