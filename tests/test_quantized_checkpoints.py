"""Official quantized checkpoints of catalog models (tests/data/quantized_checkpoints.json, sources in
docs/reference/quantized-checkpoints.md): how sizer reads their quantization_config today."""

import json

import pytest
from click.testing import CliRunner

from sizer.catalog import find_model
from sizer.cli import cli
from sizer.families import quantization_label

from conftest import ROOT

CHECKPOINTS = json.loads((ROOT / "tests" / "data" / "quantized_checkpoints.json").read_text())


def test_the_set_names_catalog_models_and_sources():
    assert len(CHECKPOINTS) >= 10
    for c in CHECKPOINTS:     # the base is a catalog entry, or a config file of the repository (base_config)
        assert find_model(c["base_hf_id"]) is not None or (ROOT / c["base_config"]).is_file(), c["base_hf_id"]
        assert c["source"].strip() and isinstance(c["quantization_config"], dict)


@pytest.mark.parametrize("c", [c for c in CHECKPOINTS if c["precision_kind"] == "fp8-block128"], ids=lambda c: c["hf_id"])
def test_fine_grained_fp8_checkpoints_read_as_fp8_block128(c):
    assert quantization_label(c["quantization_config"]) == "fp8-block128"


def test_fp8_of_a_catalog_model_means_its_official_fp8_checkpoint():
    """Qwen3-32B's `-p fp8` is Qwen/Qwen3-32B-FP8 as it is stored (fine-grained FP8 in blocks of 128),
    launched from that checkpoint rather than quantized online."""
    result = CliRunner().invoke(cli, ["fit", "qwen3-32b", "--gpus", "1xH100", "--engine", "vllm", "-p", "fp8",
                                      "-c", "8192", "--format", "json"])
    out = json.loads(result.stdout)
    [option] = out["options"]
    assert option["precision"] == "fp8-block128"
    assert option["launch"] == [{"on": "the server", "command": "vllm serve Qwen/Qwen3-32B-FP8 --max-model-len 8192"}]
    assert "fp8: as the official Qwen/Qwen3-32B-FP8 stores it (fp8-block128), launched from that checkpoint" in out["notes"]
    estimate = json.loads(CliRunner().invoke(cli, ["estimate", "qwen3-32b", "-p", "fp8", "--format", "json"]).stdout)
    assert estimate["precision"] == "fp8-block128"
    other = json.loads(CliRunner().invoke(cli, ["fit", "llama3-8b", "--gpus", "1xH100", "--engine", "vllm", "-p", "fp8",
                                                "--format", "json"]).stdout)["options"][0]
    assert other["precision"] == "fp8" and other["launch"][0]["command"].endswith("--quantization fp8")


@pytest.mark.parametrize("c", [c for c in CHECKPOINTS if c["precision_kind"] == "fp8-block128"], ids=lambda c: c["hf_id"])
def test_catalog_entries_name_their_official_fp8_checkpoints(c):
    entry = find_model(c["base_hf_id"])
    assert [q["hf_id"] for q in entry.quantized if q["precision"] == "fp8"] == [c["hf_id"]]
