"""tools/catalog_entry.py (issue 16, item 5) on a copy of the catalog folder: the repository is not touched."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from conftest import ROOT

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

MODELS = ROOT / "sizer" / "data" / "models"
spec = importlib.util.spec_from_file_location("catalog_entry", ROOT / "tools" / "catalog_entry.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def data(tmp_path):
    """A copy of the catalog folder (entries and NEW_MODELS.md)."""
    folder = tmp_path / "models"
    shutil.copytree(MODELS, folder)
    return folder


@pytest.fixture
def small_data(tmp_path):
    """Three entries and NEW_MODELS.md: enough for --check, quick to recount."""
    folder = tmp_path / "few"
    folder.mkdir()
    for name in ("qwen3-0.6b.json", "mixtral-8x7b-v0.1.json", "gemma-3-4b-it.json", "NEW_MODELS.md"):
        shutil.copy(MODELS / name, folder / name)
    return folder


def write(tmp_path, config: dict, name: str = "config.json"):
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


def meta_count(config: dict) -> int:
    import torch

    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**config))
    return sum(p.numel() for p in model.parameters())


def add(data, config_path, *extra):
    return tool.main([str(config_path), "--data-dir", str(data), "--name", "Tiny-Llama-Test", "--hf-id",
                      "example/Tiny-Llama-Test", "--source", "https://example.org/config.json @abc123",
                      "--released", "2025-01-02", "--released-source", "test announcement", *extra])


TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 4,
        "num_attention_heads": 8, "num_key_value_heads": 2, "intermediate_size": 704, "vocab_size": 3000,
        "max_position_embeddings": 4096, "tie_word_embeddings": True}


def test_adds_an_entry_in_the_catalog_format(data, tmp_path, capsys):
    assert add(data, write(tmp_path, TINY), "--alias", "tiny-llama-test", "--published", "2M (test)") == 0
    entry = json.loads((data / "tiny-llama-test.json").read_text())
    existing = json.loads((data / "qwen3-8b.json").read_text())
    assert list(entry) == list(existing)    # name, hf_id, aliases, source, published_params, released(_source), params, ...
    assert (entry["released"], entry["released_source"]) == ("2025-01-02", "test announcement")
    assert entry["params"] == meta_count(TINY)
    assert entry["config"] == TINY and entry["aliases"] == ["tiny-llama-test"]
    assert f"transformers {transformers.__version__} LlamaForCausalLM on the meta device" in entry["source"]
    assert entry["source"].startswith("https://example.org/config.json @abc123; ")
    rows = [l for l in (data / "NEW_MODELS.md").read_text().splitlines() if l.startswith("| Tiny-Llama-Test |")]
    assert rows == [f"| Tiny-Llama-Test | example/Tiny-Llama-Test | {entry['params']:,} | 2M (test) | yes | "
                    "verbatim copy |  |"]
    assert "= sizer" in capsys.readouterr().out
    assert (MODELS / "tiny-llama-test.json").exists() is False


def test_the_entry_keeps_the_config_file_verbatim(data, tmp_path):
    """transformers standardizes rope_scaling in the dict it is given (adds rope_theta, rope_type): the
    entry must hold the file as published, not what transformers made of it."""
    config = {**TINY, "rope_theta": 500000.0, "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
    path = write(tmp_path, config)
    assert add(data, path) == 0
    entry = json.loads((data / "tiny-llama-test.json").read_text())
    assert entry["config"] == json.loads(path.read_text()) == config


def test_shipped_entries_hold_no_rope_keys_transformers_added():
    """No rope_scaling with a rope_theta copied in from the top level (what the tool once wrote)."""
    for path in sorted(MODELS.glob("*.json")):
        config = json.loads(path.read_text())["config"]
        for part in (config, config.get("text_config") or {}):
            scaling = part.get("rope_scaling")
            assert not (isinstance(scaling, dict) and "rope_theta" in scaling and "rope_theta" in part), path.name


def test_refresh_needs_force_and_updates_the_row(data, tmp_path, capsys):
    path = write(tmp_path, TINY)
    assert add(data, path) == 0
    assert add(data, path) == 1
    assert "an entry exists (use --force to refresh it)" in capsys.readouterr().err
    bigger = {**TINY, "num_hidden_layers": 6}
    assert add(data, write(tmp_path, bigger, "bigger.json"), "--force") == 0
    table = (data / "NEW_MODELS.md").read_text()
    assert table.count("| Tiny-Llama-Test |") == 1
    assert f"| {meta_count(bigger):,} |" in table
    assert json.loads((data / "tiny-llama-test.json").read_text())["params"] == meta_count(bigger)


def test_refresh_of_an_existing_entry_keeps_its_file(data, capsys):
    before = len(list(data.glob("*.json")))
    config = write(data.parent, json.loads((data / "qwen3-8b.json").read_text())["config"])
    assert tool.main([str(config), "--data-dir", str(data), "--name", "Qwen3-8B", "--hf-id", "Qwen/Qwen3-8B",
                      "--source", "test", "--force"]) == 0
    assert len(list(data.glob("*.json"))) == before
    entry = json.loads((data / "qwen3-8b.json").read_text())
    assert entry["params"] == 8_190_735_360 and entry["aliases"] == ["qwen3-8b", "qwen-3-8b"]
    assert entry["released"] == "2025-04-29" and "Qwen3" in entry["released_source"]     # kept on refresh
    assert (data / "NEW_MODELS.md").read_text().count("| Qwen3-8B |") == 1


def test_refuses_when_sizer_and_transformers_differ(data, tmp_path, capsys):
    """MPT: transformers' MptMLP ignores expansion_ratio (see PARAM_DISAGREEMENTS in test_against_transformers)."""
    config = json.loads((data / "mpt-7b.json").read_text())["config"]
    config = {**config, "expansion_ratio": 3}
    table = (data / "NEW_MODELS.md").read_text()
    assert tool.main([str(write(tmp_path, config)), "--data-dir", str(data), "--name", "mpt-test", "--hf-id",
                      "x/mpt-test", "--source", "test", "--released", "2023-05", "--released-source", "test"]) == 1
    err = capsys.readouterr().err
    counted = meta_count({k: v for k, v in config.items() if k != "auto_map"})
    assert f"counts {counted:,} parameters, sizer " in err and err.count("\n") == 1
    assert not (data / "mpt-test.json").exists() and (data / "NEW_MODELS.md").read_text() == table


