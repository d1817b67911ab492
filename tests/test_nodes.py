"""Plans over several nodes (`--gpus 2x8xH100`): layouts as the engines recommend them, links charged
in the throughput model, and the launch commands that realise a plan."""

import json

import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from sizer.catalog import get_gpu
from sizer.cli import cli
from sizer.errors import UsageError
from sizer.gpuspec import parse_gpus
from sizer.inputs.resolve import get_model
from sizer.plan.placement import Placement, valid_layouts
from sizer.plan.throughput import ALLREDUCE_LATENCY_S, LINK_EFFICIENCY, Links, communication_s


@pytest.mark.parametrize("text, count, per_node, nodes, label", [
    ("2x8xH100", 16, 8, 2, "2x8xH100-SXM"),
    ("2 x 4 x 4090", 8, 4, 2, "2x4xRTX-4090"),
    ("16xH100", 16, 8, 2, "16xH100-SXM"),          # beyond one node of the catalog's size: two nodes
    ("8xH100", 8, 8, 1, "8xH100-SXM"),
    ("1x8xA100", 8, 8, 1, "8xA100-80GB"),
])
def test_nodes_in_gpus(text, count, per_node, nodes, label):
    selection = parse_gpus(text)
    assert (selection.count, selection.node_size, selection.nodes, selection.label) == (count, per_node, nodes, label)


@pytest.mark.parametrize("text", ["0x8xH100", "2x0xH100", "-1x8xH100"])
def test_bad_node_counts(text):
    with pytest.raises(UsageError, match="positive counts|between 1 and"):
        parse_gpus(text)


def test_layouts_keep_tensor_parallel_inside_a_node():
    spec = get_model("llama-3.1-405b")
    assert [p.label for p in valid_layouts(spec, 16, node_size=8)] == [
        "TP8 x PP2", "TP4 x PP4", "TP2 x PP8", "TP1 x PP16"]
    assert valid_layouts(spec, 16)[0] == Placement(16, 1)         # one node of 16: TP16 is a layout


def test_links_of_an_hgx_h100_node():
    links = Links.of(get_gpu("H100"))
    assert (links.node_size, links.node_link, links.node_link_gbps, links.fabric_gbits) == (8, "nvlink", 450, 3200)
    nbytes = 16 * 16384 * 2
    assert links.allreduce_s(1, nbytes) == 0
    inside = ALLREDUCE_LATENCY_S["nvlink"] + 2 * 7 / 8 * nbytes / (450e9 * LINK_EFFICIENCY)
    assert links.allreduce_s(8, nbytes) == pytest.approx(inside, rel=1e-12)
    across = ALLREDUCE_LATENCY_S["fabric"] + 2 * 15 / 16 * nbytes / (3200 / 8 * 1e9 / 8 * LINK_EFFICIENCY)
    assert links.allreduce_s(16, nbytes) == pytest.approx(across, rel=1e-12)
    assert links.hops_across_nodes(Placement(8, 2)) == [True]
    assert links.hops_across_nodes(Placement(4, 4)) == [False, True, False]
    assert links.hops_across_nodes(Placement(1, 4)) == [False, False, False]


def test_one_gpu_spends_nothing_on_links():
    assert communication_s(get_model("llama3-8b"), Placement(1, 1), Links.of(get_gpu("H100")), 4096) == 0


@settings(max_examples=40, deadline=None)
@given(st.sampled_from([(8, 2), (4, 4), (16, 1), (2, 8)]), st.integers(1, 64), st.floats(10, 3200),
       st.floats(1, 8))
def test_a_faster_network_never_slows_a_plan(layout, tokens, fabric, factor):
    spec = get_model("llama-3.1-405b")
    slow = Links(8, "nvlink", 450, fabric)
    fast = Links(8, "nvlink", 450, fabric * factor)
    placement = Placement(*layout)
    assert communication_s(spec, placement, fast, tokens) <= communication_s(spec, placement, slow, tokens)


