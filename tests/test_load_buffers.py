"""What vLLM and SGLang allocate while loading besides the weights (sizer.plan.load_buffers), in exact
bytes from the shapes the engines' source gives each buffer, and the logged weights it explains."""

import json
from pathlib import Path

import pytest

from sizer.check.compare import check_log
from sizer.check.logs import read_engine_log, read_engine_log_file
from sizer.inputs.resolve import get_model
from sizer.plan.engines import VllmEngine, SglangEngine
from sizer.plan.load_buffers import (LoraSlots, lora_layer_elements, lora_slot_bytes, lora_slots, lora_vocab_elements,
                                     rope_cache_bytes, vllm_rope_cache_bytes)
from sizer.plan.placement import Placement
from sizer.plan.sglang import sglang_release
from sizer.plan.stages import build_stages
from sizer.plan.vllm_releases import V0_ENGINE_OF_V1_RELEASES, bitsandbytes_format, release_for
from sizer.quant import get_precision

LOGS = Path(__file__).parent / "data" / "engine_logs"
CONFIGS = LOGS / "configs"


def stage(model, tp=1):
    return build_stages(get_model(model), get_precision("bf16"), Placement(tp, 1), "bf16")[0]


# --- the RoPE cos/sin table: max_position_embeddings x rotary_dim, one per model


def test_rope_table_llama_3_1_8b():
    """131,072 positions x 128 rotary dims (cos and sin halves), bf16 in vLLM, float32 in SGLang 0.4.2+."""
    spec = get_model("llama-3.1-8b")
    assert rope_cache_bytes(spec, 2) == 131072 * 128 * 2 == 32 * 2**20
    assert rope_cache_bytes(spec, 4) == 131072 * 128 * 4


def test_vllm_mrope_table_has_four_times_the_positions():
    """vLLM's MRotaryEmbedding builds its table over 4 x max_position_embeddings (mrope.py@0.11.0:241):
    Qwen3-VL-30B-A3B's 262,144 positions x 128 rotary dims in bf16 are 256 MiB, not 64 MiB; a text model
    (no mrope_section) keeps its one table."""
    spec = get_model(str(CONFIGS / "Qwen--Qwen3-VL-30B-A3B-Instruct.json"))
    assert spec.mrope
    assert vllm_rope_cache_bytes(spec, 2) == 4 * 262144 * 128 * 2 == 256 * 2**20
    assert rope_cache_bytes(spec, 2) == 64 * 2**20
    qwen25 = get_model(str(CONFIGS / "Qwen--Qwen2.5-VL-7B-Instruct.json"))
    assert vllm_rope_cache_bytes(qwen25, 2) == 4 * 128000 * 128 * 2
    text = get_model("llama-3.1-8b")
    assert not text.mrope and vllm_rope_cache_bytes(text, 2) == rope_cache_bytes(text, 2)


def test_rope_table_partial_rotary():
    """phi-1.5 rotates 32 of its 64 head dims (partial_rotary_factor 0.5) over 2,048 positions."""
    spec = get_model(str(CONFIGS / "microsoft--phi-1_5.json"))
    assert rope_cache_bytes(spec, 2) == 2048 * 32 * 2


def test_engines_charge_the_table_in_their_dtype():
    s = stage("llama-3.1-8b")
    assert VllmEngine(release=release_for("0.10.2")).load_buffers_bytes(s, 2) == 131072 * 128 * 2
    assert SglangEngine(release=sglang_release("0.4.9")).load_buffers_bytes(s, 2) == 131072 * 128 * 4
    # SGLang 0.4.1's models imported vLLM's get_rope: the model dtype
    assert SglangEngine(release=sglang_release("0.4.1")).load_buffers_bytes(s, 2) == 131072 * 128 * 2


# --- LoRA slots: A [max_loras, 1, rank, in] and B [max_loras, 1, out, rank] per packed slice


def test_lora_layer_llama_3_2_3b_rank_64():
    """Llama-3.2-3B (hidden 3072, q 24 x 128, kv 8 x 128, MLP 8192): qkv in 3 slices, gate_up in 2."""
    r = 64
    a = 3 * r * 3072 + r * 3072 + 2 * r * 3072 + r * 8192          # qkv, o_proj, gate_up, down_proj
    b = (3072 + 1024 + 1024) * r + 3072 * r + 2 * 8192 * r + 3072 * r
    assert lora_layer_elements(stage("Llama-3.2-3B").rank_spec, r) == a + b


