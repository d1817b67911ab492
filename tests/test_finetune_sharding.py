"""Sharding and offload (sizer.finetune.sharding) and DeepSpeed's own estimators (sizer.finetune.deepspeed):
the estimators against the real DeepSpeed's answers recorded by tools/deepspeed_anchors.py, the
per-stage division of the model states, and more GPUs never turning a fit into a misfit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sizer.families import spec_from_config
from sizer.finetune.deepspeed import largest_layer_params, zero2_model_states_bytes, zero3_model_states_bytes

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
