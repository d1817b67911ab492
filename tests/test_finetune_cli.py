"""`sizer finetune`: one result object rendered as table, JSON, CSV and markdown; the planner's
invariants; bad input as one line."""

import csv
import io
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from sizer.cli import cli
from sizer.finetune.plan import finetune, memory_per_gpu
from sizer.finetune.frameworks import framework_for
from sizer.finetune.report import FINETUNE_CSV_COLUMNS
from sizer.finetune.setup import FinetuneSetup
from sizer.gpuspec import parse_gpus
from sizer.inputs.resolve import get_model

PER_GPU = ("weights", "adapters", "gradients", "optimizer_states", "activations", "overhead")
MODEL_STATES = ("weights", "adapters", "gradients", "optimizer_states", "overhead")


def _total(g) -> int:
    """The documented sum: the model states and overhead, and the larger of the activations (forward and
    backward) and the optimizer step's temporaries (the step runs once the activations are freed)."""
    get = g.get if isinstance(g, dict) else lambda k: getattr(g, k)
    return sum(get(k) for k in MODEL_STATES) + max(get("activations"), get("optimizer_step"))


def run(*args):
    return CliRunner().invoke(cli, list(args))


def one_line_error(r, code=2) -> str:
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and r.output.rstrip().endswith(errors[0]), r.output    # click's usage lines may precede it
    return errors[0]


def test_the_issue_command_answers_with_breakdown_micro_batch_and_time_per_million_tokens():
    r = run("finetune", "llama3-8b", "--method", "qlora", "--gpus", "RTX-4090", "--seq-len", "2048")
    assert r.exit_code == 0, r.output
    for column in ("weights", "adapters", "grads", "optim.", "activ.", "overhead", "total", "free",
                   "max micro-batch", "per 1M tok"):
        assert column in r.output
    assert "largest micro-batch at 2,048 tokens:" in r.output
    assert "per 1M training tokens" in r.output
    assert "sizes in GiB (1 GiB = 2^30 bytes)" in r.output


def test_json_is_one_object_per_option_with_the_documented_fields():
    r = run("finetune", "llama3-8b", "--method", "full,lora,qlora", "--gpus", "A100-80GB", "--format", "json")
    data = json.loads(r.output)
    assert [o["method"] for o in data["options"]] == ["full", "lora", "qlora"]
    for o in data["options"]:
        g = o["per_gpu"]
        assert set(g) == set(PER_GPU) | {"optimizer_step", "paged_optimizer_states", "total", "free", "usable_memory"}
        assert g["total"] == _total(g)
        assert g["free"] == g["usable_memory"] - g["total"]
        assert o["verdict"] == ("fits" if g["free"] >= 0 else "does-not-fit")
        for key in ("max_seq_len", "max_micro_batch_size", "step_time_s", "tokens_per_s"):
            assert key in o
    lora = data["options"][1]
    # PEFT on Llama-3-8B, r=16, all-linear: "trainable params: 41,943,040 || all params: 8,072,204,288"
    assert lora["trainable_params"] == 41_943_040
    assert data["params"] + lora["trainable_params"] == 8_072_204_288
    full = data["options"][0]
    assert full["trainable_params"] == data["params"] and full["per_gpu"]["adapters"] == 0


def test_csv_has_the_fixed_header_and_the_json_figures():
    args = ("finetune", "llama3-8b", "--gpus", "RTX-4090", "--dataset-tokens", "50M")
    rows = list(csv.DictReader(io.StringIO(run(*args, "--format", "csv").output)))
    assert run(*args, "--format", "csv").output.splitlines()[0] == ",".join(FINETUNE_CSV_COLUMNS)
    data = json.loads(run(*args, "--format", "json").output)
    assert len(rows) == len(data["options"]) == 3
    for row, o in zip(rows, data["options"]):
        assert row["method"] == o["method"] and row["verdict"] == o["verdict"]
        assert int(row["total_per_gpu_bytes"]) == o["per_gpu"]["total"]
        assert int(row["optimizer_states_per_gpu_bytes"]) == o["per_gpu"]["optimizer_states"]
        assert int(row["dataset_tokens"]) == 50_000_000
        if o["cost_per_epoch_usd"] is not None:
            assert float(row["cost_per_epoch_usd"]) == o["cost_per_epoch_usd"]