def test_lora_layer_split_over_tp():
    """At TP 2 the column-parallel B and the row-parallel A hold half; A of qkv/gate_up and B of o/down stay whole."""
    r = 16
    a = 3 * r * 4096 + r * 4096 // 2 + 2 * r * 4096 + r * 14336 // 2
    b = (4096 + 1024 + 1024) // 2 * r + 4096 * r + 2 * 14336 // 2 * r + 4096 * r
    assert lora_layer_elements(stage("llama-3.1-8b", tp=2).rank_spec, r) == a + b


def test_lora_layer_phi3_packs_one_slice():
    """vLLM's Phi3ForCausalLM maps qkv_proj and gate_up_proj to themselves: one A each."""
    r = 16
    a = r * 5120 + r * 5120 + r * 5120 + r * 17920
    b = (5120 + 2 * 1280) * r + 5120 * r + 2 * 17920 * r + 5120 * r
    assert lora_layer_elements(stage("phi-4").rank_spec, r) == a + b


def test_lora_vocabulary_slots_llama_tied():
    """Llama lists embedding_modules: the embedding's slots (extra rows, A over vocab + 256, B) and
    256 extra rows of its own; the logits processor's A, B over the vocabulary padded to 256, extra rows."""
    spec, r = get_model("Llama-3.2-3B"), 64
    embedding = 256 * 3072 + (128256 + 256) * r + 3072 * r + 256 * 3072
    logits = r * 3072 + 128512 * r + 256 * 3072
    assert lora_vocab_elements(spec, LoraSlots(r), True, True) == embedding + logits
    assert lora_vocab_elements(spec, LoraSlots(r), True, False) == embedding


def test_lora_vocabulary_untied_lm_head_grows():
    """An untied lm_head (ParallelLMHead, org vocab padded to 256) gains the 256 extra rows too."""
    spec, r = get_model("phi-4"), 16
    logits = r * 5120 + 100608 * r + 256 * 5120 + 256 * 5120
    assert lora_vocab_elements(spec, LoraSlots(r), False, True) == logits


def test_qwen_has_no_vocabulary_slots():
    assert lora_vocab_elements(get_model(str(CONFIGS / "Qwen--Qwen2.5-3B-Instruct.json")), LoraSlots(64), True, True) == 0


def test_lora_slot_bytes_whole_model():
    s = stage("Llama-3.2-3B")
    per_layer = lora_layer_elements(s.rank_spec, 64)
    vocab = lora_vocab_elements(s.rank_spec, LoraSlots(64), True, True)
    assert lora_slot_bytes(s.rank_spec, 28, True, True, LoraSlots(64), 2) == (28 * per_layer + vocab) * 2
    # two slots: every buffer twice, the embedding's own extra rows too (lora_extra_vocab_size x max_loras)
    assert lora_slot_bytes(s.rank_spec, 28, True, True, LoraSlots(64, max_loras=2), 2) == (56 * per_layer + 2 * vocab) * 2


def test_lora_slots_default_to_vllms():
    assert lora_slots({}) == LoraSlots(16, 1) and lora_slots({"max_lora_rank": 64, "max_loras": 2}) == LoraSlots(64, 2)


def test_lora_slots_in_the_weights_from_0_8():
    """0.7's V0 model runner makes the LoRA manager after the weights' profiler, 0.8's (V0 and V1) inside it."""
    s, lora = stage("Llama-3.2-3B"), LoraSlots(64)
    rope = 131072 * 128 * 2
    slots = lora_slot_bytes(s.rank_spec, 28, True, True, lora, 2)
    assert VllmEngine(release=release_for("0.7.3"), lora=lora).load_buffers_bytes(s, 2) == rope
    assert VllmEngine(release=V0_ENGINE_OF_V1_RELEASES, lora=lora).load_buffers_bytes(s, 2) == rope + slots
    assert VllmEngine(release=release_for("0.8.5"), lora=lora).load_buffers_bytes(s, 2) == rope + slots
    assert VllmEngine(release=release_for("0.8.5")).load_buffers_bytes(s, 2) == rope


# --- bitsandbytes as vLLM's loader leaves it


