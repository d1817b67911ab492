"""sizer's plan against published vLLM and SGLang startup logs (issue 17's validation set).

    python benchmarks/engine_logs.py [--out benchmarks/results/engine_logs.csv]

Every case in tests/data/engine_logs/{vllm,sglang}/ (the log as published, and a JSON naming its
source, GPU and model) is read with `sizer check`'s reader (the settings the log does not print taken from
the case's own record of its source, as `sizer check --command` takes them from a launch line) and planned with the release's own
accounting; the model comes from the catalog (or a stand-in of the same shapes) or a config checked in
under tests/data/engine_logs/configs/ (INDEX.json names each source). Writes one CSV row per case and
component (predicted, measured, relative error) with the machine and versions, and prints the median
and worst absolute error per component. Cases whose model or GPU sizer cannot place are listed as
skipped with the reason. Targets (issue 17): KV-cache tokens within 5 % median and 15 % worst;
activation peak and non-torch memory within 25 % median; weights within 0.5 %.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sizer import __version__  # noqa: E402
from sizer.catalog import find_model  # noqa: E402
from sizer.check.compare import check_log  # noqa: E402
from sizer.check.logs import read_engine_log_file, with_settings  # noqa: E402
from sizer.errors import SizerError  # noqa: E402
from sizer.render import to_csv  # noqa: E402

LOGS = ROOT / "tests" / "data" / "engine_logs"
COLUMNS = ("case", "engine", "version", "modelled", "model", "gpu", "tensor_parallel", "pipeline_parallel",
           "context_length", "precision", "component", "unit", "predicted", "measured", "error", "source",
           "sizer_version", "python", "machine")
# the GPU a case's JSON names -> a catalog GPU, or a size for GPUs outside the catalog
GPU_PATTERNS = (
    (r"gh200", "96GB"), (r"h200", "H200"), (r"h100", "H100"), (r"h20\b", "96GB"),
    (r"a100[- ]?(sxm4[- ])?40", "A100-40GB"), (r"a100", "A100-80GB"), (r"l40s", "L40S"), (r"\bl4\b", "L4"),
    (r"\bt4\b", "T4"), (r"v100.*32", "V100-32GB"), (r"v100", "V100-16GB"), (r"3090", "RTX-3090"),
    (r"4090", "RTX-4090"), (r"3060", "12GB"), (r"5080", "16GB"), (r"a5000", "24GB"), (r"gtx 1080", "8GB"), (r"mi300x", "MI300X"),
    (r"gb10", "128GB"), (r"jetson thor", "128GB"), (r"24 ?gb", "24GB"), (r"~?40 ?gb", "A100-40GB"), (r"80 ?gb", "A100-80GB"),
)
TARGETS = {"gpu_kv_cache_tokens": (0.05, 0.15), "max_total_num_tokens": (0.05, 0.15),
           "activation_peak": (0.25, None), "non_torch": (0.25, None), "weights": (0.005, None)}


def gpu_for(text: str | None) -> str | None:
    lowered = (text or "").lower()
    for pattern, gpu in GPU_PATTERNS:
        if re.search(pattern, lowered):
            return gpu
    return None


def model_for(case: dict, index: dict):
    """A catalog name or a config path for the case's model, or None."""
    ref = case.get("hf_id") or case.get("model")
    row = index.get(ref) or index.get(case.get("model") or "") or {}
    if row.get("catalog"):
        return row["catalog"]
    if row.get("config"):
        return str(LOGS / "configs" / row["config"])
    entry = find_model(ref) if ref else None
    return entry.name if entry else None


def run_case(json_path: Path, index: dict) -> tuple[list[dict], str | None]:
    case = json.loads(json_path.read_text())
    model = model_for(case, index)
    if model is None:
        return [], "no config for the model"
    log = with_settings(read_engine_log_file(json_path.with_suffix(".log")), case.get("settings") or {},
                        "the case's settings (its source)")
    engine = None if log.version else f"{case['engine']}=={case['version'].split()[0]}"
    try:
        result = check_log(log, model, gpu_for(case.get("gpu")), engine)
    except SizerError as e:
        return [], str(e)
    head = {"case": case["id"], "engine": result.engine, "version": result.version, "modelled": result.modelled,
            "model": result.model, "gpu": result.gpu, "tensor_parallel": result.tensor_parallel,
            "pipeline_parallel": result.pipeline_parallel, "context_length": result.context_length,
            "precision": result.precision, "source": case.get("source", "")}
    # a case may name components its run set by hand where its source does not say how ("user_set": why)
    user_set = case.get("user_set") or {}
    return [{**head, "component": r.component, "unit": r.unit, "predicted": r.predicted, "measured": r.measured,
             "error": "" if r.error is None or r.component in user_set else round(r.error, 4)}
            for r in result.rows], None


def summary(rows: list[dict]) -> list[str]:
    by_component: dict[str, list[float]] = {}
    for row in rows:
        if row["error"] != "":
            by_component.setdefault(row["component"], []).append(abs(float(row["error"])))
    lines = [f"{'component':22} {'n':>3} {'median |error|':>15} {'worst':>8}  target"]
    for component, errors in sorted(by_component.items()):
        median, worst = statistics.median(errors), max(errors)
        target = TARGETS.get(component)
        text = "" if target is None else f"median {target[0]:.1%}" + (f", worst {target[1]:.0%}" if target[1] else "")
        lines.append(f"{component:22} {len(errors):>3} {median:>15.1%} {worst:>8.1%}  {text}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "engine_logs.csv"))
    args = parser.parse_args(argv)
    index_path = LOGS / "configs" / "INDEX.json"
    index = json.loads(index_path.read_text()) if index_path.is_file() else {}
    machine = {"sizer_version": __version__, "python": platform.python_version(), "machine": platform.machine()}
    rows, skipped = [], []
    for json_path in sorted(LOGS.glob("*/*.json")):
        if json_path.parent.name == "configs":
            continue
        case_rows, why = run_case(json_path, index)
        rows += [{**row, **machine} for row in case_rows]
        if why:
            skipped.append(f"{json_path.stem}: {why}")
    Path(args.out).write_text(to_csv(rows, COLUMNS))
    cases = len({row["case"] for row in rows})
    print(f"{cases} cases planned, {len(skipped)} skipped; rows in {args.out}")
    print("\n".join(summary(rows)))
    for line in skipped:
        print(f"skipped {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
