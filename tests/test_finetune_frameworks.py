"""The --framework profiles: the bytes each framework's own objects and loss computation take,
checked against real torch / torchao / PEFT objects where they run on the CPU, and the rules read
from the frameworks' sources (docs/reference/finetune.md, "Frameworks")."""

import pytest

from sizer.errors import UsageError
from sizer.finetune.activations import activation_parts
from sizer.finetune.frameworks import (
    FRAMEWORKS, LOSS_KERNELS, adapter_param_bytes, checkpoint_input_bytes, dora_magnitude_param_bytes, get_framework,
    loss_bytes, torchao_nf4_bytes, unsloth_ce_rows)
from sizer.finetune.setup import FRAMEWORKS as SETUP_FRAMEWORKS
from sizer.finetune.setup import FinetuneSetup

MiB = 1024 * 1024


def test_every_framework_the_setup_accepts_has_a_profile():
    assert set(SETUP_FRAMEWORKS) == set(FRAMEWORKS)
    assert all(get_framework(n).name == n and get_framework(n).loss_kernel in LOSS_KERNELS for n in FRAMEWORKS)
    with pytest.raises(UsageError, match="expected one of"):
        get_framework("axolotl")


@pytest.mark.parametrize("shape", [(256, 64), (512, 128), (64, 4096)])
@pytest.mark.parametrize("dtype_name", ["bfloat16", "float32"])
def test_torchao_nf4_bytes_are_the_inner_tensors_of_a_real_nf4_tensor(shape, dtype_name):
    torch = pytest.importorskip("torch")
    nf4 = pytest.importorskip("torchao.quantization.quantize_.workflows.nf4.nf4_tensor")
    dtype = getattr(torch, dtype_name)
    t = nf4.to_nf4(torch.randn(*shape, dtype=dtype))           # torchtune's defaults: blocks 64, scalers 256
    inner = [getattr(t, name) for name in t.__tensor_flatten__()[0]]
    assert torchao_nf4_bytes(shape[0] * shape[1], dtype.itemsize) == sum(x.numel() * x.element_size() for x in inner)


def test_torchao_nf4_refuses_the_sizes_torchao_refuses():
    torch = pytest.importorskip("torch")
    nf4 = pytest.importorskip("torchao.quantization.quantize_.workflows.nf4.nf4_tensor")
    with pytest.raises(AssertionError):
        nf4.to_nf4(torch.randn(64, 64, dtype=torch.bfloat16))     # 64 scaler blocks: not a multiple of 256
    with pytest.raises(UsageError, match="divisible"):
        torchao_nf4_bytes(64 * 64)


def _tiny_llama(torch):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=512)
    return LlamaForCausalLM(config).to(torch.bfloat16)


@pytest.mark.parametrize("autocast", [True, False])
def test_peft_adapter_dtype_is_the_profiles(autocast):
    """PEFT's get_peft_model makes adapters float32 over a bf16 base (TRL's default), the base dtype
    with autocast_adapter_dtype=False (what TRL passes under ZeRO-3)."""
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(_tiny_llama(torch), peft.LoraConfig(r=4, target_modules="all-linear"),
                                autocast_adapter_dtype=autocast)
    widths = {p.element_size() for n, p in model.named_parameters() if "lora_" in n}
    fw = FRAMEWORKS["transformers"]
    assert widths == {adapter_param_bytes(fw, "lora", zero_stage=0 if autocast else 3)}


def test_adapter_widths_per_framework():
    trl, tune, unsloth = FRAMEWORKS["transformers"], FRAMEWORKS["torchtune"], FRAMEWORKS["unsloth"]
    # TRL casts A/B to bf16 over a 4-bit base and leaves DoRA's magnitude float32
    assert adapter_param_bytes(trl, "qlora") == 2 and dora_magnitude_param_bytes(trl, "qlora") == 4
    assert adapter_param_bytes(trl, "qlora", zero_stage=3) == 2
    assert dora_magnitude_param_bytes(trl, "dora") == adapter_param_bytes(trl, "dora") == 4
    assert {adapter_param_bytes(tune, m) for m in ("lora", "qlora", "dora")} == {2}
    assert {adapter_param_bytes(unsloth, m, s) for m in ("lora", "qlora") for s in (0, 3)} == {4}