@pytest.mark.parametrize("version, stored, expected", [
    ((0, 7, 1), None, "nf4-dq"),                # quantize_4bit(compress_statistics=True, quant_type="nf4")
    ((0, 8, 2), ("fp4", False), "fp4"),         # a checkpoint quantized ahead: as stored
    ((0, 7, 3), ("nf4", True), "nf4-dq"),
    ((0, 10, 0), ("nf4", True), "nf4"),         # _dequantize_dq: the nested absmax back to float32
    ((0, 10, 0), None, "nf4"),
    ((0, 27, 1), ("nf4", True), "nf4"),
])
def test_bitsandbytes_format(version, stored, expected):
    assert bitsandbytes_format(version, stored) == expected


def test_bnb_kept_modules_stay_16bit():
    """Unsloth's dynamic checkpoints keep whole decoder MLPs 16-bit (llm_int8_skip_modules 'model.layers.2.mlp')."""
    spec = get_model(str(CONFIGS / "Qwen--Qwen2.5-3B-Instruct.json"))
    gate = next(t for t in spec.tensors if t.name == "layers.mlp.gate_proj.weight")
    plain = get_precision("nf4-dq")
    kept = type(plain)("nf4-dq", "nf4", True, ("model.layers.2.mlp", "model.layers.30.mlp", "lm_head"))
    assert kept.kept_copies(gate) == 2
    n = 11008 * 2048
    assert kept.tensor_bytes(gate, spec) == 34 * plain.quantized_bytes(n) + 2 * n * 2
    q = next(t for t in spec.tensors if t.name == "layers.self_attn.q_proj.weight")
    assert kept.tensor_bytes(q, spec) == plain.tensor_bytes(q, spec)


# --- the log lines that state LoRA and bitsandbytes settings


def test_punica_line_means_lora():
    log = read_engine_log("INFO 03-21 09:45:55 [llm_engine.py:241] Initializing a V0 LLM engine (v0.8.1) with config: "
                          "model='m', dtype=torch.bfloat16\n"
                          "INFO 03-21 09:45:59 [punica_selector.py:18] Using PunicaWrapperGPU.\n", "x.log")
    assert log.settings["enable_lora"] is True


def test_unsloth_bitsandbytes_line():
    log = read_engine_log_file(LOGS / "vllm" / "qwen2.5-3b-instruct-bnb4bit-t4-tp1-v0.7.1-lora.log")
    assert (log.settings["bnb_4bit_quant_type"], log.settings["bnb_4bit_use_double_quant"]) == ("nf4", True)
    assert "model.layers.30.mlp" in log.settings["llm_int8_skip_modules"]


# --- the published logs: weights as logged


def _weights_error(case: str, model: str, gpus: str | None = None) -> float:
    """The case's weights error; the LoRA rank from the notebook the JSON quotes, the release from the JSON
    where the log does not print it (SGLang)."""
    meta = json.loads((LOGS / f"{case}.json").read_text())
    launch = {k: meta["settings"][k] for k in ("max_lora_rank", "max_loras") if k in meta["settings"]}
    log = read_engine_log_file(LOGS / f"{case}.log")
    engine = None if log.version else f"{meta['engine']}=={meta['version'].split()[0]}"
    result = check_log(log, model, gpus, engine, settings=launch)
    return next(r.error for r in result.rows if r.component == "weights")


@pytest.mark.parametrize("case, model, gpus, within", [
    ("vllm/llama-3.1-8b-fp16-40gb-gpu-tp1-v0.10.1.1", "llama-3.1-8b", "A100-40GB", 0.0005),     # RoPE table: 32 MiB
    ("vllm/llama-3.2-3b-instruct-t4-tp1-v0.8.2", "Llama-3.2-3B", "T4", 0.0005),
    ("vllm/llama-3.2-1b-gtx1080-tp1-v0.6.4.post1-chunked", "Llama-3.2-1B", None, 0.001),
    ("vllm/llama-3.2-3b-instruct-a100-40gb-tp1-v0.8.1-lora", "Llama-3.2-3B", None, 0.003),  # + LoRA slots, rank 64
    ("vllm/phi-4-bnb4bit-t4-tp1-v0.7.1-lora", "phi-4", None, 0.004),                        # NF4 with double quant
    ("vllm/qwen2.5-3b-instruct-bnb4bit-t4-tp1-v0.7.1-lora", str(CONFIGS / "Qwen--Qwen2.5-3B-Instruct.json"), None,
     0.008),                                                                                # 3 MLPs kept 16-bit
])
def test_weights_as_vllm_logs_them(case, model, gpus, within):
    assert abs(_weights_error(case, model, gpus)) <= within


