"""--engine mlx: mlx-lm's weights and KV cache (sizer.plan.mlx; docs/reference/mlx.md)."""

import json

import pytest
from click.testing import CliRunner

from sizer import get_model
from sizer.cli import cli
from sizer.errors import UsageError
from sizer.gpuspec import parse_gpus
from sizer.plan.mlx import (KV_STEP_TOKENS, get_mlx_precision, kv_cache_bytes, kv_capacity_tokens, plan_mlx,
                            quantized_tensor_bytes, weights_bytes)
from sizer.spec import SLIDING_ATTENTION

from conftest import ROOT

SIZES = json.loads((ROOT / "tests/data/mlx_sizes.json").read_text())["checkpoints"]


def spec_of(entry, tmp_path):
    if entry["model"] != "config":
        return get_model(entry["model"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(entry["config"]))
    return get_model(str(path))


@pytest.mark.parametrize("entry", [e for e in SIZES if "exact_bytes" in e], ids=lambda e: e["repo"])
def test_weights_equal_published_total_size(entry, tmp_path):
    assert weights_bytes(spec_of(entry, tmp_path), get_mlx_precision(entry["precision"])) == entry["exact_bytes"]


@pytest.mark.parametrize("entry", [e for e in SIZES if "listed_bytes" in e], ids=lambda e: e["repo"])
def test_weights_round_to_listed_size(entry, tmp_path):
    """The Hub lists 3 significant figures; the safetensors header (tens of kB) does not change them."""
    predicted = weights_bytes(spec_of(entry, tmp_path), get_mlx_precision(entry["precision"]))
    listed = entry["listed_bytes"]
    unit = 10 ** (len(str(listed)) - 3)
    assert round(predicted / unit) * unit == listed


def test_quantized_tensor_packs_values_and_groups():
    # 4096 x 4096 at 4 bits, groups of 64: 4096 * 512 uint32 words + 2 x 4096 x 64 bf16 scales/biases
    assert quantized_tensor_bytes(4096, 4096, 4, 64) == 4096 * 512 * 4 + 2 * 4096 * 64 * 2
    assert quantized_tensor_bytes(4096, 4096, 8, 128) == 4096 * 1024 * 4 + 2 * 4096 * 32 * 2


def test_kv_cache_grows_in_256_token_steps():
    assert KV_STEP_TOKENS == 256
    assert kv_capacity_tokens(1) == 256
    assert kv_capacity_tokens(256) == 256
    assert kv_capacity_tokens(257) == 512
    assert kv_capacity_tokens(5000, max_kv_size=4096) == 4096
    assert kv_capacity_tokens(5000, window_tokens=1024) == 1024


def test_kv_cache_bytes_per_layer_and_dtype():
    spec = get_model("qwen3-8b")      # 36 layers, 8 KV heads of 128
    assert kv_cache_bytes(spec, 1000) == 36 * 2 * 8 * 128 * 2 * 1024
    assert kv_cache_bytes(spec, 1000, batch=2) == 2 * kv_cache_bytes(spec, 1000)


def test_sliding_layers_stop_at_the_window():
    spec = get_model("gemma-3-12b")
    assert spec.n_sliding_layers
    long, short = kv_cache_bytes(spec, 32768), kv_cache_bytes(spec, spec.sliding_window)
    per_token = spec.n_kv_heads * (spec.head_dim + spec.v_head_dim) * 2
    full_layers = sum(kind != SLIDING_ATTENTION for kind in spec.layer_types)
    assert long - short == full_layers * per_token * (32768 - spec.sliding_window)


def test_refused_off_apple():
    gpu = parse_gpus("H100").gpu
    with pytest.raises(UsageError, match="Apple Silicon"):
        plan_mlx(get_model("qwen3-8b"), gpu, 80 << 30, "mlx-4bit", 4096)


def test_unknown_precision_refused():
    with pytest.raises(UsageError, match="mlx-4bit"):
        get_mlx_precision("Q4_K_M")


def test_cli_fit_mlx_end_to_end():
    result = CliRunner().invoke(cli, ["fit", "qwen3-8b", "--engine", "mlx", "-p", "mlx-4bit", "--gpus", "m3-max-36gb",
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    spec = get_model("qwen3-8b")
    assert row["weights_bytes"] == weights_bytes(spec, get_mlx_precision("mlx-4bit"))
    assert row["kv_cache_bytes"] == kv_cache_bytes(spec, 8192)
    assert row["limit_bytes"] == parse_gpus("m3-max-36gb").gpu.gpu_memory_limit_bytes
    assert row["fits"] and row["launch"].startswith("mlx_lm.server --model mlx-community/")


def test_cli_mlx_max_kv_size_and_lmstudio():
    result = CliRunner().invoke(cli, ["fit", "qwen3-8b", "--engine", "lmstudio-mlx", "--gpus", "m3-max-36gb", "-c",
                                      "32768", "--engine-args", "--max-kv-size 4096", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["precision"] for r in rows] == ["mlx-4bit", "mlx-8bit"]
    assert rows[0]["kv_cache_bytes"] == kv_cache_bytes(get_model("qwen3-8b"), 4096)
    assert rows[0]["launch"].startswith("lms load ")


def test_cli_mlx_refused_on_nvidia():
    result = CliRunner().invoke(cli, ["fit", "qwen3-8b", "--engine", "mlx", "--gpus", "H100"])
    assert result.exit_code != 0 and "Apple Silicon" in result.output


def test_cli_mlx_refuses_options_it_does_not_model():
    result = CliRunner().invoke(cli, ["fit", "qwen3-8b", "--engine", "mlx", "--gpus", "m3-max-36gb", "--kv-dtype", "fp8"])
    assert result.exit_code != 0 and "--kv-dtype does not apply" in result.output


def test_mlx_table_states_its_units_and_the_csv_header_is_documented():
    from pathlib import Path

    from sizer.plan.mlx import MLX_COLUMNS

    args = ["fit", "qwen3-8b", "--engine", "mlx", "-p", "mlx-4bit", "--gpus", "m3-max-36gb"]
    table = CliRunner().invoke(cli, args).output
    assert "sizes in GiB (1 GiB = 2^30 bytes)" in table and "mlx-4bit     fits" in table
    header = CliRunner().invoke(cli, args + ["--format", "csv"]).output.splitlines()[0]
    assert header == ",".join(MLX_COLUMNS)
    assert header in (Path(__file__).resolve().parents[1] / "docs" / "output.md").read_text()
