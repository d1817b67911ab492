"""KV cache layouts and the estimate's invariants (hypothesis)."""

from dataclasses import replace

import pytest
from hypothesis import assume, given, settings, strategies as st

from sizer import estimate, get_model
from sizer.calc.activations import activation_peaks
from sizer.calc.kv import kv_cache_bytes, kv_cache_bytes_per_token, transformers_kv_cache_bytes
from sizer.calc.transformers_releases import (MODELLED, NEWEST, outside_note, parse_release, spec_for_release,
                                              spec_for_transformers)
from sizer.catalog import model_entries
from sizer.errors import UsageError
from sizer.spec import Workload

MODELS = list(model_entries())


def test_sliding_window_caps_every_layer():
    spec = get_model("mistral-7b")              # window 4096 on all 32 layers
    per_token = kv_cache_bytes_per_token(spec)
    assert kv_cache_bytes(spec, "bf16", 4096, 1) == 4096 * per_token
    assert kv_cache_bytes(spec, "bf16", 32768, 1) == 4096 * per_token


def test_mixed_layers_cap_only_sliding_layers():
    spec = get_model("gemma-2-9b")
    n_sliding = spec.n_sliding_layers
    assert 0 < n_sliding < spec.n_layers
    per_layer = kv_cache_bytes_per_token(spec) // spec.n_layers
    window = spec.sliding_window
    ctx = 4 * window
    expected = (spec.n_layers - n_sliding) * ctx * per_layer + n_sliding * window * per_layer
    assert kv_cache_bytes(spec, "bf16", ctx, 1) == expected


def test_mla_latent_per_token():
    spec = get_model("deepseek-v3")
    assert kv_cache_bytes_per_token(spec, "bf16") == 61 * (512 + 64) * 2


def test_kv_dtypes():
    spec = get_model("llama3-70b")
    assert kv_cache_bytes_per_token(spec, "fp8") == 327_680 // 2
    assert kv_cache_bytes_per_token(spec, "fp32") == 327_680 * 2
    with pytest.raises(UsageError):
        kv_cache_bytes_per_token(spec, "fp6")


def test_explicit_head_dim():
    spec = get_model("gemma-7b")               # head_dim 256 with 16 heads of a 3072 model (not 192)
    assert spec.head_dim == 256
    assert kv_cache_bytes_per_token(spec) == 28 * 2 * 16 * 256 * 2


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from(MODELS), ctx=st.integers(1, 256), batch=st.integers(1, 8), k=st.integers(2, 4))
def test_kv_linear_in_batch_and_context_below_any_window(model, ctx, batch, k):
    spec = get_model(model)
    base = kv_cache_bytes(spec, "bf16", ctx, batch)
    assert kv_cache_bytes(spec, "bf16", ctx, k * batch) == k * base
    assume(k * ctx <= (spec.sliding_window or k * ctx))                   # below the window (gpt-oss: 128)
    assert kv_cache_bytes(spec, "bf16", k * ctx, batch) == k * base


PRECISIONS = ["bf16", "fp32", "fp8", "int8", "nf4", "nf4-dq", "gptq-4bit-g128", "awq-4bit-g128", "Q4_K_M", "Q8_0"]


@settings(max_examples=80, deadline=None)
@given(model=st.sampled_from(MODELS), precision=st.sampled_from(PRECISIONS), kv=st.sampled_from(["bf16", "fp8"]),
       ctx=st.integers(1, 200_000), batch=st.integers(1, 64), attention=st.sampled_from(["sdpa", "eager"]),
       logits=st.sampled_from(["last", "all"]))
def test_components_sum_to_total(model, precision, kv, ctx, batch, attention, logits):
    e = estimate(model, precision, kv, ctx, batch, attention, logits, allow_long_context=True)
    assert sum(e.breakdown.values()) == e.total_bytes
    assert sum(e.memory[k] for k in ("weights", "kv_cache", "state", "activations", "overhead")) == e.memory["total"]
    assert set(e.memory) == {"weights", "kv_cache", "state", "activations", "overhead", "total"}
    assert sum(v for k, v in e.breakdown.items() if k.startswith("weights/")) == e.weights_bytes
    assert all(isinstance(v, int) and v >= 0 for v in e.breakdown.values())


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from(MODELS), precision=st.sampled_from(PRECISIONS), ctx=st.integers(1, 100_000),
       batch=st.integers(1, 32))
def test_weights_independent_of_workload_and_memory_grows(model, precision, ctx, batch):
    small = estimate(model, precision, "bf16", ctx, batch, allow_long_context=True)
    longer = estimate(model, precision, "bf16", ctx + 1000, batch, allow_long_context=True)
    wider = estimate(model, precision, "bf16", ctx, batch + 1, allow_long_context=True)
    assert small.weights_bytes == longer.weights_bytes == wider.weights_bytes
    assert longer.total_bytes > small.total_bytes
    assert wider.total_bytes > small.total_bytes
    assert longer.kv_cache_bytes >= small.kv_cache_bytes and wider.kv_cache_bytes > small.kv_cache_bytes


