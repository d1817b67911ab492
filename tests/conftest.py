import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MODELS = ROOT.parent / "shared" / "reference" / "models"


def parse_params_md(path: Path) -> dict[str, tuple[int, int]]:
    """name -> (params, KV bytes/token in bf16) from ../shared/reference/models/params.md."""
    out = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 4 and re.fullmatch(r"[\d,]+", cells[1]):
            out[cells[0]] = (int(cells[1].replace(",", "")), int(cells[4].replace(",", "")))
    return out


@pytest.fixture(scope="session")
def reference_facts():
    path = SHARED_MODELS / "params.md"
    if not path.exists():
        pytest.skip("../shared/reference/models/params.md is not beside this checkout")
    return parse_params_md(path)


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