def _recipe_loss_peak(torch, dtype, tokens, vocab, hidden, chunks):
    """torchtune's chunked output and CEWithChunkedOutputLoss, measured with the profiler's
    allocation events: each chunk's projection, F.cross_entropy over its .float(), summed; the
    recipe deletes the logits before the backward."""
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    from sizer.measure.meter import profiler_peak

    torch.manual_seed(0)
    h = torch.randn(1, tokens, hidden, dtype=dtype, requires_grad=True)
    w = torch.randn(vocab, hidden, dtype=dtype)
    labels = torch.randint(0, vocab, (1, tokens))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        logits = [F.linear(x, w) for x in h.chunk(chunks, dim=1)]
        loss = sum(F.cross_entropy(c.reshape(-1, vocab).float(), t.reshape(-1), reduction="sum")
                   for c, t in zip(logits, labels.chunk(chunks, dim=1)))
        del logits
        loss.backward()
    return profiler_peak(prof)


@pytest.mark.parametrize("dtype_name,cb", [("bfloat16", 2), ("float32", 4)])
def test_torchtune_chunked_loss_bytes_are_the_measured_peak(dtype_name, cb, monkeypatch):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    monkeypatch.setenv("KINETO_LOG_LEVEL", "99")
    tokens, vocab, hidden = 256, 8000, 64
    fw = FRAMEWORKS["torchtune"]
    measured = _recipe_loss_peak(torch, getattr(torch, dtype_name), tokens, vocab, hidden, fw.loss_chunks)
    predicted = loss_bytes(fw, tokens, vocab, hidden, cb)
    assert 0 <= measured - predicted < 1024            # the loss scalars


def test_unsloth_chunk_rows_follow_fused_linear_rows():
    # Llama 3 8B, 2048 tokens: 2048*4096/128256 = 65.4 -> 64 rows, below the floor 512*151936/128256 = 606 -> 512
    assert unsloth_ce_rows(2048, 4096, 128256) == 512
    # a small vocabulary and many tokens: 131072*8192/32000 -> 32768, capped at 4096 rows
    assert unsloth_ce_rows(131072, 8192, 32000) == 4096
    # never more rows than tokens
    assert unsloth_ce_rows(100, 4096, 128256) == 100
    # a huge vocabulary: 2 GiB of float32 logits hold 2**31 / (1_000_000 * 4) = 536 rows
    assert unsloth_ce_rows(1 << 20, 8192, 1_000_000) == 536


def test_no_float32_logits_in_trl_unsloth():
    """TRL's tiled log-probs and unsloth's fused CE hold no [tokens, vocab] tensor: doubling the
    vocabulary adds nothing to TRL's (its tile is 32768 wide whatever the vocabulary), doubling
    the tokens adds only per-token rows to unsloth's, while the chunked-output loss doubles."""
    tokens, hidden = 4096, 4096
    trl, tune, unsloth = FRAMEWORKS["transformers"], FRAMEWORKS["torchtune"], FRAMEWORKS["unsloth"]
    assert loss_bytes(trl, tokens, 64000, hidden, 2) == loss_bytes(trl, tokens, 128000, hidden, 2)
    assert loss_bytes(trl, tokens, 128000, hidden, 2, head_trainable=True) - loss_bytes(
        trl, tokens, 128000, hidden, 2) == 128000 * hidden * 4     # the head's float32 gradient accumulator
    grown = loss_bytes(unsloth, 2 * tokens, 128000, hidden, 2) - loss_bytes(unsloth, tokens, 128000, hidden, 2)
    assert grown == tokens * (hidden * 2 + 4)          # the hidden-state gradient and a float32 log-prob per token
    assert loss_bytes(tune, tokens, 128000, hidden, 2) == 2 * loss_bytes(tune, tokens, 64000, hidden, 2)
    assert loss_bytes(FRAMEWORKS["trainer"], tokens, 128000, hidden, 2) is None


def test_unsloth_offloads_checkpointed_inputs_above_its_thresholds():
    fw, layers = FRAMEWORKS["unsloth"], 32
    big = 4 * MiB
    # offloaded: the last layer's input and two staging buffers stay; the other 31 go to host memory
    assert checkpoint_input_bytes(fw, layers, big, 2048) == (3 * big, 31 * big)
    assert checkpoint_input_bytes(fw, layers, big, 511) == (layers * big, 0)        # under 512 tokens: plain
    assert checkpoint_input_bytes(fw, layers, 2 * MiB, 2048) == (layers * 2 * MiB, 0)   # not above 2 MiB
    assert checkpoint_input_bytes(fw, 2, big, 2048) == (2 * big, big)
    assert checkpoint_input_bytes(FRAMEWORKS["transformers"], layers, big, 4096) == (layers * big, 0)