def fit_json(*args):
    result = CliRunner().invoke(cli, ["fit", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_405b_on_two_nodes_of_eight_is_tp8_pp2_with_its_ray_cluster():
    out = fit_json("llama-3.1-405b", "--gpus", "2x8xH100", "--engine", "vllm", "-p", "bf16")
    assert out["gpus"]["label"] == "2x8xH100-SXM"
    assert (out["gpus"]["node_size"], out["gpus"]["node_link"], out["gpus"]["fabric_gbits"]) == (8, "nvlink", 3200)
    [option] = out["options"]
    assert (option["tensor_parallel"], option["pipeline_parallel"], option["nodes"]) == (8, 2, 1 + 1)
    assert option["launch"] == [
        {"on": "head node", "command": "ray start --head --port 6379"},
        {"on": "each of the other 1 node(s)", "command": "ray start --address <head-node-ip>:6379"},
        {"on": "head node", "command": "vllm serve meta-llama/Llama-3.1-405B --tensor-parallel-size 8 "
                                       "--pipeline-parallel-size 2 --max-model-len 8192 "
                                       "--distributed-executor-backend ray"}]
    table = CliRunner().invoke(cli, ["fit", "llama-3.1-405b", "--gpus", "2x8xH100", "--engine", "vllm", "-p", "bf16"])
    assert "2 nodes of 8: nvlink 450 GB/s per GPU inside a node, 3200 Gb/s per node between nodes" in table.stdout
    assert "  launch (head node): vllm serve meta-llama/Llama-3.1-405B --tensor-parallel-size 8" in table.stdout


def test_the_issue_command_prints_the_two_node_plan_and_its_launch_lines():
    """`sizer fit llama-3.1-405b --gpus 2x8xH100 --engine vllm` as typed (no -p): the bf16 row is TP8 x PP2
    over both nodes with its ray cluster; fp8 is Meta's FBGEMM checkpoint, launched by its name."""
    result = CliRunner().invoke(cli, ["fit", "llama-3.1-405b", "--gpus", "2x8xH100", "--engine", "vllm"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    [bf16_row] = [line for line in lines if line.startswith("bf16 ")]
    assert bf16_row.split()[1:3] == ["fits", "TP8xPP2"]
    launch = [line.strip() for line in lines if line.strip().startswith("launch")]
    assert launch[:3] == [
        "launch (head node): ray start --head --port 6379",
        "launch (each of the other 1 node(s)): ray start --address <head-node-ip>:6379",
        "launch (head node): vllm serve meta-llama/Llama-3.1-405B --tensor-parallel-size 8 --pipeline-parallel-size 2 "
        "--max-model-len 8192 --distributed-executor-backend ray"]
    assert any(line.startswith("launch (the server): vllm serve meta-llama/Llama-3.1-405B-FP8 ") for line in launch)


def test_a_slower_network_is_charged_to_the_plan():
    fast = fit_json("llama-3.1-405b", "--gpus", "2x8xH100", "--engine", "vllm", "-p", "bf16", "-b", "16")
    slow = fit_json("llama-3.1-405b", "--gpus", "2x8xH100", "--engine", "vllm", "-p", "bf16", "-b", "16",
                    "--fabric-gbps", "100")
    assert slow["gpus"]["fabric_gbits"] == 100
    assert slow["options"][0]["decode_tokens_per_s_total"] < fast["options"][0]["decode_tokens_per_s_total"]
    assert slow["options"][0]["per_gpu"] == fast["options"][0]["per_gpu"]        # memory does not change


def test_forced_tensor_parallel_across_nodes_is_noted():
    out = fit_json("llama-3.1-405b", "--gpus", "2x8xH100", "--engine", "vllm", "-p", "bf16", "--tensor-parallel", "16")
    assert out["options"][0]["tensor_parallel"] == 16
    assert any(n.startswith("tensor parallel 16 crosses nodes of 8 GPUs") for n in out["notes"])


def test_single_gpu_launch_names_only_what_differs_from_vllms_defaults():
    [option] = fit_json("Qwen/Qwen3-8B", "--gpus", "1xH100", "--engine", "vllm", "-p", "fp8", "-c", "16384",
                        "--kv-dtype", "fp8", "--gpu-memory-utilization", "0.95", "--max-num-seqs", "64")["options"]
    assert option["nodes"] == 1
    assert option["launch"] == [{"on": "the server", "command": (
        "vllm serve Qwen/Qwen3-8B --max-model-len 16384 --gpu-memory-utilization 0.95 --max-num-seqs 64 "
        "--kv-cache-dtype fp8 --quantization fp8")}]


def test_a_precision_that_needs_another_checkpoint_says_so():
    [option] = fit_json("Qwen/Qwen3-8B", "--gpus", "1xL4", "--engine", "vllm", "-p", "gptq-4bit-g128")["options"]
    assert option["launch"][0]["command"].startswith("vllm serve <gptq-4bit-g128 checkpoint of Qwen/Qwen3-8B> ")


def test_transformers_has_no_launch_and_misfits_have_none():
    assert fit_json("llama3-8b", "--gpus", "1xH100", "-p", "bf16")["options"][0]["launch"] == []
    [misfit] = fit_json("llama-3.1-405b", "--gpus", "1xL4", "--engine", "vllm", "-p", "bf16")["options"]
    assert misfit["verdict"] == "does-not-fit" and misfit["launch"] == []


def test_the_printed_launch_line_plans_the_same():
    """Round trip: the command sizer prints, read back with --command, gives the same plan."""
    first = fit_json("Qwen/Qwen3-8B", "--gpus", "2xL40S", "--engine", "vllm", "-p", "bf16", "-c", "16000",
                     "--gpu-memory-utilization", "0.85", "--tensor-parallel", "2")
    command = first["options"][0]["launch"][-1]["command"]
    again = fit_json("--command", command, "--gpus", "2xL40S")
    assert again["options"][0]["per_gpu"] == first["options"][0]["per_gpu"]
    assert again["options"][0]["launch"] == first["options"][0]["launch"]


def test_csv_carries_nodes_and_launch():
    result = CliRunner().invoke(cli, ["fit", "llama-3.1-405b", "--gpus", "2x8xH100", "--engine", "vllm", "-p", "bf16",
                                      "--format", "csv"])
    import csv
    import io

    [row] = list(csv.DictReader(io.StringIO(result.stdout)))
    assert row["nodes"] == "2"
    assert row["launch"].startswith("[head node] ray start --head --port 6379 ; [each of the other 1 node(s)] ")


@pytest.mark.parametrize("value", ["0", "-5"])
def test_bad_fabric_is_one_line(value):
    result = CliRunner().invoke(cli, ["fit", "llama3-8b", "--gpus", "2x8xH100", "--fabric-gbps", value])
    assert result.exit_code == 2 and "--fabric-gbps must be a positive bandwidth" in result.stderr
