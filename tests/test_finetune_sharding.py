"""Sharding and offload (sizer.finetune.sharding) and DeepSpeed's own estimators (sizer.finetune.deepspeed):
the estimators against the real DeepSpeed's answers recorded by tools/deepspeed_anchors.py, the
per-stage division of the model states, and more GPUs never turning a fit into a misfit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sizer.families import spec_from_config
from sizer.finetune.deepspeed import (deepspeed_estimate, largest_layer_params, zero2_model_states_bytes,
                                      zero3_model_states_bytes)
from sizer.finetune.frameworks import get_framework
from sizer.finetune.plan import memory_per_gpu, model_states
from sizer.finetune.setup import FinetuneSetup
from sizer.finetune.sharding import host_bytes_per_node, shard_parts
from sizer.gpuspec import parse_gpus
from sizer.inputs.resolve import get_model

ANCHORS = json.loads((Path(__file__).parent / "data/finetune/deepspeed_estimates.json").read_text())


def test_anchors_come_from_the_modelled_deepspeed_and_cover_the_grid():
    rows = ANCHORS["estimates"]
    assert ANCHORS["deepspeed"] == "0.19.8"
    assert len(rows) >= 30
    assert min(r["total_params"] for r in rows) <= 125_239_296 and max(r["total_params"] for r in rows) > 405e9
    assert {r["nodes"] for r in rows} >= {1, 2, 3, 4} and max(r["nodes"] * r["gpus_per_node"] for r in rows) == 64
    zero3 = {(r["cpu_offload"], r["cpu_offload_params"], r["zero_init"]) for r in rows if r["stage"] == 3}
    assert len(zero3) == 6 and {r["cpu_offload"] for r in rows if r["stage"] == 2} == {True, False}


@pytest.mark.parametrize("row", [r for r in ANCHORS["estimates"] if r["stage"] == 2],
                         ids=lambda r: f"{r['model']}-{r['gpus_per_node']}x{r['nodes']}-off{int(r['cpu_offload'])}")
def test_zero2_estimator_equals_deepspeed(row):
    got = zero2_model_states_bytes(row["total_params"], row["gpus_per_node"], row["nodes"], row["cpu_offload"],
                                   row["additional_buffer_factor"])
    assert got == (row["cpu_bytes"], row["gpu_bytes"])


@pytest.mark.parametrize("row", [r for r in ANCHORS["estimates"] if r["stage"] == 3],
                         ids=lambda r: f"{r['model']}-{r['gpus_per_node']}x{r['nodes']}-off{int(r['cpu_offload'])}"
                                       f"{int(r['cpu_offload_params'])}-init{int(r['zero_init'])}")
def test_zero3_estimator_equals_deepspeed(row):
    got = zero3_model_states_bytes(row["total_params"], row["largest_layer_params"], row["gpus_per_node"],
                                   row["nodes"], row["cpu_offload"], row["cpu_offload_params"], row["zero_init"],
                                   row["additional_buffer_factor"])
    assert got == (row["cpu_bytes"], row["gpu_bytes"], row["largest_layer_bytes"])


@pytest.mark.parametrize("row", ANCHORS["model_to_params"], ids=lambda r: r["name"])
def test_model_counts_equal_deepspeeds_model_to_params(row):
    spec = spec_from_config(row["config"], row["name"], "test")
    assert (spec.params, largest_layer_params(spec)) == (row["total_params"], row["largest_layer_params"])


# --- sizer's DeepSpeed figure for a run, and sizer's own model against DeepSpeed's estimator ------

def _row(model, stage, per_node, nodes, **options):
    return next(r for r in ANCHORS["estimates"] if r["model"] == model and r["stage"] == stage
                and r["gpus_per_node"] == per_node and r["nodes"] == nodes and r["additional_buffer_factor"] == 1.5
                and all(r[k] == v for k, v in options.items()))


@pytest.mark.parametrize("model,setup,gpus,per_node,row_options", [
    ("llama3-8b", dict(zero=2), 8, 4, dict(cpu_offload=False)),
    ("llama3-8b", dict(zero=1, offload_optimizer=True), 8, None, dict(cpu_offload=True)),
    ("llama3-70b", dict(zero=3), 32, 8, dict(cpu_offload=False, cpu_offload_params=False, zero_init=True)),
    ("llama3.1-405b", dict(zero=3, offload_optimizer=True, offload_params=True), 64, 16,
     dict(cpu_offload=True, cpu_offload_params=True, zero_init=True)),
    ("qwen3-30b-a3b", dict(zero=3, offload_optimizer=True), 9, 3,
     dict(cpu_offload=True, cpu_offload_params=False, zero_init=True)),
])
def test_deepspeed_estimate_for_a_run_is_deepspeeds_answer(model, setup, gpus, per_node, row_options):
    est = deepspeed_estimate(get_model(model), FinetuneSetup(method="full", **setup), gpus, per_node)
    row = _row(model, est.stage, per_node or gpus, gpus // (per_node or gpus), **row_options)
    assert (est.host_bytes_per_node, est.gpu_bytes) == (row["cpu_bytes"], row["gpu_bytes"])


@pytest.mark.parametrize("setup", [dict(method="lora", zero=3), dict(method="full", fsdp="full-shard"),
                                   dict(method="full")])
def test_no_deepspeed_estimate_where_deepspeed_has_none(setup):
    assert deepspeed_estimate(get_model("llama3-8b"), FinetuneSetup(**setup), 8) is None


def _parts(model, gpus, **setup):
    spec = spec_from_config(model, "tiny", "test") if isinstance(model, dict) else get_model(model)
    s = FinetuneSetup(**setup)
    return shard_parts(model_states(spec, s, get_framework("transformers"))[0], s, gpus), spec


@pytest.mark.parametrize("stage", [1, 2])
def test_zero12_is_deepspeeds_estimate_plus_one_reduce_bucket(stage):
    """DeepSpeed's 2 + 18/N bytes per parameter is what ZeRO-1/2 allocates for full bf16 AdamW
    training; on top of it sits the reduce bucket, reduce_bucket_size = hidden^2 16-bit values."""
    parts, spec = _parts("llama3-8b", 8, method="full", zero=stage)
    bucket = spec.hidden_size ** 2 * 2
    assert parts.total == _row("llama3-8b", 2, 8, 1, cpu_offload=False)["gpu_bytes"] + bucket


def test_zero_offload_gpu_share_is_deepspeeds_plus_the_bucket_and_the_gradient_staging_buffer():
    """ZeRO-Offload keeps the 16-bit parameters (DeepSpeed's 2 bytes per parameter), the reduce
    bucket and temp_grad_buffer_for_gpu_offload: the largest parameter's values in 16 bits."""
    parts, spec = _parts("llama3-8b", 8, method="full", zero=2, offload_optimizer=True)
    staging = 2 * max(t.n_elements for t in spec.tensors)
    row = _row("llama3-8b", 2, 8, 1, cpu_offload=True)
    assert parts.total == row["gpu_bytes"] + spec.hidden_size ** 2 * 2 + staging


def test_zero3_is_deepspeeds_estimate_plus_the_16bit_shard_buckets_prefetch_and_persistent_params():
    """DeepSpeed's ZeRO-3 figure counts the gathered largest layer (4 bytes per value: parameters and
    gradients) and 18/N bytes, not the 16-bit parameter shard; sizer adds it, the reduce bucket
    (h^2 values), the prefetch window (int(0.9 h^2) values) and the parameters of at most 10*h
    values that stay gathered (the norms)."""
    parts, spec = _parts("llama3-8b", 32, method="full", zero=3)
    h = spec.hidden_size
    persistent = sum(t.params for t in spec.tensors if t.n_elements <= 10 * h) * 2
    extra = 2 * spec.params // 32 + h * h * 2 + int(0.9 * h * h) * 2 + persistent
    row = _row("llama3-8b", 3, 8, 4, cpu_offload=False, cpu_offload_params=False, zero_init=True)
    assert parts.total == row["gpu_bytes"] + extra


def test_zero3_offload_gpu_share_is_deepspeeds_plus_buckets_prefetch_and_persistent_params():
    parts, spec = _parts("llama3-8b", 32, method="full", zero=3, offload_optimizer=True, offload_params=True)
    h = spec.hidden_size
    persistent = sum(t.params for t in spec.tensors if t.n_elements <= 10 * h) * 2
    row = _row("llama3-8b", 3, 8, 4, cpu_offload=True, cpu_offload_params=True, zero_init=True)
    assert parts.total == row["gpu_bytes"] + h * h * 2 + int(0.9 * h * h) * 2 + persistent
    assert (parts.params, parts.gradients, parts.optimizer_states, parts.masters) == (0, 0, 0, 0)


def test_zero3_fp32_step_gradients_come_one_sub_group_at_a_time():
    parts, spec = _parts("llama3-70b", 8, method="full", zero=3)
    assert spec.params // 8 > 10 ** 9
    one_unit = parts.grad_buffers - spec.hidden_size ** 2 * 2
    assert one_unit - 4 * 10 ** 9 == 2 * max(t.n_elements * t.experts for t in spec.tensors)


# --- what each stage divides ----------------------------------------------------------------------

@pytest.mark.parametrize("setup,divided,whole", [
    (dict(zero=1), ("gradients", "optimizer_states", "masters"), ("params",)),
    (dict(zero=2), ("gradients", "optimizer_states", "masters"), ("params",)),
    (dict(zero=3), ("params", "gradients", "optimizer_states", "masters"), ("gathered",)),
    (dict(fsdp="full-shard"), ("params", "gradients", "optimizer_states"), ("gathered", "grad_buffers")),
    (dict(fsdp="shard-grad-op"), ("params", "gradients", "optimizer_states"), ("gathered",)),
])
def test_each_stage_divides_what_it_shards(setup, divided, whole):
    one, _ = _parts("llama3-8b", 1, method="full", **setup)
    four, _ = _parts("llama3-8b", 4, method="full", **setup)
    for name in divided:
        assert getattr(four, name) == -(-getattr(one, name) // 4) > 0, name
    for name in whole:
        assert getattr(four, name) == getattr(one, name) > 0, name


def test_hybrid_shard_shards_within_a_node():
    hybrid, _ = _parts("llama3-8b", 16, method="full", fsdp="hybrid", gpus_per_node=4)
    full, _ = _parts("llama3-8b", 4, method="full", fsdp="full-shard")
    assert hybrid == full
    assert host_bytes_per_node(1000, 16, 4) == 4000


def test_shard_grad_op_keeps_every_layer_gathered_until_backward():
    sgo, spec = _parts("llama3-8b", 8, method="full", fsdp="shard-grad-op")
    fs, _ = _parts("llama3-8b", 8, method="full", fsdp="full-shard")
    assert sgo.gathered == spec.params * 2 and fs.gathered < sgo.gathered / 5


@pytest.mark.parametrize("setup", [dict(zero=2, offload_optimizer=True), dict(zero=3, offload_optimizer=True),
                                   dict(fsdp="full-shard", offload_params=True)])
def test_offload_moves_optimizer_masters_and_gradients_to_the_host(setup):
    on_gpu, _ = _parts("llama3-8b", 8, method="full", **setup)
    kept = {k: v for k, v in setup.items() if not k.startswith("offload")}
    resident, _ = _parts("llama3-8b", 8, method="full", **kept)
    assert on_gpu.optimizer_states == on_gpu.masters == on_gpu.gradients == 0
    assert on_gpu.host >= resident.optimizer_states + resident.masters + resident.gradients
    assert on_gpu.total < resident.total


def test_deepspeed_trains_16bit_adapters_with_fp32_masters():
    """DeepSpeed's engine casts every floating parameter to bf16, its optimizer keeps fp32 partitions."""
    zero, _ = _parts("llama3-8b", 1, method="lora", zero=2)
    plain, _ = _parts("llama3-8b", 1, method="lora")
    assert zero.adapters * 2 == plain.adapters and zero.masters == plain.adapters
    assert plain.masters == 0


def test_ddp_reducer_buckets_copy_the_gradients():
    one, _ = _parts("llama3-8b", 1, method="lora")
    two, _ = _parts("llama3-8b", 2, method="lora")
    assert two.grad_buffers == one.gradients and one.grad_buffers == 0


# --- the gathered units against the real modules ----------------------------------------------------

def _tiny_model(config: dict, lora_rank: int | None = None):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    fields = {k: v for k, v in config.items() if k != "model_type"}
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(config["model_type"], **fields))
    if lora_rank:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora_rank, target_modules="all-linear"))
    return model


