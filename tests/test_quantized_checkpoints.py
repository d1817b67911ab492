"""Official quantized checkpoints of catalog models (tests/data/quantized_checkpoints.json, sources in
docs/reference/quantized-checkpoints.md): how sizer reads their quantization_config today."""

import copy
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
    for c in CHECKPOINTS:
        assert find_model(c["base_hf_id"]) is not None, c["base_hf_id"]
        assert c["source"].strip() and isinstance(c["quantization_config"], dict)


@pytest.mark.parametrize("c", [c for c in CHECKPOINTS if c["precision_kind"] == "fp8-block128"], ids=lambda c: c["hf_id"])
def test_fine_grained_fp8_checkpoints_read_as_fp8_block128(c):
    assert quantization_label(c["quantization_config"]) == "fp8-block128"


@pytest.mark.parametrize("c", [c for c in CHECKPOINTS if c["quantization_config"].get("quant_method") == "modelopt"
                               and "text_config" not in find_model(c["base_hf_id"]).config],    # nested: not rebuilt here
                         ids=lambda c: c["hf_id"])
def test_modelopt_checkpoints_are_refused_in_one_line_naming_the_algorithm(c, tmp_path):
    config = copy.deepcopy(find_model(c["base_hf_id"]).config)
    config["quantization_config"] = c["quantization_config"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = CliRunner().invoke(cli, ["estimate", str(path)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"NVIDIA ModelOpt {c['quantization_config']['quant_algo']} checkpoint" in result.stderr
    sized = CliRunner().invoke(cli, ["estimate", str(path), "-p", "bf16", "--format", "json"])
    assert sized.exit_code == 0, sized.output