def test_eager_attention_materialises_scores():
    spec = get_model("llama-2-7b")
    sdpa = activation_peaks(spec, Workload(4096, 1, "sdpa"))
    eager = activation_peaks(spec, Workload(4096, 1, "eager"))
    scores = 32 * 4096 * 4096                   # 32 heads x 4096^2
    # at the softmax: bf16 scores + the fp32 copy softmax(dtype=float32) makes + fp32 softmax = 10
    # bytes per score, plus q, less the block output not yet allocated (MHA: both tokens x hidden)
    assert eager.parts["attention"] == scores * 10
    # SDPA: q and the attention output (K and V are the cache's), the kernel's fp32 log-sum-exp per
    # head and token, less the block output
    assert sdpa.parts["attention"] == 4096 * 4096 * 2 + 32 * 4096 * 4
    # the layer keeps the bf16 probabilities through its MLP; one additive bf16 mask of 4096^2
    assert eager.parts["mlp"] - sdpa.parts["mlp"] == scores * 2
    assert (sdpa.parts["masks"], eager.parts["masks"]) == (0, 4096 * 4096 * 2)


def test_masks_and_positions_as_transformers_builds_them():
    """SDPA needs no mask for causal full attention, a bool one per batch for sliding layers once
    the context reaches the window, and Falcon always; eager one additive mask per layer type."""
    from sizer.calc.activations import step_peak

    mistral, gemma2, falcon = get_model("mistral-7b"), get_model("gemma-2-9b"), get_model("falcon-7b")
    window = mistral.sliding_window
    assert step_peak(mistral, 2, window - 1, window - 1, False, 1, 2)["masks"] == 0
    assert step_peak(mistral, 2, window, window, False, 1, 2)["masks"] == 2 * window * window
    assert step_peak(falcon, 2, 100, 100, False, 1, 2)["masks"] == 2 * 100 * 100
    assert step_peak(gemma2, 2, 100, 100, True, 1, 2)["masks"] == 2 * (2 * 100 * 100 * 2)   # sliding + full
    # ids, position ids and the 2-D mask (int64), then cos and sin per token in bf16
    llama = get_model("llama3-8b")
    assert step_peak(llama, 3, 1000, 1000, False, 1, 2)["positions"] == 3 * 1000 * (3 * 8 + 2 * 128 * 2)
    assert step_peak(get_model("phi-2"), 1, 10, 10, False, 1, 2)["positions"] == 10 * (3 * 8 + 2 * 32 * 2)
    # ALiBi: no RoPE tables, and no position ids (Bloom's forward takes none, so generate() makes none)
    # and the ALiBi bias, [batch x heads, 1, kv] in the compute dtype
    bloom = get_model("bloom")
    assert step_peak(bloom, 1, 10, 10, False, 1, 2)["positions"] == 10 * 2 * 8 + bloom.n_heads * 10 * 2


def test_sdpa_internals_torch_makes_on_every_device():
    """What torch's SDPA makes inside itself: Mistral's sliding layers at 8k pass a bool mask, which
    SDPA converts to bf16 (2 bytes per cell, beside K and V repeated to its 32 heads); Falcon-7B's one
    K/V head without enable_gqa takes the math kernel up to transformers 5.24: float32 copies and
    scores, 9 bytes per score cell, on any device, so estimate and fit say so (5.25's Falcon repeats it
    as a view to a fused kernel). vLLM's own kernels make none of it."""
    from sizer.calc.activations import step_peak

    mistral, falcon = get_model("mistral-7b"), spec_for_release(get_model("falcon-7b"), (5, 24))
    s = 8192
    unmasked = step_peak(mistral, 1, 4000, 4000, False, 1, 2)["attention"]
    masked = step_peak(mistral, 1, s, s, False, 1, 2)["attention"]
    per_token = (32 * 128 + 4096) * 2 - 4096 * 2 + 32 * 4           # q, output, lse, less the block output
    assert unmasked == 4000 * per_token
    assert masked == s * per_token + s * s * 2 + s * 32 * 256 * 2   # converted mask, K and V repeated
    math = step_peak(falcon, 1, 2048, 2048, False, 1, 2)["attention"]
    assert math > 71 * 2048 * 2048 * 9                                # the float32 scores and softmax
    assert math < 71 * 2048 * 2048 * 9 * 1.1
    note = "transformers 5.24's falcon passes SDPA one K/V head without enable_gqa: torch's math kernel"
    assert any(n.startswith(note) for n in estimate(falcon, context_length=2048).details["notes"])
    shared = spec_for_release(falcon, (5, 25))
    assert not any("math kernel" in n for n in estimate(shared, context_length=2048).details["notes"])
    assert step_peak(shared, 1, 2048, 2048, False, 1, 2)["attention"] < 71 * 2048 * 2048 * 3
    assert not any("math kernel" in n for n in estimate(mistral).details["notes"])
    vllm = step_peak(falcon, 1, 2048, 2048, False, 1, 2, torch_sdpa=False)["attention"]
    assert vllm == 2048 * ((71 + 1) * 64 + 64 + 71 * 64) * 2          # the projections alone
    # DeepSeek's MLA (q and K wider than V): the CPU flash kernel refuses it, CUDA's kernels do not
    deepseek = get_model("deepseek-v3")
    cpu = step_peak(deepseek, 1, 1024, 1024, False, 1, 2, kernels="cpu")["attention"]
    assert cpu > step_peak(deepseek, 1, 1024, 1024, False, 1, 2)["attention"] + 128 * 1024 * 1024 * 9