def _states(config: dict, **setup):
    s = FinetuneSetup(**setup)
    return model_states(spec_from_config(config, "tiny", "test"), s, get_framework("transformers"))[0]


@pytest.mark.parametrize("row", ANCHORS["model_to_params"], ids=lambda r: r["name"])
def test_fsdp_units_are_a_decoder_layer_and_the_root_as_torch_holds_them(row):
    """transformer_auto_wrap_policy wraps each decoder layer; the root unit is everything else
    (tied weights once), gathered in bf16 for compute."""
    model = _tiny_model(row["config"])
    layers = model.model.layers
    in_layers = {id(p) for p in layers.parameters()}
    root = sum(p.numel() for p in model.parameters() if id(p) not in in_layers)
    states = _states(row["config"], method="full", fsdp="full-shard")
    assert states.gathered == 2 * sum(p.numel() for p in layers[0].parameters())
    assert states.resident == 2 * root


@pytest.mark.parametrize("row", ANCHORS["model_to_params"], ids=lambda r: r["name"])
def test_zero3_unit_is_the_largest_module_deepspeed_finds(row):
    states = _states(row["config"], method="full", zero=3)
    assert states.gathered == 2 * row["largest_layer_params"]


def test_fsdp_lora_unit_holds_the_layers_adapters_in_the_compute_dtype():
    config = ANCHORS["model_to_params"][0]["config"]
    model = _tiny_model(config, lora_rank=8)
    layer = model.base_model.model.model.layers[0]
    states = _states(config, method="lora", lora_rank=8, fsdp="full-shard")
    assert states.gathered == 2 * sum(p.numel() for p in layer.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert states.trainable == trained and states.adapters == 4 * trained      # PEFT's fp32 adapters


# --- more GPUs never turn a fit into a misfit ---------------------------------------------------------

SHARDINGS = [dict(zero=1), dict(zero=2), dict(zero=3), dict(zero=1, offload_optimizer=True),
             dict(zero=2, offload_optimizer=True), dict(zero=3, offload_optimizer=True),
             dict(zero=3, offload_optimizer=True, offload_params=True), dict(fsdp="full-shard"),
             dict(fsdp="shard-grad-op"), dict(fsdp="hybrid"), dict(fsdp="full-shard", offload_params=True),
             dict(fsdp="shard-grad-op", offload_optimizer=True), dict()]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(["llama3-8b", "qwen3-30b-a3b", "qwen2.5-7b"]),
       method=st.sampled_from(["full", "lora", "qlora"]), sharding=st.sampled_from(SHARDINGS),
       optimizer=st.sampled_from(["adamw", "adamw-8bit", "sgd"]), precision=st.sampled_from(["bf16", "fp32"]),
       per_node=st.sampled_from([None, 2, 4, 8]), gpus=st.integers(1, 64), more=st.integers(1, 64))
def test_more_gpus_never_turn_a_fit_into_a_misfit(model, method, sharding, optimizer, precision, per_node, gpus,
                                                  more):
    """Per-GPU memory never grows with the GPU count (DDP from 2 GPUs: one GPU runs without the
    reducer's buckets), so whatever fits on n GPUs fits on more."""
    if not sharding:
        gpus = max(gpus, 2)
    setup = FinetuneSetup(method=method, optimizer=optimizer, precision=precision, gpus_per_node=per_node,
                          seq_len=512, **sharding)
    spec, gpu = get_model(model), parse_gpus("H100").gpu
    fw = get_framework("transformers")
    fewer = memory_per_gpu(spec, setup, fw, gpu, gpus)[0]
    larger = memory_per_gpu(spec, setup, fw, gpu, gpus + more)[0]
    assert larger.total <= fewer.total
    assert larger.free >= 0 or fewer.free < 0
