"""compressed-tensors checkpoints: configs read as sizer formats, and exact bytes against the tensors the
library writes (compressed-tensors initialize.py `initialize_qparams`, pack_quantized.py `pack_to_int32` /
`PackedQuantizationCompressor`, quantized_compressors/base.py: symmetric zero points are not saved)."""

import json
import struct
from math import ceil, prod

import pytest

from sizer.calc.weights import weight_bytes
from sizer.errors import UsageError
from sizer.families import quantization_label, spec_from_config
from sizer.inputs.safetensors import header_tensors, read_header
from sizer.quant import CompressedTensorsFormat, get_precision
from sizer.spec import LINEAR

SIZE = {"F8_E4M3": 1, "I8": 1, "BF16": 2, "I32": 4, "I64": 8}


def group(weights: dict, targets=("Linear",), inputs=None) -> dict:
    args = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "tensor", "group_size": None,
            "block_structure": None, "dynamic": False, "actorder": None, "observer": "minmax", "observer_kwargs": {}}
    return {"targets": list(targets), "weights": {**args, **weights}, "input_activations": inputs,
            "output_activations": None}


def ct_config(fmt: str, *groups: dict, ignore=("lm_head",)) -> dict:
    return {"quant_method": "compressed-tensors", "format": fmt, "quantization_status": "compressed",
            "config_groups": {f"group_{i}": g for i, g in enumerate(groups)}, "ignore": list(ignore),
            "kv_cache_scheme": None}


FP8_CHANNEL = group({"type": "float", "strategy": "channel"},
                    inputs={"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True, "symmetric": True})
INT4_G32 = group({"num_bits": 4, "strategy": "group", "group_size": 32})       # Kimi K2 Thinking / K2.5
KIMI_IGNORE = ("lm_head", "re:.*self_attn.*", "re:.*shared_experts.*", "re:.*mlp\\.(gate|up|gate_up|down)_proj.*")


@pytest.mark.parametrize("config, name", [
    (ct_config("float-quantized", FP8_CHANNEL), "ct-fp8-channel"),
    (ct_config("float-quantized", group({"type": "float"}, inputs={"num_bits": 8, "type": "float", "strategy": "tensor",
                                                                   "dynamic": False, "symmetric": True})),
     "ct-fp8-tensor-static"),
    (ct_config("float-quantized", group({"type": "float", "strategy": "block", "block_structure": [128, 128]})),
     "ct-fp8-block128"),
    (ct_config("pack-quantized", INT4_G32, ignore=KIMI_IGNORE), "ct-int4-g32-keep-attention+mlp+shared_experts"),
    (ct_config("pack-quantized", group({"num_bits": 4, "strategy": "group", "group_size": 128, "symmetric": False,
                                        "actorder": "group"})), "ct-int4-g128-asym-gidx"),
    (ct_config("pack-quantized", group({"strategy": "channel"})), "ct-int8-channel-packed"),
    (ct_config("int-quantized", group({"strategy": "channel"})), "ct-int8-channel"),
    (ct_config("pack-quantized", INT4_G32, ignore=("lm_head", "re:.*layers\\.0\\.self_attn.*", "re:.*mlp.gate$")),
     "ct-int4-g32-keep-attention@0"),
    (ct_config("float-quantized", group({"type": "float", "strategy": "channel"}, targets=["re:.*mlp\\.experts\\..*"])),
     "ct-fp8-channel-keep-attention+mlp+shared_experts"),
])
def test_labels_of_real_looking_configs(config, name):
    assert quantization_label(config) == name
    assert get_precision(name).name == name          # -p takes the same name back


def test_llama4_scout_fp8_dynamic_ignore_list():
    """RedHatAI's Scout FP8-dynamic lists every layer's q/k/v/o and router, the vision tower and lm_head."""
    ignore = ["language_model.lm_head", "vision_model.model.layers.0.mlp.fc1"] + [
        f"language_model.model.layers.{i}.{m}" for i in range(48)
        for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "feed_forward.router")]
    assert quantization_label(ct_config("float-quantized", FP8_CHANNEL, ignore=ignore)) == "ct-fp8-channel-keep-attention@0-47"


@pytest.mark.parametrize("config, scheme", [
    (ct_config("nvfp4-pack-quantized", group({"num_bits": 4, "type": "float", "strategy": "tensor_group",
                                              "group_size": 16})), "nvfp4-pack-quantized"),
    (ct_config("mixed-precision", {**INT4_G32, "format": "pack-quantized", "targets": ["re:.*mlp.experts.*"]},
               {**FP8_CHANNEL, "format": "float-quantized", "targets": ["re:.*self_attn.*"]}), "mixed config_groups"),
])
def test_unsupported_schemes_are_refused_in_one_line(config, scheme):
    label = quantization_label(config)          # a checkpoint folder still reads (sized from its headers)
    with pytest.raises(UsageError) as e:
        get_precision(label)
    assert scheme in str(e.value) and "\n" not in str(e.value) and "not supported" in str(e.value)


def library_layout(fmt: CompressedTensorsFormat, n: int, k: int) -> dict:
    """The tensors compressed-tensors writes for one Linear [n, k], from its source, independently of sizer."""
    scale = {"tensor": lambda: (1,), "channel": lambda: (n, 1), "group": lambda: (n, ceil(k / fmt.group)),
             "block": lambda: (ceil(n / fmt.block[0]), ceil(k / fmt.block[1]))}[fmt.strategy]()
    if fmt.scheme == "fp8":
        out = {"weight": ("F8_E4M3", (n, k)), "weight_scale": ("BF16", scale)}
    elif fmt.packed:
        per_word = 32 // fmt.bits
        out = {"weight_packed": ("I32", (n, ceil(k / per_word))), "weight_scale": ("BF16", scale),
               "weight_shape": ("I64", (2,))}
        if not fmt.symmetric:
            out["weight_zero_point"] = ("I32", (ceil(n / per_word), scale[1]))
    else:
        out = {"weight": ("I8", (n, k)), "weight_scale": ("BF16", scale)}
        if not fmt.symmetric:
            out["weight_zero_point"] = ("I8", scale)
    if fmt.g_idx:
        out["weight_g_idx"] = ("I32", (k,))
    if fmt.static_input:
        out["input_scale"] = ("BF16", (1,))
    return out


def write_safetensors(path, tensors: dict) -> None:
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = SIZE[dtype] * prod(shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))