def test_activation_parts_use_the_profiles(llama_spec):
    parts = {n: activation_parts(llama_spec, FinetuneSetup(method="lora", seq_len=1024, micro_batch_size=2,
                                                           framework=n), FRAMEWORKS[n], 2, 1024)
             for n in FRAMEWORKS}
    tokens, h, v = 2048, llama_spec.hidden_size, llama_spec.vocab_size
    # the loss moment holds at least the kernel's own bytes (with the final norm's tensors beside them)
    for n in ("transformers", "torchtune", "unsloth"):
        assert parts[n].logits >= loss_bytes(FRAMEWORKS[n], tokens, v, h, 2)
    assert parts["trainer"].logits > parts["torchtune"].logits > parts["transformers"].logits
    assert parts["unsloth"].host == (llama_spec.n_layers - 1) * tokens * h * 2
    inputs = llama_spec.n_layers * tokens * h * 2                 # every checkpointed layer input, 16-bit
    rope = 2 * 1024 * llama_spec.head_dim * 2                     # cos and sin, one row per position
    final_norm = tokens * h * 4 + tokens * 4                      # its float32 input and rsqrt, kept for the backward
    assert parts["transformers"].host == 0 and parts["transformers"].saved == inputs + rope + final_norm


@pytest.fixture
def llama_spec():
    """Llama 3 8B: a layer input of 2048 tokens is 16 MiB, above unsloth's 2 MiB threshold."""
    from sizer.inputs.resolve import get_model

    return get_model("llama3-8b")


def test_trained_adapters_take_the_profiles_width(llama_spec):
    from sizer.finetune.params import trained_params

    fw = FRAMEWORKS["transformers"]
    widths = {(m, z): trained_params(llama_spec, FinetuneSetup(method=m, zero=z), fw, False).param_bytes
              for m, z in (("qlora", 0), ("lora", 0), ("lora", 3))}
    assert widths == {("qlora", 0): 2, ("lora", 0): 4, ("lora", 3): 2}


# unsloth's layer kernels: each profile switch alone, on a tiny Llama, against sums written out by hand
TINY = dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=512, max_position_embeddings=512)
H, F, Q, KV, HEADS, R, CB = 64, 128, 64, 32, 4, 8, 2          # widths of TINY, rank 8, bf16
SWITCHES = ("norm_kernel", "norm_grad_in_place", "rope_in_place", "fused_lora", "fused_lora_grad_in_place",
            "checkpoint_reentrant")


def _tiny(config=None):
    from sizer.families import spec_from_config

    return spec_from_config(dict(config or TINY), "tiny", "config")


def _lora(**kw):
    return FinetuneSetup(method=kw.pop("method", "lora"), lora_rank=R, seq_len=kw.pop("seq_len", 256),
                         framework="trainer", **kw)


def _with(*switches, base="trainer", **more):
    from dataclasses import replace

    return replace(FRAMEWORKS[base], **{s: True for s in switches}, **more)


def _layer(fw, setup=None, tokens=256, config=None):
    from sizer.finetune.activations import layer_saved_bytes, shape_of

    return layer_saved_bytes(shape_of(_tiny(config), setup or _lora(), tokens, fw=fw))


def test_only_unsloth_turns_its_layer_kernels_on():
    assert all(getattr(FRAMEWORKS["unsloth"], s) for s in SWITCHES)
    assert not any(getattr(FRAMEWORKS[n], s) for n in ("transformers", "trainer", "torchtune") for s in SWITCHES)


def test_unsloth_layer_keeps_what_its_kernels_save():
    """Both norms keep their input and a float32 1/rms; LoRA_QKV the normed input; attention q, k, v,
    its output and a float32 logsumexp per head; LoRA_W nothing more (its input is that output);
    LoRA_MLP the normed input, e and g."""
    t = 256
    per_token = CB * (H + H + Q + KV + KV + Q + H + H + 2 * F) + 4 * (1 + HEADS + 1)
    assert _layer(FRAMEWORKS["unsloth"], tokens=t) == t * per_token


