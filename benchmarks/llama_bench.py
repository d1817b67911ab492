"""sizer's llama.cpp speed model against published llama-bench rows (issue 18 item 5).

    python benchmarks/llama_bench.py [--out benchmarks/results/llama_bench.csv] [--fit [--write]] [--markdown]

Every row of tests/data/llamacpp/llama_bench.json is predicted with the backend's constants of
sizer/data/llamacpp_speed.json (sizer.plan.local_speed) and, held out, with the constants fitted on
the other sources' rows of its backend (leave one source out). Prints predicted vs published per row,
then the median and worst absolute error per test kind (tg, pp, pp+tg) and backend. Rows the
device table excludes (tests/data/llamacpp/bench_devices.json "excluded") are printed with their
reason and left out of the figures. `--fit` prints the constants fitted on all usable rows, to be
written into sizer/data/llamacpp_speed.json. Targets: decode median 15 %, worst 40 %; prompt
processing median 25 %.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sizer import __version__  # noqa: E402
from sizer.check import bench_speed as bs  # noqa: E402
from sizer.plan.local_speed import backend_speeds  # noqa: E402

DATA = ROOT / "tests" / "data" / "llamacpp"
COLUMNS = ("row", "backend", "device", "model", "test", "kind", "published_tokens_per_s", "predicted_tokens_per_s",
           "error", "held_out_tokens_per_s", "held_out_error", "excluded", "source", "sizer_version", "python",
           "numpy", "machine")
TARGETS = {"tg": (0.15, 0.40), "pp": (0.25, None)}


def load() -> tuple[list[dict], dict]:
    records = json.loads((DATA / "llama_bench.json").read_text())["records"]
    table = json.loads((DATA / "bench_devices.json").read_text())
    return records, table


def rows(records: list[dict], table: dict) -> list[dict]:
    import numpy

    speeds = backend_speeds()
    held = bs.held_out_predictions(records, table)
    machine = {"sizer_version": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
               "machine": f"{platform.machine()} {platform.system()} {platform.release()}"}
    out = []
    for i, r in enumerate(records):
        why = bs.excluded_reason(r, table["excluded"])
        backend = bs.backend_of_record(r)
        predicted = None if why else bs.predicted_tokens_per_s(r, table, speeds[backend])
        h = held.get(i)
        out.append({"row": i, "backend": backend, "device": r["gpu"] or r["cpu"], "model": r["model"], "test": r["test"],
                    "kind": bs.test_kind(r), "published_tokens_per_s": r["tokens_per_s"],
                    "predicted_tokens_per_s": None if predicted is None else round(predicted, 2),
                    "error": None if predicted is None else round(bs.relative_error(predicted, r["tokens_per_s"]), 4),
                    "held_out_tokens_per_s": None if h is None else round(h, 2),
                    "held_out_error": None if h is None else round(bs.relative_error(h, r["tokens_per_s"]), 4),
                    "excluded": why or "", "source": r["source"], **machine})
    return out


def percent(x: float | None) -> str:
    return "" if x is None else f"{100 * x:+.0f}%"


def print_rows(table_rows: list[dict]) -> None:
    print(f"{'#':>3} {'backend':7} {'device':24} {'model':30} {'test':13} {'published':>9} {'sizer':>9} {'err':>6} {'held-out':>8}")
    for r in table_rows:
        if r["excluded"]:
            continue
        print(f"{r['row']:3d} {r['backend']:7} {r['device'][:24]:24} {r['model'][:30]:30} {r['test']:13} "
              f"{r['published_tokens_per_s']:9.1f} {r['predicted_tokens_per_s']:9.1f} {percent(r['error']):>6} "
              f"{percent(r['held_out_error']):>8}")
    excluded = [r for r in table_rows if r["excluded"]]
    print(f"\n{len(excluded)} rows excluded:")
    for reason in dict.fromkeys(r["excluded"] for r in excluded):
        ids = [str(r["row"]) for r in excluded if r["excluded"] == reason]
        print(f"  rows {', '.join(ids)}: {reason}")


def summaries(table_rows: list[dict]) -> list[tuple[str, str, int, float, float, float | None, float | None]]:
    """(kind, backend or 'all', rows, median, worst, held-out median, held-out worst)."""
    out = []
    used = [r for r in table_rows if not r["excluded"]]
    for kind in ("tg", "pp", "pp+tg"):
        for backend in ["all"] + sorted({r["backend"] for r in used}):
            group = [r for r in used if r["kind"] == kind and backend in ("all", r["backend"])]
            if not group:
                continue
            median, worst = bs.summary([r["error"] for r in group])
            held = [r["held_out_error"] for r in group if r["held_out_error"] is not None]
            h_median, h_worst = bs.summary(held) if held else (None, None)
            out.append((kind, backend, len(group), median, worst, h_median, h_worst))
    return out


def print_summaries(table_rows: list[dict]) -> None:
    print(f"\n{'kind':6} {'backend':7} {'rows':>4} {'median':>7} {'worst':>7} {'held-out median':>16} {'worst':>7}")
    for kind, backend, n, median, worst, h_median, h_worst in summaries(table_rows):
        h = f"{100 * h_median:15.1f}% {100 * h_worst:6.0f}%" if h_median is not None else f"{'n/a':>16} {'':>7}"
        print(f"{kind:6} {backend:7} {n:4d} {100 * median:6.1f}% {100 * worst:6.0f}% {h}")
    print("\ntargets: tg median 15 %, worst 40 %; pp median 25 %")


def fitted_json(records: list[dict], table: dict) -> dict:
    """The backends section of sizer/data/llamacpp_speed.json: constants (3 significant digits) and
    the rows, devices and sources that set them."""
    out = {}
    used = bs.usable(records, table)
    for backend, speed in bs.fit_all(records, table).items():
        mine = [r for r in used if bs.backend_of_record(r) == backend]
        out[backend] = {
            "decode_bandwidth_efficiency": float(f"{speed.decode_bandwidth_efficiency:.3g}"),
            "decode_overhead_s": float(f"{speed.decode_overhead_s:.3g}"),
            "prefill_efficiency": {k: float(f"{v:.3g}") for k, v in speed.prefill_efficiency.items()},
            "fitted_on": {"tg_rows": sum(1 for r in mine if bs.test_kind(r) == "tg"),
                          "pp_rows": sum(1 for r in mine if bs.test_kind(r) == "pp"),
                          "devices": sorted({r["gpu"] or r["cpu"] for r in mine}),
                          "sources": sorted({r["source"] for r in mine})}}
    out["SYCL"] = {"same_as": "Vulkan", "note": "no published SYCL rows in the set: Intel GPUs take Vulkan's constants"}
    return out


def print_fit(records: list[dict], table: dict) -> None:
    print("constants fitted on all usable rows (sizer/data/llamacpp_speed.json):")
    for backend, speed in bs.fit_all(records, table).items():
        n = sum(1 for r in bs.usable(records, table) if bs.backend_of_record(r) == backend)
        prefill = ", ".join(f"{k} {v:.3f}" for k, v in speed.prefill_efficiency.items())
        print(f"  {backend:7} rows {n:2d}: decode e {speed.decode_bandwidth_efficiency:.3f}, "
              f"overhead {1e6 * speed.decode_overhead_s:.1f} us/layer; prefill {prefill}")


def markdown(table_rows: list[dict]) -> str:
    """The per-row table and the summary, as docs/performance.md quotes them."""
    lines = ["| device | backend | model | test | published t/s | sizer t/s | error | held out |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for r in table_rows:
        if not r["excluded"]:
            lines.append(f"| {r['device']} | {r['backend']} | {r['model']} | {r['test']} | {r['published_tokens_per_s']:g} "
                         f"| {r['predicted_tokens_per_s']:.1f} | {percent(r['error'])} | {percent(r['held_out_error'])} |")
    lines += ["", "| test | backend | rows | median error | worst | held-out median | held-out worst |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for kind, backend, n, median, worst, h_median, h_worst in summaries(table_rows):
        held = (f"{100 * h_median:.1f} % | {100 * h_worst:.0f} %" if h_median is not None else "n/a | n/a")
        lines.append(f"| {kind} | {backend} | {n} | {100 * median:.1f} % | {100 * worst:.0f} % | {held} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "llama_bench.csv"))
    parser.add_argument("--fit", action="store_true", help="print the constants fitted on all usable rows")
    parser.add_argument("--write", action="store_true", help="with --fit: write them into sizer/data/llamacpp_speed.json")
    parser.add_argument("--markdown", action="store_true", help="print the tables docs/performance.md quotes")
    args = parser.parse_args()
    records, table = load()
    if args.fit:
        print_fit(records, table)
        if args.write:
            path = ROOT / "sizer" / "data" / "llamacpp_speed.json"
            data = json.loads(path.read_text())
            data["backends"] = fitted_json(records, table)
            path.write_text(json.dumps(data, indent=2) + "\n")
            print(f"wrote {path}")
        return
    table_rows = rows(records, table)
    if args.markdown:
        print(markdown(table_rows))
        return
    print_rows(table_rows)
    print_summaries(table_rows)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(table_rows)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