FORMATS = ["ct-fp8-tensor", "ct-fp8-channel", "ct-fp8-block128", "ct-fp8-block128x64-static", "ct-int4-g128",
           "ct-int4-g32-asym", "ct-int4-channel-asym", "ct-int4-g128-asym-gidx", "ct-int8-channel",
           "ct-int8-g64-asym", "ct-int8-channel-packed", "ct-int8-g128-asym-packed"]


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("n, k", [(4096, 4096), (300, 520), (1, 100)])
def test_linear_bytes_equal_the_written_tensors(tmp_path, name, n, k):
    fmt = get_precision(name)
    layout = library_layout(fmt, n, k)
    assert fmt.linear_tensors(n, k) == layout
    write_safetensors(tmp_path / "m.safetensors", {f"model.layers.0.mlp.down_proj.{s}": v for s, v in layout.items()})
    read = header_tensors(read_header(tmp_path / "m.safetensors"))
    assert sum(t.n_bytes for t in read) == fmt.linear_bytes(n, k)


def hf_modules(t, spec):
    """The module names a checkpoint stores for sizer tensor `t` (per layer, per expert; fused gate_up split)."""
    base = t.name.rsplit(".", 1)[0]
    leaves = [base]
    if t.component == "experts" and base.endswith("gate_up_proj"):
        leaves = [base[:-len("gate_up_proj")] + "gate_proj", base[:-len("gate_up_proj")] + "up_proj"]
    for i in (t.layers if t.layers is not None else [None]):
        for e in range(t.experts):
            for leaf in leaves:
                name = leaf.replace("experts.", f"experts.{e}.", 1) if t.component == "experts" else leaf
                yield i, ("model." + name.replace("layers.", f"layers.{i}.", 1)) if i is not None else name


