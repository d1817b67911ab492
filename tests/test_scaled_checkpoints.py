"""FBGEMM FP8 and NVIDIA ModelOpt (FP8, NVFP4) checkpoints: their configs read as sizer formats naming what
they keep in 16-bit, and exact bytes against the tensors the loaders create (transformers FbgemmFp8Linear on
the meta device; vLLM 0.10.2 modelopt.py create_weights for ModelOpt, which transformers cannot load).
Checkpoint configs and their sources: tests/data/quantized_checkpoints.json, docs/reference/quantized-checkpoints.md."""

import copy
import json
from math import prod

import pytest
from click.testing import CliRunner

from sizer.calc.weights import weight_bytes
from sizer.catalog import find_model
from sizer.cli import cli
from sizer.errors import UsageError
from sizer.families import quantization_label, spec_from_config
from sizer.quant import FbgemmFp8Format, KeepRule, ModelOptFormat, get_precision
from sizer.spec import LINEAR

from conftest import ROOT

CHECKPOINTS = json.loads((ROOT / "tests" / "data" / "quantized_checkpoints.json").read_text())
MODELOPT = [c for c in CHECKPOINTS if c["precision_kind"].startswith("modelopt")]

# What each official ModelOpt checkpoint keeps in 16-bit, read off its exclude list by hand
# (docs/reference/quantized-checkpoints.md, "What the official ModelOpt checkpoints keep 16-bit").
EXPECTED_LABELS = {
    "nvidia/Llama-3.1-70B-Instruct-FP8": "modelopt-fp8-kv8",                       # lm_head only
    "nvidia/Qwen3-235B-A22B-NVFP4": "modelopt-nvfp4-kv8",                          # lm_head, routers (16-bit anyway)
    "nvidia/DeepSeek-V3.1-NVFP4": "modelopt-nvfp4-kv8-keep-attention.kv_a_proj_with_mqa+attention.kv_b_proj+"
                                  "attention.q_a_proj+attention.q_b_proj",     # MLA projections, not o_proj
    "nvidia/DeepSeek-V3.2-NVFP4": "modelopt-nvfp4-kv8-keep-attention.kv_a_proj_with_mqa+attention.kv_b_proj+"
                                  "attention.q_a_proj+attention.q_b_proj+attention.weights_proj+attention.wk+"
                                  "attention.wq_b",                            # ... and the indexer
    "nvidia/GLM-5-NVFP4": "modelopt-nvfp4-kv8-keep-attention",                     # o_proj too, and the indexer
    "nvidia/Qwen3.5-122B-A10B-NVFP4": "modelopt-nvfp4-kv8-keep-attention+shared_experts",
    "nvidia/Qwen3.5-397B-A17B-NVFP4": "modelopt-nvfp4-kv8-keep-attention+shared_experts",
    "nvidia/MiniMax-M2.5-NVFP4": "modelopt-nvfp4-kv8-keep-attention",
    "nvidia/Gemma-4-26B-A4B-NVFP4": "modelopt-nvfp4-kv8-keep-attention+mlp",       # only the experts are NVFP4
    "nvidia/Kimi-K2.5-NVFP4": "modelopt-nvfp4-kv8-keep-attention",
    # the 6 attention layers (5, 12, 19, 26, 33, 42) and the Mamba layers before them (in_proj, out_proj)
    "nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-NVFP4": "modelopt-nvfp4-kv8-keep-attention@4-5.11-12.18-19.25-26.32-33.41-42",
}


def catalog_spec(hf_id: str):
    entry = find_model(hf_id)
    return spec_from_config(copy.deepcopy(entry.config), entry.name, f"catalog entry {entry.name}")


def test_every_modelopt_checkpoint_has_an_expected_label():
    assert sorted(EXPECTED_LABELS) == sorted(c["hf_id"] for c in MODELOPT)


@pytest.mark.parametrize("c", MODELOPT, ids=lambda c: c["hf_id"])
def test_modelopt_configs_read_as_what_they_keep_in_16bit(c):
    spec = catalog_spec(c["base_hf_id"])
    label = quantization_label(c["quantization_config"], spec)
    assert label == EXPECTED_LABELS[c["hf_id"]]
    assert get_precision(label).name == label                 # -p takes the same name back
    assert quantization_label(c["quantization_config"]) == label.split("-keep-")[0]    # without a model: the method


@pytest.mark.parametrize("c", MODELOPT, ids=lambda c: c["hf_id"])
def test_catalog_names_the_official_modelopt_checkpoint_as_it_stores_it(c):
    entry = find_model(c["base_hf_id"])
    [official] = [q for q in entry.quantized if q["hf_id"] == c["hf_id"]]
    assert official["as"] == EXPECTED_LABELS[c["hf_id"]]
    assert official["precision"] == ("nvfp4" if c["precision_kind"] == "modelopt-nvfp4" else "modelopt-fp8")


