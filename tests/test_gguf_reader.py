"""Tests of sizer.inputs.gguf against files written by the reference `gguf` package (llama.cpp's)."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sizer.errors import InputFileError, SizerError, UsageError  # noqa: E402
from sizer.inputs.gguf import (  # noqa: E402
    GGML_TYPES,
    LLAMA_FILE_TYPE_NAMES,
    ArrayInfo,
    GgufFile,
    ggml_type_by_name,
    gguf_to_hf_config,
    read_gguf,
)

# --------------------------------------------------------------------------------------------------
# Building small real GGUF files with gguf.GGUFWriter
# --------------------------------------------------------------------------------------------------


def _encode(values: np.ndarray, type_name: str) -> tuple[np.ndarray, QT | None]:
    """`values` (float32, numpy order) as the array and raw_dtype to hand to GGUFWriter.add_tensor."""
    qtype = QT[type_name]
    if qtype == QT.F32:
        return values.astype(np.float32), None
    if qtype == QT.F16:
        return values.astype(np.float16), None
    try:
        return gguf.quants.quantize(values, qtype), qtype
    except NotImplementedError:
        # No Python quantizer for this type (k-quants, i-quants): raw bytes of the right size.
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        rows = values.shape[:-1]
        n_bytes_per_row = values.shape[-1] // block_size * type_size
        return np.zeros((*rows, n_bytes_per_row), dtype=np.uint8), qtype


def write_model(
    path,
    *,
    arch: str = "llama",
    hidden: int = 64,
    ffn: int | list[int] = 128,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int | list[int] = 2,
    n_vocab: int = 2000,
    weight_type: str = "F32",
    embd_type: str | None = None,
    tied: bool = False,
    n_experts: int = 0,
    expert_ffn: int = 64,
    file_type: int | None = None,
    extra=None,
    endianess=None,
    seed: int = 0,
):
    """A small but realistically laid out decoder-only model; returns the path."""
    rng = np.random.default_rng(seed)
    kwargs = {} if endianess is None else {"endianess": endianess}
    w = gguf.GGUFWriter(str(path), arch, **kwargs)
    w.add_name(f"tiny-{arch}")
    w.add_block_count(n_layers)
    w.add_context_length(4096)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv_heads)
    w.add_rope_dimension_count(hidden // n_heads)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    if file_type is not None:
        w.add_file_type(file_type)
    if n_experts:
        w.add_expert_count(n_experts)
        w.add_expert_used_count(2)
        w.add_expert_feed_forward_length(expert_ffn)
    w.add_tokenizer_model("gpt2")
    tokens = [f"tok{i}" for i in range(n_vocab)]
    w.add_token_list(tokens)
    w.add_token_types([1] * n_vocab)
    w.add_token_scores([float(-i) for i in range(n_vocab)])
    w.add_token_merges([f"t{i} k{i}" for i in range(n_vocab // 2)])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    if extra is not None:
        extra(w)

    def tensor(name: str, np_shape: tuple[int, ...], type_name: str) -> None:
        values = rng.standard_normal(np_shape).astype(np.float32)
        array, raw_dtype = _encode(values, type_name)
        w.add_tensor(name, array, raw_dtype=raw_dtype)

    head_dim = hidden // n_heads
    kv_max = max(n_kv_heads) if isinstance(n_kv_heads, list) else n_kv_heads
    ffn_list = ffn if isinstance(ffn, list) else [ffn] * n_layers
    tensor("token_embd.weight", (n_vocab, hidden), embd_type or weight_type)
    for i in range(n_layers):
        tensor(f"blk.{i}.attn_norm.weight", (hidden,), "F32")
        tensor(f"blk.{i}.attn_q.weight", (n_heads * head_dim, hidden), weight_type)
        tensor(f"blk.{i}.attn_k.weight", (kv_max * head_dim, hidden), weight_type)
        tensor(f"blk.{i}.attn_v.weight", (kv_max * head_dim, hidden), weight_type)
        tensor(f"blk.{i}.attn_output.weight", (hidden, n_heads * head_dim), weight_type)
        tensor(f"blk.{i}.ffn_norm.weight", (hidden,), "F32")
        if n_experts:
            tensor(f"blk.{i}.ffn_gate_inp.weight", (n_experts, hidden), "F32")
            tensor(f"blk.{i}.ffn_gate_exps.weight", (n_experts, expert_ffn, hidden), weight_type)
            tensor(f"blk.{i}.ffn_up_exps.weight", (n_experts, expert_ffn, hidden), weight_type)
            tensor(f"blk.{i}.ffn_down_exps.weight", (n_experts, hidden, expert_ffn), weight_type)
        else:
            tensor(f"blk.{i}.ffn_gate.weight", (ffn_list[i], hidden), weight_type)
            tensor(f"blk.{i}.ffn_up.weight", (ffn_list[i], hidden), weight_type)
            tensor(f"blk.{i}.ffn_down.weight", (hidden, ffn_list[i]), weight_type)
    tensor("output_norm.weight", (hidden,), "F32")
    if not tied:
        tensor("output.weight", (n_vocab, hidden), embd_type or weight_type)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def llama_f32(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("gguf") / "llama-f32.gguf")


def assert_matches_reference(path, g: GgufFile) -> None:
    """Every tensor agrees with the reference reader; the tensors tile the data section exactly."""
    ref = gguf.GGUFReader(str(path))
    assert g.data_offset == ref.data_offset
    assert len(g.tensors) == len(ref.tensors)
    for mine, theirs in zip(g.tensors, ref.tensors):
        assert mine.name == theirs.name
        assert mine.type_name == theirs.tensor_type.name
        assert mine.shape == tuple(int(d) for d in theirs.shape)
        assert mine.n_elements == theirs.n_elements
        assert mine.n_bytes == theirs.n_bytes
        assert g.data_offset + mine.offset == theirs.data_offset
    # the bytes the writer wrote: each tensor is padded to the alignment, the last one ends the file
    last = max(g.tensors, key=lambda t: t.offset)
    assert g.data_offset + last.offset + last.n_bytes <= g.file_size_bytes
    assert g.file_size_bytes - (g.data_offset + last.offset + last.n_bytes) < g.alignment


# --------------------------------------------------------------------------------------------------
# ggml types
# --------------------------------------------------------------------------------------------------


def test_ggml_types_match_the_gguf_package():
    """Every type of the gguf wheel, with its layout. Newer ggml has more (Q2_0 = 42), and ggml-common.h
    asserts block_q8_1 at 2 * sizeof(ggml_half) + 32 = 36 bytes where gguf 0.19 still says 4 + 4 + 32."""
    assert set(GGML_TYPES) >= {int(t) for t in QT}
    for qtype in QT:
        mine = GGML_TYPES[int(qtype)]
        assert mine.type_id == int(qtype)
        assert mine.name == qtype.name
        if qtype.name != "Q8_1":
            assert (mine.block_size, mine.type_size_bytes) == gguf.GGML_QUANT_SIZES[qtype]


def test_llama_file_type_names_match_the_gguf_package():
    for ftype in gguf.LlamaFileType:
        assert LLAMA_FILE_TYPE_NAMES[int(ftype)] == ftype.name


def test_ggml_type_by_name():
    assert ggml_type_by_name("Q4_K").type_id == 12
    assert ggml_type_by_name("q8_0") == GGML_TYPES[8]
    assert ggml_type_by_name("MXFP4").block_size == 32
    assert ggml_type_by_name("BF16").type_size_bytes == 2
    with pytest.raises(UsageError, match="Q9_Z"):
        ggml_type_by_name("Q9_Z")


# --------------------------------------------------------------------------------------------------
# Reading headers
# --------------------------------------------------------------------------------------------------


def test_f32_file_header(llama_f32):
    g = read_gguf(llama_f32)
    assert g.version == 3
    assert g.path == str(llama_f32)
    assert g.alignment == 32
    assert g.data_offset % 32 == 0
    assert_matches_reference(llama_f32, g)
    embd = g.tensor("token_embd.weight")
    assert embd.shape == (64, 2000)  # ne0 = hidden (contiguous), ne1 = vocab
    assert embd.type_name == "F32"
    assert embd.n_bytes == 64 * 2000 * 4
    assert embd.offset == 0
    assert len(g.tensors) == 1 + 2 * 9 + 2
    assert g.tensor("blk.1.ffn_down.weight").shape == (128, 64)


def test_metadata_round_trips(llama_f32):
    md = read_gguf(llama_f32).metadata
    assert md["general.architecture"] == "llama"
    assert md["general.name"] == "tiny-llama"
    assert md["llama.block_count"] == 2
    assert md["llama.embedding_length"] == 64
    assert md["llama.feed_forward_length"] == 128
    assert md["llama.attention.head_count"] == 4
    assert md["llama.attention.head_count_kv"] == 2
    assert md["llama.context_length"] == 4096
    assert md["llama.rope.freq_base"] == 500000.0
    assert md["llama.attention.layer_norm_rms_epsilon"] == 1e-5  # float32 shown as its shortest float
    assert md["tokenizer.ggml.model"] == "gpt2"
    assert md["tokenizer.ggml.bos_token_id"] == 1
    # long arrays are summarised, not materialised
    assert md["tokenizer.ggml.tokens"] == ArrayInfo("STRING", 2000)
    assert md["tokenizer.ggml.token_type"] == ArrayInfo("INT32", 2000)
    assert md["tokenizer.ggml.scores"] == ArrayInfo("FLOAT32", 2000)
    assert md["tokenizer.ggml.merges"][:2] == ["t0 k0", "t1 k1"]  # 1000 <= 1024 items: kept
    assert len(md["tokenizer.ggml.merges"]) == 1000
    # every key the reference reader sees is there, in the same order
    ref = gguf.GGUFReader(str(llama_f32))
    assert list(md) == [k for k in ref.fields if not k.startswith("GGUF.")]


def test_all_value_types_round_trip(tmp_path):
    def extra(w):
        w.add_uint8("t.u8", 250)
        w.add_int8("t.i8", -7)
        w.add_uint16("t.u16", 65000)
        w.add_int16("t.i16", -30000)
        w.add_uint32("t.u32", 4_000_000_000)
        w.add_int32("t.i32", -2_000_000_000)
        w.add_float32("t.f32", 0.1)
        w.add_uint64("t.u64", 2**63 + 5)
        w.add_int64("t.i64", -(2**62))
        w.add_float64("t.f64", 0.1)
        w.add_bool("t.true", True)
        w.add_bool("t.false", False)
        w.add_string("t.str", "héllo ✓")
        w.add_array("t.strs", ["a", "bb", ""])
        w.add_array("t.ints", [1, -2, 3])
        w.add_array("t.floats", [0.5, 0.25])
        w.add_array("t.bools", [True, False, True])
        w.add_array("t.nested", [[1, 2], [3]])
        w.add_array("t.keep1024", list(range(1024)))
        w.add_array("t.long1025", list(range(1025)))
        w.add_array("t.longstrs", [str(i) for i in range(5000)])
        w.add_array("t.longnested", [[i] for i in range(1100)])

    path = write_model(tmp_path / "types.gguf", n_vocab=100, extra=extra)
    md = read_gguf(path).metadata
    assert md["t.u8"] == 250
    assert md["t.i8"] == -7
    assert md["t.u16"] == 65000
    assert md["t.i16"] == -30000
    assert md["t.u32"] == 4_000_000_000
    assert md["t.i32"] == -2_000_000_000
    assert md["t.f32"] == 0.1
    assert md["t.u64"] == 2**63 + 5
    assert md["t.i64"] == -(2**62)
    assert md["t.f64"] == 0.1
    assert md["t.true"] is True and md["t.false"] is False
    assert md["t.str"] == "héllo ✓"
    assert md["t.strs"] == ["a", "bb", ""]
    assert md["t.ints"] == [1, -2, 3]
    assert md["t.floats"] == [0.5, 0.25]
    assert md["t.bools"] == [True, False, True]
    assert md["t.nested"] == [[1, 2], [3]]
    assert md["t.keep1024"] == list(range(1024))
    assert md["t.long1025"] == ArrayInfo("INT32", 1025)
    assert md["t.longstrs"] == ArrayInfo("STRING", 5000)
    assert md["t.longnested"] == ArrayInfo("ARRAY", 1100)
    # a short vocabulary is kept as a list
    assert md["tokenizer.ggml.tokens"] == [f"tok{i}" for i in range(100)]
    assert md["tokenizer.ggml.token_type"] == [1] * 100


@pytest.mark.parametrize(
    "weight_type, embd_type, hidden, ffn",
    [
        ("F16", None, 64, 128),
        ("BF16", None, 64, 128),
        ("Q8_0", None, 64, 128),
        ("Q4_0", "Q8_0", 64, 128),
        ("Q5_1", None, 64, 128),
        ("Q4_K", "Q6_K", 256, 512),
        ("Q6_K", None, 256, 512),
        ("IQ4_XS", "Q4_K", 256, 512),
        ("TQ2_0", "F16", 256, 512),
        ("MXFP4", "Q8_0", 64, 128),
    ],
)
def test_quantized_files_match_reference_reader(tmp_path, weight_type, embd_type, hidden, ffn):
    path = write_model(
        tmp_path / f"{weight_type}.gguf", weight_type=weight_type, embd_type=embd_type, hidden=hidden, ffn=ffn
    )
    g = read_gguf(path)
    assert_matches_reference(path, g)
    q = g.tensor("blk.0.attn_q.weight")
    assert q.type_name == weight_type
    assert q.shape == (hidden, hidden)
    t = GGML_TYPES[int(QT[weight_type])]
    assert q.n_bytes == hidden * hidden // t.block_size * t.type_size_bytes
    assert g.tensor("blk.0.attn_norm.weight").type_name == "F32"


def test_moe_file_with_3d_expert_tensors(tmp_path):
    path = write_model(tmp_path / "moe.gguf", n_experts=4, expert_ffn=64, weight_type="Q8_0")
    g = read_gguf(path)
    assert_matches_reference(path, g)
    gate = g.tensor("blk.0.ffn_gate_exps.weight")
    assert gate.shape == (64, 64, 4)
    assert gate.n_bytes == 4 * 64 * 64 // 32 * 34


def test_big_endian_file(tmp_path):
    path = write_model(tmp_path / "be.gguf", weight_type="F16", endianess=gguf.GGUFEndian.BIG)
    le = read_gguf(write_model(tmp_path / "le.gguf", weight_type="F16"))
    be = read_gguf(path)
    assert be.version == 3
    assert be.metadata == le.metadata
    assert be.tensors == le.tensors
    assert be.data_offset == le.data_offset


def test_custom_alignment(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "a.gguf"), "llama")
    w.data_alignment = 64
    w.add_custom_alignment(64)
    w.add_tensor("a", np.ones((3,), dtype=np.float32))
    w.add_tensor("b", np.ones((5,), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    g = read_gguf(tmp_path / "a.gguf")
    assert g.alignment == 64
    assert g.data_offset % 64 == 0
    assert [t.offset for t in g.tensors] == [0, 64]
    assert_matches_reference(tmp_path / "a.gguf", g)


def test_header_read_is_fast_for_a_large_vocabulary(tmp_path):
    """A 150k-token vocabulary (plus scores, types, merges) is skipped, not materialised."""
    path = write_model(tmp_path / "bigvocab.gguf", n_vocab=151_936, hidden=32, ffn=64, n_heads=2, n_kv_heads=1)
    read_gguf(path)  # warm the page cache
    start = time.perf_counter()
    g = read_gguf(path)
    elapsed_s = time.perf_counter() - start
    assert g.metadata["tokenizer.ggml.tokens"] == ArrayInfo("STRING", 151_936)
    assert g.metadata["tokenizer.ggml.merges"] == ArrayInfo("STRING", 151_936 // 2)
    assert gguf_to_hf_config(g)["vocab_size"] == 151_936
    assert elapsed_s < 0.5, f"header read took {elapsed_s:.3f} s"


# --------------------------------------------------------------------------------------------------
# gguf_to_hf_config
# --------------------------------------------------------------------------------------------------


def test_hf_config_of_a_llama_file(llama_f32):
    cfg = gguf_to_hf_config(read_gguf(llama_f32))
    assert cfg["model_type"] == "llama"
    assert cfg["hidden_size"] == 64
    assert cfg["num_hidden_layers"] == 2
    assert cfg["intermediate_size"] == 128
    assert cfg["num_attention_heads"] == 4
    assert cfg["num_key_value_heads"] == 2
    assert cfg["max_position_embeddings"] == 4096
    assert cfg["rms_norm_eps"] == 1e-5
    assert cfg["rope_theta"] == 500000.0
    assert cfg["vocab_size"] == 2000
    assert cfg["tie_word_embeddings"] is False
    assert cfg["_gguf_name"] == "tiny-llama"
    assert "head_dim" not in cfg  # no attention.key_length key in this file
    assert "partial_rotary_factor" not in cfg  # rope over the whole head


def test_hf_config_tied_embeddings_and_file_type(tmp_path):
    path = write_model(
        tmp_path / "tied.gguf", tied=True, weight_type="Q4_K", hidden=256, ffn=512,
        file_type=int(gguf.LlamaFileType.MOSTLY_Q4_K_M),
    )
    g = read_gguf(path)
    assert g.tensor("output.weight") is None
    cfg = gguf_to_hf_config(g)
    assert cfg["tie_word_embeddings"] is True
    assert cfg["_gguf_file_type"] == "MOSTLY_Q4_K_M"
    assert cfg["vocab_size"] == 2000


def test_hf_config_mixtral_from_llama_with_experts(tmp_path):
    cfg = gguf_to_hf_config(read_gguf(write_model(tmp_path / "mixtral.gguf", n_experts=4, expert_ffn=64)))
    assert cfg["model_type"] == "mixtral"
    assert cfg["num_local_experts"] == 4
    assert cfg["num_experts_per_tok"] == 2
    assert cfg["moe_intermediate_size"] == 64
    assert "num_experts" not in cfg


def test_hf_config_expert_count_zero_is_dense(tmp_path):
    path = write_model(tmp_path / "dense.gguf", n_vocab=100, extra=lambda w: w.add_expert_count(0))
    cfg = gguf_to_hf_config(read_gguf(path))
    assert cfg["model_type"] == "llama"
    assert "num_local_experts" not in cfg


def test_hf_config_qwen3_moe(tmp_path):
    def extra(w):
        w.add_key_length(32)
        w.add_value_length(32)

    path = write_model(tmp_path / "q3moe.gguf", arch="qwen3moe", n_experts=8, expert_ffn=64, extra=extra)
    cfg = gguf_to_hf_config(read_gguf(path))
    assert cfg["model_type"] == "qwen3_moe"
    assert cfg["num_experts"] == 8
    assert cfg["num_experts_per_tok"] == 2
    assert cfg["moe_intermediate_size"] == 64
    assert cfg["head_dim"] == 32
    assert "_gguf_value_length" not in cfg
    assert "num_local_experts" not in cfg


def test_hf_config_per_layer_arrays(tmp_path):
    path = write_model(tmp_path / "perlayer.gguf", n_layers=3, ffn=[128, 256, 64], n_kv_heads=[2, 1, 2])
    cfg = gguf_to_hf_config(read_gguf(path))
    assert cfg["intermediate_size"] == 256
    assert cfg["_gguf_feed_forward_length_per_layer"] == [128, 256, 64]
    assert cfg["num_key_value_heads"] == 2
    assert cfg["_gguf_head_count_kv_per_layer"] == [2, 1, 2]


def test_hf_config_gemma3_sliding_window_and_partial_rope(tmp_path):
    def extra(w):
        w.add_key_length(32)
        w.add_sliding_window(512)

    path = write_model(tmp_path / "g3.gguf", arch="gemma3", tied=True, extra=extra)
    cfg = gguf_to_hf_config(read_gguf(path))
    assert cfg["model_type"] == "gemma3_text"
    assert cfg["sliding_window"] == 512
    assert cfg["head_dim"] == 32
    assert cfg["partial_rotary_factor"] == 0.5  # rope.dimension_count 16 of a 32-wide head
    assert cfg["tie_word_embeddings"] is True


def test_hf_config_deepseek2_mla(tmp_path):
    def extra(w):
        w.add_leading_dense_block_count(1)
        w.add_kv_lora_rank(32)
        w.add_q_lora_rank(48)
        w.add_key_length(32 + 16)  # kv_lora_rank + qk_rope_head_dim (the cached width)
        w.add_value_length(32)
        w.add_key_length_mla(40)  # qk_nope_head_dim + qk_rope_head_dim
        w.add_value_length_mla(24)
        w.add_expert_shared_count(1)
        w.add_expert_weights_scale(2.5)

    path = write_model(
        tmp_path / "ds.gguf", arch="deepseek2", n_kv_heads=1, n_experts=4, expert_ffn=64, extra=extra
    )
    cfg = gguf_to_hf_config(read_gguf(path))
    assert cfg["model_type"] == "deepseek_v3"
    assert cfg["n_routed_experts"] == 4
    assert cfg["n_shared_experts"] == 1
    assert cfg["first_k_dense_replace"] == 1
    assert cfg["kv_lora_rank"] == 32
    assert cfg["q_lora_rank"] == 48
    assert cfg["qk_rope_head_dim"] == 16
    assert cfg["qk_nope_head_dim"] == 24
    assert cfg["v_head_dim"] == 24
    assert cfg["num_key_value_heads"] == 4  # HF counts the heads; llama.cpp stores one latent head
    assert cfg["routed_scaling_factor"] == 2.5
    assert "head_dim" not in cfg


@pytest.mark.parametrize(
    "arch, model_type",
    [("qwen2", "qwen2"), ("phi3", "phi3"), ("gpt-oss", "gpt_oss"), ("mistral3", "mistral"), ("starcoder", "gpt_bigcode")],
)
def test_hf_config_model_types(tmp_path, arch, model_type):
    path = write_model(tmp_path / "m.gguf", arch=arch, n_vocab=100)
    cfg = gguf_to_hf_config(read_gguf(path))
    assert cfg["model_type"] == model_type
    assert cfg["hidden_size"] == 64


def test_hf_config_unknown_architecture(tmp_path):
    cfg = gguf_to_hf_config(read_gguf(write_model(tmp_path / "x.gguf", arch="rwkv7", n_vocab=100)))
    assert cfg["model_type"] == "gguf:rwkv7"
    assert cfg["num_hidden_layers"] == 2


def test_hf_config_keys_are_the_gguf_package_spellings():
    """The `ARCH.*` keys read by gguf_to_hf_config are spelled as in gguf.constants.Keys."""
    from sizer.inputs import gguf as mod

    keys = gguf.constants.Keys
    spelled = {
        v.replace("{arch}", "A")
        for group in (keys.LLM, keys.Attention, keys.Rope)
        for k, v in vars(group).items()
        if k.isupper() and isinstance(v, str)
    }
    for suffix, _ in mod.HF_INT_KEYS + mod.HF_FLOAT_KEYS:
        assert f"A.{suffix}" in spelled, suffix
    for suffix in ("expert_count", "expert_weights_norm", "vocab_size", "rope.scaling.type",
                   "rope.scaling.factor", "rope.scaling.original_context_length",
                   "attention.key_length_mla", "attention.value_length_mla", "use_parallel_residual"):
        assert f"A.{suffix}" in spelled, suffix
    assert keys.General.FILE_TYPE == "general.file_type"
    assert keys.General.NAME == "general.name"
    assert keys.General.ALIGNMENT == "general.alignment"
    assert keys.Tokenizer.LIST == "tokenizer.ggml.tokens"
    assert keys.Split.LLM_KV_SPLIT_COUNT == "split.count"
    for arch in mod.GGUF_ARCH_TO_MODEL_TYPE:
        if arch != "mistral":  # an older spelling some converters wrote
            assert arch in gguf.MODEL_ARCH_NAMES.values(), arch


# --------------------------------------------------------------------------------------------------
# Malformed files
# --------------------------------------------------------------------------------------------------


def _cut(src, dst, n_bytes: int):
    dst.write_bytes(src.read_bytes()[:n_bytes])
    return dst


def test_truncated_in_the_header(llama_f32, tmp_path):
    g = read_gguf(llama_f32)
    for n in (10, 30, g.data_offset // 2, g.data_offset - 40):
        bad = _cut(llama_f32, tmp_path / f"cut{n}.gguf", n)
        with pytest.raises(InputFileError) as err:
            read_gguf(bad)
        assert str(bad) in str(err.value)
        assert "truncated" in str(err.value)


def test_truncated_in_the_data(llama_f32, tmp_path):
    size = read_gguf(llama_f32).file_size_bytes
    bad = _cut(llama_f32, tmp_path / "cutdata.gguf", size - 100)
    with pytest.raises(InputFileError) as err:
        read_gguf(bad)
    assert str(bad) in str(err.value)
    assert "output.weight" in str(err.value)
    assert "past the end" in str(err.value)


def test_bad_magic(llama_f32, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + llama_f32.read_bytes()[4:])
    with pytest.raises(InputFileError, match="not a GGUF file") as err:
        read_gguf(bad)
    assert str(bad) in str(err.value)
    short = tmp_path / "short.gguf"
    short.write_bytes(b"{}")
    with pytest.raises(InputFileError, match="not a GGUF file"):
        read_gguf(short)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(InputFileError):
        read_gguf(empty)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputFileError, match="nope.gguf"):
        read_gguf(tmp_path / "nope.gguf")
    with pytest.raises(InputFileError):
        read_gguf(tmp_path)


def _patched(src, dst, offset: int, new: bytes):
    data = bytearray(src.read_bytes())
    data[offset : offset + len(new)] = new
    dst.write_bytes(bytes(data))
    return dst


def test_unsupported_version(llama_f32, tmp_path):
    for version in (1, 4, 999):
        bad = _patched(llama_f32, tmp_path / f"v{version}.gguf", 4, struct.pack("<I", version))
        with pytest.raises(InputFileError, match=f"unsupported GGUF version {version}"):
            read_gguf(bad)


def _first_kv_type_offset(path) -> int:
    data = path.read_bytes()
    (key_len,) = struct.unpack_from("<Q", data, 24)
    return 24 + 8 + key_len


def test_unknown_metadata_value_type(llama_f32, tmp_path):
    bad = _patched(llama_f32, tmp_path / "vt.gguf", _first_kv_type_offset(llama_f32), struct.pack("<I", 13))
    with pytest.raises(InputFileError, match="unknown GGUF metadata value type 13"):
        read_gguf(bad)


def test_string_length_past_end_of_file(llama_f32, tmp_path):
    # the first key is a string value (general.architecture): make its length absurd
    offset = _first_kv_type_offset(llama_f32) + 4
    bad = _patched(llama_f32, tmp_path / "len.gguf", offset, struct.pack("<Q", 2**40))
    with pytest.raises(InputFileError, match="truncated") as err:
        read_gguf(bad)
    assert str(bad) in str(err.value)


def test_unknown_ggml_type_id(llama_f32, tmp_path):
    g = read_gguf(llama_f32)
    data = llama_f32.read_bytes()
    # the last tensor info ends 8 bytes (offset) after its uint32 type, just before the padding
    name = g.tensors[-1].name.encode()
    info_start = data.rindex(struct.pack("<Q", len(name)) + name, 0, g.data_offset)
    type_offset = info_start + 8 + len(name) + 4 + 8 * len(g.tensors[-1].shape)
    assert struct.unpack_from("<I", data, type_offset)[0] == 0  # F32
    bad = _patched(llama_f32, tmp_path / "tt.gguf", type_offset, struct.pack("<I", 5))  # removed Q4_2
    with pytest.raises(InputFileError, match="unknown ggml type id 5"):
        read_gguf(bad)


def test_hf_config_without_architecture(tmp_path):
    g = GgufFile("x.gguf", 3, {"general.name": "x"}, (), 32, 64, 64)
    with pytest.raises(InputFileError, match="general.architecture"):
        gguf_to_hf_config(g)
    g = GgufFile("x.gguf", 3, {"general.architecture": "llama", "llama.block_count": "two"}, (), 32, 64, 64)
    with pytest.raises(InputFileError, match="llama.block_count"):
        gguf_to_hf_config(g)


def test_errors_are_sizer_errors():
    assert issubclass(InputFileError, SizerError)


# --------------------------------------------------------------------------------------------------
# Fuzzing: nothing but InputFileError ever escapes
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_valid(tmp_path_factory):
    def extra(w):
        w.add_array("t.nested", [[1, 2], [3]])
        w.add_array("t.floats", [0.5, 0.25])

    path = write_model(
        tmp_path_factory.mktemp("fuzz") / "small.gguf", n_vocab=40, hidden=32, ffn=64, n_heads=2,
        n_kv_heads=1, n_layers=1, weight_type="Q8_0", extra=extra,
    )
    g = read_gguf(path)
    return _Valid(path.read_bytes(), g.data_offset, max(g.data_offset + t.offset + t.n_bytes for t in g.tensors))


class _Valid:
    """A valid file's bytes, where its header ends and where its last tensor's data ends."""

    def __init__(self, data: bytes, header_end: int, data_end: int) -> None:
        self.data, self.header_end, self.data_end = data, header_end, data_end

    def __repr__(self) -> str:  # keeps hypothesis' failure reports short
        return f"<valid GGUF, {len(self.data)} bytes>"


def _read_bytes_as_file(tmp_path, data: bytes):
    path = tmp_path / "fuzz.gguf"
    path.write_bytes(data)
    try:
        g = read_gguf(path)
    except InputFileError as e:
        assert str(path) in str(e)
        return None
    try:
        gguf_to_hf_config(g)
    except InputFileError:
        pass
    return g


_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(data=st.binary(max_size=512))
def test_fuzz_random_bytes(tmp_path, data):
    _read_bytes_as_file(tmp_path, data)


@_FUZZ
@given(version=st.sampled_from([2, 3, 0x03000000]), rest=st.binary(max_size=512))
def test_fuzz_random_bytes_after_a_valid_magic(tmp_path, version, rest):
    _read_bytes_as_file(tmp_path, b"GGUF" + struct.pack("<I", version) + rest)


@_FUZZ
@given(cut=st.integers(min_value=0, max_value=10**9))
def test_fuzz_truncations_of_a_valid_file(tmp_path, small_valid, cut):
    cut %= len(small_valid.data)  # strictly shorter than the file
    g = _read_bytes_as_file(tmp_path, small_valid.data[:cut])
    if cut < small_valid.data_end:
        assert g is None
    else:  # only the padding after the last tensor is missing: nothing is lost
        assert g is not None and len(g.tensors) == 12


@_FUZZ
@given(st.data())
def test_fuzz_corrupted_header_bytes(tmp_path, small_valid, data):
    buf = bytearray(small_valid.data)
    header_end = small_valid.header_end
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, header_end - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    _read_bytes_as_file(tmp_path, bytes(buf))

