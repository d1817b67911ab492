"""Ollama and LM Studio profiles (sizer.plan.ollama, lmstudio, profiles) and Ollama tags as model names."""

import json

import pytest
from click.testing import CliRunner

from sizer.cli import cli
from sizer.errors import UsageError
from sizer.inputs.ollama_tags import resolve_tag, tag_for
from sizer.inputs.resolve import get_model
from sizer.plan.engines import parse_engine
from sizer.plan.fit import fit
from sizer.plan.lmstudio import parse_settings
from sizer.plan.ollama import (OllamaKnobs, default_num_ctx, gguf_architecture, ollama_release, ollama_settings,
                               parse_knobs)
from sizer.units import GiB


# --- defaults per release, as read from Ollama's source (docs/reference/ollama.md) ---------------

@pytest.mark.parametrize("version,num_ctx", [
    ("0.1.48", 2048),      # api/types.go DefaultOptions NumCtx: 2048
    ("0.5.13", 2048),      # envconfig ContextLength default 2048
    ("0.6.7", 4096),       # 44b466eeb: 4096
    ("0.15.4", 4096),
])
def test_fixed_num_ctx_by_release(version, num_ctx):
    assert default_num_ctx(ollama_release(version), 8 * GiB) == num_ctx


@pytest.mark.parametrize("vram_gib,num_ctx", [(8, 4096), (22.9, 4096), (23, 32768), (24, 32768), (46.9, 32768),
                                               (47, 262144), (80, 262144)])
def test_vram_tiers_from_0_15_5(vram_gib, num_ctx):
    # server/routes.go@v0.15.5: >= 47 GiB -> 262144, >= 23 GiB -> 32768, else 4096
    assert default_num_ctx(ollama_release("0.15.5"), int(vram_gib * GiB)) == num_ctx


@pytest.mark.parametrize("version,parallel,note", [
    ("0.1.48", 1, False), ("0.2.0", 4, True), ("0.6.6", 4, True), ("0.6.7", 2, True), ("0.9.6", 2, True),
    ("0.10.0", 1, False), ("0.33.0", 1, False)])
def test_parallel_defaults(version, parallel, note):
    s = ollama_settings(ollama_release(version), OllamaKnobs(), "llama", 131072, 8 * GiB)
    assert s.parallel == parallel
    assert s.n_ctx == s.num_ctx * parallel
    assert any("falls back to 1" in n for n in s.notes) == note


@pytest.mark.parametrize("version,family,fa", [
    ("0.11.7", "gpt_oss", False),   # no per-model default yet
    ("0.11.8", "gpt_oss", True),    # fs/ggml FlashAttention(): gptoss
    ("0.11.8", "qwen3", False),
    ("0.12.4", "qwen3_moe", True),  # gptoss, qwen3, qwen3moe
    ("0.12.4", "gemma3_text", False),
    ("0.15.5", "gemma3_text", True),
    ("0.15.5", "llama", False),
    ("0.30.0", "llama", True),      # llama-server --flash-attn auto
])
def test_flash_attention_defaults(version, family, fa):
    assert ollama_settings(ollama_release(version), OllamaKnobs(), family, 131072, 8 * GiB).flash_attention is fa


def test_flash_attention_forced_for_gpt_oss_before_0_12_4_and_overridable_after():
    off = OllamaKnobs(flash_attention=False)
    assert ollama_settings(ollama_release("0.12.3"), off, "gpt_oss", 131072, 8 * GiB).flash_attention is True
    assert ollama_settings(ollama_release("0.12.4"), off, "gpt_oss", 131072, 8 * GiB).flash_attention is False


def test_flash_attention_needs_a_capable_gpu():
    s = ollama_settings(ollama_release("0.12.4"), OllamaKnobs(), "gpt_oss", 131072, 8 * GiB, gpu_flash_attention=False)
    assert s.flash_attention is False


