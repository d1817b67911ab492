"""Precision formats: exact storage layouts and their overheads."""

from math import ceil

import pytest
from hypothesis import given, strategies as st

from sizer import get_model
from sizer.calc.weights import weight_bytes, weight_bytes_by_component
from sizer.errors import UsageError
from sizer.gguf_quant import use_more_bits
from sizer.quant import Bnb4bitFormat, GroupQuantFormat, get_precision, ggml_bytes, precision_names
from sizer.spec import LINEAR, TensorSpec


def gptq_v1_tensor_bytes(k: int, n: int, bits: int, group: int) -> int:
    """The GPTQ v1 layout of quantization.md, tensor by tensor."""
    groups = 1 if group == -1 else ceil(k / group)
    qweight = (k * bits // 32) * n * 4          # int32 [K*b/32, N]
    qzeros = groups * (n * bits // 32) * 4      # int32 [G, N*b/32]
    scales = groups * n * 2                     # fp16 [G, N]
    g_idx = k * 4                               # int32 [K]
    return qweight + qzeros + scales + g_idx


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group", [32, 64, 128, -1])
def test_gptq_layout(bits, group):
    fmt = get_precision(f"gptq-{bits}bit-g{group}")
    assert fmt.linear_bytes(4096, 14336) == gptq_v1_tensor_bytes(4096, 14336, bits, group)


def test_gptq_4bit_g128_is_about_4_16_bits():
    fmt = GroupQuantFormat("gptq", 4, 128)
    # b + (16 + b) / g, plus g_idx (32 bits per input row spread over N outputs)
    assert fmt.bits_per_weight(4096, 4096) == pytest.approx(4 + 20 / 128 + 32 / 4096)


def test_bnb_4bit_bits_per_weight():
    n = 4096 * 4096
    plain = Bnb4bitFormat("nf4", "nf4", False).quantized_bytes(n)
    dq = Bnb4bitFormat("nf4-dq", "nf4", True).quantized_bytes(n)
    assert plain == n // 2 + (n // 64) * 4 + 64
    assert 8 * plain / n == pytest.approx(4.5, abs=1e-4)
    assert 8 * dq / n == pytest.approx(4.127, abs=1e-3)


def test_bnb_keeps_embeddings_lm_head_and_fused_experts_in_16bit():
    spec = get_model("mixtral")
    nf4 = weight_bytes_by_component(spec, get_precision("nf4"))
    bf16 = weight_bytes_by_component(spec, get_precision("bf16"))
    assert nf4["embeddings"] == bf16["embeddings"]
    assert nf4["lm_head"] == bf16["lm_head"]
    assert nf4["experts"] == bf16["experts"]          # transformers 5: experts are fused nn.Parameters
    assert nf4["attention"] < bf16["attention"] / 3
    gptq = weight_bytes_by_component(spec, get_precision("gptq-4bit-g128"))
    assert gptq["experts"] < bf16["experts"] / 3      # GPTQ quantizes each expert


def test_int8_row_scales():
    spec = get_model("llama-2-7b")
    attn_bf16 = weight_bytes_by_component(spec, get_precision("bf16"))["attention"]
    attn_int8 = weight_bytes_by_component(spec, get_precision("int8"))["attention"]
    # 4 projections of 4096 x 4096 per layer, one fp32 scale per output row
    assert attn_int8 == attn_bf16 // 2 + 32 * 4 * 4096 * 4


@pytest.mark.parametrize("type_name, bits", [("Q8_0", 8.5), ("Q6_K", 6.5625), ("Q5_K", 5.5), ("Q4_K", 4.5),
                                             ("Q4_0", 4.5), ("Q3_K", 3.4375), ("Q2_K", 2.625)])
def test_ggml_block_sizes(type_name, bits):
    assert 8 * ggml_bytes(type_name, 256 * 1024) / (256 * 1024) == bits


@pytest.mark.parametrize("mix, published", [("Q4_K_M", 4.9), ("Q5_K_M", 5.7), ("Q3_K_M", 4.0)])
def test_gguf_mix_averages_for_llama_3_8b_shape(mix, published):
    """quantization.md: whole-file averages for Llama-3.1-8B (same shapes as Llama-3-8B)."""
    spec = get_model("llama3-8b")
    bits = 8 * weight_bytes(spec, get_precision(mix)) / spec.params
    assert bits == pytest.approx(published, abs=0.05)


def test_use_more_bits_pattern():
    chosen = [i for i in range(32) if use_more_bits(i, 32)]
    assert chosen == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


@pytest.mark.parametrize("name", ["float16", "BF16", "Q4_K_M", "q4_k_m", "gptq", "awq", "nf4-dq", "gptq-3bit-g-1"])
def test_precision_spellings(name):
    get_precision(name)


def test_unknown_precision_suggests():
    with pytest.raises(UsageError) as e:
        get_precision("nf5")
    assert "did you mean" in str(e.value) and "nf4" in str(e.value)
    with pytest.raises(UsageError):
        get_precision("gptq-5bit-g128")


# Ordered from most to fewest bits per weight, within comparable families.
ORDERED_CHAINS = [
    ["fp32", "bf16", "fp8"],
    ["bf16", "int8", "nf4", "nf4-dq"],
    ["bf16", "gptq-8bit-g128", "gptq-4bit-g128", "gptq-3bit-g128", "gptq-2bit-g128"],
    ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"],
]


@given(hidden=st.sampled_from([256, 512, 1024]), layers=st.integers(1, 8), ff_mult=st.integers(2, 4),
       vocab=st.sampled_from([512, 1024, 32000]))
def test_fewer_bits_never_more_bytes(hidden, layers, ff_mult, vocab):
    from sizer.families import spec_from_config

    spec = spec_from_config({"model_type": "llama", "hidden_size": hidden, "num_hidden_layers": layers,
                             "num_attention_heads": hidden // 64, "num_key_value_heads": hidden // 128,
                             "intermediate_size": ff_mult * hidden, "vocab_size": vocab}, "t", "t")
    for chain in ORDERED_CHAINS:
        sizes = [weight_bytes(spec, get_precision(p)) for p in chain]
        assert sizes == sorted(sizes, reverse=True), (chain, sizes)


def test_every_listed_precision_sizes_every_catalog_model():
    from sizer.catalog import model_entries

    names = precision_names()
    for model in model_entries():
        spec = get_model(model)
        for p in names:
            try:
                n_bytes = weight_bytes(spec, get_precision(p))
            except UsageError as e:
                # llama-quantize has no fallback for Q1_0's 128-value blocks: refused as llama.cpp refuses it
                assert p == "Q1_0" and "no fallback type" in str(e), (model, p, e)
                continue
            assert n_bytes > 0


def test_tensor_bytes_scale_with_copies():
    t1 = TensorSpec("w", "mlp", (256, 512), LINEAR, range(1))
    t4 = TensorSpec("w", "mlp", (256, 512), LINEAR, range(4))
    spec = get_model("llama3-8b")
    for p in ["bf16", "int8", "nf4", "gptq-4bit-g128", "fp8"]:
        fmt = get_precision(p)
        assert fmt.tensor_bytes(t4, spec) == 4 * fmt.tensor_bytes(t1, spec)


@pytest.mark.parametrize("model, published_gib", [("gpt-oss-20b", 12.8), ("gpt-oss-120b", 60.8)])
def test_gpt_oss_native_mxfp4_matches_published_checkpoint_size(model, published_gib):
    """gpt-oss model card: checkpoint sizes 12.8 GiB (20b) and 60.8 GiB (120b), MXFP4 MoE weights."""
    from sizer import estimate

    e = estimate(model, context_length=1024)
    assert e.precision == "mxfp4"
    assert e.weights_bytes / 2**30 == pytest.approx(published_gib, abs=0.05)


def test_deepseek_v3_native_block_fp8():
    from sizer import estimate

    spec = get_model("deepseek-v3")
    assert spec.native_precision == "fp8-block128"
    e = estimate(spec, context_length=1024)
    # 1 byte per quantized weight plus one fp32 scale per 128x128 tile; the rest in bf16
    fp8 = get_precision("fp8-block128")
    attn = next(t for t in spec.tensors if t.name.endswith("q_b_proj.weight"))
    assert fp8.tensor_bytes(attn, spec) == 61 * (1536 * 24576 + (24576 // 128) * (1536 // 128) * 4)
    assert e.breakdown["weights/embeddings"] == 129280 * 7168 * 2
    assert 670e9 < e.weights_bytes < 680e9


def test_gptq_checkpoint_config_is_explicit():
    fmt = GroupQuantFormat("gptq", 4, 128, sym=True, desc_act=True, damp_percent=0.05)
    cfg = fmt.quantization_config()
    assert cfg == {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True, "sym": True,
                   "damp_percent": 0.05, "static_groups": False, "true_sequential": True, "checkpoint_format": "gptq"}
    from sizer.families import quantization_label
    assert quantization_label(cfg) == fmt.name == "gptq-4bit-g128"       # a checkpoint reads back as it was written
    assert fmt.linear_bytes(4096, 4096) == GroupQuantFormat("gptq", 4, 128).linear_bytes(4096, 4096)


def test_formats_answer_what_the_planner_asked_of_names():
    """Issue 15: the planner asks the format object, not its name (fp8? bitsandbytes? int8 MLP temporaries?)."""
    from dataclasses import replace

    from sizer.quant import CheckpointFormat, checkpoint_format, resolve_precision
    from sizer.spec import Checkpoint

    llama, falcon = get_model("llama3-8b"), get_model("falcon-7b")
    assert [get_precision(p).is_fp8 for p in ("fp8", "fp8-block128", "bf16", "int8", "Q8_0")] == [True, True, False, False, False]
    assert [get_precision(p).is_bitsandbytes for p in ("int8", "nf4", "fp4-dq", "gptq-8bit-g128", "fp8")] == [True, True, True, False, False]
    assert get_precision("int8").int8_mlp(llama) and not get_precision("int8").int8_mlp(falcon)
    assert not get_precision("nf4").int8_mlp(llama) and not get_precision("bf16").int8_mlp(llama)
    assert (get_precision("fp32").compute_bytes, get_precision("fp8").compute_bytes) == (4, 2)
    # the checkpoint as stored: a format of its own, which behaves like the format its label names
    ckpt = Checkpoint("m", "safetensors", (), "int8", ("I8", "BF16"))
    fmt = checkpoint_format(replace(llama, checkpoint=ckpt))
    assert fmt == CheckpointFormat("int8", get_precision("int8")) and fmt.stored and fmt.int8_mlp(llama)
    plain = checkpoint_format(replace(llama, checkpoint=replace(ckpt, quantization=None, dtypes=("F8_E4M3", "BF16"))))
    assert (plain.name, plain.like, plain.is_fp8, plain.kind, plain.compute_bytes) == ("f8_e4m3", None, True, "float", 2)
    f32 = checkpoint_format(replace(llama, checkpoint=replace(ckpt, quantization=None, dtypes=("F32",))))
    assert (f32.name, f32.compute_bytes, f32.is_fp8) == ("f32", 4, False)
    # resolve_precision: a name, the checkpoint as stored, the config's own format, else bf16
    assert resolve_precision(llama, "nf4") is get_precision("nf4")
    assert resolve_precision(llama, None) is get_precision("bf16")
    assert resolve_precision(get_model("gpt-oss-20b"), None).name == "mxfp4"
    assert resolve_precision(replace(llama, checkpoint=ckpt), None).stored
