"""MoE serving layouts: vLLM's data parallelism with expert parallelism (`--data-parallel-size N
--enable-expert-parallel`) and SGLang's attention data parallelism (`--dp N --enable-dp-attention`)."""

import json

import pytest
from click.testing import CliRunner

from sizer.cli import cli
from sizer.inputs.resolve import get_model
from sizer.plan.placement import Placement
from sizer.plan.stages import build_stages
from sizer.quant import resolve_precision


@pytest.mark.parametrize("placement, gpus, attention_tp, expert_ranks, short", [
    (Placement(4, 1), 4, 4, 4, "TP4xPP1"),
    (Placement(2, 1, 2), 4, 2, 2, "TP2xPP1xDP2"),
    (Placement(2, 1, 2, expert_parallel=True), 4, 2, 4, "TP2xPP1xDP2+EP"),
    (Placement(8, 1, 8, dp_attention=True), 8, 1, 8, "TP8xPP1xDP8(attn)"),
    (Placement(4, 2, 2, expert_parallel=True), 16, 4, 8, "TP4xPP2xDP2+EP"),
])
def test_layout_arithmetic(placement, gpus, attention_tp, expert_ranks, short):
    assert (placement.gpu_count, placement.attention_tp, placement.expert_ranks, placement.short) == \
        (gpus, attention_tp, expert_ranks, short)


def stage(model, placement):
    spec = get_model(model)
    return build_stages(spec, resolve_precision(spec, "bf16"), placement, "bf16")[0]


def test_expert_parallel_spreads_experts_and_keeps_attention_in_the_replica():
    """Mixtral on 4 GPUs: TP4 splits everything four ways; TP2 x DP2 + EP splits the experts four ways
    too, attention and the rest two ways."""
    tp4, ep = stage("mixtral", Placement(4, 1)), stage("mixtral", Placement(2, 1, 2, expert_parallel=True))
    tp2 = stage("mixtral", Placement(2, 1))
    assert ep.expert_bytes == tp4.expert_bytes == tp2.expert_bytes // 2
    assert ep.weights_bytes - ep.expert_bytes == tp2.weights_bytes - tp2.expert_bytes
    assert ep.weights_bytes > tp4.weights_bytes
    plain_dp = stage("mixtral", Placement(2, 1, 2))            # replicas without EP hold what TP2 holds
    assert plain_dp.weights_bytes == tp2.weights_bytes


def test_attention_data_parallel_replicates_attention_inside_the_tp_group():
    spec = get_model("deepseek-v3")
    dp = stage("deepseek-v3", Placement(8, 1, 8, dp_attention=True))
    tp8 = stage("deepseek-v3", Placement(8, 1))
    attention = sum(t.params for t in spec.tensors if t.component == "attention")
    assert dp.expert_bytes == tp8.expert_bytes
    assert dp.weights_bytes > tp8.weights_bytes
    assert dp.weights_bytes - tp8.weights_bytes < attention * 2          # at most the attention weights, bf16


def fit_json(*args):
    result = CliRunner().invoke(cli, ["fit", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_fit_with_data_and_expert_parallel():
    one = fit_json("mixtral", "--gpus", "1xH100", "--engine", "vllm", "-p", "bf16", "-c", "8192")["options"][0]
    two = fit_json("mixtral", "--gpus", "2xH100", "--engine", "vllm", "-p", "bf16", "-c", "8192",
                   "--data-parallel", "2", "--expert-parallel")["options"][0]
    assert (two["data_parallel"], two["expert_parallel"], two["gpu_count"]) == (2, True, 2)
    assert two["kv_cache_tokens"] > 0 and two["max_concurrency"] % 2 == 0          # a KV pool per replica
    assert one["verdict"] == "does-not-fit" and two["verdict"] == "fits"
    assert "--data-parallel-size 2 --enable-expert-parallel" in two["launch"][-1]["command"]


def test_data_parallel_over_two_nodes_uses_vllms_dp_launcher():
    option = fit_json("deepseek-v3", "--gpus", "2x8xH100", "--engine", "vllm", "-p", "fp8", "-c", "16384",
                      "--data-parallel", "2", "--expert-parallel")["options"][0]
    assert [s["on"] for s in option["launch"]] == ["head node", "node 1"]
    assert option["launch"][1]["command"].endswith("--data-parallel-size-local 1 --data-parallel-address "
                                                   "<head-node-ip> --data-parallel-rpc-port 13345 --headless "
                                                   "--data-parallel-start-rank 1")


def test_sglang_attention_dp_from_its_launch_line():
    out = fit_json("--command", "python -m sglang.launch_server --model-path deepseek-ai/DeepSeek-V3 --tp 8 --dp 8 "
                                "--enable-dp-attention", "--gpus", "8xH200", "-c", "32768")
    [option] = out["options"]
    assert (option["gpu_count"], option["data_parallel"], option["layout"]) == (8, 8, "TP8xPP1xDP8(attn)")
    assert "--dp-size 8 --enable-dp-attention" in option["launch"][0]["command"]


@pytest.mark.parametrize("args, message", [
    (["mixtral", "--gpus", "6xH100", "--engine", "vllm", "--data-parallel", "4"],
     "6 GPUs cannot hold 4 data-parallel replicas of one layout"),
    (["llama3-8b", "--gpus", "2xH100", "--engine", "vllm", "--expert-parallel"],
     "--expert-parallel applies to mixture-of-experts models"),
    (["mixtral", "--gpus", "4xH100", "--engine", "vllm", "--data-parallel", "2", "--tensor-parallel", "4"],
     "--tensor-parallel 4 x --pipeline-parallel 1 x --data-parallel 2 = 8, but --gpus 4xH100 names 4"),
])
def test_inconsistent_layouts_are_one_line(args, message):
    result = CliRunner().invoke(cli, ["fit", *args])
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_pipeline_stages_log_the_smallest_workers_blocks():
    """vLLM's engine takes the smallest worker's block count before it logs the pool: over PP2 the
    concurrency line and the token line describe the same (last-stage) pool, and the first stage, which
    has room for more blocks, does not leak its own count into the log."""
    option = fit_json("llama-3.1-405b", "--gpus", "2x8xH100", "--engine", "vllm==0.34.0", "-p", "bf16",
                      "-c", "8192")["options"][0]
    assert option["layout"] == "TP8xPP2"
    values = option["engine_log"]["values"]
    block_size = 64                                   # vLLM 0.34's default block
    assert values["gpu_kv_cache_tokens"] == values["num_gpu_blocks"] * block_size == option["kv_cache_tokens"]
    assert values["max_concurrency"] == round(values["num_gpu_blocks"] / (8192 // block_size), 2)
    first, last = option["per_stage"][0], option["per_stage"][-1]
    assert first["kv_cache"] > last["kv_cache"]       # the first stage alone would report more
