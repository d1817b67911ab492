"""`sizer check LOGFILE`: real published startup logs read back, sizer's plan of the same launch beside
each measured number (the logs and their sources: tests/data/engine_logs)."""

import csv
import io
import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from sizer.check.compare import check_log
from sizer.check.logs import read_engine_log_file
from sizer.cli import cli

from conftest import ROOT

LOGS = ROOT / "tests" / "data" / "engine_logs"
QWEN3_A100 = LOGS / "vllm" / "qwen3-8b-a100-40gb-tp1-v0.9.2.log"
LLAMA_A100 = LOGS / "vllm" / "llama-3.1-8b-a100-40gb-tp1-v0.15.1-eager.log"
SGLANG_H100 = LOGS / "sglang" / "llama-3.1-8b-instruct-h100-tp1-v0.4.1.post5.log"


def run(*args):
    return CliRunner().invoke(cli, ["check", *map(str, args)])


def test_a_vllm_log_beside_sizers_plan():
    result = run(QWEN3_A100, "--gpus", "A100-40GB", "--format", "json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["engine"], out["version"], out["modelled"], out["model"]) == ("vllm", "0.9.2", "0.9.1-0.10.2",
                                                                              "Qwen3-8B")
    assert (out["context_length"], out["precision"], out["tensor_parallel"]) == (40960, "bf16", 1)
    rows = {c["component"]: c for c in out["components"]}
    case = json.loads(QWEN3_A100.with_suffix(".json").read_text())
    assert rows["gpu_kv_cache_tokens"]["measured"] == case["measured"]["kv_tokens"]
    assert abs(rows["weights"]["error"]) < 0.005                           # weights: exact up to the log's rounding
    assert abs(rows["gpu_kv_cache_tokens"]["error"]) < 0.05
    for row in rows.values():
        assert row["error"] == pytest.approx((row["predicted"] - row["measured"]) / row["measured"], abs=1e-4)


def test_the_table_names_units_and_the_release():
    table = run(QWEN3_A100, "--gpus", "A100-40GB").stdout
    assert "vllm 0.9.2 (sizer models 0.9.1-0.10.2) · Qwen3-8B · A100-40GB · TP1xPP1" in table
    assert "sizes in GiB (1 GiB = 2^30 bytes)" in table
    assert "note: GPU memory: the catalog's A100-40GB (the log does not print it)" in table


def test_csv_has_one_row_per_component():
    rows = list(csv.DictReader(io.StringIO(run(QWEN3_A100, "--gpus", "A100-40GB", "--format", "csv").stdout)))
    assert [r["component"] for r in rows] == ["weights", "cuda_graphs", "available_kv_cache", "num_gpu_blocks",
                                              "gpu_kv_cache_tokens", "max_concurrency"]
    assert {r["log"] for r in rows} == {str(QWEN3_A100)}


