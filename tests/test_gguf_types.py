"""llama-quantize file types (IQ, TQ, MXFP4_MOE, bartowski's _L/_XL): per-tensor types and sizes
against llama.cpp's rules (docs/reference/quantization.md), a published log and published file sizes."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from sizer import get_model
from sizer.calc.weights import weight_bytes
from sizer.errors import UsageError
from sizer.families import spec_from_config
from sizer.ggml import ggml_type_by_name
from sizer.gguf_quant import FTYPE_DEFAULT_TYPE, ModelTraits, Slot, fallback_type, tensor_type
from sizer.quant import GgufMixFormat, get_precision, precision_names

DATA = Path(__file__).parent / "data"
UNITS = {"B": 1, "MB": 10**6, "GB": 10**9}


def type_counts(spec, fmt, vectors: bool = False) -> Counter:
    """Matrices (and with `vectors` 1-D tensors too) per ggml type, counting each expert tensor once
    per layer (as GGUF merges them)."""
    counts = Counter()
    for t in spec.tensors:
        if vectors or len(t.shape) >= 2:
            counts.update(fmt.layer_types(t, spec))
    return counts


# --- block layouts (ggml-common.h) ---------------------------------------------------------------

@pytest.mark.parametrize("name, values, size", [
    ("Q8_1", 32, 2 * 2 + 32),                     # block_q8_1: ggml_half d, s; int8 qs[32]
    ("Q2_0", 64, 2 + 64 // 4),                    # block_q2_0: ggml_half d; 2 bits per value
    ("IQ2_XXS", 256, 2 + 256 // 4), ("IQ1_S", 256, 2 + 256 // 8 + 256 // 16),
    ("TQ1_0", 256, 2 + 4 * 13), ("TQ2_0", 256, 2 + 64), ("MXFP4", 32, 1 + 16),
])
def test_block_layouts(name, values, size):
    t = ggml_type_by_name(name)
    assert (t.block_size, t.type_size_bytes) == (values, size)


# --- the rules of llama_tensor_get_type_impl ------------------------------------------------------

DENSE_GQA4 = ModelTraits(n_gqa=4, n_expert=0)
DENSE_MHA = ModelTraits(n_gqa=1, n_expert=0)


def test_every_quantize_option_has_a_default_type():
    quantize_options = ("Q1_0 Q2_0 Q4_0 Q4_1 MXFP4_MOE Q5_0 Q5_1 IQ2_XXS IQ2_XS IQ2_S IQ2_M IQ1_S IQ1_M TQ1_0 TQ2_0 "
                        "Q2_K Q2_K_S IQ3_XXS IQ3_S IQ3_M Q3_K IQ3_XS Q3_K_S Q3_K_M Q3_K_L IQ4_NL IQ4_XS Q4_K Q4_K_S "
                        "Q4_K_M Q5_K Q5_K_S Q5_K_M Q6_K Q8_0").split()
    for name in quantize_options:
        assert isinstance(get_precision(name), GgufMixFormat), name
        assert name in precision_names() or name in ("Q3_K", "Q4_K", "Q5_K")
    assert get_precision("q4_k").name == "Q4_K_M"          # "alias for Q4_K_M"
    assert FTYPE_DEFAULT_TYPE["IQ2_S"] == "IQ2_XS" and FTYPE_DEFAULT_TYPE["IQ2_M"] == "IQ2_S"


@pytest.mark.parametrize("type_name, row, expected", [
    ("Q4_K", 2880, "Q5_0"), ("Q5_K", 2880, "Q5_1"), ("Q6_K", 2880, "Q8_0"),
    ("Q2_K", 2880, "Q4_0"), ("Q3_K", 2880, "Q4_0"), ("TQ1_0", 2880, "Q4_0"),
    ("IQ2_XXS", 2880, "IQ4_NL"), ("IQ4_XS", 2880, "IQ4_NL"), ("IQ1_M", 4096, "IQ1_M"),
    ("Q4_K", 100, "F16"), ("Q4_0", 100, "F16"), ("Q8_0", 64, "Q8_0"),
])
def test_fallback_for_rows_that_do_not_fill_blocks(type_name, row, expected):
    assert fallback_type(type_name, row) == expected


@pytest.mark.parametrize("ftype, model, expected", [
    ("IQ2_XXS", DENSE_MHA, "Q2_K"), ("IQ2_M", DENSE_MHA, "IQ3_S"), ("IQ1_S", DENSE_GQA4, "Q4_K"),
    ("IQ2_XS", ModelTraits(1, 8), "Q4_K"), ("IQ3_XXS", DENSE_MHA, "IQ3_XXS"), ("IQ3_M", DENSE_MHA, "Q4_K"),
    ("IQ4_XS", DENSE_GQA4, "Q5_K"), ("IQ4_XS", DENSE_MHA, "IQ4_XS"), ("Q2_K_S", DENSE_GQA4, "Q4_K"),
    ("IQ3_S", ModelTraits(1, 8), "Q8_0"), ("IQ3_S", ModelTraits(8, 0, is_70b=True), "Q5_K"),
])
def test_attn_v(ftype, model, expected):
    assert tensor_type(ftype, Slot("attn_v", 4096, 5, 32), model, True) == expected


def test_iq3_xxs_without_imatrix():
    slot = Slot("attn_v", 4096, 5, 32)
    assert tensor_type("IQ3_XXS", slot, DENSE_MHA, False) == "IQ3_S"
    first, later = Slot("ffn_down", 14336, 1, 32), Slot("ffn_down", 14336, 20, 32)
    assert [tensor_type("IQ3_XXS", s, DENSE_MHA, False) for s in (first, later)] == ["Q4_K", "Q3_K"]
    assert [tensor_type("IQ3_XXS", s, DENSE_MHA, True) for s in (first, later)] == ["IQ3_XXS", "IQ3_XXS"]


def test_output_and_token_embedding():
    out = Slot("output", 4096)
    assert tensor_type("IQ1_S", out, DENSE_GQA4, True) == "Q5_K"
    assert tensor_type("IQ3_XS", out, DENSE_GQA4, True) == "Q6_K"
    assert tensor_type("Q8_0", out, DENSE_GQA4, False) == "Q8_0"
    assert tensor_type("MXFP4_MOE", out, DENSE_GQA4, False) == "Q8_0"
    assert tensor_type("Q4_K_M", Slot("output", 2880), DENSE_GQA4, False) == "Q8_0"   # 2880 % 256 != 0
    embd = Slot("token_embd", 4096)
    assert [tensor_type(f, embd, DENSE_GQA4, True) for f in ("IQ1_M", "IQ2_S", "IQ3_XXS", "TQ2_0", "IQ4_XS")] == \
        ["Q2_K", "IQ3_S", "IQ3_S", "Q4_K", "IQ4_XS"]
    assert tensor_type("Q4_K_M", embd, DENSE_GQA4, False, "Q8_0", "Q8_0") == "Q8_0"


def test_iq2_family_ffn_down_counts_tensors_not_layers():
    """IQ1/IQ2 mixes give ffn_down Q2_K while the raw i_ffn_down counter is under n_layer / 8; with
    a shared expert there are two ffn_down tensors per layer, so only the first n_layer / 16 layers."""
    spec = get_model("DeepSeek-V3")
    fmt = get_precision("IQ2_XXS")
    exps = next(t for t in spec.tensors if t.component == "experts" and t.name.endswith("down_proj.weight"))
    types = fmt.layer_types(exps, spec)
    upgraded = [i for i, t in zip(exps.layers, types) if t == "Q2_K"]
    # 61 layers: counter < 7; dense layers 0-2 count once, MoE layers 3.. twice (exps, shexp)
    assert upgraded == [3, 4]


def test_mxfp4_moe_puts_experts_in_mxfp4_and_the_rest_in_q8_0():
    spec = get_model("gpt-oss-20b")
    counts = type_counts(spec, get_precision("MXFP4_MOE"))
    assert set(counts) == {"MXFP4", "Q8_0", "F32"}
    assert counts["MXFP4"] == 2 * spec.n_layers                  # gate_up (fused here) and down per layer


def test_llama_3_2_1b_iq3_m_composition():
    """bartowski's Llama-3.2-1B-Instruct-IQ3_M.gguf holds IQ3_S x78 + Q4_K x34 + Q6_K (the tied
    embedding), as a public analysis of that file lists its tensors."""
    counts = type_counts(get_model("Llama-3.2-1B"), get_precision("IQ3_M"))
    assert {k: v for k, v in counts.items() if k != "F32"} == {"IQ3_S": 78, "Q4_K": 34, "Q6_K": 1}


def test_yi_34b_iq4_xs_matches_the_published_model_buffers():
    """llama.cpp#7217: Yi-34B IQ4_XS over CUDA_Host + 2 GPUs; the three model buffers add up to the
    tensor data, which sizer reproduces to the printed 0.01 MiB with an importance matrix."""
    record = json.loads((DATA / "llamacpp/logs/issue-llamacpp-7217-yi-34b-iq4_xs-3090-3060-cuda.json").read_text())
    measured_mib = sum(record["measured"]["model_buffer_mib"].values())
    yi = spec_from_config({"model_type": "llama", "hidden_size": 7168, "num_hidden_layers": 60,
                           "num_attention_heads": 56, "num_key_value_heads": 8, "intermediate_size": 20480,
                           "vocab_size": 64000}, "Yi-34B", "Yi-34B")
    with_imatrix = weight_bytes(yi, GgufMixFormat("IQ4_XS", "IQ4_XS", has_imatrix=True)) / 2**20
    without = weight_bytes(yi, GgufMixFormat("IQ4_XS", "IQ4_XS", has_imatrix=False)) / 2**20
    assert with_imatrix == pytest.approx(measured_mib, abs=0.015)
    assert without > measured_mib + 100                       # ffn_down of the first 8th in Q5_K


# --- names ----------------------------------------------------------------------------------------

def test_bartowski_l_and_xl_use_q8_0_for_embeddings_and_output():
    spec = get_model("Meta-Llama-3-8B")
    big, base = get_precision("Q4_K_L"), get_precision("Q4_K_M")
    values = spec.vocab_size * spec.hidden_size          # untied: token_embd Q4_K, output Q6_K -> both Q8_0
    q8_0, q4_k, q6_k = 34 * 8, 144, 210                  # bytes per 256 values
    assert weight_bytes(spec, big) - weight_bytes(spec, base) == values * (2 * q8_0 - q4_k - q6_k) // 256
    assert get_precision("Q3_K_XL").ftype == "Q3_K_L"


@pytest.mark.parametrize("name, closest", [("UD-Q4_K_XL", "Q4_K_M"), ("Q5_K_XL", "Q5_K_M"),
                                           ("UD-IQ1_S", "IQ1_S"), ("IQ2_XXS-UD", "IQ2_XXS"),
                                           ("UD-Q8_K_XL", "Q8_0")])
def test_unsloth_dynamic_names_are_refused_with_the_closest_type(name, closest):
    with pytest.raises(UsageError) as e:
        get_precision(name)
    assert "Unsloth Dynamic" in str(e.value) and f"-p {closest}" in str(e.value) and ".gguf file" in str(e.value)


# --- published file sizes -------------------------------------------------------------------------

SIZES = json.loads((DATA / "gguf_file_sizes.json").read_text())


def _half_digit_bytes(text: str, unit: str) -> float:
    exponent = Decimal(text).as_tuple().exponent
    return 0.5 * 10.0 ** exponent * UNITS[unit]


@pytest.mark.parametrize("row", SIZES["files"], ids=lambda r: f"{r['catalog_model']}-{r['quant']}")
def test_published_file_sizes(row):
    spec = get_model(row["catalog_model"])
    header = SIZES["header_bytes"][SIZES["tokenizer"][row["catalog_model"]]]["bytes"]
    predicted = weight_bytes(spec, get_precision(row["quant"])) + header
    published = float(row["size_published"]) * UNITS[row["unit"]]
    assert abs(predicted - published) <= 0.005 * published + _half_digit_bytes(row["size_published"], row["unit"])


def test_published_sizes_cover_three_models_and_the_iq_types():
    files = SIZES["files"]
    assert len({r["catalog_model"] for r in files}) >= 3
    assert {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M",
            "IQ4_NL", "IQ4_XS"} <= {r["quant"] for r in files}


def test_exact_sizes_differ_by_the_header_only():
    """Qwen2.5-72B IQ4_XS (exact bytes) against the Qwen header read off Qwen2.5-7B IQ2_XS: the
    remainder is the longer tensor table of 80 layers (tens of kB)."""
    row = next(r for r in SIZES["files"] if r["catalog_model"] == "Qwen2.5-72B")
    predicted = weight_bytes(get_model("Qwen2.5-72B"), get_precision("IQ4_XS")) + SIZES["header_bytes"]["qwen2"]["bytes"]
    assert 0 < int(row["size_published"]) - predicted < 100_000


# --- real llama-quantize output (tools/llamacpp_quantize_tables.py) -------------------------------

TABLES = json.loads((DATA / "llamacpp_quantize_tables.json").read_text())


@pytest.mark.parametrize("case", TABLES["cases"], ids=lambda c: f"{c['model']}-{c['ftype']}-{'imat' if c['imatrix'] else 'plain'}")
def test_llama_quantize_output_tensor_by_tensor(case):
    """llama.cpp 0c1e570's llama_model_quantize on small made-up models: sizer gives every tensor the
    type llama.cpp gave it (counts per ggml type) and the same tensor bytes, to the byte."""
    spec = spec_from_config(TABLES["models"][case["model"]], case["model"], case["model"])
    fmt = GgufMixFormat(case["ftype"], case["ftype"], has_imatrix=case["imatrix"])
    if case.get("refused") and case["ftype"] == "IQ3_XXS":
        pytest.skip("llama-quantize refuses IQ3_XXS / IQ2_S tensors without an importance matrix")
    if case.get("refused"):         # Q1_0 on rows of 320 values: no fallback type
        with pytest.raises(UsageError, match="no fallback type"):
            weight_bytes(spec, fmt)
        return
    assert dict(sorted(type_counts(spec, fmt, vectors=True).items())) == case["types"]
    assert weight_bytes(spec, fmt) == case["tensor_bytes"]


def test_llama_quantize_tables_cover_every_file_type():
    assert {c["ftype"] for c in TABLES["cases"] if not c.get("refused")} == set(FTYPE_DEFAULT_TYPE)


def test_a_gguf_file_of_an_iq_type_is_sized_from_its_header_and_labelled(tmp_path):
    """A GGUF whose general.file_type is IQ2_XXS (19): sizer reads its tensor table (exact bytes) and
    knows the label as the llama.cpp IQ2_XXS mix."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    from sizer.quant import resolve_precision

    path = tmp_path / "tiny-IQ2_XXS.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    for add, value in ((w.add_block_count, 1), (w.add_context_length, 256), (w.add_embedding_length, 256),
                       (w.add_feed_forward_length, 512), (w.add_head_count, 4), (w.add_head_count_kv, 1),
                       (w.add_rope_dimension_count, 64), (w.add_layer_norm_rms_eps, 1e-5), (w.add_file_type, 19),
                       (w.add_vocab_size, 512)):
        add(value)
    types = {"token_embd.weight": ("Q2_K", (512, 256)), "blk.0.attn_norm.weight": ("F32", (256,)),
             "blk.0.attn_q.weight": ("IQ2_XXS", (256, 256)), "blk.0.attn_k.weight": ("IQ2_XXS", (64, 256)),
             "blk.0.attn_v.weight": ("Q4_K", (64, 256)), "blk.0.attn_output.weight": ("IQ2_XXS", (256, 256)),
             "blk.0.ffn_norm.weight": ("F32", (256,)), "blk.0.ffn_gate.weight": ("IQ2_XXS", (512, 256)),
             "blk.0.ffn_up.weight": ("IQ2_XXS", (512, 256)), "blk.0.ffn_down.weight": ("IQ2_XXS", (256, 512)),
             "output_norm.weight": ("F32", (256,)), "output.weight": ("Q5_K", (512, 256))}
    for name, (type_name, shape) in types.items():
        qtype = gguf.GGMLQuantizationType[type_name]
        if qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, np.zeros(shape, dtype=np.float32))
            continue
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        w.add_tensor(name, np.zeros((*shape[:-1], shape[-1] // block * size), dtype=np.uint8), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    spec = get_model(str(path))
    fmt = resolve_precision(spec, None)
    assert fmt.name == "IQ2_XXS" and fmt.kind == "gguf" and isinstance(fmt.like, GgufMixFormat)
    expected = sum(ggml_type_by_name(t).type_size_bytes * int(np.prod(s)) // ggml_type_by_name(t).block_size
                   for t, s in types.values())
    assert sum(spec.checkpoint.bytes_by_component().values()) == expected