def test_a_family_sizer_does_not_model(data, tmp_path):
    config = transformers.AutoConfig.for_model("stablelm", hidden_size=128, num_hidden_layers=2,
                                               num_attention_heads=4, intermediate_size=256,
                                               vocab_size=500).to_dict()
    assert tool.main([str(write(tmp_path, config)), "--data-dir", str(data), "--name", "StableLM-Tiny",
                      "--hf-id", "x/StableLM-Tiny", "--source", "test",
                      "--released", "2024-01", "--released-source", "test"]) == 0
    entry = json.loads((data / "stablelm-tiny.json").read_text())
    assert entry["params"] == meta_count(config)
    assert "family not modelled" in (data / "NEW_MODELS.md").read_text()


def test_refuses_an_alias_of_another_entry(data, tmp_path, capsys):
    assert add(data, write(tmp_path, TINY), "--alias", "llama3-70b") == 1
    assert "llama3-70b already names 'Meta-Llama-3-70B'" in capsys.readouterr().err
    assert not (data / "tiny-llama-test.json").exists()


def test_missing_arguments_are_a_usage_error(data, tmp_path):
    with pytest.raises(SystemExit) as e:
        tool.main([str(write(tmp_path, TINY)), "--data-dir", str(data), "--name", "x"])
    assert e.value.code == 2


def test_check_passes_and_finds_a_wrong_count(small_data, capsys):
    assert tool.main(["--check", "--data-dir", str(small_data)]) == 0
    assert "3 of 3 entries agree" in capsys.readouterr().out
    path = small_data / "qwen3-0.6b.json"
    entry = json.loads(path.read_text())
    path.write_text(json.dumps({**entry, "params": entry["params"] + 1}, indent=1))
    assert tool.main(["--check", "--data-dir", str(small_data)]) == 1
    out = capsys.readouterr().out
    assert f"recorded {entry['params'] + 1:,}" in out and f"sizer {entry['params']:,}" in out
    assert "2 of 3 entries agree" in out


@pytest.mark.parametrize("extra, needle", [
    ((), "no release date"),
    (("--released", "2025-4"), "expected YYYY-MM-DD or YYYY-MM"),
    (("--released", "2025-13"), "month must be in 1..12"),
    (("--released", "2025-02-30"), "day is out of range"),
    (("--released", "2025-02"), "has no released_source"),
])
def test_a_new_entry_needs_a_valid_release_date_and_its_source(data, tmp_path, capsys, extra, needle):
    path = write(tmp_path, TINY)
    assert tool.main([str(path), "--data-dir", str(data), "--name", "Tiny-Llama-Test", "--hf-id", "x/t",
                      "--source", "test", *extra]) == 1
    assert needle in capsys.readouterr().err
    assert not (data / "tiny-llama-test.json").exists()


def test_check_reports_an_entry_without_a_release_date(data, capsys):
    entry = json.loads((data / "qwen3-8b.json").read_text())
    del entry["released"]
    (data / "qwen3-8b.json").write_text(json.dumps(entry))
    for other in data.glob("*.json"):          # keep the check to the one entry: the others recount slowly
        if other.name != "qwen3-8b.json":
            other.unlink()
    assert tool.main(["--check", "--data-dir", str(data)]) == 1
    assert "qwen3-8b.json: Qwen3-8B: no release date" in capsys.readouterr().out