def test_kv_cache_type_needs_flash_attention_before_0_30():
    q8 = OllamaKnobs(kv_cache_type="q8_0")
    assert ollama_settings(ollama_release("0.9.6"), q8, "llama", 131072, 8 * GiB).kv_dtype == "fp16"
    fa_q8 = OllamaKnobs(kv_cache_type="q8_0", flash_attention=True)
    assert ollama_settings(ollama_release("0.9.6"), fa_q8, "llama", 131072, 8 * GiB).kv_dtype == "q8_0"
    assert ollama_settings(ollama_release("0.4.7"), fa_q8, "llama", 131072, 8 * GiB).kv_dtype == "fp16"   # not read
    assert ollama_settings(ollama_release("0.33.0"), q8, "llama", 131072, 8 * GiB).kv_dtype == "q8_0"


def test_gpt_oss_8k_unless_low_vram():
    rel = ollama_release("0.12.4")
    assert ollama_settings(rel, OllamaKnobs(), "gpt_oss", 131072, 24 * GiB).num_ctx == 8192
    assert ollama_settings(rel, OllamaKnobs(), "gpt_oss", 131072, 16 * GiB).num_ctx == 4096


def test_num_ctx_cut_to_trained_context():
    s = ollama_settings(ollama_release("0.33.0"), OllamaKnobs(), "qwen3", 40960, 80 * GiB)
    assert s.num_ctx == 40960


def test_context_length_env_needs_0_5_13():
    with pytest.raises(UsageError, match="0.5.13"):
        ollama_settings(ollama_release("0.5.12"), OllamaKnobs(context_length=8192), "llama", 131072, 8 * GiB)
    assert ollama_settings(ollama_release("0.5.13"), OllamaKnobs(context_length=8192), "llama", 131072,
                           8 * GiB).num_ctx == 8192


@pytest.mark.parametrize("family,arch", [("gpt_oss", "gptoss"), ("qwen3_moe", "qwen3moe"), ("gemma3_text", "gemma3"),
                                         ("llama", "llama")])
def test_gguf_architecture(family, arch):
    assert gguf_architecture(family) == arch


def test_release_ranges():
    assert parse_engine("ollama").version == "0.33.0"
    assert parse_engine("ollama==0.6.8").version == "0.6.8"
    for bad in ("ollama==0.1.2", "ollama==0.40.0", "ollama==x", "lmstudio==0.3.20"):
        with pytest.raises(UsageError):
            parse_engine(bad)


# --- knobs --------------------------------------------------------------------------------------

def test_parse_knobs():
    k = parse_knobs("num_ctx=8192 num_gpu=20 OLLAMA_NUM_PARALLEL=2 OLLAMA_FLASH_ATTENTION=1 OLLAMA_KV_CACHE_TYPE=q8_0")
    assert (k.num_ctx, k.num_gpu, k.parallel, k.flash_attention, k.kv_cache_type) == (8192, 20, 2, True, "q8_0")
    m = parse_knobs("PARAMETER num_ctx 16384\n/set parameter num_batch 256")
    assert (m.num_ctx, m.num_batch) == (16384, 256)


@pytest.mark.parametrize("text", ["num_ctx=big", "OLLAMA_KV_CACHE_TYPE=q5_1", "temperature=0.7", "-c 8192",
                                  "OLLAMA_FLASH_ATTENTION=maybe"])
def test_parse_knobs_refuses(text):
    with pytest.raises(UsageError):
        parse_knobs(text)


def test_lmstudio_settings():
    assert parse_settings(None).context_length == 4096
    s = parse_settings("--context-length 8192 --gpu max flash_attention=on kv_cache_type=q8_0")
    assert (s.context_length, s.gpu, s.flash_attention, s.kv_dtype) == (8192, "max", True, "q8_0")
    for bad in ("gpu=2", "kv_cache_type=q5_1", "n_threads=4"):
        with pytest.raises(UsageError):
            parse_settings(bad)