def test_markdown_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    md = run("finetune", "llama3-8b", "--gpus", "L4", "--format", "markdown")
    assert md.exit_code == 0 and "| method" in md.output
    png = tmp_path / "ft.png"
    assert run("finetune", "llama3-8b", "--gpus", "L4", "--plot", str(png)).exit_code == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "already exists" in one_line_error(run("finetune", "llama3-8b", "--gpus", "L4", "--plot", str(png)))


def test_recommend_ranks_by_the_cost_of_training_tokens():
    data = json.loads(run("finetune", "llama3-8b", "--method", "lora", "--recommend", "--format", "json").output)
    costs = [o["cost_per_million_tokens_usd"] for o in data["options"]]
    priced = [c for c in costs if c is not None]
    assert priced and priced == sorted(priced) and costs[:len(priced)] == priced
    assert all(o["verdict"] == "fits" for o in data["options"])


def test_sharding_finds_the_fewest_gpus_and_divides_the_model_states():
    data = json.loads(run("finetune", "llama-3.1-70b", "--method", "full", "--gpus", "H100", "--zero", "3",
                          "--format", "json").output)
    o = data["options"][0]
    assert o["verdict"] == "fits" and o["gpu_count"] == o["min_gpus"] > 1
    unsharded = json.loads(run("finetune", "llama-3.1-70b", "--method", "full", "--gpus", "H100",
                               "--format", "json").output)["options"][0]
    assert unsharded["verdict"] == "does-not-fit" and unsharded["min_gpus"] is None
    one = json.loads(run("finetune", "llama-3.1-70b", "--method", "full", "--gpus", "1xH100", "--zero", "3",
                         "--format", "json").output)["options"][0]
    assert one["verdict"] == "does-not-fit"
    n = o["gpu_count"]
    # each part (optimizer states, fp32 masters) is divided and rounded up on its own: a byte or two
    assert 0 <= o["per_gpu"]["optimizer_states"] - one["per_gpu"]["optimizer_states"] // n <= 2
    # gradients: the shard plus whole-size buffers (reduce bucket, the gathered unit's gradient)
    assert one["per_gpu"]["gradients"] // n < o["per_gpu"]["gradients"] < one["per_gpu"]["gradients"] // 4


@pytest.mark.parametrize("args, message", [
    (("--dataset-tokens", "lots"), "--dataset-tokens 'lots': expected a number of tokens"),
    (("--zero", "2", "--fsdp", "full-shard"), "--zero and --fsdp are two ways to shard"),
    (("--offload-params", "cpu"), "--offload-params cpu needs parameters sharded"),
    (("--offload-optimizer", "cpu"), "--offload-optimizer cpu needs DeepSpeed ZeRO"),
    (("--method", "prefix-tuning"), "--method prefix-tuning: expected one of full, lora, dora, qlora"),
    (("--lora-targets", ","), "--lora-targets: name at least one projection"),
    (("--recommend",), "--recommend ranks the catalog's GPUs: leave out --gpus"),
    (("--seq-len", "0"), "0"),
])
def test_bad_input_is_one_line(args, message):
    line = one_line_error(run("finetune", "llama3-8b", "--gpus", "RTX-4090", *args))
    assert message in line


def test_mixed_gpus_are_refused_in_one_line():
    assert "name one kind" in one_line_error(run("finetune", "llama3-8b", "--gpus", "RTX-3090,RTX-3060"))