def test_a_model_path_from_another_machine_is_named_by_the_user():
    """The 0.15.1 log loaded a local folder; --model names the same model (the catalog's Llama-3.1-8B)."""
    failed = run(LLAMA_A100, "--gpus", "A100-40GB")
    assert failed.exit_code == 2 and "Meta-Llama-3.1-8B-Instruct: no such file or folder" in failed.stderr
    result = run(LLAMA_A100, "--gpus", "A100-40GB", "--model", "llama-3.1-8b", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {c["component"]: c for c in json.loads(result.stdout)["components"]}
    assert abs(rows["weights"]["error"]) < 0.005


def test_an_sglang_log():
    log = read_engine_log_file(SGLANG_H100)
    result = check_log(log, "llama-3.1-8b", "H100")
    rows = {r.component: r for r in result.rows}
    assert result.engine == "sglang" and rows["max_total_num_tokens"].measured == 444500
    assert abs(rows["weights"].error) < 0.01


@pytest.mark.parametrize("text, message", [
    ("hello world\n", "not a vLLM or SGLang"),
    ("", "empty"),
])
def test_logs_sizer_cannot_read_are_one_line(tmp_path, text, message):
    path = tmp_path / "x.log"
    path.write_text(text)
    result = run(path)
    assert result.exit_code != 0 and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


def test_a_log_without_gpu_memory_needs_the_gpu():
    result = run(QWEN3_A100)
    assert result.exit_code == 2
    assert "the log does not print the GPU's memory; name the GPU with --gpus" in result.stderr


def _cases():
    index = json.loads((LOGS / "configs" / "INDEX.json").read_text())
    for path in sorted(LOGS.glob("*/*.json")):
        if path.parent.name != "configs":
            yield pytest.param(path, index, id=path.stem)


@pytest.mark.parametrize("case_path, index", list(_cases()))
def test_every_published_log_is_planned_or_refused_in_one_line(case_path, index):
    """benchmarks/engine_logs.py's cases: each log is planned (every row with a measurement) or sizer says
    in one line why not (no config of the model, no GPU memory, a release it does not model)."""
    from sizer.errors import SizerError

    case = json.loads(case_path.read_text())
    row = index.get(case.get("hf_id") or case.get("model")) or {}
    model = row.get("catalog") or (str(LOGS / "configs" / row["config"]) if row.get("config") else None)
    log = read_engine_log_file(case_path.with_suffix(".log"))
    if model is None:
        return
    try:
        result = check_log(log, model, None, None if log.version else f"{case['engine']}=={case['version'].split()[0]}")
    except SizerError as e:
        assert "\n" not in str(e)
        return
    assert result.rows and all(r.measured is not None for r in result.rows)


def test_check_records_calibrate_the_vllm_constants(tmp_path):
    """check --record keeps the components; calibrate fits the vLLM constants to them; check and fit
    predict with the fitted file."""
    import statistics

    records = tmp_path / "checked.csv"
    for log, model, gpu in ((LOGS / "vllm" / "llama-3.2-3b-instruct-t4-tp1-v0.8.2.log", "llama-3.2-3b", "T4"),
                            (LOGS / "vllm" / "phi-4-bnb4bit-a100-80gb-tp1-v0.8.2-lora.log", "phi-4", "A100-80GB")):
        r = run(log, "--model", model, "--gpus", gpu, "--record", records, "--format", "json")
        assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(records.read_text())))
    assert {r["log"] for r in rows} == {str(LOGS / "vllm" / "llama-3.2-3b-instruct-t4-tp1-v0.8.2.log"),
                                       str(LOGS / "vllm" / "phi-4-bnb4bit-a100-80gb-tp1-v0.8.2-lora.log")}
    ratios = [float(r["measured"]) / float(r["predicted"]) for r in rows if r["component"] == "activation_peak"]
    out = tmp_path / "cal.json"
    result = CliRunner().invoke(cli, ["calibrate", str(records), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "vLLM constants from 2 startup log(s)" in result.stdout
    fitted = json.loads(out.read_text())["vllm"]
    assert fitted["activation_scale"] == pytest.approx(statistics.median(ratios))
    assert fitted["records"] == 2
    again = json.loads(run(LOGS / "vllm" / "llama-3.2-3b-instruct-t4-tp1-v0.8.2.log", "--model", "llama-3.2-3b",
                           "--gpus", "T4", "--calibration", out, "--format", "json").stdout)
    first = {r["component"]: float(r["predicted"]) for r in rows if "llama-3.2-3b" in r["log"]}
    peak = {c["component"]: c["predicted"] for c in again["components"]}["activation_peak"]
    assert peak == pytest.approx(first["activation_peak"] * fitted["activation_scale"], rel=1e-6)
    planned = CliRunner().invoke(cli, ["fit", "llama3-8b", "--gpus", "1xH100", "--engine", "vllm", "-p", "bf16",
                                       "--calibration", str(out), "--format", "json"])
    assert planned.exit_code == 0, planned.output
    refused = CliRunner().invoke(cli, ["fit", "llama3-8b", "--gpus", "1xH100", "--engine", "sglang",
                                       "--calibration", str(out)])
    assert refused.exit_code == 2 and "applies to the transformers and vLLM profiles" in refused.stderr


def test_a_bad_vllm_calibration_section_is_one_line(tmp_path):
    from sizer.catalog import data_dir

    bad = json.loads((data_dir() / "calibration.json").read_text()) | {"vllm": {"activation_scale": "big"}}
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(bad))
    result = CliRunner().invoke(cli, ["fit", "llama3-8b", "--gpus", "1xH100", "--engine", "vllm",
                                      "--calibration", str(path)])
    assert result.exit_code != 0 and len(result.stderr.strip().splitlines()) == 1 and "vllm.activation_scale" in result.stderr


DEEPSEEK_H20 = LOGS / "sglang" / "deepseek-r1-h20-tp16-2node-v0.4.3.log"
H20_LEADER = ("python3 -m sglang.launch_server --model-path /work/models --mem-fraction-static 0.93 --tp 16 "
              "--nnodes 2 --node-rank 0")


def test_a_log_cut_before_its_settings_takes_them_from_the_launch_line():
    """The H20 log is the tail of the leader's output (no server_args): without --command sizer plans TP 1, where
    DeepSeek-R1 does not fit; with the launch line it plans TP 16 and mem_fraction_static 0.93."""
    args = [DEEPSEEK_H20, "--model", "DeepSeek-V3", "--gpus", "96GB", "--engine", "sglang==0.4.3", "--format", "json"]
    alone = json.loads(run(*args).stdout)
    result = run(*args, "--command", H20_LEADER)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert alone["tensor_parallel"] == 1 and out["tensor_parallel"] == 16
    tokens = {c["component"]: c for c in out["components"]}["max_total_num_tokens"]
    assert tokens["measured"] == 712400 and tokens["predicted"] > 0
    assert "settings the log does not print, from --command: mem_fraction_static=0.93, tensor_parallel_size=16, " \
           "nnodes=2" in out["notes"]


def test_a_launch_line_of_the_other_engine_is_refused():
    result = run(DEEPSEEK_H20, "--model", "DeepSeek-V3", "--gpus", "96GB", "--command", "vllm serve m --tp 16")
    assert result.exit_code == 2 and "--command launches vllm, the log is sglang's" in result.stderr


def test_an_sglang_log_cut_after_its_load_line_plans_from_the_free_memory_it_implies():
    """The published 24 GB log starts at "Load weight end. avail mem=7.37 GB, mem usage=15.02 GB": the
    free memory before the weights was 22.39 GB (a Windows desktop GPU; a bare 24 GB card would give a
    pool 20 % larger), and sizer sizes the pool from it."""
    log = read_engine_log_file(LOGS / "sglang" / "llama-3.1-8b-instruct-24gb-tp1-v0.4.9-approx.log")
    assert "avail_before_load_bytes" not in log.measured
    result = check_log(log, "llama-3.1-8b", "24GB", "sglang==0.4.9")     # SGLang's defaults follow the card's size
    free = round(7.37 * 2**30) + round(15.02 * 2**30)
    tokens = next(r for r in result.rows if r.component == "max_total_num_tokens")
    assert tokens.measured == 38141 and abs(tokens.error) < 0.01
    # the pool follows the implied free memory: 0.01 GB less free memory, fewer tokens
    less = replace(log, measured={**log.measured,
                                  "avail_after_load_bytes": log.measured["avail_after_load_bytes"] - 2**30 // 100})
    fewer = next(r for r in check_log(less, "llama-3.1-8b", "24GB", "sglang==0.4.9").rows
                 if r.component == "max_total_num_tokens")
    assert fewer.predicted < tokens.predicted and free > 22 * 2**30
