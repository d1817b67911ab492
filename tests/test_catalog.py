"""The catalog against exact facts: parameter counts and KV bytes per token of real architectures."""

import json

import pytest

from sizer import get_model
from sizer.calc.kv import kv_cache_bytes_per_token
from sizer.catalog import find_model, get_catalog_model, model_entries, release_month
from sizer.errors import UsageError
from sizer.families import spec_from_config

from conftest import REFERENCE_MODELS

REFERENCE_NAMES = [
    "CodeLlama-34b-hf", "DeepSeek-V3", "Llama-2-13b-hf", "Llama-2-70b-hf", "Llama-2-7b-hf", "Llama-3.1-405B",
    "Meta-Llama-3-70B", "Meta-Llama-3-8B", "Mistral-7B-v0.1", "Mistral-Large-Instruct-2407", "Mixtral-8x7B-v0.1",
    "Orca-2-13b", "Phi-3-mini-4k-instruct", "Qwen2.5-72B", "Qwen2.5-7B", "bloom", "falcon-180B", "falcon-40b",
    "falcon-7b", "gemma-2b", "gemma-7b", "mpt-30b", "mpt-7b", "phi-2", "vicuna-7b-v1.5",
]


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_reference_params_and_kv_per_token(name, reference_facts):
    params, kv_per_token = reference_facts[name]
    spec = get_model(name)
    assert spec.params == params
    assert kv_cache_bytes_per_token(spec, "bf16") == kv_per_token


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_catalog_config_is_the_reference_config(name):
    path = REFERENCE_MODELS / name / "config.json"
    assert get_catalog_model(name).config == json.loads(path.read_text())


def test_every_catalog_entry_matches_its_recorded_count():
    """Each entry's "params" was counted by transformers on the meta device (or taken from params.md)."""
    for name, entry in model_entries().items():
        assert entry.source, name
        if entry.params is not None:
            assert spec_from_config(entry.config, name, name).params == entry.params, name


def test_golden_numbers_from_the_style_guide():
    spec = get_model("llama3-70b")
    assert spec.params == 70_553_706_496
    assert kv_cache_bytes_per_token(spec, "bf16") == 327_680


@pytest.mark.parametrize("alias, name", [
    ("llama3-70b", "Meta-Llama-3-70B"),
    ("meta-llama/Meta-Llama-3-70B", "Meta-Llama-3-70B"),
    ("META-LLAMA-3-70B", "Meta-Llama-3-70B"),
    ("mixtral-8x7b", "Mixtral-8x7B-v0.1"),
    ("mistralai/Mixtral-8x7B-v0.1", "Mixtral-8x7B-v0.1"),
    ("deepseek-v3", "DeepSeek-V3"),
    ("bloom", "bloom"),
])
def test_aliases(alias, name):
    assert find_model(alias).name == name


def test_unknown_model_suggests_close_names():
    with pytest.raises(UsageError) as e:
        get_model("llama3-71b")
    msg = str(e.value)
    assert msg.startswith("unknown model 'llama3-71b'; did you mean ")
    assert "llama3-70b" in msg.split("did you mean ")[1].split("?")[0].split(", ")
    assert "\n" not in msg


def test_moe_and_mla_facts():
    mixtral = get_model("mixtral")
    assert mixtral.active_params == 12_879_925_248      # "12.9B active" (claims.md #9)
    deepseek = get_model("deepseek-v3")
    assert deepseek.attention_kind == "MLA"
    assert deepseek.params == 671_026_404_352
    assert 37_000_000_000 < deepseek.active_params < 38_000_000_000   # published: 37B activated


def test_attention_kinds():
    assert get_model("llama-2-7b").attention_kind == "MHA"
    assert get_model("llama3-8b").attention_kind == "GQA"
    assert get_model("falcon-7b").attention_kind == "MQA"
    assert get_model("gemma-2b").attention_kind == "MQA"


def test_tied_embeddings_counted_once():
    spec = get_model("gemma-7b")
    assert spec.tied_embeddings
    assert "lm_head" not in spec.params_by_component()
    assert spec.params_by_component()["embeddings"] == 256000 * 3072


def test_every_entry_has_a_valid_release_date_and_its_source():
    for name, entry in model_entries().items():
        assert entry.released, name
        month = release_month(entry.released)                      # YYYY-MM-DD or YYYY-MM, a real date
        assert release_month("2022-01") <= month <= release_month("2026-12"), (name, entry.released)
        assert len(entry.released_source) > 20, name               # says where the date is stated


@pytest.mark.parametrize("name, released", [
    ("Llama-3.1-8B", "2024-07-23"), ("Qwen3-32B", "2025-04-29"), ("falcon-40b", "2023-05"),
    ("gemma-3-27b-it", "2025-03-12"), ("Mixtral-8x7B-v0.1", "2023-12-11"),
])
def test_release_dates_announced_together_agree(name, released):
    assert get_catalog_model(name).released == released


@pytest.mark.parametrize("text, month", [("2025-04-29", 2025 * 12 + 3), ("2025-04", 2025 * 12 + 3),
                                         ("2026-01-31", 2026 * 12), (None, None)])
def test_release_month(text, month):
    assert release_month(text) == month


@pytest.mark.parametrize("text", ["2025", "2025-4-29", "2025-13", "2025-02-30", "April 2025", 20250429])
def test_release_month_refuses_a_malformed_date(text):
    with pytest.raises(ValueError):
        release_month(text)
