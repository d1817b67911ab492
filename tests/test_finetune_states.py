"""Trainable parameters, frozen base bytes, gradients, optimizer states and the optimizer step's own
peak, against the real objects: PEFT 0.22 adapters on transformers 5.25 models built from configs,
torch's AdamW (fused, foreach, loop), bitsandbytes' 8-bit AdamW, transformers' Adafactor and torch's
SGD after a real step on CPU, the step's peak read from torch's allocation events
(sizer.measure.meter), and a QLoRA base loaded with BitsAndBytesConfig."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from math import prod

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from sizer.errors import UsageError  # noqa: E402
from sizer.families import spec_from_config  # noqa: E402
from sizer.finetune.frameworks import get_framework  # noqa: E402
from sizer.finetune.params import trained_params  # noqa: E402
from sizer.finetune.setup import FinetuneSetup  # noqa: E402
from sizer.finetune.states import (TRAINER_OPTIM, gradient_bytes, optimizer_state_bytes,  # noqa: E402
                                   optimizer_step_bytes)
from sizer.measure.meter import CpuTrace, Peak  # noqa: E402

FW = get_framework("transformers")
SHORT = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj"}
BASE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=512, max_position_embeddings=256, head_dim=16, pad_token_id=0, eos_token_id=1, bos_token_id=1)
FAMILIES = {
    "llama": {}, "qwen2": {}, "qwen3": {}, "mistral": {}, "gemma2": {}, "gemma3_text": {}, "phi3": {}, "phi": {},
    "gpt_neox": {"rotary_pct": 0.25}, "olmo2": {},
    "qwen3_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32),
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "qwen2_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48),
    # MLA, a dense first layer beside MoE layers with a shared expert, the router kept in float32
    "deepseek_v3": dict(head_dim=8, q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16,
                        num_key_value_heads=4, moe_intermediate_size=32, n_routed_experts=4, n_shared_experts=1,
                        num_experts_per_tok=2, first_k_dense_replace=1, n_group=1, topk_group=1, num_hidden_layers=3),
}


def _raw(family: str, **over) -> dict:
    return {"model_type": family, **BASE, **FAMILIES.get(family, {}), **over}


def _model(raw: dict, dtype=torch.bfloat16, device="meta"):
    cfg = transformers.AutoConfig.for_model(**raw)
    with torch.device(device):
        return transformers.AutoModelForCausalLM.from_config(cfg, dtype=dtype)


def _peft(model, setup: FinetuneSetup):
    targets = "all-linear" if setup.target_names() is None else [SHORT.get(t, t) for t in setup.lora_targets]
    config = peft.LoraConfig(r=setup.lora_rank, lora_alpha=2 * setup.lora_rank, target_modules=targets,
                             use_dora=setup.method == "dora", lora_dropout=0.0)
    return peft.get_peft_model(model, config)


def _trainable(model) -> list:
    return [p for p in model.parameters() if p.requires_grad]


# ---------------------------------------------------------------------------------------------
# Adapters: which tensors, their shapes and dtypes


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("targets", [("all-linear",), ("q", "v")])
@pytest.mark.parametrize("method", ["lora", "dora"])
def test_adapters_as_peft_creates_them(family, targets, method):
    raw = _raw(family)
    setup = FinetuneSetup(method=method, lora_rank=4, lora_targets=targets)
    try:
        model = _peft(_model(raw), setup)
    except ValueError as exc:                          # PEFT refuses: sizer must refuse too
        with pytest.raises(UsageError):
            trained_params(spec_from_config(raw, family, "test"), setup, FW, False)
        pytest.skip(f"PEFT refuses: {str(exc)[:80]}")
    p = trained_params(spec_from_config(raw, family, "test"), setup, FW, False)
    real = _trainable(model)
    assert p.trainable == model.get_nb_trainable_parameters()[0] == sum(t.numel() for t in real)
    assert Counter(zip(p.trainable_shapes, p.widths())) == Counter((tuple(t.shape), t.element_size()) for t in real)
    assert p.trainable_bytes == sum(t.numel() * t.element_size() for t in real)


def test_moe_all_linear_targets_router_and_fused_experts():
    """qwen3_moe's experts are one 3-D parameter per projection in transformers 5.25: PEFT wraps them
    (lora.ParamWrapper) with the experts stacked along the rank, gate and up at twice the rank."""
    raw = _raw("qwen3_moe", num_hidden_layers=1)
    p = trained_params(spec_from_config(raw, "m", "test"), FinetuneSetup(lora_rank=4), FW, False)
    experts, r, hidden, ff = 4, 4, 64, 32
    assert {(2 * r * experts, hidden), (2 * ff, 2 * r * experts), (r * experts, ff), (hidden, r * experts),
            (r, hidden), (experts, r)} <= set(p.trainable_shapes)


def test_targets_naming_no_projection_are_refused():
    raw = _raw("gpt_neox")
    with pytest.raises(UsageError, match="query_key_value"):
        trained_params(spec_from_config(raw, "m", "test"), FinetuneSetup(lora_targets=("q", "v")), FW, False)


def test_adapter_dtypes_of_the_frameworks_rules():
    """PEFT autocasts adapters to float32 on a bf16 model; QLoRA under TRL trains them in bf16 (the
    cast TRL applies is applied here, as sft_trainer.py does it); ZeRO-3 keeps the model's dtype."""
    raw = _raw("llama")
    spec = spec_from_config(raw, "m", "test")
    model = _peft(_model(raw), FinetuneSetup())
    assert {t.dtype for t in _trainable(model)} == {torch.float32}
    for param in _trainable(model):                      # trl 1.16 SFTTrainer.__init__ for a quantized model
        param.data = param.data.to(torch.bfloat16)
    qlora = trained_params(spec, FinetuneSetup(method="qlora"), FW, False)
    assert qlora.trainable_bytes == sum(t.numel() * t.element_size() for t in _trainable(model))
    zero3 = trained_params(spec, FinetuneSetup(zero=3), FW, False)
    assert zero3.trainable_bytes == qlora.trainable_bytes


