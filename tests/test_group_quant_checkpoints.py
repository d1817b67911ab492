"""GPTQ and AWQ checkpoints that leave some Linears unquantized (AWQ modules_to_not_convert, GPTQModel `dynamic`,
GPTQConfig modules_in_block_to_quantize) or quantize more (lm_head, MoE routers): their configs read as sizer
precision names matched as vLLM 0.10.2 matches them, and exact bytes from the layouts written out here.
Checkpoint configs and their sources: tests/data/quantized_checkpoints.json, docs/reference/quantized-checkpoints.md
("GPTQ and AWQ checkpoints with unquantized modules")."""

import copy
import json
from math import ceil

import pytest
from click.testing import CliRunner

from sizer.calc.weights import weight_bytes
from sizer.catalog import find_model
from sizer.cli import cli
from sizer.errors import UsageError
from sizer.families import quantization_label, spec_from_config
from sizer.quant import GroupQuantFormat, KeepRule, get_precision
from sizer.spec import LINEAR

from conftest import ROOT

CHECKPOINTS = json.loads((ROOT / "tests" / "data" / "quantized_checkpoints.json").read_text())
GROUP = [c for c in CHECKPOINTS if c["precision_kind"] in ("awq", "gptq")]

# What each checkpoint keeps, read off its config by hand: Mixtral's "gate" is a substring of the router's vLLM
# prefix (model.layers.N.mlp.gate) only, not of the FusedMoE experts' (model.layers.N.mlp.experts); "visual" names
# the vision tower, which sizer sizes in 16-bit apart from the language model (sizer.plan.multimodal).
EXPECTED_LABELS = {
    "TheBloke/mixtral-8x7b-v0.1-AWQ": "awq-4bit-g128",
    "Qwen/Qwen2.5-VL-7B-Instruct-AWQ": "awq-4bit-g128",
}


def base_config(c) -> dict:
    if c.get("base_config"):
        return json.loads((ROOT / c["base_config"]).read_text())
    return copy.deepcopy(find_model(c["base_hf_id"]).config)


def as_config_json(c) -> dict:
    """The quantization_config as config.json carries it: AutoAWQ's quant_config.json has no quant_method."""
    return {"quant_method": "awq", **c["quantization_config"]} if c["quantization_config_file"] == "quant_config.json" \
        else c["quantization_config"]


def spec_of(c, q=None):
    raw = base_config(c)
    raw["quantization_config"] = as_config_json(c) if q is None else q
    return spec_from_config(raw, c["hf_id"], c["hf_id"])


def catalog_spec(name: str):
    entry = find_model(name)
    return spec_from_config(copy.deepcopy(entry.config), entry.name, f"catalog entry {entry.name}")