def test_norm_kernel_keeps_the_input_not_a_float32_copy():
    # PEFT LoRA, bf16: each of the two layer norms kept a float32 copy of its input; the kernel keeps
    # the bf16 input itself, which nothing else keeps (the float32 rsqrt / 1/rms is the same)
    t = 256
    assert _layer(_with()) - _layer(_with("norm_kernel")) == t * 2 * H * (4 - CB)


def test_rope_in_place_keeps_the_same_tensors():
    assert _layer(_with("rope_in_place")) == _layer(_with())


def test_fused_lora_keeps_its_inputs_not_float32_copies():
    """PEFT keeps, per adapted projection, the float32 cast of its input and A's float32 output; the
    MLP the gate output, SiLU's output and the up output. The fused Functions keep the bf16 normed
    input once for q/k/v and once for the MLP, and e and g."""
    t = 256
    peft = 3 * (4 * H + 4 * R) + (4 * Q + 4 * R) + 2 * (4 * H + 4 * R) + 3 * F * CB + (4 * F + 4 * R)
    fused = H * CB + H * CB + 2 * F * CB
    assert _layer(_with()) - _layer(_with("fused_lora")) == t * (peft - fused)


def test_fused_lora_applies_where_unsloth_patches():
    from sizer.finetune.activations import shape_of

    def groups(setup, config=None, fw=None):
        s = shape_of(_tiny(config), setup, 64, fw=fw or _with("fused_lora"))
        return s.fused_qkv, s.fused_o, s.fused_mlp

    assert groups(_lora()) == (True, True, True)
    assert groups(_lora(lora_targets=("q", "v"))) == (False, False, False)       # k_proj has no adapter
    assert groups(_lora(lora_targets=("q", "k", "v", "o"))) == (True, True, False)
    assert groups(_lora(), dict(TINY, model_type="qwen2")) == (False, True, True)   # q/k/v with a bias
    assert groups(_lora(method="dora")) == groups(_lora(method="full")) == (False, False, False)
    assert groups(_lora(precision="fp32")) == (False, False, False)            # a float32 base: PEFT's forward
    assert groups(_lora(), fw=_with()) == (False, False, False)


@pytest.mark.parametrize("method,compiled", [("lora", True), ("lora", False), ("qlora", True)])
def test_fused_mlp_backward_moment(method, compiled):
    """LoRA_MLP.backward: DW [tokens, ff] (swiglu's backward writes over it and the saved e, g), up_dB
    and gate_dB [tokens, rank], one more rank-wide product, then dX beside up's dequantized weight;
    dX lands in the saved input unless compiled."""
    from sizer.finetune.activations import mlp_backward_bytes, shape_of

    t = 256
    fw = _with("fused_lora", "fused_lora_grad_in_place", compile=compiled, kbit_upcast_fp32=False)
    s = shape_of(_tiny(), _lora(method=method), t, fw=fw)
    weight = H * F * CB if method == "qlora" else 0
    dx = t * H * CB if compiled else 0
    expected = max(weight + t * F * CB, t * F * CB + 3 * t * R * CB, t * F * CB + 2 * t * R * CB + weight + dx)
    assert mlp_backward_bytes(s) == expected


def _moments(fw, seq_len, layers=2):
    from sizer.finetune.activations import StepGradients, step_moments

    setup = FinetuneSetup(method="lora", lora_rank=R, seq_len=seq_len, gradient_checkpointing=True,
                          framework="unsloth")
    spec = _tiny(dict(TINY, num_hidden_layers=layers))
    return step_moments(spec, setup, 1, seq_len, StepGradients(0, 0, 0), fw=fw)


def test_final_norm_backward_terms():
    """transformers' final norm backward holds three float32 [tokens, hidden] temporaries; unsloth's
    kernel one new gradient in the compute dtype, none where it overwrites the incoming one."""
    from sizer.finetune.activations import final_norm_backward_bytes, shape_of

    t = 256
    norm = [final_norm_backward_bytes(shape_of(_tiny(), _lora(), t, fw=fw))
            for fw in (_with(), _with("norm_kernel"), _with("norm_kernel", "norm_grad_in_place"))]
    assert norm == [3 * t * H * 4, t * H * CB, 0]