def test_weights_as_sglang_logs_them():
    """SGLang 0.4.9: mem usage = free before - free after the load, the float32 RoPE table in it."""
    error = _weights_error("sglang/llama-3.1-8b-instruct-24gb-tp1-v0.4.9-approx", "llama-3.1-8b", "24GB")
    assert abs(error) <= 0.001


def test_fit_counts_the_lora_slots_vllm_would():
    """`sizer fit --engine-args "--enable-lora --max-lora-rank 64"`: the plan's weights are what vLLM 0.10.2
    would log, the checkpoint plus the RoPE table and the LoRA slots."""
    from click.testing import CliRunner

    from sizer.cli import cli

    def weights(*extra):
        result = CliRunner().invoke(cli, ["fit", "Llama-3.2-3B", "--gpus", "1xH100", "--engine", "vllm==0.10.2", "-p",
                                          "bf16", "-c", "8192", *extra, "--format", "json"])
        assert result.exit_code == 0, result.output
        values = json.loads(result.stdout)["options"][0]["engine_log"]["values"]
        return values["weights"], values["load_buffers"]

    (plain, rope), (with_lora, buffers) = weights(), weights("--engine-args", "--enable-lora --max-lora-rank 64")
    slots = lora_slot_bytes(stage("Llama-3.2-3B").rank_spec, 28, True, True, LoraSlots(64), 2)
    assert rope == 131072 * 128 * 2 and buffers == rope + slots and with_lora - plain == slots


def test_vocab_on_every_stage():
    """vLLM's Qwen3-MoE builds embed_tokens and lm_head with no pipeline-rank guard: at TP4 x PP2 each
    stage holds a quarter of both (151,936 x 2,048 in bf16 each)."""
    spec = get_model(str(CONFIGS / "Qwen--Qwen3-30B-A3B-Instruct-2507.json"))
    bf16 = get_precision("bf16")
    quarter = 151936 * 2048 * 2 // 4
    apart = build_stages(spec, bf16, Placement(4, 2), "bf16")
    everywhere = build_stages(spec, bf16, Placement(4, 2), "bf16", vocab_everywhere=True)
    assert [e.weights_bytes - a.weights_bytes for a, e in zip(apart, everywhere)] == [quarter, quarter]
    assert "qwen3_moe" in VllmEngine().vocab_on_every_stage and "llama" not in VllmEngine().vocab_on_every_stage


def test_weights_pipeline_stages_as_vllm_logs_them():
    """The GH200 TP4 x PP2 log: 7.3272 GiB on every worker, both stages holding embedding and lm_head."""
    error = _weights_error("vllm/qwen3-30b-a3b-gh200-tp4-pp2-v0.10.1.2",
                           str(CONFIGS / "Qwen--Qwen3-30B-A3B-Instruct-2507.json"), "96GB")
    assert abs(error) <= 0.001


def test_lora_layer_moe_router_but_no_experts():
    """Qwen3-30B-A3B: the router (ReplicatedLinear, 128 outputs) is a LinearBase and gets slots; FusedMoE does not."""
    r = 16
    spec = get_model(str(CONFIGS / "Qwen--Qwen3-30B-A3B-Instruct-2507.json"))
    a = 3 * r * 2048 + r * 4096 + r * 2048                        # qkv, o_proj, gate (router)
    b = (4096 + 512 + 512) * r + 2048 * r + 128 * r
    assert lora_layer_elements(spec, r) == a + b


def test_check_cli_takes_the_lora_rank_the_log_does_not_print():
    from click.testing import CliRunner

    from sizer.cli import cli

    log = str(LOGS / "vllm" / "llama-3.2-3b-instruct-a100-40gb-tp1-v0.8.1-lora.log")

    def weights(*extra):
        result = CliRunner().invoke(cli, ["check", log, "--model", "Llama-3.2-3B", *extra, "--format", "json"])
        assert result.exit_code == 0, result.output
        return next(r["predicted"] for r in json.loads(result.stdout)["components"] if r["component"] == "weights")

    s = stage("Llama-3.2-3B")
    rank_16 = lora_slot_bytes(s.rank_spec, 28, True, True, LoraSlots(16), 2)       # vLLM's default rank
    rank_64 = lora_slot_bytes(s.rank_spec, 28, True, True, LoraSlots(64), 2)
    assert weights("--engine-args", "--max-lora-rank 64") - weights() == rank_64 - rank_16