def awq_linear_bytes(k: int, n: int, bits: int, group: int) -> int:
    """AutoAWQ WQLinear_GEMM: qweight int32 [k, n*bits/32], qzeros int32 [k/group, n*bits/32], scales fp16 [k/group, n]."""
    groups = ceil(k / group)
    return k * (n * bits // 32) * 4 + groups * (n * bits // 32) * 4 + groups * n * 2


def gptq_linear_bytes(k: int, n: int, bits: int, group: int) -> int:
    """GPTQ v1: qweight int32 [k*bits/32, n], qzeros int32 [k/group, n*bits/32], scales fp16 [k/group, n], g_idx int32 [k]."""
    groups = ceil(k / group)
    return (k * bits // 32) * n * 4 + groups * (n * bits // 32) * 4 + groups * n * 2 + k * 4


def test_every_group_checkpoint_has_an_expected_label():
    assert sorted(EXPECTED_LABELS) == sorted(c["hf_id"] for c in GROUP)


@pytest.mark.parametrize("c", GROUP, ids=lambda c: c["hf_id"])
def test_group_configs_read_as_what_they_keep(c):
    spec = spec_of(c)
    assert spec.native_precision == EXPECTED_LABELS[c["hf_id"]]
    assert get_precision(spec.native_precision).name == spec.native_precision


@pytest.mark.parametrize("c", GROUP, ids=lambda c: c["hf_id"])
def test_group_checkpoint_bytes_tensor_by_tensor(c):
    """Decoder Linears (and, where the label says so, routers) at the AWQ layout; everything else 16-bit."""
    spec = spec_of(c)
    fmt = get_precision(spec.native_precision)
    q = as_config_json(c)
    bits, group = q.get("bits", q.get("w_bit")), q.get("group_size", q.get("q_group_size"))
    expected = 0
    for t in spec.tensors:
        quantized = t.kind == LINEAR and (t.component in ("attention", "mlp", "experts", "shared_experts") or
                                          (t.component == "router" and fmt.router))
        one = awq_linear_bytes(t.in_features, t.out_features, bits, group) if quantized else \
            t.n_elements * (4 if t.fp32 else 2)
        expected += one * t.copies
    assert weight_bytes(spec, fmt) == expected


def test_mixtral_awq_without_gate_stores_quantized_routers():
    """AutoAWQ quantizes every nn.Linear of a block not in modules_to_not_convert, the router too: without
    "gate" the 32 routers [8, 4096] are AWQ tensors (the name says -qrouter)."""
    [c] = [c for c in GROUP if c["hf_id"] == "TheBloke/mixtral-8x7b-v0.1-AWQ"]
    kept = spec_of(c)
    q = {**as_config_json(c), "modules_to_not_convert": None}
    label = quantization_label(q, kept)
    assert label == "awq-4bit-g128-qrouter"
    saved = 32 * (8 * 4096 * 2 - awq_linear_bytes(4096, 8, 4, 128))
    assert weight_bytes(kept, get_precision("awq-4bit-g128")) - weight_bytes(kept, get_precision(label)) == saved


# TechxGenus/DeepSeek-Coder-V2-Lite-Base-AWQ config.json before commit 3dc4058 ("Upload config.json", which removed
# the list): quantization_config verbatim from the hub commit page (docs corpus).
DEEPSEEK_CODER_AWQ = {"bits": 4, "group_size": 64, "modules_to_not_convert": ["mlp.gate"], "quant_method": "awq",
                      "version": "gemm", "zero_point": True}


def test_awq_entries_are_substrings_of_vllm_layer_names():
    """vLLM's is_layer_skipped_awq tests `entry in prefix`: "mlp.gate" names the routers and also the dense layers'
    fused gate_up_proj ("model.layers.0.mlp.gate_up_proj"), but not down_proj, the shared experts'
    gate_up_proj ("mlp.shared_experts.gate_up_proj") or the FusedMoE experts. On a DeepSeek-V3-shaped model
    (dense layers 0-2) that keeps gate_proj and up_proj of the dense MLPs in 16-bit."""
    spec = catalog_spec("deepseek-ai/DeepSeek-V3")
    label = quantization_label(DEEPSEEK_CODER_AWQ, spec)
    assert label == "awq-4bit-g64-keep-mlp.gate_proj+mlp.up_proj"
    fmt = get_precision(label)
    assert fmt.keep == (KeepRule("mlp", "gate_proj"), KeepRule("mlp", "up_proj"))
    by_name = {t.name: t for t in spec.tensors}
    gate, down = by_name["layers.mlp.gate_proj.weight"], by_name["layers.mlp.down_proj.weight"]
    assert fmt.tensor_bytes(gate, spec) == 3 * 18432 * 7168 * 2
    assert fmt.tensor_bytes(down, spec) == 3 * awq_linear_bytes(18432, 7168, 4, 64)


# vLLM 0.10.2 gptq.py's own example of GPTQModel's `dynamic` (layers 10-15 8-bit; 16-21 8-bit, group 64)
VLLM_DYNAMIC_EXAMPLE = {r"+:.*\.(?:1[0-5])\..*": {"bits": 8}, r"+:.*\.(?:1[6-9]|20|21)\..*": {"bits": 8, "group_size": 64}}


def test_gptq_dynamic_negative_rules_keep_layers_16bit():
    spec = catalog_spec("Qwen/Qwen3-30B-A3B")
    q = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False,
         "dynamic": {r"-:.*\.(?:1[0-5])\..*": {}, r"-:.*\.mlp\.experts$": {}}}
    assert quantization_label(q, spec) == "gptq-4bit-g128-keep-attention@10-15+experts"
    q["dynamic"] = {r"-:.*self_attn.*": {}}
    fmt = get_precision(quantization_label(q, spec))
    assert fmt == GroupQuantFormat("gptq", 4, 128, keep=(KeepRule("attention"),))
    attention = 48 * (4096 * 2048 + 2 * 512 * 2048 + 2048 * 4096) * 2
    experts = 48 * 128 * (2 * gptq_linear_bytes(2048, 768, 4, 128) + gptq_linear_bytes(768, 2048, 4, 128))
    others = sum(t.params * 2 for t in spec.tensors if t.component not in ("attention", "experts"))
    assert weight_bytes(spec, fmt) == attention + experts + others


def test_gptq_dynamic_first_matching_rule_wins():
    """get_dynamic_override returns at the first rule whose regex matches: a "+:" rule with no new bits before
    a "-:" rule leaves the module quantized."""
    spec = catalog_spec("Qwen/Qwen3-30B-A3B")
    q = {"quant_method": "gptq", "bits": 4, "group_size": 128,
         "dynamic": {r"+:.*\.layers\.1\..*": {"desc_act": True}, r"-:.*\.layers\.1\..*": {}}}
    assert quantization_label(q, spec) == "gptq-4bit-g128"


def test_gptq_dynamic_bit_overrides_are_refused_in_one_line(tmp_path):
    spec = catalog_spec("Qwen/Qwen3-30B-A3B")
    q = {"quant_method": "gptq", "bits": 4, "group_size": 128, "dynamic": VLLM_DYNAMIC_EXAMPLE}
    label = quantization_label(q, spec)
    assert label.startswith("gptq:dynamic rule") and "bits 8" in label
    with pytest.raises(UsageError, match="GPTQ checkpoint not sized"):
        get_precision(label)
    config = copy.deepcopy(find_model("Qwen/Qwen3-30B-A3B").config)
    config["quantization_config"] = q
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = CliRunner().invoke(cli, ["estimate", str(path)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1


def test_gptq_quantized_lm_head():
    """GPTQModel's "lm_head": true: vLLM builds ParallelLMHead with the GPTQ method (lm_head_quantized)."""
    spec = catalog_spec("Qwen/Qwen3-8B")
    q = {"quant_method": "gptq", "bits": 4, "group_size": 128, "lm_head": True}
    label = quantization_label(q, spec)
    assert label == "gptq-4bit-g128-qhead"
    plain = get_precision("gptq-4bit-g128")
    assert weight_bytes(spec, plain) - weight_bytes(spec, get_precision(label)) == \
        151936 * 4096 * 2 - gptq_linear_bytes(4096, 151936, 4, 128)


def test_gptq_modules_in_block_to_quantize_keeps_the_rest():
    """transformers' GPTQConfig: only the listed Linears of each block are quantized."""
    spec = catalog_spec("Qwen/Qwen3-30B-A3B")
    q = {"quant_method": "gptq", "bits": 4, "group_size": 128, "modules_in_block_to_quantize": [
        ["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"], ["self_attn.o_proj"]]}
    assert quantization_label(q, spec) == "gptq-4bit-g128-keep-experts"


def test_gptq_moe_routers_stay_16bit():
    """vLLM 0.10.2 qwen3_moe.py gives the router no quant_config under GPTQ (not AutoRound), and GPTQModel
    leaves it out ("gate:!"): a GPTQ Qwen3-MoE name never says -qrouter."""
    spec = catalog_spec("Qwen/Qwen3-30B-A3B")
    assert quantization_label({"quant_method": "gptq", "bits": 4, "group_size": 128}, spec) == "gptq-4bit-g128"
    fmt = get_precision("gptq-4bit-g128")
    router = next(t for t in spec.tensors if t.component == "router")
    assert fmt.tensor_bytes(router, spec) == router.params * 2


def test_names_round_trip_and_unknown_components_are_refused():
    for name in ("awq-4bit-g128-qrouter", "gptq-4bit-g128-qhead-keep-attention@10-15+experts",
                 "awq-4bit-g64-keep-mlp.gate_proj+mlp.up_proj"):
        assert get_precision(name).name == name
    with pytest.raises(UsageError, match="one of attention"):
        get_precision("awq-4bit-g128-keep-visual")


def test_a_vl_awq_config_json_is_sized_at_its_own_format(tmp_path):
    [c] = [c for c in GROUP if c["hf_id"] == "Qwen/Qwen2.5-VL-7B-Instruct-AWQ"]
    config = base_config(c)
    config["quantization_config"] = c["quantization_config"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = CliRunner().invoke(cli, ["estimate", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["precision"] == "awq-4bit-g128"
