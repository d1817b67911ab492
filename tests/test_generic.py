"""The generic path (issue 16, item 4): a config of a family sizer does not model.

* With torch and transformers: the model built on the meta device; sizer's params equal transformers'
  `sum(p.numel())` exactly, per component too; the count is cached per config hash and the next run
  works with torch unavailable.
* Without them (or for a model_type transformers does not know): a Llama-like decoder from the
  standard keys, equal to transformers' count of the equivalent llama / mixtral config, its
  assumptions in the notes.
* Refused only when neither works, naming the missing keys; on the command line one line, exit 1.
"""

from __future__ import annotations

import copy
import json
import sys

import pytest
from click.testing import CliRunner

from sizer.calc.kv import kv_cache_bytes_per_token
from sizer.cli import cli
from sizer.errors import UnsupportedModelError
from sizer.families import FAMILIES, spec_from_config
from sizer.families.meta import cache_path
from sizer.inputs.names import component_of

from conftest import write_config

LLAMA_SHAPED = {"hidden_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
                "intermediate_size": 352, "vocab_size": 500, "max_position_embeddings": 2048}

# Families transformers implements and sizer does not (at the time of writing), scaled down.
SMALL = dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=256, vocab_size=512)
UNMODELLED = {
    "stablelm": {},
    "starcoder2": {"sliding_window": 64},
    "cohere": {},
    "helium": {},
    "exaone4": {"sliding_window": 64},
    "granitemoe": {"num_local_experts": 4, "num_experts_per_tok": 2},
}


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def no_torch(monkeypatch):
    """torch and transformers unavailable in this process (`import torch` raises ImportError)."""
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "transformers", None)


def transformers_count(config: dict) -> tuple[int, dict[str, int]]:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**config))
    by_component: dict[str, int] = {}
    for name, p in model.named_parameters():
        by_component[component_of(name)] = by_component.get(component_of(name), 0) + p.numel()
    return sum(p.numel() for p in model.parameters()), by_component


def small_config(model_type: str) -> dict:
    transformers = pytest.importorskip("transformers")
    if model_type in FAMILIES:
        pytest.skip(f"{model_type} is now a family of its own")
    return transformers.AutoConfig.for_model(model_type, **SMALL, **UNMODELLED[model_type]).to_dict()


# ---------------------------------------------------------------------------------------------
# transformers on the meta device


@pytest.mark.parametrize("model_type", sorted(UNMODELLED))
def test_meta_device_count_is_transformers_count(model_type):
    config = small_config(model_type)
    spec = spec_from_config(copy.deepcopy(config), model_type, "config.json")
    total, by_component = transformers_count(config)
    assert spec.params == total
    assert spec.params_by_component() == by_component
    assert spec.family == model_type
    transformers = pytest.importorskip("transformers")
    assert any(f"parameters counted by transformers {transformers.__version__} on the meta device" in n
               for n in spec.notes)
    assert cache_path(config).is_file()


@pytest.mark.parametrize("model_type", ["starcoder2", "exaone4"])
def test_meta_device_layer_types_follow_transformers(model_type):
    from transformers.cache_utils import get_layer_types_and_kwargs

    transformers = pytest.importorskip("transformers")
    config = small_config(model_type)
    spec = spec_from_config(copy.deepcopy(config), model_type, "config.json")
    types, kwargs = get_layer_types_and_kwargs(transformers.AutoConfig.for_model(**config))
    assert spec.layer_types == tuple(types)
    assert spec.sliding_window == 64
    assert any("sliding window of 64 tokens" in n for n in spec.notes)


def test_meta_device_moe_counts_experts_and_active_params():
    config = small_config("granitemoe")
    spec = spec_from_config(copy.deepcopy(config), "g", "config.json")
    assert (spec.n_experts, spec.n_experts_active) == (4, 2)
    experts = spec.params_by_component()["experts"]
    assert spec.params - spec.active_params == experts // 2


def test_cached_count_needs_no_torch(monkeypatch):
    config = small_config("stablelm")
    first = spec_from_config(copy.deepcopy(config), "s", "config.json")
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError):
        import torch  # noqa: F401
    again = spec_from_config(copy.deepcopy(config), "s", "config.json")
    assert again.params == first.params and again.tensors == first.tensors
    assert kv_cache_bytes_per_token(again, "bf16") == kv_cache_bytes_per_token(first, "bf16")
    assert any(f"cached in {cache_path(config)}" in n for n in again.notes)


def test_a_corrupt_cache_file_is_counted_again():
    config = small_config("helium")
    first = spec_from_config(copy.deepcopy(config), "h", "config.json")
    cache_path(config).write_text("{not json")
    assert spec_from_config(copy.deepcopy(config), "h", "config.json").params == first.params
    assert json.loads(cache_path(config).read_text())["params"] == first.params


def test_known_families_take_their_own_normalizer(tmp_path):
    spec = spec_from_config({"model_type": "llama", **LLAMA_SHAPED}, "l", "config.json")
    assert not any("transformers" in n or "standard keys" in n for n in spec.notes)
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------------------------------------
# The standard keys