def test_finetune_loads_no_torch():
    code = ("import sys; from click.testing import CliRunner; from sizer.cli import cli; "
            "r = CliRunner().invoke(cli, ['finetune', 'llama3-8b', '--gpus', 'RTX-4090', '--format', 'json']); "
            "assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'bitsandbytes') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


SPEC = get_model("qwen2.5-7b")
H100 = parse_gpus("H100").gpu
SETUPS = st.builds(FinetuneSetup, method=st.sampled_from(["full", "lora", "dora", "qlora"]),
                   lora_rank=st.sampled_from([1, 8, 64]), micro_batch_size=st.integers(1, 8),
                   seq_len=st.integers(1, 16384), gradient_checkpointing=st.booleans(),
                   optimizer=st.sampled_from(["adamw", "adamw-8bit", "adafactor", "sgd"]),
                   zero=st.sampled_from([0, 1, 2, 3]))


def _per_gpu(setup, gpus=1):
    return memory_per_gpu(SPEC, setup, framework_for(setup), H100, gpus)[0]


@settings(max_examples=60, deadline=None)
@given(setup=SETUPS)
def test_components_sum_to_the_total(setup):
    m = _per_gpu(setup)
    assert m.total == _total(m) and m.free == m.capacity - m.total
    assert min(getattr(m, k) for k in (*PER_GPU, "optimizer_step", "paged_optimizer_states")) >= 0


@settings(max_examples=60, deadline=None)
@given(setup=SETUPS, more_tokens=st.integers(1, 4096), more_sequences=st.integers(1, 4))
def test_memory_grows_with_sequence_length_and_micro_batch(setup, more_tokens, more_sequences):
    from dataclasses import replace

    base = _per_gpu(setup).total
    assert _per_gpu(replace(setup, seq_len=setup.seq_len + more_tokens)).total >= base
    assert _per_gpu(replace(setup, micro_batch_size=setup.micro_batch_size + more_sequences)).total >= base


@settings(max_examples=40, deadline=None)
@given(setup=SETUPS, gpus=st.integers(1, 16), more=st.integers(1, 16))
def test_more_gpus_never_turn_a_fit_into_a_misfit(setup, gpus, more):
    if _per_gpu(setup, gpus).free >= 0:
        assert _per_gpu(setup, gpus + more).free >= 0


def test_the_result_object_is_what_the_renderings_show():
    r = finetune("llama3-8b", "RTX-4090", [FinetuneSetup(method="qlora")])
    data = json.loads(run("finetune", "llama3-8b", "--method", "qlora", "--gpus", "RTX-4090",
                          "--format", "json").output)
    assert data["options"][0]["per_gpu"]["total"] == r.options[0].per_gpu.total
    assert data["options"][0]["max_micro_batch_size"] == r.options[0].max_micro_batch_size


def test_a_zero_run_shows_deepspeeds_own_estimate_and_the_launch_line():
    from sizer.finetune.deepspeed import zero3_model_states_bytes, largest_layer_params

    data = json.loads(run("finetune", "llama3-8b", "--method", "full", "--gpus", "2x8xH100", "--zero", "3",
                          "--format", "json").output)
    o = data["options"][0]
    host, gpu, _ = zero3_model_states_bytes(data["params"], largest_layer_params(get_model("llama3-8b")),
                                            gpus_per_node=8, nodes=2, cpu_offload=False, cpu_offload_params=False)
    assert o["deepspeed_estimate"] == {"stage": 3, "gpu_bytes": gpu, "host_bytes_per_node": host,
                                       "options": o["deepspeed_estimate"]["options"]}
    assert o["launch"].startswith("trl sft --accelerate_config zero3 --num_processes 16")
    table = run("finetune", "llama3-8b", "--method", "full", "--gpus", "2x8xH100", "--zero", "3").output
    assert "DeepSpeed's estimator (ZeRO-3" in table and "  launch: trl sft " in table
    lora = json.loads(run("finetune", "llama3-8b", "--method", "lora", "--gpus", "RTX-4090",
                          "--format", "json").output)["options"][0]
    assert lora["deepspeed_estimate"] is None and "--use_peft" in lora["launch"]


def test_a_misfit_has_no_launch_line():
    o = json.loads(run("finetune", "llama3-8b", "--method", "full", "--gpus", "RTX-4090",
                       "--format", "json").output)["options"][0]
    assert o["verdict"] == "does-not-fit" and o["launch"] == "" and o["suggestions"]