# --- tags ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("tag,model,quant", [
    ("llama3:8b", "llama-3-8b", "Q4_0"),
    ("llama3", "llama-3-8b", "Q4_0"),
    ("llama3:latest", "llama-3-8b", "Q4_0"),
    ("llama3.1:8b", "llama-3.1-8b", "Q4_K_M"),
    ("llama3.1:70b", "llama-3.1-70b-instruct", "Q4_K_M"),
    ("llama3.1:8b-instruct-fp16", "llama-3.1-8b", "fp16"),
    ("llama3.1:8b-instruct-q8_0", "llama-3.1-8b", "Q8_0"),
    ("llama3.1:8b-text-q5_K_M", "llama-3.1-8b", "Q5_K_M"),
    ("gemma2:9b", "gemma-2-9b", "Q4_0"),
    ("phi3:mini", "phi-3-mini-4k", "Q4_0"),
    ("deepseek-r1:7b", "qwen2.5-7b", "Q4_K_M"),
    ("gpt-oss:20b", "gpt-oss-20b", "mxfp4"),
    ("qwen3:30b-a3b", "qwen3-30b-a3b", "Q4_K_M"),
    ("qwen3", "qwen3-8b", "Q4_K_M"),
    ("ollama.com/library/qwen3:14b", "qwen3-14b", "Q4_K_M"),
])
def test_resolve_tag(tag, model, quant):
    t = resolve_tag(tag)
    assert (t.model, t.quant) == (model, quant)


def test_tag_as_model_name():
    spec = get_model("llama3.1:8b-instruct-q8_0")
    assert spec.name == get_model("llama-3.1-8b").name
    assert (spec.native_precision, spec.ollama_tag) == ("Q8_0", "llama3.1:8b-instruct-q8_0")


def test_distill_shapes_match_the_catalog_entry():
    """deepseek-r1:7b is planned as qwen2.5-7b because DeepSeek-R1-Distill-Qwen-7B has its shapes."""
    spec = get_model("deepseek-r1:7b")
    assert (spec.hidden_size, spec.n_layers, spec.n_kv_heads, spec.vocab_size) == (3584, 28, 4, 152064)


@pytest.mark.parametrize("tag,words", [("mistral:7b-instruct-q4_K_M", "32768"), ("qwen2.5:14b", "no catalog entry")])
def test_unmapped_tags_say_why(tag, words):
    with pytest.raises(UsageError, match=words):
        resolve_tag(tag)


def test_unknown_tag_lists_close_matches():
    with pytest.raises(UsageError, match=r"unknown Ollama tag 'qwen3:9b' \(close: .*qwen3:8b"):
        resolve_tag("qwen3:9b")


def test_tag_table_entries_resolve_to_catalog_models():
    from importlib import resources

    from sizer.catalog import get_catalog_model

    table = json.loads(resources.files("sizer.data").joinpath("ollama_tags.json").read_text())
    for tag, entry in table["tags"].items():
        assert get_catalog_model(entry["model"]).name
        assert entry["source"].startswith("https://ollama.com/library/")
    for alias, target in table["aliases"].items():
        assert target in table["tags"], alias


def test_tag_for():
    assert tag_for("llama-3.1-8b", "Q4_K_M") == "llama3.1:8b"
    assert tag_for("llama-3.1-8b", "Q8_0") == "llama3.1:8b-q8_0"
    assert tag_for("mistral-7b-v0.1", "Q4_0") is None


# --- fit and the CLI ----------------------------------------------------------------------------

def test_fit_with_ollama_defaults():
    r = fit("llama3.1:8b", "RTX-4060", "ollama")
    assert r.engine == "ollama" and r.context_length == 4096 and r.batch_size == 1
    assert [o.precision for o in r.options] == ["Q4_K_M"]
    old = fit("llama3.1:8b", "RTX-4060", "ollama==0.6.6")
    assert (old.context_length, old.batch_size) == (2048, 4)        # 2048 x the 4 slots Ollama tries first
    assert old.kv_dtype == "fp16"


def test_fit_ollama_knobs_change_the_plan():
    base = fit("llama3.1:8b", "1xRTX-4060", "ollama")
    q8 = fit("llama3.1:8b", "1xRTX-4060", "ollama", profile_args="OLLAMA_KV_CACHE_TYPE=q8_0 num_ctx=8192")
    assert q8.kv_dtype == "q8_0" and q8.context_length == 8192
    assert q8.options[0].fullest.kv_cache > base.options[0].fullest.kv_cache    # 2 x tokens at ~half the bytes
    with pytest.raises(UsageError, match="contradicts"):
        fit("llama3.1:8b", "1xRTX-4060", "ollama", context_length=4096, profile_args="num_ctx=8192")