def test_llama_shaped_unknown_family_equals_the_llama_count(no_torch):
    spec = spec_from_config({"model_type": "newarch", **LLAMA_SHAPED}, "n", "config.json")
    llama = spec_from_config({"model_type": "llama", **LLAMA_SHAPED}, "l", "config.json")
    assert spec.tensors == llama.tensors
    assert kv_cache_bytes_per_token(spec, "bf16") == kv_cache_bytes_per_token(llama, "bf16")
    notes = " ".join(spec.notes)
    for said in ("'newarch' is not modelled", "torch and transformers are not both installed", "gated SwiGLU",
                 "without biases", "RMSNorm", "untied lm_head (tie_word_embeddings not set)",
                 "full attention in every layer"):
        assert said in notes


def test_standard_keys_against_transformers_llama():
    """The key-based path (a model_type transformers does not know) against transformers' own llama count."""
    for extra in ({}, {"tie_word_embeddings": True}, {"head_dim": 48}, {"attention_bias": True}):
        config = {**LLAMA_SHAPED, **extra}
        spec = spec_from_config({"model_type": "not-in-transformers", **config}, "n", "config.json")
        total, by_component = transformers_count({"model_type": "llama", **config})
        assert spec.params == total, extra
        assert spec.params_by_component() == by_component, extra
        assert any("does not know model_type 'not-in-transformers'" in n for n in spec.notes)


def test_standard_key_aliases(no_torch):
    aliased = {"model_type": "gpt-ish", "n_embd": 128, "n_layer": 3, "n_head": 4, "num_kv_heads": 2,
               "n_inner": 352, "vocab_size": 500}
    spec = spec_from_config(aliased, "a", "config.json")
    llama = spec_from_config({"model_type": "llama", **LLAMA_SHAPED}, "l", "config.json")
    assert spec.params == llama.params and spec.n_kv_heads == 2
    mqa = spec_from_config({**aliased, "num_kv_heads": None, "multi_query": True}, "a", "config.json")
    assert mqa.n_kv_heads == 1 and "one KV head (multi_query)" in mqa.notes[0]


def test_standard_keys_moe_equals_transformers_mixtral():
    moe = {**LLAMA_SHAPED, "num_local_experts": 4, "num_experts_per_tok": 2}
    spec = spec_from_config({"model_type": "unknown-moe", **moe}, "m", "config.json")
    total, by_component = transformers_count({"model_type": "mixtral", **moe, "sliding_window": None})
    assert spec.params == total and spec.params_by_component() == by_component
    assert (spec.n_experts, spec.n_experts_active) == (4, 2)
    assert "4 routed experts" in spec.notes[0]


def test_standard_keys_sliding_window(no_torch):
    spec = spec_from_config({"model_type": "newarch", **LLAMA_SHAPED, "sliding_window": 256}, "n", "config.json")
    assert spec.sliding_window == 256 and spec.n_sliding_layers == 3
    off = spec_from_config({"model_type": "newarch", **LLAMA_SHAPED, "sliding_window": 256,
                            "use_sliding_window": False}, "n", "config.json")
    assert off.sliding_window is None


def test_unmodelled_keys_are_named(no_torch):
    spec = spec_from_config({"model_type": "newarch", **LLAMA_SHAPED, "kv_lora_rank": 64}, "n", "config.json")
    assert any("kv_lora_rank" in n and "may be off" in n for n in spec.notes)


# ---------------------------------------------------------------------------------------------
# Refusals


def test_refusal_names_the_missing_keys(no_torch):
    with pytest.raises(UnsupportedModelError) as e:
        spec_from_config({"model_type": "mytoy", "hidden_size": 64}, "t", "config.json")
    msg = str(e.value)
    assert "'mytoy' is not supported" in msg and "\n" not in msg
    assert "lacks the standard keys num_hidden_layers, num_attention_heads, vocab_size, intermediate_size" in msg
    with pytest.raises(UnsupportedModelError, match="lacks the standard key num_experts_per_tok "):
        spec_from_config({"model_type": "mytoy", **LLAMA_SHAPED, "num_experts": 8}, "t", "config.json")


def test_refusal_of_a_transformers_family_without_attention():
    pytest.importorskip("transformers")
    with pytest.raises(UnsupportedModelError) as e:
        spec_from_config({"model_type": "mamba", "hidden_size": 64}, "m", "config.json")
    assert "MambaConfig has no num_attention_heads" in str(e.value)
    assert "lacks the standard keys num_hidden_layers, num_attention_heads" in str(e.value)


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_cli_estimate_generic_config(tmp_path, no_torch):
    path = write_config(tmp_path / "newarch", {"model_type": "newarch", **LLAMA_SHAPED})
    r = run("estimate", str(path), "--format", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["family"] == "newarch"
    assert data["params"] == spec_from_config({"model_type": "llama", **LLAMA_SHAPED}, "l", "c").params
    assert any("standard config keys" in n for n in data["details"]["notes"])


def test_cli_refusal_is_one_line_exit_1(tmp_path, no_torch):
    path = write_config(tmp_path / "m", {"model_type": "mytoy", "hidden_size": 64, "num_hidden_layers": 2})
    r = run("estimate", str(path))
    assert r.exit_code == 1, r.output
    lines = [l for l in r.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in r.output
    assert "lacks the standard keys num_attention_heads, vocab_size, intermediate_size" in lines[0]