def test_logits_all_positions_in_fp32():
    spec = get_model("llama3-8b")
    peaks = activation_peaks(spec, Workload(8192, 1, "sdpa", "all"))
    assert peaks.parts["logits"] == 8192 * 128256 * 4        # 4.2 GB at 8k tokens (engines.md)
    last = activation_peaks(spec, Workload(8192, 1, "sdpa", "last"))
    assert last.parts["logits"] == 128256 * (2 + 4)


def test_decode_step_is_smaller_than_prefill_for_long_prompts():
    peaks = activation_peaks(get_model("llama3-8b"), Workload(8192, 1))
    assert peaks.decode_bytes < peaks.prefill_bytes


@pytest.mark.parametrize("ctx, batch", [(0, 1), (-5, 1), (10, 0)])
def test_non_positive_workload_rejected(ctx, batch):
    with pytest.raises(UsageError):
        estimate("llama3-8b", context_length=ctx, batch_size=batch) if ctx else Workload(ctx, batch)


def test_default_context_is_the_models_maximum():
    assert estimate("llama3-70b").context_length == 8192
    assert estimate("mpt-7b").context_length == 2048


def test_estimate_accepts_spec_and_name_alike():
    spec = get_model("qwen2.5-7b")
    assert estimate(spec, "nf4", context_length=1024) == estimate("qwen2.5-7b", "nf4", context_length=1024)


@pytest.mark.parametrize("version, router_fp32", [("5.17.0", False), ("5.23.2", False), ("5.24.0", True),
                                                  ("5.24.0.dev0", True), ("6.0.0rc1", True)])
def test_deepseek_router_is_fp32_only_from_the_transformers_release_that_keeps_it(version, router_fp32):
    spec = get_model("deepseek-v3")
    router = [t for t in spec.tensors if t.component == "router"]
    assert router and all(t.fp32 for t in router)                 # the calculator: current transformers
    older = spec_for_transformers(spec, version)
    assert all(t.fp32 == router_fp32 for t in older.tensors if t.component == "router")
    assert [t for t in older.tensors if t.component != "router"] == [t for t in spec.tensors if t.component != "router"]
    llama = get_model("llama3-8b")
    assert spec_for_transformers(llama, "5.17.0") == replace(llama, transformers_release=(5, 17))


def test_transformers_decode_cache_full_layers():
    """Llama-3-8B (32 full layers, 8 KV heads of 128): the peak is the last layer's value
    concatenation: the 31 layers before it and its keys grown by one token, its old values beside
    the new ones."""
    from sizer.calc.kv import transformers_decode_cache

    s, b, per_layer = 1000, 2, 2 * 8 * 128            # K and V values per token per layer
    c = transformers_decode_cache(get_model("llama3-8b"), "bf16", s, b)
    half = per_layer // 2
    assert c.update_peak_bytes == (31 * (s + 1) * per_layer + (s + 1) * half + s * half + (s + 1) * half) * b * 2
    assert c.after_bytes == 32 * (s + 1) * per_layer * b * 2
    assert c.layer_bytes[0] == ((s + 1) + 31 * s) * per_layer * b * 2 and c.layer_bytes[-1] == c.after_bytes
    assert set(c.attended_tokens) == {s + 1}


def test_transformers_decode_cache_sliding_layers():
    """Mistral-7B past its 4096 window: each layer concatenates keys and values (4096 tokens) before
    freeing the prompt-long tensors its views kept, so the peak is the first layer's update."""
    from sizer.calc.kv import transformers_decode_cache, transformers_kv_cache_bytes

    spec, s, b, per_layer = get_model("Mistral-7B-v0.1"), 8192, 1, 2 * 8 * 128
    c = transformers_decode_cache(spec, "bf16", s, b)
    assert c.update_peak_bytes == (32 * s + 4096) * per_layer * b * 2
    assert c.after_bytes == 32 * 4096 * per_layer * b * 2
    # the cache keeps window - 1 tokens, as views of a window-long tensor
    assert c.after_bytes == transformers_kv_cache_bytes(spec, "bf16", s + 1, b) + 32 * per_layer * b * 2
    assert set(c.attended_tokens) == {4096}


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["llama3-8b", "Mistral-7B-v0.1", "gemma-2-9b", "gpt-oss-20b", "DeepSeek-V3"]),
       context=st.integers(1, 20000), batch=st.integers(1, 8))