def vllm_modelopt_linear_bytes(algo: str, n: int, k: int, group: int = 16) -> int:
    """The bytes of the tensors vLLM 0.10.2 modelopt.py registers for one unfused Linear [n, k]: FP8
    weight float8_e4m3fn [n, k], weight_scale and input_scale float32 [1] (PerTensorScaleParameter of
    len(output_partition_sizes)); NVFP4 weight uint8 [n, k // 2], weight_scale float8_e4m3fn
    [n, k // group], weight_scale_2 and input_scale float32 [1]."""
    if algo == "fp8":
        shapes = {"weight": (1, (n, k)), "weight_scale": (4, (1,)), "input_scale": (4, (1,))}
    else:
        shapes = {"weight": (1, (n, k // 2)), "weight_scale": (1, (n, k // group)), "weight_scale_2": (4, (1,)),
                  "input_scale": (4, (1,))}
    return sum(size * prod(shape) for size, shape in shapes.values())


@pytest.mark.parametrize("c", MODELOPT, ids=lambda c: c["hf_id"])
def test_modelopt_bytes_tensor_by_tensor(c):
    """Every Linear tensor: vLLM's quantized tensors per copy, or 16-bit where the exclude list keeps it;
    every other tensor 16-bit (fp32 where the model keeps it so)."""
    spec = catalog_spec(c["base_hf_id"])
    fmt = get_precision(quantization_label(c["quantization_config"], spec))
    algo = "fp8" if c["precision_kind"] == "modelopt-fp8" else "nvfp4"
    for t in spec.tensors:
        kept = max((r.kept_layers(t) for r in fmt.keep), default=0)
        if t.kind != LINEAR or t.component not in ("attention", "mlp", "experts", "shared_experts"):
            assert fmt.tensor_bytes(t, spec) == t.params * (4 if t.fp32 else 2), t.name
            continue
        n_layers = len(t.layers) if t.layers is not None else 1
        n, k = t.out_features, t.in_features
        fused = "gate_up_proj" in t.name and t.component == "experts"
        one = 2 * vllm_modelopt_linear_bytes(algo, n // 2, k) if fused else vllm_modelopt_linear_bytes(algo, n, k)
        key = t.name.endswith((".k_proj.weight", ".kv_a_proj_with_mqa.weight"))     # k_scale + v_scale
        kv = 2 * 4 * n_layers if key and t.component == "attention" else 0
        assert fmt.tensor_bytes(t, spec) == ((n_layers - kept) * one + kept * n * k * 2) * t.experts + kv, t.name


def test_deepseek_nvfp4_keeps_the_mla_projections_but_not_o_proj():
    spec = catalog_spec("deepseek-ai/DeepSeek-V3.1")
    fmt = get_precision(EXPECTED_LABELS["nvidia/DeepSeek-V3.1-NVFP4"])
    by_name = {t.name: t for t in spec.tensors}
    q_a, o = by_name["layers.self_attn.q_a_proj.weight"], by_name["layers.self_attn.o_proj.weight"]
    kv_a = by_name["layers.self_attn.kv_a_proj_with_mqa.weight"]
    assert fmt.tensor_bytes(q_a, spec) == q_a.params * 2
    assert fmt.tensor_bytes(o, spec) == 61 * vllm_modelopt_linear_bytes("nvfp4", 7168, 16384)
    assert fmt.tensor_bytes(kv_a, spec) == kv_a.params * 2 + 61 * 2 * 4      # bf16, with k_scale and v_scale


def test_nvfp4_layout_of_a_published_checkpoint_header():
    """nvidia/DeepSeek-R1-0528-FP4's safetensors header as listed in a public plugin's notes (code-index id
    31342819827): layer 0's dense down_proj [7168, 18432] is weight U8 [7168, 9216], weight_scale F8_E4M3
    [7168, 1152], weight_scale_2 and input_scale F32 []; gate_proj [18432, 7168] weight U8 [18432, 3584],
    weight_scale [18432, 448]; the attention projections are BF16 and the layer adds k_proj.k_scale and
    v_proj.v_scale, F32 []."""
    fmt = ModelOptFormat("nvfp4", kv_scales=True)
    assert fmt.linear_tensors(7168, 18432) == {"weight": ("U8", (7168, 9216)), "weight_scale": ("F8_E4M3", (7168, 1152)),
                                               "weight_scale_2": ("F32", ()), "input_scale": ("F32", ())}
    assert fmt.linear_tensors(18432, 7168)["weight_scale"] == ("F8_E4M3", (18432, 448))
    assert fmt.linear_bytes(18432, 7168) == 18432 * 3584 + 18432 * 448 + 4 + 4


def test_nvfp4_is_4_5_bits_per_weight_plus_two_scalars():
    fmt = ModelOptFormat("nvfp4")
    assert fmt.linear_bytes(4096, 4096) == 4096 * 4096 * 9 // 16 + 8
    assert ModelOptFormat("fp8").linear_bytes(4096, 4096) == 4096 * 4096 + 8
    assert get_precision("nvfp4") == fmt and get_precision("modelopt-nvfp4-g32-kv8").group == 32
    with pytest.raises(UsageError, match="one of attention"):
        get_precision("modelopt-nvfp4-keep-router")


def test_an_unknown_modelopt_algorithm_is_refused_in_one_line(tmp_path):
    config = copy.deepcopy(find_model("Qwen/Qwen3-32B").config)
    config["quantization_config"] = {"quant_method": "modelopt", "quant_algo": "W4A8_AWQ", "ignore": ["lm_head"]}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = CliRunner().invoke(cli, ["estimate", str(path)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "NVIDIA ModelOpt W4A8_AWQ checkpoint" in result.stderr


@pytest.mark.parametrize("c", [c for c in MODELOPT if "text_config" not in find_model(c["base_hf_id"]).config],
                         ids=lambda c: c["hf_id"])
def test_a_modelopt_config_json_is_sized_at_its_own_format(c, tmp_path):
    config = copy.deepcopy(find_model(c["base_hf_id"]).config)
    config["quantization_config"] = c["quantization_config"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = CliRunner().invoke(cli, ["estimate", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["precision"] == EXPECTED_LABELS[c["hf_id"]]


# ---------------------------------------------------------------------------------------------
# FBGEMM FP8

# Meta's Llama 3.1 405B FP8: lm_head, every attention projection and the MLPs of the first and last layers
# stay bf16 (docs/reference/quantized-checkpoints.md: Meta's reference loader, HF's conversion script).
def meta_fbgemm_config(n_layers: int) -> dict:
    keep = ["lm_head"] + [f"model.layers.{i}.self_attn.{p}" for i in range(n_layers)
                          for p in ("k_proj", "o_proj", "q_proj", "v_proj")]
    keep += [f"model.layers.{i}.mlp.{p}" for i in (0, n_layers - 1) for p in ("down_proj", "gate_proj", "up_proj")]
    return {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0, "modules_to_not_convert": keep}


def test_the_405b_fbgemm_config_keeps_attention_and_the_outer_mlps():
    spec = catalog_spec("meta-llama/Llama-3.1-405B")
    assert quantization_label(meta_fbgemm_config(126), spec) == "fbgemm-fp8-keep-attention+mlp@0.125"
    prefixes = {"quant_method": "fbgemm_fp8", "modules_to_not_convert": [           # HF's script: module prefixes
        "model.layers.0", "model.layers.125", "lm_head", *(f"model.layers.{i}.self_attn" for i in range(1, 125))]}
    assert quantization_label(prefixes, spec) == "fbgemm-fp8-keep-attention+mlp@0.125"
    assert get_precision("fbgemm-fp8-keep-attention+mlp@0.125") == FbgemmFp8Format(
        (KeepRule("attention"), KeepRule("mlp", None, (0, 125))))


def test_fbgemm_bytes_of_the_405b():
    """1 byte per FP8 weight and an fp32 scale per output row of the MLPs of layers 1-124; the rest bf16."""
    spec = catalog_spec("meta-llama/Llama-3.1-405B")
    fmt = get_precision("fbgemm-fp8-keep-attention+mlp@0.125")
    hidden, inter = 16384, 53248
    fp8_mlp = 124 * (3 * hidden * inter + 2 * inter * 4 + hidden * 4)
    assert weight_bytes(spec, fmt) == fp8_mlp + (spec.params - 124 * 3 * hidden * inter) * 2


torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def test_fbgemm_bytes_against_transformers_fbgemm_fp8_linear():
    """A small Llama on the meta device whose nn.Linear modules are swapped for transformers' FbgemmFp8Linear
    (weight float8_e4m3fn [out, in], weight_scale float32 [out, 1]) where transformers' own
    should_convert_module says so, as replace_with_fbgemm_fp8_linear does (that function itself needs
    fbgemm-gpu's kernels): the state dict's bytes equal sizer's."""
    from transformers.integrations.fbgemm_fp8 import FbgemmFp8Linear
    from transformers.quantizers.quantizers_utils import should_convert_module

    raw = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 256,
           "intermediate_size": 704, "num_hidden_layers": 5, "num_attention_heads": 8, "num_key_value_heads": 2,
           "vocab_size": 1000, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
    q = meta_fbgemm_config(5)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(transformers.LlamaConfig(**raw), dtype=torch.bfloat16)
        for name, module in list(model.named_modules()):
            if isinstance(module, torch.nn.Linear) and should_convert_module(name, q["modules_to_not_convert"]):
                model.set_submodule(name, FbgemmFp8Linear(module.in_features, module.out_features, False))
    converted = [n for n, m in model.named_modules() if isinstance(m, FbgemmFp8Linear)]
    assert len(converted) == 3 * 3                       # the MLPs of layers 1-3
    expected = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    spec = spec_from_config({**raw, "quantization_config": q}, "small", "test")
    assert spec.native_precision == "fbgemm-fp8-keep-attention+mlp@0.4"
    assert weight_bytes(spec, get_precision(spec.native_precision)) == expected


# ---------------------------------------------------------------------------------------------
# Plans and launch lines

def fit_json(*args):
    result = CliRunner().invoke(cli, ["fit", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_405b_fp8_is_metas_fbgemm_checkpoint_launched_by_name():
    [option] = fit_json("llama-3.1-405b", "--gpus", "8xH100", "--engine", "vllm", "-p", "fp8")["options"]
    assert option["precision"] == "fbgemm-fp8-keep-attention+mlp@0.125"
    assert option["launch"] == [{"on": "the server", "command": "vllm serve meta-llama/Llama-3.1-405B-FP8 "
                                                                "--tensor-parallel-size 8 --max-model-len 8192"}]


def test_nvfp4_of_a_catalog_model_is_nvidias_checkpoint():
    out = fit_json("qwen3-235b-a22b", "--gpus", "8xH100", "--engine", "vllm", "-p", "nvfp4")
    [option] = out["options"]
    assert option["precision"] == "modelopt-nvfp4-kv8"
    assert option["launch"][0]["command"].startswith("vllm serve nvidia/Qwen3-235B-A22B-NVFP4 ")
    assert any("through Marlin" in n for n in out["notes"])          # H100 has no FP4 tensor cores


def test_nvfp4_without_an_official_checkpoint_names_one_to_find():
    [option] = fit_json("llama-3.1-8b", "--gpus", "1xH100", "--engine", "vllm", "-p", "nvfp4")["options"]
    assert option["launch"][0]["command"].startswith("vllm serve <modelopt-nvfp4 checkpoint of meta-llama/Llama-3.1-8B> ")
    assert "--quantization" not in option["launch"][0]["command"]


def test_engines_that_cannot_load_modelopt_refuse_it():
    out = CliRunner().invoke(cli, ["fit", "qwen3-235b-a22b", "--gpus", "8xH100", "--engine", "transformers", "-p",
                                   "nvfp4", "--format", "json"])
    [option] = json.loads(out.stdout)["options"]
    assert option["verdict"] == "does-not-fit" and "transformers has no NVIDIA ModelOpt loader" in option["reason"]
    [a100] = fit_json("llama-3.1-70b-instruct", "--gpus", "2xA100-80GB", "--engine", "vllm", "-p", "modelopt-fp8")["options"]
    assert a100["verdict"] == "does-not-fit"
    assert a100["reason"].startswith("vLLM runs ModelOpt FP8 checkpoints from compute capability 8.9")
    [fp8] = fit_json("llama-3.1-70b-instruct", "--gpus", "2xA100-80GB", "--engine", "vllm", "-p", "fp8")["options"]
    assert fp8["verdict"] != "does-not-fit" and fp8["launch"][0]["command"].endswith("--quantization fp8")


def test_a_catalog_entry_that_is_a_modelopt_checkpoint_is_sized_as_it_stores_it():
    """nvidia/DeepSeek-V3.1-NVFP4's config.json says nothing of its format (hf_quant_config.json does): its
    catalog entry names it, so the default precision is what it stores, launched from itself."""
    out = fit_json("deepseek-v3.1-nvfp4", "--gpus", "8xB200", "--engine", "vllm", "-c", "8192")
    stored = out["options"][0]
    assert stored["precision"] == EXPECTED_LABELS["nvidia/DeepSeek-V3.1-NVFP4"]
    assert stored["launch"][0]["command"].startswith("vllm serve nvidia/DeepSeek-V3.1-NVFP4 --tensor-parallel-size")
    assert not any("Marlin" in n for n in out["notes"])                 # Blackwell has FP4 tensor cores