def test_cli_end_to_end_and_launch():
    out = CliRunner().invoke(cli, ["fit", "llama3.1:8b", "--engine", "ollama", "--gpus", "RTX-4060", "--engine-args",
                                    "num_ctx=8192 OLLAMA_NUM_PARALLEL=2 OLLAMA_KV_CACHE_TYPE=q8_0 OLLAMA_FLASH_ATTENTION=1"])
    assert out.exit_code == 0, out.output
    assert "OLLAMA_NUM_PARALLEL=2 OLLAMA_FLASH_ATTENTION=1 OLLAMA_KV_CACHE_TYPE=q8_0 ollama serve" in out.output
    assert "FROM llama3.1:8b\\nPARAMETER num_ctx 8192\\nPARAMETER num_gpu 33" in out.output
    assert "n_ctx 16,384 (2 x 8,192)" in out.output


def test_cli_lmstudio():
    out = CliRunner().invoke(cli, ["fit", "qwen3:8b", "--engine", "lmstudio", "--gpus", "RTX-4060"])
    assert out.exit_code == 0, out.output
    assert "lms load" in out.output and "--context-length 4096" in out.output


def _listed_tags():
    from importlib import resources

    table = json.loads(resources.files("sizer.data").joinpath("ollama_tags.json").read_text())
    return [(tag, e) for tag, e in table["tags"].items() if "listed_bytes" in e or "listed_size" in e]


@pytest.mark.parametrize("tag,entry", _listed_tags(), ids=[t for t, _ in _listed_tags()])
def test_tag_quant_matches_the_listed_blob_size(tag, entry):
    """The tag's model at its quantization weighs what Ollama lists (exact /api/tags bytes within 0.5 %: the
    GGUF header and tokenizer; a rounded size within half its last digit and 0.5 %)."""
    from sizer.calc.weights import weight_bytes
    from sizer.quant import get_precision

    t = resolve_tag(tag)
    sized = weight_bytes(get_model(t.model), get_precision(t.quant))
    if "listed_bytes" in entry:
        assert sized == pytest.approx(entry["listed_bytes"], rel=0.005)
    else:
        text = entry["listed_size"].removesuffix("GB")
        half_digit = 0.5 * 10 ** -(len(text.split(".")[1]) if "." in text else 0)
        assert abs(sized / 1e9 - float(text)) <= half_digit + 0.005 * float(text)


@pytest.mark.parametrize("version,family,parallel", [
    ("0.15.4", "qwen3_next", 4), ("0.15.5", "qwen3_next", 1), ("0.17.0", "qwen3_5", 4), ("0.17.1", "qwen3_5", 1),
    ("0.33.0", "nemotron_h", 1), ("0.33.0", "llama", 4)])
def test_single_slot_architectures(version, family, parallel):
    # server/sched.go: architectures "not safe with num_parallel > 1" get 1 (the list grows: v0.15.5, v0.17.1)
    s = ollama_settings(ollama_release(version), OllamaKnobs(parallel=4), family, 131072, 8 * GiB)
    assert s.parallel == parallel


def test_a_tag_without_engine_plans_ollama():
    out = CliRunner().invoke(cli, ["fit", "llama3.1:8b", "--gpus", "RTX-4090", "--format", "json"])
    assert out.exit_code == 0, out.output
    r = json.loads(out.output)
    # a 24 GB card is in Ollama's 23-47 GiB tier: num_ctx 32768 (server/routes.go@v0.15.5)
    assert (r["engine"], r["workload"]["context_length"]) == ("ollama", 32768)
    plain = CliRunner().invoke(cli, ["fit", "llama-3.1-8b", "--gpus", "RTX-4090", "--format", "json"])
    assert json.loads(plain.output)["engine"] == "transformers"