def test_decode_cache_peak_bounds(name, context, batch):
    """The update's peak holds at least the prefill's storage and the updated cache; a longer prompt
    never shrinks it."""
    from sizer.calc.kv import transformers_decode_cache, transformers_kv_cache_bytes

    spec = get_model(name)
    c = transformers_decode_cache(spec, "bf16", context, batch)
    assert c.update_peak_bytes >= max(c.after_bytes, transformers_kv_cache_bytes(spec, "bf16", context, batch, storage=True))
    assert transformers_decode_cache(spec, "bf16", context + 1, batch).update_peak_bytes >= c.update_peak_bytes


# ---------------------------------------------------------------------------------------------
# transformers releases


@pytest.mark.parametrize("version, release", [("5.24", (5, 24)), ("5.24.0", (5, 24)), ("5.25.0.dev0", (5, 25)),
                                              ("6.0.0rc1", (6, 0)), (" 5.3.1 ", (5, 3))])
def test_parse_release(version, release):
    assert parse_release(version) == release


@pytest.mark.parametrize("text", ["", "5", "five.24", "5.x", "latest"])
def test_parse_release_refuses(text):
    with pytest.raises(ValueError, match="not a transformers version"):
        parse_release(text)


def test_outside_note_names_the_modelled_releases():
    assert outside_note("5.24.0") is None and outside_note("5.25.0") is None
    note = outside_note("5.26.1")
    assert note.startswith("transformers 5.26.1 is not a release sizer models (5.24, 5.25)") and "\n" not in note
    assert outside_note("4.57.6").startswith("transformers 4.57.6 is not a release")
    assert NEWEST == MODELLED[-1] == (5, 25)


def test_falcon_cache_by_release():
    """transformers 5.24 caches Falcon-40B's 8 K/V heads expanded to its 128 heads; 5.25 caches the 8."""
    spec = get_model("falcon-40b")
    old, new = spec_for_release(spec, (5, 24)), spec_for_release(spec, (5, 25))
    engines = kv_cache_bytes(spec, "bf16", 1000, 2)
    assert transformers_kv_cache_bytes(new, "bf16", 1000, 2) == engines
    assert transformers_kv_cache_bytes(old, "bf16", 1000, 2) == engines * spec.n_heads // spec.n_kv_heads
    assert any("5.24's Falcon cache stores K/V expanded" in n for n in old.notes)
    assert not any("Falcon cache" in n for n in new.notes)
    assert spec_for_release(old, (5, 25)).notes == new.notes          # the note follows the release
    falcon_7b = get_model("falcon-7b")                                # multi-query: one head either way
    assert transformers_kv_cache_bytes(spec_for_release(falcon_7b, (5, 24)), "bf16", 100, 1) == \
        kv_cache_bytes(falcon_7b, "bf16", 100, 1)


def test_estimate_follows_the_spec_release():
    """Falcon's own attention (5.24) and the shared one (5.25) hold different activations; an
    explicit release wins over the installed one."""
    spec = get_model("falcon-7b")
    old = estimate(spec_for_release(spec, (5, 24)), context_length=4096, batch_size=4)
    new = estimate(spec_for_release(spec, (5, 25)), context_length=4096, batch_size=4)
    assert old.breakdown["kv_cache"] == new.breakdown["kv_cache"]
    assert old.breakdown["activations"] != new.breakdown["activations"]
    assert estimate(spec_for_transformers(spec, "5.25.0"), context_length=4096, batch_size=4) == new


def test_bitsandbytes_on_falcon_is_said_to_stay_16bit():
    """transformers' bitsandbytes integration converts only exact nn.Linear modules; FalconLinear is a
    subclass, so Falcon stays 16-bit: sized so, and now said so."""
    nf4 = estimate("falcon-7b", "nf4", context_length=1024)
    assert nf4.weights_bytes == estimate("falcon-7b", "bf16", context_length=1024).weights_bytes
    assert any(n.startswith("bitsandbytes (nf4) leaves falcon's projections in 16-bit") for n in nf4.details["notes"])
    assert not any("bitsandbytes" in n for n in estimate("llama3-8b", "nf4").details["notes"])
    assert not any("bitsandbytes" in n for n in estimate("falcon-7b", "bf16").details["notes"])
