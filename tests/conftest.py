import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Verified reference configs and counts, copied into the repository with their provenance
# (tests/data/reference_models/SOURCES.md; params.md was computed with transformers 5.24.0).
REFERENCE_MODELS = ROOT / "tests" / "data" / "reference_models"


def parse_params_md(path: Path) -> dict[str, tuple[int, int]]:
    """name -> (params, KV bytes/token in bf16) from tests/data/reference_models/params.md."""
    out = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 4 and re.fullmatch(r"[\d,]+", cells[1]):
            out[cells[0]] = (int(cells[1].replace(",", "")), int(cells[4].replace(",", "")))
    return out


@pytest.fixture(scope="session", autouse=True)
def private_user_cache(tmp_path_factory):
    """sizer's caches (Hub headers, meta-device counts) go to a folder of this test session, never to
    the user's ~/.cache; subprocesses inherit it."""
    import os

    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="session")
def reference_facts():
    facts = parse_params_md(REFERENCE_MODELS / "params.md")
    assert len(facts) == 25, "tests/data/reference_models/params.md lost rows"
    return facts


def benchmark_module(name: str):
    """A script under benchmarks/ (not a package) imported as a module, for its functions."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_config(folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder / "config.json"
