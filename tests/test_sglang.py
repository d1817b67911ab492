"""`--engine sglang`: mem_fraction_static by release, the KV pool against published startup logs,
launch lines (sizer.plan.sglang; the source lines: docs/reference/sglang-memory.md)."""

import json


import pytest
from click.testing import CliRunner

from sizer.calc.kv import kv_cache_bytes_per_token
from sizer.cli import cli
from sizer.errors import UsageError
from sizer.inputs.resolve import get_model
from sizer.plan.engines import parse_engine
from sizer.plan.sglang import pool_from_free, sglang_release
from sizer.units import GiB

from conftest import ROOT

LOGS = ROOT / "tests" / "data" / "engine_logs" / "sglang"


@pytest.mark.parametrize("version, gpu_mib, tp, expected", [
    ("0.4.0", 81559, 1, 0.88), ("0.4.0", 81559, 2, 0.87), ("0.4.0", 81559, 4, 0.85), ("0.4.0", 81559, 8, 0.81),
    ("0.4.0", 81559, 16, 0.79),
    ("0.4.6", 81559, 8, 0.81), ("0.4.6", 143771, 1, (143771 - 13 * 1024) / 143771),     # H200: 13 GiB kept free
    ("0.4.9", 81559, 1, 0.874), ("0.4.9", 81559, 8, 0.831),                            # H100 (the Grok-2 log: 0.831)
    ("0.4.9", 24564, 1, 0.879), ("0.4.9", 16303, 1, 0.818), ("0.4.9", 143771, 8, 0.886),
    ("0.5.23", 81559, 1, 0.835),                                                      # 512 + 12288 + 128 + 512 MiB
])
def test_mem_fraction_static_defaults(version, gpu_mib, tp, expected):
    assert sglang_release(version).mem_fraction_static(gpu_mib, tp) == pytest.approx(expected, abs=5e-4)


@pytest.mark.parametrize("version, expected", [("0.3.5", "0.4.1.post5"), ("0.4.2.post1", "0.4.3.post4"), ("0.4.4", "0.4.5"), ("0.4.6", "0.4.7"),
                                               ("0.4.9", "0.4.10"), ("0.5.2rc2", "0.5.23")])
def test_release_ranges(version, expected):
    assert sglang_release(version).last == expected


@pytest.mark.parametrize("version", ["0.2.9", "0.6.0", "nightly"])
def test_releases_not_modelled(version):
    with pytest.raises(UsageError, match="sglang=="):
        parse_engine(f"sglang=={version}")


def catalog_cases():
    """Published logs whose model the catalog holds (by its hub id or a stand-in of the same shapes)."""
    stand_ins = {"meta-llama/Llama-3.1-8B-Instruct": "llama-3.1-8b", "Qwen/Qwen3-0.6B": "qwen3-0.6b",
                 "meta-llama/Llama-2-7b-chat-hf": "llama-2-7b",              # chat fine-tune, same shapes
                 "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": "qwen2.5-7b"}    # a Qwen2.5-Math-7B fine-tune
    for path in sorted(LOGS.glob("*.json")):
        case = json.loads(path.read_text())
        m = case["measured"]
        if case.get("hf_id") in stand_ins and "avail_before_load_gib" in m and "max_total_num_tokens" in m:
            yield pytest.param(case, stand_ins[case["hf_id"]], id=case["id"])


@pytest.mark.parametrize("case, model", list(catalog_cases()))
def test_pool_matches_published_logs(case, model):
    """From the log's free memory before and after the weights and its mem_fraction_static, the pool
    sizer computes holds the tokens the log prints (within the logs' 0.01 GB rounding)."""
    m = case["measured"]
    mfs = case["settings"].get("mem_fraction_static") or m["mem_fraction_static"]
    pre_load = int(m["avail_before_load_gib"] * GiB)
    weights = pre_load - int(m["avail_mem_after_load_gib"] * GiB)
    cell = kv_cache_bytes_per_token(get_model(model))
    pool = pool_from_free(sglang_release(case["version"].split()[0]), pre_load, weights, cell, mfs,
                          m["context_len"])
    assert pool.tokens == pytest.approx(m["max_total_num_tokens"], rel=0.002)


def test_cases_were_found():
    assert len(list(catalog_cases())) >= 2


