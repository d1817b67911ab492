"""Pre-flight checks and the run estimate of `quantize --method gptq`: no torch, catalog shapes."""

import pytest
from hypothesis import given, settings, strategies as st

from sizer import get_model
from sizer.families import spec_from_config
from sizer.quantize.plan import decoder_linears, estimate_run, few_tokens_note, pack_unit, preflight, vllm_partitions


def test_pack_units():
    assert [pack_unit(b) for b in (2, 3, 4, 8)] == [16, 32, 8, 4]


def test_llama3_8b_linears_and_marlin():
    spec = get_model("llama3-8b")
    names = {lin.name: lin for lin in decoder_linears(spec)}
    assert set(names) == {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                          "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
    assert (names["mlp.down_proj"].in_features, names["mlp.down_proj"].out_features) == (14336, 4096)
    assert names["mlp.down_proj"].row_parallel and not names["mlp.up_proj"].row_parallel
    assert names["self_attn.k_proj"].count == 32
    pre = preflight(spec, 4, 128, tensor_parallel=8)
    assert pre.ok and pre.warnings == () and pre.vllm_notes == ()
    assert pre.vllm_kernels == ("Machete (CUDA, compute capability 9.0)", "Marlin (CUDA, compute capability >= 7.5)",
                                "CPUWNA16 (vLLM's CPU build)")


def test_llama2_7b_at_tensor_parallel_8_splits_down_proj_mid_group():
    """11008 / 8 = 1376 input features per GPU: not a whole number of 128-groups (a real vLLM refusal)."""
    pre = preflight(get_model("Llama-2-7b-hf"), 4, 128, tensor_parallel=8)
    assert not pre.ok
    assert ("mlp.down_proj: in_features 1376 per GPU at tensor parallel 8 is not a multiple of group size 128 "
            "(a group would straddle two GPUs)") in pre.problems
    assert not preflight(get_model("Llama-2-7b-hf"), 4, 64, tensor_parallel=8).ok      # 1376 = 21.5 x 64
    assert preflight(get_model("Llama-2-7b-hf"), 4, 32, tensor_parallel=8).ok          # 1376 = 43 x 32
    assert not preflight(get_model("Llama-2-7b-hf"), 4, 128, tensor_parallel=4).ok     # 2752 = 21.5 x 128
    assert preflight(get_model("Llama-2-7b-hf"), 4, 128, tensor_parallel=2).ok         # 5504 = 43 x 128


VLLM_WONT = "vLLM 0.32 will not load this checkpoint: "


@pytest.mark.parametrize("settings, why", [
    (dict(bits=3), "it loads 4- and 8-bit GPTQ only, not 3-bit"),
    (dict(bits=2, sym=False), "it loads 4- and 8-bit GPTQ only, not 2-bit; it loads symmetric GPTQ only (--sym)"),
    (dict(act_order=True), "it no longer runs act-order with groups (desc_act; --static-groups keeps the groups "
                           "contiguous and loads)"),
], ids=["3-bit", "2-bit-asym", "act-order"])
def test_checkpoints_vllm_refuses_are_valid_but_warned(settings, why):
    """vLLM 0.32 loads GPTQ at 4/8-bit symmetric without desc_act groups only (tests/test_vllm_compat.py
    checks this against vLLM's CPU build); the checkpoint is still written, for the loaders that take it."""
    pre = preflight(get_model("llama3-8b"), settings.pop("bits", 4), 128, **settings)
    assert pre.ok and pre.vllm_kernels == () and pre.vllm_notes == ()
    assert pre.warnings == (VLLM_WONT + why + " (transformers, GPTQModel and sizer's own loader will)",)


def test_vllm_kernels_left_out_are_explained():
    spec = get_model("llama3-8b")
    eight = preflight(spec, 8, 32)
    assert eight.vllm_kernels == ("Marlin (CUDA, compute capability >= 7.5)",)
    assert eight.vllm_notes == ("Machete takes group sizes -1/64/128, not 32", "vLLM's CPU build takes 4-bit GPTQ only, not 8-bit")
    # act-order without groups reorders nothing; with static groups neither
    for pre in (preflight(spec, 4, -1, act_order=True), preflight(spec, 4, 128, act_order=True, static_groups=True)):
        assert pre.warnings == () and len(pre.vllm_kernels) == 3
    # SmolLM-360M's shapes (hidden 960, 15 heads, 5 KV heads of 64): vLLM's merged qkv_proj is
    # (15 + 2 x 5) x 64 = 1600 wide, not a multiple of Machete's 128
    smol = spec_from_config(dict(SMOLLM_360M), "smollm-360m", "test")
    pre = preflight(smol, 4, 64)
    assert pre.vllm_notes == ("Machete needs per-GPU K % 64 == 0 and N % 128 == 0; self_attn.q_proj+k_proj+v_proj "
                              "is K=960, N=1600",)
    assert pre.vllm_kernels == ("Marlin (CUDA, compute capability >= 7.5)", "CPUWNA16 (vLLM's CPU build)")


SMOLLM_360M = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 960,
               "intermediate_size": 2560, "num_attention_heads": 15, "num_key_value_heads": 5,
               "num_hidden_layers": 32, "vocab_size": 49152, "tie_word_embeddings": True,
               "max_position_embeddings": 2048, "rms_norm_eps": 1e-5}


