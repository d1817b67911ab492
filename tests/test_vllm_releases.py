"""`--engine vllm==X`: the release ranges of sizer.plan.vllm_releases, each as its source reads
(docs/reference/vllm-versions-v0.md and -v1.md quote the lines)."""

import json

import pytest
from click.testing import CliRunner

from sizer.catalog import get_gpu
from sizer.cli import cli
from sizer.errors import UsageError
from sizer.gpuspec import usable_memory_bytes
from sizer.plan.engines import CUDA_CONTEXT_BYTES, VLLM_CUDA_GRAPH_BYTES, VllmEngine, parse_engine
from sizer.plan.vllm_releases import NEWEST, extensible_margin, release_for
from sizer.units import GiB

H100 = usable_memory_bytes(get_gpu("H100"))
A100 = usable_memory_bytes(get_gpu("A100-80GB"))
B200 = usable_memory_bytes(get_gpu("B200"))
L4 = usable_memory_bytes(get_gpu("L4"))


@pytest.mark.parametrize("version, first", [
    ("0.5.5", (0, 5, 0)), ("0.6.3.post1", (0, 5, 0)), ("0.6.4", (0, 6, 4)), ("0.6.4.post1", (0, 6, 4)),
    ("v0.6.6.post1", (0, 6, 5)), ("0.7.3", (0, 6, 5)), ("0.8.5", (0, 8, 0)), ("0.9.0", (0, 8, 0)),
    ("0.9.1", (0, 9, 1)), ("0.10.2", (0, 9, 1)), ("0.11", (0, 11, 0)), ("0.19.1", (0, 11, 0)),
    ("0.20.2", (0, 20, 2)), ("0.26.0", (0, 20, 2)), ("0.27.0", (0, 27, 0)), ("0.27.1", (0, 27, 0)),
    ("0.28.0", (0, 28, 0)), ("0.33.0", (0, 28, 0)),
    ("0.34.0", (0, 34, 0)), ("0.34.2", (0, 34, 0)), ("0.11.0rc1", (0, 11, 0)),
])
def test_release_ranges(version, first):
    assert release_for(version).first == first