def fit_json(*args):
    result = CliRunner().invoke(cli, ["fit", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_fit_sglang_plans_the_pool_and_prints_its_launch():
    out = fit_json("llama-3.1-8b", "--gpus", "1xH100", "--engine", "sglang", "-p", "bf16", "-c", "8192")
    [option] = out["options"]
    assert out["engine"] == "sglang" and out["engine_version"] == "0.5.23"
    assert option["reason"].startswith(f"max_total_num_tokens={option['kv_cache_tokens']:,} (SGLang 0.5.0-0.5.23)")
    assert option["per_gpu"]["kv_cache"] == option["kv_cache_tokens"] * 131072
    assert option["launch"] == [{"on": "the server", "command": "python -m sglang.launch_server --model-path "
                                 "meta-llama/Llama-3.1-8B --context-length 8192"}]


def test_mem_fraction_static_from_the_engine_args_grows_the_pool():
    base = fit_json("llama-3.1-8b", "--gpus", "1xH100", "--engine", "sglang", "-p", "bf16", "-c", "8192")
    more = fit_json("llama-3.1-8b", "--gpus", "1xH100", "--engine", "sglang", "-p", "bf16", "-c", "8192",
                    "--engine-args", "--mem-fraction-static 0.9")
    assert more["options"][0]["kv_cache_tokens"] > base["options"][0]["kv_cache_tokens"]
    assert more["options"][0]["launch"][0]["command"].endswith("--mem-fraction-static 0.9")


def test_multi_node_sglang_runs_the_same_line_on_each_node():
    out = fit_json("deepseek-v3", "--gpus", "2x8xH100", "--engine", "sglang", "-p", "fp8", "-c", "32768")
    launch = out["options"][0]["launch"]
    assert [step["on"] for step in launch] == ["node 0", "node 1"]
    assert launch[1]["command"] == ("python -m sglang.launch_server --model-path deepseek-ai/DeepSeek-V3 --tp-size 8 "
                                    "--pp-size 2 --context-length 32768 --nnodes 2 --dist-init-addr <node-0-ip>:5000 "
                                    "--node-rank 1")


def test_weights_beyond_the_static_fraction_do_not_fit():
    [option] = fit_json("qwen3-32b", "--gpus", "1xL40S", "--engine", "sglang", "-p", "bf16", "-c", "4096")["options"]
    assert option["verdict"] == "does-not-fit" and "exceed mem_fraction_static" in option["reason"]


def test_an_sglang_launch_line_is_read_back():
    out = fit_json("--command", "python -m sglang.launch_server --model-path Qwen/Qwen3-8B --tp 2 "
                                "--mem-fraction-static 0.8 --context-length 32768", "--gpus", "2xL40S")
    assert out["engine"] == "sglang" and out["workload"]["context_length"] == 32768
    assert out["options"][0]["tensor_parallel"] == 2



def test_max_running_requests_from_the_engine_args_caps_the_running_batch():
    """--max-running-requests replaces tokens // 2 (tp_worker / the 0.5 configurator), still capped by
    the pool; the plan's concurrency and the launch line follow it."""
    base = fit_json("llama-3.1-8b", "--gpus", "1xH100", "--engine", "sglang", "-p", "bf16", "-c", "2048")
    capped = fit_json("llama-3.1-8b", "--gpus", "1xH100", "--engine", "sglang", "-p", "bf16", "-c", "2048",
                      "--engine-args", "--max-running-requests 64")
    base_values, values = base["options"][0]["engine_log"]["values"], capped["options"][0]["engine_log"]["values"]
    assert base_values["max_running_requests"] > 64 and values["max_running_requests"] == 64
    assert values["max_total_num_tokens"] == base_values["max_total_num_tokens"]
    assert capped["options"][0]["max_concurrency"] == 64 < base["options"][0]["max_concurrency"]
    assert capped["options"][0]["launch"][0]["command"].endswith("--max-running-requests 64")


def test_max_running_requests_never_exceeds_half_the_pool():
    release = sglang_release("0.5.2")
    pool = pool_from_free(release, 20 * GiB, 16 * GiB, 131072, 0.9, 4096, max_running_requests=1_000_000)
    assert pool.max_running_requests == min(pool.tokens // 2, 2048)