def test_vllm_partitions_merge_and_replicate():
    """vLLM's kernels see the merged qkv and gate_up shards; with fewer KV heads than GPUs each GPU
    holds a whole replicated KV head (gemma-2b: one KV head of 256)."""
    spec = get_model("gemma-2b")
    linears = list(preflight(spec, 4, 128).linears)
    assert vllm_partitions(spec, linears, 4) == [("self_attn.q_proj+k_proj+v_proj", 2048, 2048 // 4 + 2 * 256),
                                                 ("self_attn.o_proj", 512, 2048),
                                                 ("mlp.gate_proj+up_proj", 2048, 2 * 16384 // 4),
                                                 ("mlp.down_proj", 4096, 2048)]
    llama = get_model("llama3-8b")
    assert vllm_partitions(llama, list(preflight(llama, 4, 128).linears), 8)[0] == (
        "self_attn.q_proj+k_proj+v_proj", 4096, (4096 + 2 * 1024) // 8)


def test_act_order_with_tensor_parallel_warns_unless_static_groups():
    spec = get_model("llama3-8b")
    assert any("--act-order with tensor parallel 2" in w for w in preflight(spec, 4, 128, act_order=True,
                                                                              tensor_parallel=2).warnings)
    assert preflight(spec, 4, 128, act_order=True, static_groups=True, tensor_parallel=2).warnings == ()
    assert not any("tensor parallel" in w for w in preflight(spec, 4, 128, act_order=True).warnings)


def test_moe_experts_are_refused():
    pre = preflight(get_model("Mixtral-8x7B-v0.1"), 4, 128)
    assert not pre.ok and "routed experts" in pre.problems[0]


def test_bad_settings():
    spec = get_model("llama3-8b")
    assert "GPTQ writes 2, 3, 4 or 8 bits, not 5" in preflight(spec, 5, 128).problems
    assert "4096 attention heads" not in " ".join(preflight(spec, 4, 128, tensor_parallel=3).problems)
    assert "32 attention heads are not divisible by tensor parallel 3" in preflight(spec, 4, 128, tensor_parallel=3).problems


def test_estimate_parts_sum_and_scale():
    spec = get_model("llama3-8b")
    e = estimate_run(spec, 128, 2048, 8, matmul_gflops=100.0, baseline_bytes=10)
    assert sum(e.parts.values()) == e.peak_bytes and e.parts["process baseline"] == 10
    # llama3-8b: every block is over glibc's 32 MiB mmap threshold (mapped and unmapped whole): no slack
    assert e.parts["allocator slack"] == 0
    # Qwen3-0.6B, 256-token windows: weights (3072 x 1024 fp32 = 12 MiB), hidden states and forward
    # blocks fragment; its 3072^2 Hessians (36 MiB) and the embedding do not
    tiny = estimate_run(get_model("Qwen3-0.6B"), 8, 256, 2, matmul_gflops=100.0)
    assert tiny.parts["allocator slack"] == (tiny.parts["layer weights (x2)"] + tiny.parts["cached hidden states"]
                                             + tiny.parts["one forward"])
    # the held-out Hessians of the four shared-input groups (qkv, o, gate+up: 4096^2; down: 14336^2), all
    # alive in the held-out pass; without held-out text, down_proj's calibration Hessian alone
    assert e.parts["hessians"] == (3 * 4096 ** 2 + 14336 ** 2) * 4
    assert estimate_run(spec, 128, 2048, 0, matmul_gflops=100.0).parts["hessians"] == 14336 ** 2 * 4
    assert e.parts["cached hidden states"] == 2 * (128 + 16) * 2048 * 4096 * 4
    groups = [(4096, 4096 + 1024 + 1024), (4096, 4096), (4096, 2 * 14336), (14336, 4096)]   # qkv, o, gate+up, down
    columns = 32 * sum(k * (56e-6 + n * 128 / 3.2e9) for k, n in groups)
    assert e.seconds == pytest.approx(e.flops / (100e9 * 0.6) + columns)


@settings(max_examples=40, deadline=None)
@given(samples=st.integers(1, 256), seq=st.integers(16, 4096), more=st.integers(1, 64))
def test_estimate_grows_with_calibration(samples, seq, more):
    spec = get_model("Qwen3-0.6B")
    a = estimate_run(spec, samples, seq, 4, 50.0)
    b = estimate_run(spec, samples + more, seq, 4, 50.0)
    c = estimate_run(spec, samples, seq + more, 4, 50.0)
    # the working set grows; the allocator slack may not: a longer window can lift a part's blocks over
    # glibc's 32 MiB mmap threshold, where they stop fragmenting the heap (Qwen3-0.6B's one-forward
    # block crosses it between 2,730 and 2,731 tokens)
    working = lambda e: e.peak_bytes - e.parts["allocator slack"]   # noqa: E731
    assert working(b) > working(a) and working(c) > working(a)
    assert b.peak_bytes > a.peak_bytes
    assert b.seconds > a.seconds and c.seconds > a.seconds


def test_partial_last_groups_are_written_with_one_warning():
    """SmolLM-360M's hidden 960 is 7.5 groups of 128: the checkpoint is valid GPTQ v1 (ceil(K / g) groups),
    vLLM 0.32 refuses it (docs/quantize.md), and so does a row-parallel split that cuts a group."""
    smol = spec_from_config(dict(SMOLLM_360M), "smollm-360m", "test")
    pre = preflight(smol, 4, 128)
    assert pre.ok and pre.vllm_kernels == () and len(pre.warnings) == 1
    assert pre.warnings[0].startswith("partial last groups (self_attn.q_proj K=960, self_attn.k_proj K=960, "
                                      "self_attn.v_proj K=960, self_attn.o_proj K=960, mlp.gate_proj K=960, "
                                      "mlp.up_proj K=960; group size 128), stored as ceil(K / 128) groups")
    assert "vLLM 0.32" in pre.warnings[0] and "--kernel int4" in pre.warnings[0]
    assert preflight(smol, 4, 64).warnings == ()                     # 960 = 15 x 64, 2560 = 40 x 64
    split = preflight(smol, 4, 128, tensor_parallel=5)              # 15 heads; o_proj gets K = 192 per GPU
    assert ("self_attn.o_proj: in_features 192 per GPU at tensor parallel 5 is not a multiple of group size 128 "
            "(a group would straddle two GPUs)") in split.problems


def test_fewer_calibration_tokens_than_inputs_are_noted():
    """SmolLM-360M's down_proj reads 2,560 inputs: 4 x 256 tokens leave its Hessian rank-deficient."""
    linears = preflight(spec_from_config(dict(SMOLLM_360M), "smollm-360m", "test"), 4, 64).linears
    note = few_tokens_note(linears, 4 * 256)
    assert note.startswith("1,024 calibration tokens are fewer than mlp.down_proj's 2,560 inputs: its Hessian is "
                           "rank-deficient")
    assert few_tokens_note(linears, 2560) is None and few_tokens_note(linears, 128 * 2048) is None
