"""`sizer models --fits GPUS`: what of the catalog runs on a machine, at which quantization, ranked."""

import csv
import io
import json

import pytest
from click.testing import CliRunner

from sizer.cli import cli
from sizer.errors import UsageError
from sizer.gpuspec import parse_gpus
from sizer.catalog import release_month
from sizer.plan.catalog_fit import (GGUF_LADDER, RECENT_MONTHS, RUNNABLE_ORDER, ModelFit, best_precision,
                                    default_engine, fits_catalog, ladder, parse_ram_bytes, ram_parameter, rank_rows)
from sizer.plan.catalog_report import CATALOG_FIT_CSV_COLUMNS
from sizer.plan.fit import fit
from sizer.units import GiB


def run(*args):
    return CliRunner().invoke(cli, ["models", *args])


def one_line_error(r, code=2):
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: "), r.output      # click's usage lines may come first, as elsewhere
    return lines[-1]


@pytest.fixture(scope="module")
def rtx4060():
    r = run("--fits", "RTX-4060", "--limit", "100", "--format", "json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


@pytest.fixture(scope="module")
def card24():
    r = run("--fits", "24GB", "--limit", "100", "--format", "json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


ROW_FIELDS = {"rank", "model", "family", "released", "recent", "params", "active_params", "quality_params",
              "precision", "verdict",
              "context_length", "max_context_length", "model_max_context_length", "decode_tokens_per_s",
              "prefill_tokens_per_s", "gpu_memory_bytes", "gpu_capacity_bytes", "host_bytes", "launch", "reason",
              "gpus", "engine"}


def test_json_fields_and_every_row_runs(rtx4060):
    assert rtx4060["gpus"] == "1xRTX-4060" and rtx4060["engine"] == "llamacpp"
    assert rtx4060["context_length"] == 8192
    assert rtx4060["runnable"] == rtx4060["shown"] == len(rtx4060["models"]) > 5
    assert rtx4060["planned"] == len(json.loads(run("--format", "json").output))
    for row in rtx4060["models"]:
        assert set(row) == ROW_FIELDS
        assert row["verdict"] in RUNNABLE_ORDER
        assert row["precision"] in GGUF_LADDER
        assert row["gpu_memory_bytes"] <= row["gpu_capacity_bytes"]       # fits: on the GPU
        assert row["gpu_capacity_bytes"] < 8 * GiB                       # an 8 GB card
        assert row["context_length"] <= row["max_context_length"]        # it serves the context planned
        assert row["context_length"] == min(8192, row["model_max_context_length"] or 8192)
        assert row["decode_tokens_per_s"] > 0
        assert row["launch"][-1]["command"].startswith("llama-server -m ")
        assert f"<{row['precision']} GGUF of" in row["launch"][-1]["command"]


def test_no_model_larger_than_the_card_fits_without_offload(rtx4060, card24):
    # at ~4.9 bits a weight (Q4_K_M), 13B needs ~8 GB: nothing above 13B fits an 8 GB card fully;
    # a 70B needs ~40 GB even at Q3_K_M
    assert all(r["quality_params"] < 13e9 or r["verdict"] != "fits" for r in rtx4060["models"])
    assert all(r["params"] < 60e9 or r["verdict"] != "fits" for r in card24["models"])
    names = {r["model"] for r in card24["models"]}
    assert {"Qwen3-32B", "gemma-3-27b-it", "Llama-3.1-8B"} <= names


def test_the_precision_is_the_best_that_serves_the_context(rtx4060):
    """The ladder's next-better type does not serve the context with the same verdict (checked through fit)."""
    names = ladder(None, "llamacpp", None)          # GGUF_LADDER's types that sizer sizes
    assert names[:5] == ["fp16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M"] and "Q3_K_M" in names and "Q2_K" not in names
    for row in rtx4060["models"][:6]:
        i = names.index(row["precision"])
        if i == 0:
            continue
        better = fit(row["model"], "1xRTX-4060", "llamacpp", names[i - 1], row["context_length"],
                     suggestions=False, max_gpus=1).options[0]
        assert better.verdict == "does-not-fit" or RUNNABLE_ORDER.index(better.verdict) > \
            RUNNABLE_ORDER.index(row["verdict"]), (row["model"], better.verdict)
        same = fit(row["model"], "1xRTX-4060", "llamacpp", row["precision"], row["context_length"],
                   suggestions=False, max_gpus=1).options[0]
        assert (same.verdict, same.max_context_length) == (row["verdict"], row["max_context_length"])


def test_ranked_by_verdict_then_recency_then_size_then_speed(card24):
    rows = card24["models"]
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    newest = max(release_month(r["released"]) for r in rows)
    assert card24["recent_since"] == f"{(newest - RECENT_MONTHS) // 12}-{(newest - RECENT_MONTHS) % 12 + 1:02d}"
    for r in rows:
        assert r["recent"] == (release_month(r["released"]) >= newest - RECENT_MONTHS), r["model"]
    def band(row):                                   # 12-month bands back from the newest; 0 = recent
        behind = newest - release_month(row["released"])
        return 0 if behind <= RECENT_MONTHS else (behind - 1) // RECENT_MONTHS

    for a, b in zip(rows, rows[1:]):
        va, vb = RUNNABLE_ORDER.index(a["verdict"]), RUNNABLE_ORDER.index(b["verdict"])
        assert va <= vb
        if va == vb:
            assert band(a) <= band(b)
            if band(a) == band(b):
                assert a["quality_params"] >= b["quality_params"]
                if a["quality_params"] == b["quality_params"]:
                    assert (a["decode_tokens_per_s"] or 0) >= (b["decode_tokens_per_s"] or 0)


def fit_row(model, params, released, verdict="fits", speed=50.0):
    return ModelFit(model=model, family="llama", params=params, active_params=params, quality_params=params,
                    precision="Q4_K_M", verdict=verdict, context_length=8192, max_context_length=8192,
                    model_max_context_length=8192, decode_tokens_per_s=speed, prefill_tokens_per_s=None,
                    gpu_memory_bytes=1, gpu_capacity_bytes=2, host_bytes=0, launch=(), reason="", released=released)


def test_a_new_smaller_model_ranks_above_an_old_larger_one():
    old_large = fit_row("Old-40B", 40_000_000_000, "2023-05")
    new_small = fit_row("New-32B", 32_000_000_000, "2025-04-29")
    newest = fit_row("Newest-4B", 4_000_000_000, "2026-04-02")
    ranked = rank_rows([old_large, new_small, newest])
    assert [r.model for r in ranked] == ["New-32B", "Newest-4B", "Old-40B"]
    assert [r.recent for r in ranked] == [True, True, False]
    # the window is RECENT_MONTHS calendar months back from the newest: 2025-04 is in, 2025-03 out
    edge = rank_rows([newest, fit_row("Edge", 9, "2025-04"), fit_row("Out", 9, "2025-03-31")])
    assert {r.model: r.recent for r in edge} == {"Newest-4B": True, "Edge": True, "Out": False}
    # with only old models, size ranks them as before
    assert [r.model for r in rank_rows([fit_row("A-7B", 7, "2023-09"), old_large])] == ["Old-40B", "A-7B"]


def test_the_verdict_still_comes_before_recency():
    ranked = rank_rows([fit_row("New", 32, "2026-01", verdict="fits-with-offload"), fit_row("Old", 7, "2023-05")])
    assert [r.model for r in ranked] == ["Old", "New"]


def test_an_undated_row_is_not_recent():
    ranked = rank_rows([fit_row("Undated", 70, None), fit_row("Dated", 7, "2024-01")])
    assert [(r.model, r.recent) for r in ranked] == [("Dated", True), ("Undated", False)]
    assert [r.recent for r in rank_rows([fit_row("A", 7, None)])] == [False]


def test_on_an_rtx_4090_a_2025_model_ranks_above_falcon_40b():
    r = run("--fits", "RTX-4090", "--limit", "100", "--format", "json")
    rank = {row["model"]: row for row in json.loads(r.output)["models"]}
    assert rank["Qwen3-32B"]["rank"] < rank["falcon-40b"]["rank"]
    assert rank["falcon-40b"]["recent"] is False and rank["Qwen3-32B"]["recent"] is True


def test_a_gpu_given_by_size_has_no_speed(card24):
    # a bare size names no bandwidth: the memory answer stands, the speed is unknown
    assert all(r["decode_tokens_per_s"] is None for r in card24["models"])
    assert "-" in run("--fits", "24GB", "--limit", "1").output.splitlines()[4].split()


def test_a_mixture_of_experts_ranks_by_its_dense_equivalent_size(card24):
    rank = {r["model"]: r for r in card24["models"]}
    moe, dense = rank["Qwen3-30B-A3B"], rank["Qwen3-14B"]
    assert moe["active_params"] < dense["params"] < moe["params"]
    assert moe["active_params"] < moe["quality_params"] < moe["params"]
    assert dense["quality_params"] == dense["params"]
    assert dense["rank"] < moe["rank"]              # 30B with 3B active ranks as ~10B, below a dense 14B


def test_csv_header_and_the_same_values_as_json(rtx4060):
    r = run("--fits", "RTX-4060", "--limit", "100", "--format", "csv")
    assert r.output.splitlines()[0] == ",".join(CATALOG_FIT_CSV_COLUMNS)
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert len(rows) == len(rtx4060["models"])
    for got, want in zip(rows, rtx4060["models"]):
        assert (got["model"], got["precision"], got["verdict"]) == (want["model"], want["precision"], want["verdict"])
        assert int(got["gpu_memory_bytes"]) == want["gpu_memory_bytes"]
        assert int(got["max_context_length"]) == want["max_context_length"]
        assert float(got["decode_tokens_per_s"]) == pytest.approx(want["decode_tokens_per_s"])
        assert got["launch"] == f"[{want['launch'][0]['on']}] {want['launch'][0]['command']}"
        assert got["released"] == want["released"] and got["recent"] == str(want["recent"])


def test_limit_shows_the_best_and_says_how_many_more(card24):
    r = run("--fits", "24GB", "--limit", "3")
    assert r.exit_code == 0, r.output
    total = card24["runnable"]
    assert f"3 of {total} catalog models that run ({total - 3} more: --limit {total})" in r.output
    for row in card24["models"][:3]:
        assert row["model"] in r.output
    assert card24["models"][3]["model"] + " " not in r.output.split("run:")[0]
    shown = json.loads(run("--fits", "24GB", "--limit", "3", "--format", "json").output)
    assert [m["model"] for m in shown["models"]] == [m["model"] for m in card24["models"][:3]]
    assert shown["runnable"] == total


def test_default_shows_twenty(card24):
    assert card24["runnable"] > 20
    out = json.loads(run("--fits", "24GB", "--format", "json").output)
    assert len(out["models"]) == 20


def test_min_tokens_per_s_drops_the_slower(rtx4060):
    speeds = sorted(r["decode_tokens_per_s"] for r in rtx4060["models"])
    floor = speeds[len(speeds) // 2]
    out = json.loads(run("--fits", "RTX-4060", "--min-tokens-per-s", str(floor), "--limit", "100",
                         "--format", "json").output)
    assert out["models"] and all(r["decode_tokens_per_s"] >= floor for r in out["models"])
    assert out["runnable"] == sum(1 for s in speeds if s >= floor)


def test_a_mac_runs_a_70b_and_ollama_launches_with_num_ctx():
    r = run("--fits", "m3-max-64gb", "--engine", "ollama", "--family", "llama", "--format", "json")
    out = json.loads(r.output)
    assert out["engine"].startswith("ollama")
    assert any(m["params"] > 60e9 for m in out["models"])
    for m in out["models"]:
        command = m["launch"][-1]["command"]
        assert f"PARAMETER num_ctx {m['context_length']}" in command and "PARAMETER num_gpu " in command
        assert "ollama run " in command


def test_table_names_the_hardware_engine_and_commands():
    r = run("--fits", "m3-max-64gb", "--family", "qwen3", "--limit", "2")
    assert r.exit_code == 0, r.output
    assert r.output.startswith("What runs on 1xM3-Max-64GB · engine llamacpp")
    assert "\nrun:\n  1. llama-server -m " in r.output


def test_default_engine_by_market():
    assert default_engine(parse_gpus("H100")) == "vllm"
    for gpus in ("RTX-4060", "24GB", "m3-max-64gb", "2xRTX-3090"):
        assert default_engine(parse_gpus(gpus)) == "llamacpp"


def test_local_answers_in_one_line_or_plans_this_machine():
    r = run("--fits", "local", "--limit", "1")
    try:
        parse_gpus("local")
    except UsageError as e:
        assert one_line_error(r) == f"Error: {e}"
    else:
        assert r.exit_code == 0 and r.output.startswith("What runs on ")


@pytest.mark.parametrize("args, needle", [
    (("--fits", "foo"), "unknown GPU 'foo'"),
    (("--fits", "24GB", "--ram", "lots"), "--ram 'lots'"),
    (("--fits", "24GB", "--limit", "0"), "--limit"),
    (("--fits", "24GB", "--engine", "nope"), "nope"),
    (("--fits", "24GB", "--gpus", "H100"), "disagree"),
    (("-c", "4096",), "only with --fits"),
])
def test_bad_input_is_one_line(args, needle):
    assert needle in one_line_error(run(*args))


def test_ram_is_passed_to_fit_only_when_fit_takes_it(monkeypatch):
    result = fits_catalog("24GB", models=["phi-2"], ram="32GB")
    if ram_parameter() is None:
        assert result.notes == ("--ram 32GB is ignored: this sizer plans no partial offload (fit takes no RAM)",)
    else:
        assert not any("ignored" in n for n in result.notes)
    seen = []

    def fit_with_ram(*args, ram_bytes: int | None = None, **kwargs):
        seen.append(ram_bytes)
        return fit(*args, **kwargs)

    monkeypatch.setattr("sizer.plan.fit.fit", fit_with_ram)
    result = fits_catalog("24GB", models=["phi-2"], ram="32GB")
    assert result.notes == () and seen and set(seen) == {32 * GiB}


def test_ram_sizes():
    assert parse_ram_bytes("32GB") == parse_ram_bytes("32 GiB") == 32 * GiB
    assert parse_ram_bytes("1.5TB") == 1536 * GiB
    with pytest.raises(UsageError):
        parse_ram_bytes("0GB")


def test_best_precision_bisects_a_monotone_ladder():
    names = ["a", "b", "c", "d", "e", "f", "g", "h"]
    for verdicts in (["does-not-fit"] * 3 + ["fits-with-offload"] * 2 + ["fits"] * 3,
                     ["does-not-fit"] * 8, ["fits"] * 8, ["fits-with-offload"] * 7 + ["marginal"]):
        asked = []

        def probe(name, verdicts=verdicts, asked=asked):
            asked.append(name)
            return verdicts[names.index(name)]

        got = best_precision(probe, names)
        runnable = [v for v in verdicts if v != "does-not-fit"]
        if not runnable:
            assert got is None
            continue
        best = min(runnable, key=RUNNABLE_ORDER.index)
        assert got == (names[verdicts.index(best)], best)
        assert len(asked) <= 4                       # the lowest, then a bisection of 7


def test_fit_without_the_searches_keeps_the_verdict():
    full = fit("llama3.1-8b", "1xRTX-4060", "llamacpp", ["Q8_0", "Q4_K_M"], 8192, suggestions=False, max_gpus=1)
    quick = fit("llama3.1-8b", "1xRTX-4060", "llamacpp", ["Q8_0", "Q4_K_M"], 8192, suggestions=False, max_gpus=1,
                limits=())
    # Q8_0 of 8B leaves layers in system RAM on an 8 GB card (llama.cpp's own --fit picks -ngl)
    assert [o.verdict for o in quick.options] == [o.verdict for o in full.options] == ["fits-with-offload", "fits"]
    assert [o.max_context_length for o in quick.options] == [8192, 8192] != [o.max_context_length for o in full.options]
    assert [o.max_concurrency for o in quick.options] == [1, 1]
    refused = fit("llama3.1-8b", "1xRTX-4060", "llamacpp", "fp16", 8192, suggestions=False, max_gpus=1, limits=(),
                  ram_bytes=8 * 2**30)            # 16 GB of weights, 8 GB of RAM: nowhere to put them
    assert refused.options[0].verdict == "does-not-fit"
    assert (refused.options[0].max_context_length, refused.options[0].max_concurrency) == (0, 0)
    assert [o.per_gpu for o in quick.options] == [o.per_gpu for o in full.options]
    with pytest.raises(UsageError, match="unknown"):
        fit("llama3.1-8b", "1xRTX-4060", "llamacpp", "Q4_K_M", limits=("speed",))


def test_docs_output_lists_the_csv_header_verbatim():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "output.md").read_text(encoding="utf-8")
    assert f"\n{','.join(CATALOG_FIT_CSV_COLUMNS)}\n" in text
    for field in ROW_FIELDS:
        assert f"`{field}`" in text


def test_older_models_rank_by_twelve_month_bands():
    """Gemma 3 27B, 13 months behind the newest, ranks above a larger model two years older."""
    newest = fit_row("Newest-4B", 4_000_000_000, "2026-04-02")
    previous = fit_row("Gemma-27B", 27_000_000_000, "2025-03-12")
    ancient = fit_row("Falcon-40B", 40_000_000_000, "2023-05")
    ranked = rank_rows([ancient, previous, newest])
    assert [r.model for r in ranked] == ["Newest-4B", "Gemma-27B", "Falcon-40B"]
    assert [r.recent for r in ranked] == [True, False, False]
    # within one band, size decides: 2024-05 (23 months back) and 2025-03 (13) share the second band
    same_band = rank_rows([newest, fit_row("B-8B", 8, "2025-03"), fit_row("A-70B", 70, "2024-05")])
    assert [r.model for r in same_band] == ["Newest-4B", "A-70B", "B-8B"]