# ---------------------------------------------------------------------------------------------
# Gradients, optimizer states and the step's peak after a real step on CPU

TINY = dict(BASE, hidden_size=256, intermediate_size=512, num_attention_heads=8, num_key_value_heads=4, head_dim=32,
            vocab_size=2048)


def _state_bytes(optimizer) -> int:
    """Bytes of the tensors the optimizer's state holds, each storage once (bitsandbytes shares its maps)."""
    seen, total = set(), 0
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value) and value.untyped_storage().data_ptr() not in seen:
                seen.add(value.untyped_storage().data_ptr())
                total += value.numel() * value.element_size()
    return total


def _optimizer(name: str, params, implementation: str):
    if name == "adamw":
        kind = {"fused": dict(fused=True), "foreach": dict(foreach=True), "for-loop": dict(foreach=False)}
        return torch.optim.AdamW(params, lr=1e-3, **kind[implementation])
    if name == "adafactor":           # as Trainer's optim="adafactor" builds it
        return transformers.optimization.Adafactor(params, lr=1e-3, scale_parameter=False, relative_step=False)
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-3)
    import bitsandbytes as bnb        # Trainer's adamw_bnb_8bit / paged_adamw_8bit
    return bnb.optim.AdamW(params, lr=1e-3, optim_bits=8, is_paged=name.startswith("paged"))