def checkpoint_of(spec, fmt, kept_layers) -> dict:
    tensors = {}
    for t in spec.tensors:
        quantized = t.kind == LINEAR and t.component in ("attention", "mlp", "experts", "shared_experts")
        n = t.out_features // 2 if t.component == "experts" and "gate_up" in t.name else t.out_features
        for i, module in hf_modules(t, spec):
            if quantized and (t.component, i) not in kept_layers:
                for suffix, v in library_layout(fmt, n, t.in_features).items():
                    tensors[f"{module}.{suffix}"] = v
            else:
                tensors[f"{module}.{t.name.rsplit('.', 1)[1]}"] = ("BF16", (n, *t.shape[1:]) if t.kind == LINEAR else t.shape)
    return tensors


TINY_LLAMA = {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 3, "num_attention_heads": 4,
              "num_key_value_heads": 2, "intermediate_size": 688, "vocab_size": 1000, "tie_word_embeddings": False}
TINY_QWEN3_MOE = {"model_type": "qwen3_moe", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 512, "moe_intermediate_size": 96,
                  "num_experts": 8, "num_experts_per_tok": 2, "vocab_size": 1000, "tie_word_embeddings": False}
TINY_LLAMA4 = {"model_type": "llama4_text", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 96, "intermediate_size_mlp": 512,
               "num_local_experts": 4, "num_experts_per_tok": 1, "interleave_moe_layer_step": 1, "vocab_size": 1000,
               "tie_word_embeddings": False}


@pytest.mark.parametrize("config, quant, kept", [
    (TINY_LLAMA, ct_config("pack-quantized", group({"num_bits": 4, "strategy": "group", "group_size": 128,
                                                    "symmetric": False}),
                           ignore=("lm_head", "re:.*layers\\.0\\.self_attn.*")), {("attention", 0)}),
    (TINY_QWEN3_MOE, ct_config("pack-quantized", INT4_G32, ignore=("lm_head", "re:.*mlp.gate$", "re:.*self_attn.*")),
     {("attention", 0), ("attention", 1)}),
    (TINY_LLAMA4, ct_config("float-quantized", FP8_CHANNEL, ignore=["lm_head"] + [
        f"language_model.model.layers.{i}.self_attn.{p}_proj" for i in range(2) for p in "qkvo"]),
     {("attention", 0), ("attention", 1)}),
    (TINY_LLAMA4, ct_config("float-quantized", group({"type": "float"}), ignore=["lm_head"]), set()),
])
def test_model_bytes_equal_a_written_checkpoint(tmp_path, config, quant, kept):
    """A whole tiny checkpoint, every tensor as the library stores it: header bytes = sizer's computed bytes."""
    spec = spec_from_config({**config, "quantization_config": quant}, "tiny", "tiny")
    fmt = get_precision(spec.native_precision)
    write_safetensors(tmp_path / "model.safetensors", checkpoint_of(spec, fmt, kept))
    stored = sum(t.n_bytes for t in header_tensors(read_header(tmp_path / "model.safetensors")))
    assert weight_bytes(spec, fmt) == stored


def test_scout_fp8_dynamic_catalog_entry():
    from sizer import get_model

    spec = get_model("llama4-scout-fp8")
    assert spec.native_precision == "ct-fp8-channel-keep-attention@0-47"
    fmt = get_precision(spec.native_precision)
    experts = next(t for t in spec.tensors if t.name.endswith("experts.gate_up_proj.weight"))
    # per expert: gate_proj and up_proj FP8 [8192, 5120], each with a bf16 weight_scale [8192, 1]
    assert fmt.tensor_bytes(experts, spec) == 48 * 16 * 2 * (8192 * 5120 + 8192 * 2)
    q = next(t for t in spec.tensors if t.name.endswith("q_proj.weight"))
    assert fmt.tensor_bytes(q, spec) == 48 * 5120 * 5120 * 2          # ignored: bf16