@pytest.mark.parametrize("version, message", [
    ("0.4.1", "sizer models vLLM 0.5 onwards"), ("0.35.0", "newer than the newest release sizer models (0.34.0)"),
    ("latest", "not a vLLM version"), ("", "not a vLLM version"),
])
def test_releases_not_modelled_are_one_line(version, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_engine(f"vllm=={version}")


def test_without_a_version_the_newest_is_named():
    choice = parse_engine("vllm")
    assert choice.vllm is NEWEST and choice.version == "0.34.0"
    assert parse_engine("vllm==0.6.4.post1").version == "0.6.4.post1"


@pytest.mark.parametrize("version, capacity, gpu, max_model_len, expected", [
    ("0.6.3", H100, "H100-SXM", 8192, (8192, 256)),          # V0: max(max_model_len, 2048)
    ("0.6.3", H100, "H100-SXM", 1024, (2048, 256)),
    ("0.6.3", H100, "H100-SXM", 40960, (512, 256)),          # chunked prefill switched on above 32K: 512
    ("0.7.3", H100, "H100-SXM", 40960, (2048, 256)),         # 2048 from 0.6.5
    ("0.8.5", H100, "H100-SXM", 8192, (8192, 1024)),         # V1 `vllm serve`, >= 70 GiB
    ("0.8.5", A100, "A100-80GB", 8192, (8192, 1024)),
    ("0.10.2", A100, "A100-80GB", 8192, (2048, 256)),        # 0.9+: an A100 takes the small defaults
    ("0.10.2", L4, "L4", 8192, (2048, 256)),
    ("0.33.0", B200, "B200", 8192, (16384, 1024)),           # 0.28+: >= 160 GiB
    ("0.27.1", B200, "B200", 8192, (8192, 1024)),
])
def test_scheduler_defaults(version, capacity, gpu, max_model_len, expected):
    assert release_for(version).scheduler_defaults(capacity, gpu, max_model_len) == expected


def test_default_utilization_per_release():
    assert [release_for(v).gpu_memory_utilization for v in ("0.6.3", "0.19.1", "0.20.2", "0.34.0")] == \
        [0.9, 0.9, 0.92, 1.0]


def test_what_each_release_charges():
    def non_torch(version, gpus):
        return VllmEngine(release=release_for(version)).non_torch_bytes(gpus)
    assert non_torch("0.10.2", 2) - non_torch("0.10.2", 1) > 0                  # NCCL after the baseline
    assert non_torch("0.11.0", 2) == non_torch("0.11.0", 1)                      # NCCL in the baseline
    assert non_torch("0.8.5", 1) - non_torch("0.10.2", 1) == CUDA_CONTEXT_BYTES  # the whole device's non-torch
    assert non_torch("0.6.4", 1) - non_torch("0.6.3", 1) == CUDA_CONTEXT_BYTES


def test_cuda_graphs_are_charged_from_0_20_2():
    old = VllmEngine(release=release_for("0.19.1"), gpu_memory_utilization=0.9).budget(16 * GiB, 2 * GiB, H100, 1)
    new = VllmEngine(release=release_for("0.20.2"), gpu_memory_utilization=0.9).budget(16 * GiB, 2 * GiB, H100, 1)
    assert old.available - new.available == VLLM_CUDA_GRAPH_BYTES
    assert (old.outside, new.outside) == (VLLM_CUDA_GRAPH_BYTES, 0)
    eager = VllmEngine(release=release_for("0.20.2"), gpu_memory_utilization=0.9, enforce_eager=True)
    assert eager.budget(16 * GiB, 2 * GiB, H100, 1).available == old.available


def test_extensible_kv_cache_keeps_a_margin_below_the_free_memory():
    engine = VllmEngine(release=release_for("0.34.0"))
    activations = 3 * GiB
    b = engine.budget(16 * GiB, activations, H100, 1)
    assert b.budget == H100                                                  # utilization 1.0
    assert extensible_margin(activations) == int(0.75 * activations)
    assert b.available == H100 - CUDA_CONTEXT_BYTES - b.charged - extensible_margin(activations)
    assert extensible_margin(GiB // 2) == GiB                               # the 1 GiB floor


def fit_json(*args):
    result = CliRunner().invoke(cli, ["fit", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_gpu_kv_cache_size_as_each_release_logs_it():
    """Up to 0.20.1 the log's token count is blocks x 16; from 0.20.2 int(concurrency x max_model_len)."""
    args = ["llama-3.1-8b", "--gpus", "1xH100", "-p", "bf16", "-c", "10000", "--gpu-memory-utilization", "0.9"]
    old = fit_json(*args, "--engine", "vllm==0.19.1")["options"][0]
    new = fit_json(*args, "--engine", "vllm==0.20.2")["options"][0]
    assert old["kv_cache_tokens"] % 16 == 0
    blocks = new["per_gpu"]["kv_cache"] // (16 * 131072)             # Llama 3 8B: 128 KiB of KV per token
    assert new["kv_cache_tokens"] == int(blocks / 625 * 10000)        # 625 blocks of 16 per request


def test_the_release_is_in_the_output():
    out = fit_json("llama3-8b", "--gpus", "1xH100", "--engine", "vllm==0.6.4", "-p", "bf16")
    assert out["engine_version"] == "0.6.4" and "vLLM 0.6.4" in out["options"][0]["reason"]
    table = CliRunner().invoke(cli, ["fit", "llama3-8b", "--gpus", "1xH100", "--engine", "vllm", "-p", "bf16"]).stdout
    assert "engine vllm 0.34.0" in table


def test_the_engines_own_lines_with_sizers_numbers():
    """Each release's startup lines, so a user holds the plan beside the log line by line."""
    new = fit_json("llama-3.1-8b", "--gpus", "1xH100", "--engine", "vllm", "-p", "bf16", "-c", "8192")["options"][0]
    values, lines = new["engine_log"]["values"], new["engine_log"]["lines"]
    assert values["gpu_kv_cache_tokens"] == new["kv_cache_tokens"] and values["max_model_len"] == 8192
    assert values["weights"] == new["per_gpu"]["weights"]
    # the weights vLLM logs hold the RoPE cos/sin table: 131,072 positions x 128 dims in bf16
    assert values["load_buffers"] == 131072 * 128 * 2
    assert lines == [f"Model loading took {values['weights'] / GiB:.4f} GiB  [sizer: "
                     f"{(values['weights'] - values['load_buffers']) / GiB:.4f} GiB of weights + 0.0312 GiB made while "
                     "loading: the RoPE table, LoRA slots if enabled]",
                     f"Available KV cache memory: {values['available_kv_cache'] / GiB:.2f} GiB",
                     f"GPU KV cache size: {values['gpu_kv_cache_tokens']:,} tokens, Maximum concurrency for 8,192 "
                     f"tokens per request: {values['max_concurrency']:.2f}x",
                     f"Graph capturing finished, took {values['cuda_graphs'] / GiB:.2f} GiB"]
    old = fit_json("llama-3.1-8b", "--gpus", "1xH100", "--engine", "vllm==0.6.6", "-p", "bf16", "-c", "8192")
    v = old["options"][0]["engine_log"]["values"]
    assert old["options"][0]["engine_log"]["lines"][1:] == [
        f"model weights take {v['weights'] / GiB:.2f}GiB; non_torch_memory takes {v['non_torch'] / GiB:.2f}GiB; "
        f"PyTorch activation peak memory takes {v['activation_peak'] / GiB:.2f}GiB; the rest of the memory reserved "
        f"for KV Cache is {v['available_kv_cache'] / GiB:.2f}GiB.",
        f"# GPU blocks: {v['num_gpu_blocks']}",
        f"Maximum concurrency for 8,192 tokens per request: {v['num_gpu_blocks'] * 16 / 8192:.2f}x"]
    table = CliRunner().invoke(cli, ["fit", "llama-3.1-8b", "--gpus", "1xH100", "--engine", "vllm==0.6.6", "-p",
                                     "bf16", "-c", "8192"]).stdout
    assert f"  vLLM 0.6.6 would log: # GPU blocks: {v['num_gpu_blocks']}" in table