def replace_fw(fw, **kw):
    from dataclasses import replace

    return replace(fw, **kw)


def test_reentrant_recompute_holds_the_layer_output():
    """unsloth's checkpoint Function recomputes the whole layer and holds its output through the
    layer's backward: one [tokens, hidden] tensor more at the MLP backward's moment (the step's peak
    from 8192 tokens on; below, the fused loss's moment is)."""
    t = 8192
    on = FRAMEWORKS["unsloth"]
    off = replace_fw(on, checkpoint_reentrant=False)
    assert _moments(on, t).backward_peak - _moments(off, t).backward_peak == t * H * CB


def test_offloaded_inputs_keep_the_staging_buffers_on_the_gpu():
    """Offloaded (a layer input above 2 MiB: 16384 tokens x 64 x bf16 = 2 MiB is not, 32768 is), the
    forward leaves the staging buffers and the last layer's input on the GPU: what
    checkpoint_input_bytes counts on the device."""
    seq = 32768
    x = seq * H * CB
    on = FRAMEWORKS["unsloth"]
    bare = replace_fw(on, checkpoint_staging_buffers=0, checkpoint_keeps_last=False)
    assert _moments(on, seq, 4).saved - _moments(bare, seq, 4).saved == checkpoint_input_bytes(on, 4, x, seq)[0]
    assert checkpoint_input_bytes(on, 4, x, seq)[0] == 3 * x


# --- litgpt (litgpt@00af8b0d with lightning 2.4 and bitsandbytes 0.42; docs/reference/finetune.md, "litgpt")

# A llama of hidden 64, 2 layers, 4 query heads of 16, 2 KV heads, MLP 128, vocab 256.
TH, TNH, TNKV, THD, TFF, TV = 64, 4, 2, 16, 128, 256
LITGPT_TINY = {"model_type": "llama", "hidden_size": TH, "intermediate_size": TFF, "num_hidden_layers": 2,
        "num_attention_heads": TNH, "num_key_value_heads": TNKV, "vocab_size": TV, "max_position_embeddings": 64}


def _litgpt_tiny(tied=False):
    from sizer.families import spec_from_config

    return spec_from_config({**LITGPT_TINY, "tie_word_embeddings": tied}, "tiny", "test")


def _litgpt_layer_saved(method, tokens, **fw_changes):
    from dataclasses import replace

    from sizer.finetune.activations import CUDA, layer_saved_bytes, shape_of

    setup = FinetuneSetup(method=method, framework="litgpt", lora_targets=("q", "v"), lora_rank=8,
                          gradient_checkpointing=False, seq_len=tokens, quant="nf4")
    fw = replace(FRAMEWORKS["litgpt"], **fw_changes)
    return layer_saved_bytes(shape_of(_litgpt_tiny(), setup, tokens, CUDA, fw))


def test_litgpt_lora_layer_keeps_the_fused_qkv_adapters_and_expanded_kv():
    """One layer of litgpt LoRA on q and v (no dropout), term by term from the sources: each RMSNorm's
    float32 input and rsqrt; LoRAQKVLinear's A reads the normed input in bf16 (kept as is) and B keeps
    A's bf16 output of rank x 2; SDPA keeps q, k and v with k and v copied out to the 4 query heads,
    its output and float32 logsumexp; silu keeps its input, the product both factors."""
    t, cb, r = 32, 2, 8
    norms = 2 * (t * TH * 4 + t * 4)
    lora = t * TH * cb + t * r * 2 * cb
    sdpa = 3 * t * TNH * THD * cb + t * TNH * THD * cb + t * TNH * 4
    mlp = 3 * t * TFF * cb
    assert _litgpt_layer_saved("lora", t) == norms + lora + sdpa + mlp
    # without the expansion k and v would be kept at the 2 key/value heads
    assert _litgpt_layer_saved("lora", t) - _litgpt_layer_saved("lora", t, expand_kv=False) == \
        2 * t * (TNH - TNKV) * THD * cb