def _stepped(setup: FinetuneSetup, implementation: str, raw: dict | None = None):
    """A tiny bf16 model (LoRA or full), one forward/backward, a first step (which creates the states),
    then a second step traced: its peak above its start is the step's own temporaries."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = _model(raw or {"model_type": "llama", **TINY}, device="cpu")
    if setup.adapters:
        model = _peft(model, setup)
    ids = torch.randint(0, model.config.vocab_size, (1, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer = _optimizer(setup.optimizer, _trainable(model), implementation)
    optimizer.step()
    with CpuTrace() as trace:
        with Peak("cpu", torch, trace, "step") as peak:
            optimizer.step()
    grads = sum(t.grad.numel() * t.grad.element_size() for t in _trainable(model))
    return grads, _state_bytes(optimizer), peak.cpu_peaks()[0]


CASES = [("lora", "adamw", "fused"), ("lora", "adamw", "foreach"), ("lora", "adamw", "for-loop"),
         ("full", "adamw", "fused"), ("full", "adamw", "foreach"), ("full", "adamw", "for-loop"),
         ("dora", "adamw", "foreach"), ("lora", "adafactor", ""), ("full", "adafactor", ""), ("lora", "sgd", ""),
         ("full", "sgd", ""), ("lora", "adamw-8bit", ""), ("full", "adamw-8bit", ""), ("lora", "paged-adamw-8bit", "")]


# 0-d tensors of a step on CPU (the step increment, Adafactor's RMS and norms): not modelled
SCALAR_SLACK_BYTES = 1024


@pytest.mark.parametrize("method,optimizer,implementation", CASES)
def test_gradients_states_and_step_peak(method, optimizer, implementation):
    if "8bit" in optimizer:
        pytest.importorskip("bitsandbytes")
    setup = FinetuneSetup(method=method, optimizer=optimizer, lora_rank=16)
    p = trained_params(spec_from_config({"model_type": "llama", **TINY}, "tiny", "test"), setup, FW, False)
    grads, states, step_peak = _stepped(setup, implementation)
    assert gradient_bytes(p) == grads
    assert optimizer_state_bytes(p, optimizer) == states
    if "8bit" not in optimizer:                    # bitsandbytes' CPU step is not its CUDA kernel
        expected = optimizer_step_bytes(p, optimizer, fused=implementation == "fused", device="cpu")
        if implementation == "foreach":
            expected = optimizer_step_bytes(p, optimizer, fused=False, device="cuda")
        assert expected <= step_peak <= expected + SCALAR_SLACK_BYTES


@pytest.mark.parametrize("implementation", ["foreach", "for-loop"])
def test_step_peak_over_two_dtype_groups(implementation):
    """Full fine-tuning of DeepSeek-V3 in bf16 keeps its router in float32: two device/dtype groups."""
    raw = _raw("deepseek_v3", vocab_size=2048)
    setup = FinetuneSetup(method="full")
    p = trained_params(spec_from_config(raw, "d", "test"), setup, FW, False)
    assert set(p.widths()) == {2, 4}
    grads, states, step_peak = _stepped(setup, implementation, raw)
    assert (gradient_bytes(p), optimizer_state_bytes(p, "adamw")) == (grads, states)
    expected = optimizer_step_bytes(p, "adamw", fused=False, device="cuda" if implementation == "foreach" else "cpu")
    assert expected <= step_peak <= expected + SCALAR_SLACK_BYTES


def test_trainer_optim_names():
    from transformers.training_args import OptimizerNames, TrainingArguments

    assert TrainingArguments(output_dir="/tmp/x").optim == TRAINER_OPTIM["adamw"]
    assert set(TRAINER_OPTIM.values()) <= {o.value for o in OptimizerNames}


@pytest.mark.parametrize("family", ["llama", "gemma2", "qwen3_moe", "mixtral", "qwen2_moe", "gpt_neox", "deepseek_v3"])
def test_full_finetuning_shapes(family):
    """Full fine-tuning trains every parameter tensor (an optimizer keeps state per tensor), routed
    experts as transformers 5's fused 3-D parameters; layer by layer as model.parameters() yields
    them (within a layer the spec's order, which may differ from the module's)."""
    raw = _raw(family)
    p = trained_params(spec_from_config(raw, family, "test"), FinetuneSetup(method="full"), FW, False)
    real = [(tuple(t.shape), t.element_size()) for t in _model(raw).parameters()]
    assert Counter(zip(p.trainable_shapes, p.widths())) == Counter(real)
    assert p.trainable_shapes[0] == real[0][0] and p.trainable_shapes[-1] == real[-1][0]
    assert p.trainable_bytes == sum(prod(shape) * width for shape, width in real)


# ---------------------------------------------------------------------------------------------
# QLoRA's frozen base as transformers 5.25 + bitsandbytes load it


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """Tiny bf16 checkpoints (a dense and an MoE family) to load quantized."""
    folders = {}
    for family in ("llama", "qwen3_moe"):
        raw = {"model_type": family, **TINY, **FAMILIES[family]}
        folders[family] = (raw, tmp_path_factory.mktemp(family))
        _model(raw, device="cpu").save_pretrained(folders[family][1])
    return folders


@pytest.mark.parametrize("family", ["llama", "qwen3_moe"])
@pytest.mark.parametrize("quant", ["nf4", "nf4-dq", "fp4"])
def test_qlora_frozen_bytes_as_loaded(saved_models, family, quant):
    """The base as BitsAndBytesConfig loads it (4-bit Linears with their absmax and maps; embeddings,
    norms, head and MoE routers/fused experts in bf16) and, where a framework calls
    peft.prepare_model_for_kbit_training (TRL 1.16's SFTTrainer does not), with every unquantized
    parameter upcast to float32."""
    pytest.importorskip("bitsandbytes")
    from sizer.measure.count import weight_bytes

    raw, folder = saved_models[family]
    config = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant[:3],
                                             bnb_4bit_use_double_quant=quant.endswith("-dq"),
                                             bnb_4bit_compute_dtype=torch.bfloat16)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, quantization_config=config, device_map="cpu",
                                                              dtype=torch.bfloat16)
    spec = spec_from_config(raw, family, "test")
    setup = FinetuneSetup(method="qlora", quant=quant)
    assert trained_params(spec, setup, FW, False).frozen_bytes == weight_bytes(model)[0]
    peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    upcast = replace(FW, kbit_upcast_fp32=True)
    assert trained_params(spec, setup, upcast, False).frozen_bytes == weight_bytes(model)[0]


# ---------------------------------------------------------------------------------------------
# The planner: gradients and states are alive at the step, activations are not


def test_planner_counts_the_larger_of_backward_and_step():
    from sizer.finetune.plan import memory_per_gpu
    from sizer.gpuspec import parse_gpus

    spec = spec_from_config({"model_type": "llama", **TINY}, "tiny", "test")
    gpu = parse_gpus("RTX-4090").gpu
    short = FinetuneSetup(method="full", optimizer="adafactor", seq_len=1)
    memory, acts, p = memory_per_gpu(spec, short, FW, gpu, 1)
    held = memory.weights + memory.adapters + memory.gradients + memory.optimizer_states + memory.overhead
    step = optimizer_step_bytes(p, "adafactor")
    assert step > acts.peak and memory.total == held + step
    long = replace(short, seq_len=256, micro_batch_size=8)
    memory, acts, _ = memory_per_gpu(spec, long, FW, gpu, 1)
    held = memory.weights + memory.adapters + memory.gradients + memory.optimizer_states + memory.overhead
    assert acts.peak > step and memory.total == held + acts.peak
    offloaded = memory_per_gpu(spec, replace(short, zero=2, offload_optimizer=True), FW, gpu, 2)[0]
    assert offloaded.optimizer_step == 0


def test_adapters_on_a_float32_router_stay_float32_without_autocast():
    """Under ZeRO-3 TRL turns PEFT's autocast off: adapters take their base layer's dtype, float32 on
    DeepSeek-V3's router (_keep_in_fp32_modules_strict), bf16 elsewhere."""
    raw = _raw("deepseek_v3")
    model = peft.get_peft_model(_model(raw), peft.LoraConfig(r=4, target_modules="all-linear"),
                                autocast_adapter_dtype=False)
    p = trained_params(spec_from_config(raw, "d", "test"), FinetuneSetup(lora_rank=4, zero=3), FW, False)
    real = _trainable(model)
    assert Counter(zip(p.trainable_shapes, p.widths())) == Counter((tuple(t.shape), t.element_size()) for t in real)
