"""sizer's llama.cpp plan against the published startup logs in tests/data/llamacpp/logs/ (issue 18).

    python benchmarks/llamacpp_logs.py [--out benchmarks/results/llamacpp_logs.csv]

Each `<id>.log` is read with `sizer check`'s reader, the settings it does not print taken from its
`<id>.json` record; the model's shape comes from the log's loader summary or, for excerpts without
it, from the catalog model the record names (`catalog_model`) or the stand-in of the same shape
listed in STAND_INS (the record's own inference). Writes one CSV row per log, buffer and device
(predicted, measured, relative error) with the machine and versions, and prints the median and worst
absolute error per component. Target (issue 18): compute buffers within 10 % median.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sizer import __version__  # noqa: E402
from sizer.check.llamacpp_check import check_llamacpp_log  # noqa: E402
from sizer.check.llamacpp_log import read_llamacpp_log_file  # noqa: E402
from sizer.errors import SizerError  # noqa: E402
from sizer.render import to_csv  # noqa: E402

LOGS = ROOT / "tests" / "data" / "llamacpp" / "logs"
COLUMNS = ("case", "build", "model", "devices", "n_ctx", "component", "buffer", "unit", "predicted", "measured",
           "error", "source", "sizer_version", "python", "machine")
# records whose model the log does not name: a catalog model of the shape the record infers
STAND_INS = {"issue-ollama-9858-llama-70b-q8_0-3gpu-ctx128000": "llama-3.1-70b-instruct"}
TARGETS = {"compute_buffer": 0.10}


def case_rows(path: Path) -> tuple[list[dict], str | None]:
    record = json.loads(path.with_suffix(".json").read_text())
    log = read_llamacpp_log_file(path)
    model = record["model"].get("catalog_model") or STAND_INS.get(record["id"])
    try:
        result = check_llamacpp_log(log, record["id"], model, record["model"].get("quant_type"), record["settings"])
    except SizerError as e:
        return [], str(e)
    rows = []
    for row in result.rows:
        component, _, buffer = row.component.partition(" ")
        rows.append({"case": record["id"], "build": result.version, "model": result.model, "devices": result.gpu,
                     "n_ctx": result.context_length, "component": component, "buffer": buffer or "-",
                     "unit": row.unit, "predicted": row.predicted, "measured": row.measured,
                     "error": "" if row.error is None else round(row.error, 4), "source": record["source"],
                     "sizer_version": __version__, "python": platform.python_version(), "machine": platform.machine()})
    return rows, None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "llamacpp_logs.csv"))
    args = parser.parse_args(argv)
    rows, skipped = [], []
    for path in sorted(LOGS.glob("*.log")):
        case, reason = case_rows(path)
        rows += case
        if reason:
            skipped.append((path.stem, reason))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(to_csv(rows, COLUMNS))
    print(f"{len(rows)} rows from {len({r['case'] for r in rows})} logs -> {args.out}")
    for component in ("model_buffer", "kv_buffer", "compute_buffer", "output_buffer"):
        errors = [abs(r["error"]) for r in rows if r["component"] == component and r["error"] != ""]
        if errors:
            target = TARGETS.get(component)
            print(f"  {component:15s} n={len(errors):3d}  median {statistics.median(errors):6.1%}  worst {max(errors):6.1%}"
                  + (f"  (target {target:.0%} median)" if target else ""))
    for case, reason in skipped:
        print(f"  skipped {case}: {reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