def test_litgpt_qlora_keeps_every_4bit_linears_input():
    """bitsandbytes 0.42's MatMul4Bit saves its input A whenever a gradient is needed: the qkv
    Linear's (norm_1's output, which LoRA's A keeps already), fc_1/fc_2's (norm_2's output, one
    tensor) and proj's (the gated product); the attention proj reads SDPA's output, kept already."""
    t, cb = 32, 2
    assert _litgpt_layer_saved("qlora", t) - _litgpt_layer_saved("lora", t) == t * (TH + TFF) * cb
    assert _litgpt_layer_saved("qlora", t, kbit_saves_input=False) == _litgpt_layer_saved("lora", t)   # (bumps only)


def _litgpt_loss_peak(torch, batch, seq, vocab, hidden):
    """litgpt's training loss measured with the profiler's allocation events: the frozen bf16 head
    over each 128-token slice of every sequence, the last slice shifted by one, cross_entropy with
    reduction "none" on each bf16 chunk, the concatenated sum over the target count, backward."""
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    from sizer.measure.meter import profiler_peak

    torch.manual_seed(0)
    h = torch.randn(batch, seq, hidden, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(vocab, hidden, dtype=torch.bfloat16)
    labels = torch.randint(0, vocab, (batch, seq))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        logits = [F.linear(part, w) for part in h.split(128, dim=1)]
        logits[-1] = logits[-1][..., :-1, :]
        targets = labels[..., 1:]
        losses = [F.cross_entropy(c.reshape(-1, vocab), y.reshape(-1), reduction="none")
                  for c, y in zip(logits, targets.split(128, dim=1))]
        loss = torch.cat(losses).sum() / (targets != -100).sum()
        del losses
        loss.backward()
    return profiler_peak(prof)


@pytest.mark.parametrize("batch,seq", [(1, 512), (2, 512), (2, 300)])
def test_litgpt_chunked_head_loss_bytes_are_the_measured_peak(batch, seq, monkeypatch):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    monkeypatch.setenv("KINETO_LOG_LEVEL", "99")
    vocab, hidden = 8000, 64
    measured = _litgpt_loss_peak(torch, batch, seq, vocab, hidden)
    predicted = loss_bytes(FRAMEWORKS["litgpt"], batch * seq, vocab, hidden, 2, seq_len=seq)
    # the shift leaves the last chunk one row per sequence short: its log-probs and gradients
    assert 0 <= predicted - measured < 2 * batch * vocab * 2
    # a 4-bit head adds its two dequantized copies (float16, then the bf16 cast the matmul reads)
    assert loss_bytes(FRAMEWORKS["litgpt"], batch * seq, vocab, hidden, 2, seq_len=seq, kbit=True) - predicted == \
        2 * vocab * hidden * 2


@pytest.mark.parametrize("quant,nested", [("nf4", False), ("nf4-dq", True)])
def test_litgpt_head_is_quantized_and_untied(quant, nested):
    """Lightning's BitsandbytesPrecision replaces every torch.nn.Linear, the head's too: its bytes are
    those of bitsandbytes' quantize_4bit of the head (packed codes, absmax, code table; nested: uint8
    absmax, the second state and the offset). litgpt's GPT has its own head even where the checkpoint
    ties it: the LoRA base holds a bf16 copy beside the embedding."""
    torch = pytest.importorskip("torch")
    bnbf = pytest.importorskip("bitsandbytes.functional")
    from sizer.finetune.params import trained_params, untied_head_bytes

    w = torch.randn(TV, TH, dtype=torch.float16)
    q, state = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=nested, quant_type="nf4")
    parts = [q, state.absmax, state.code] + ([state.state2.absmax, state.state2.code, state.offset] if nested else [])
    real = sum(p.numel() * p.element_size() for p in parts)
    fw = FRAMEWORKS["litgpt"]
    tied, untied = _litgpt_tiny(tied=True), _litgpt_tiny()
    qlora = FinetuneSetup(method="qlora", quant=quant, framework="litgpt")
    assert untied_head_bytes(tied, qlora, fw) == real
    assert untied_head_bytes(untied, qlora, fw) == 0
    lora = FinetuneSetup(method="lora", framework="litgpt")
    base = {n: trained_params(tied, lora, FRAMEWORKS[n], False).frozen_bytes for n in ("litgpt", "torchtune")}
    assert base["litgpt"] - base["torchtune"] == TV * TH * 2
    heads = {n: trained_params(untied, qlora, FRAMEWORKS[n], False).frozen_bytes for n in ("litgpt", "transformers")}
    assert heads["transformers"] - heads["litgpt"] == TV * TH * 2 - real
