"""`sizer measure --finetune full|lora|qlora`: real optimizer steps on a scaled-down model built from
a config, measured with the allocation-event meter (sizer.measure.meter), beside sizer.finetune's
prediction for the same setup.

The step is the one transformers' Trainer runs (transformers 5.25, PEFT 0.22): model.train();
activation checkpointing through `activation_checkpointing_enable()` (the Trainer's call; its
deprecated alias is gradient_checkpointing_enable) with its default kwargs
(use_reentrant=False, modeling_utils.py `_activation_checkpointing_enable`), which also makes the
embedding output require grad (`enable_input_require_grads`); PEFT `get_peft_model` with a
LoraConfig; loss = model(input_ids, labels).loss; backward; the default optimizer
(`adamw_torch_fused` for torch >= 2.8, training_args.py: torch.optim.AdamW(fused=True), lr 5e-5,
weight decay 0); zero_grad(set_to_none=True). No autocast: the model runs in the dtype it is built
in (the planner's precision), as a Trainer without bf16/fp16 mixed precision does.

Two steps run. Step 1 creates the gradients and the optimizer states (measured after it); step 2,
with the states held, gives the steady-state phase peaks: forward (with the loss), backward,
optimizer step, each above the bytes held before the step (weights and optimizer states). On CPU
the profiler's allocation events are counted (`counted_allocations`): deterministic, the CPU
analogue of max_memory_allocated. torch, transformers and peft are imported inside functions only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

FINETUNE_METHODS = ("full", "lora", "qlora")
FINETUNE_OPTIMIZERS = ("adamw", "sgd")
TRAINER_LR = 5e-5                    # TrainingArguments.learning_rate default
COMPARED = ("weights", "trainable", "gradients", "optimizer_states", "saved", "forward_peak", "backward_peak",
            "step_peak", "peak")


@dataclass
class FinetuneRecord:
    model: str
    family: str
    method: str
    precision: str
    seq_len: int
    micro_batch_size: int
    gradient_checkpointing: bool
    lora_rank: int
    lora_dropout: float
    optimizer: str
    attention: str
    device: str
    torch: str
    transformers: str
    peft: str
    machine: str
    weights: int                     # every parameter as held (frozen base + adapters), each storage once
    trainable: int                   # the parameters the optimizer updates
    gradients: int                   # .grad after the backward
    optimizer_states: int            # the optimizer's state tensors after the first step
    saved: int                       # bytes live at the end of the forward (loss computed), above the step's start
    forward_peak: int                # peaks above the bytes held before step 2 (weights, optimizer states)
    backward_peak: int
    step_peak: int
    peak: int
    pred_weights: int
    pred_trainable: int
    pred_gradients: int
    pred_optimizer_states: int
    pred_saved: int
    pred_forward_peak: int
    pred_backward_peak: int
    pred_step_peak: int
    pred_peak: int

    def error(self, name: str) -> float:
        """(predicted - measured) / measured for one of COMPARED."""
        measured = getattr(self, name)
        return (getattr(self, "pred_" + name) - measured) / measured if measured else 0.0


def _versions() -> tuple[str, str, str, str]:
    import peft
    import torch
    import transformers

    from sizer.env.hardware import cpu_name

    return torch.__version__, transformers.__version__, peft.__version__, cpu_name()


def _hf_config(config: dict):
    import transformers

    raw = {k: v for k, v in config.items() if k != "quantization_config"}
    return transformers.AutoConfig.for_model(**raw)


def _quantization(method: str, torch):
    if method != "qlora":
        return {}
    from transformers import BitsAndBytesConfig

    return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                      bnb_4bit_use_double_quant=True,
                                                      bnb_4bit_compute_dtype=torch.bfloat16)}


def build_model(config: dict, method: str, precision: str, attention: str, seed: int = 0, device: str = "cpu"):
    """A causal LM with random weights from `config` in `precision` (QLoRA: quantized while loading),
    on `device`."""
    import torch
    import transformers

    from sizer.measure.load import FLOAT_DTYPES

    torch.manual_seed(seed)
    hf_config = _hf_config(config)
    dtype = getattr(torch, FLOAT_DTYPES[precision])
    if method != "qlora":
        model = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=dtype, attn_implementation=attention)
        return model.to(device)
    base = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    return type(base).from_pretrained(None, config=hf_config, state_dict=state, device_map=device, dtype=dtype,
                                      attn_implementation=attention, **_quantization(method, torch))


def prepare(model, method: str, gradient_checkpointing: bool, lora_rank: int, lora_dropout: float,
            targets: str | list[str] = "all-linear"):
    """The model as the Trainer trains it: adapters (PEFT), checkpointing, train mode."""
    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.activation_checkpointing_enable()         # as Trainer does (trainer.py), default kwargs
    if method in ("lora", "qlora"):
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=lora_dropout,
                            target_modules=targets, task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
    model.train()
    return model


def make_optimizer(model, optimizer: str, torch):
    """The Trainer's default optimizer (adamw_torch_fused) or plain SGD, over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=TRAINER_LR)
    return torch.optim.AdamW(params, lr=TRAINER_LR, weight_decay=0.0, fused=True)


def _unique_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if t.device.type != "meta" and key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def _state_tensors(opt, torch):
    return [v for state in opt.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


def _step(model, opt, ids, torch, trace=None, peaks: dict | None = None):
    """One training step, each phase a range of `trace` (CPU) or, on CUDA, its allocator peak
    recorded in `peaks` (absolute, as max_memory_allocated); returns the bytes of the gradients."""
    from sizer.measure.meter import Peak

    device = ids.device.type
    phases = {}
    with Peak(device, torch, trace, "forward") as phases["forward"]:
        loss = model(input_ids=ids, labels=ids).loss
    if peaks is not None and device == "cuda":
        peaks["end_of_forward"] = torch.cuda.memory_allocated()
    with Peak(device, torch, trace, "backward") as phases["backward"]:
        loss.backward()
    del loss
    grads = _unique_bytes(p.grad for p in model.parameters() if p.grad is not None)
    with Peak(device, torch, trace, "step") as phases["step"]:
        opt.step()
        opt.zero_grad(set_to_none=True)
    if peaks is not None and device == "cuda":
        peaks.update({name: peak.allocated for name, peak in phases.items()})
    return grads


def _measure_step(model, opt, ids, torch) -> dict:
    """Step 2's phase peaks above the bytes held before it: on the CPU from one allocation-event
    trace, on CUDA from the caching allocator's statistics (max_memory_allocated per phase)."""
    from sizer.measure.meter import CpuTrace

    if ids.device.type == "cuda":
        start, peaks = torch.cuda.memory_allocated(), {}
        _step(model, opt, ids, torch, peaks=peaks)
        out = {name: peaks[name] - start for name in ("forward", "backward", "step")}
        out["saved"] = peaks["end_of_forward"] - start
        return out
    with CpuTrace() as trace:
        _step(model, opt, ids, torch, trace)
    peaks = trace.peaks                          # (above the range's start, above the trace's start)
    out = {name: peaks[name][1] for name in ("forward", "backward", "step")}
    out["saved"] = peaks["backward"][1] - peaks["backward"][0]     # live when the backward begins
    return out


@dataclass(frozen=True)
class Measured:
    weights: int
    trainable: int
    gradients: int
    optimizer_states: int
    saved: int
    forward_peak: int
    backward_peak: int
    step_peak: int

    @property
    def peak(self) -> int:
        return max(self.forward_peak, self.backward_peak, self.step_peak)


def run_steps(model, optimizer: str, batch: int, seq_len: int, vocab: int, device: str = "cpu") -> Measured:
    """Two steps of training `model` on random tokens; step 2 measured."""
    import torch

    from sizer.measure.count import weight_bytes

    torch.manual_seed(1)
    ids = torch.randint(0, vocab, (batch, seq_len)).to(device)
    weights = weight_bytes(model)[0]
    trainable = _unique_bytes(p for p in model.parameters() if p.requires_grad)
    opt = make_optimizer(model, optimizer, torch)
    grads = _step(model, opt, ids, torch)
    states = _unique_bytes(_state_tensors(opt, torch))
    phases = _measure_step(model, opt, ids, torch)
    return Measured(weights, trainable, grads, states, phases["saved"], phases["forward"], phases["backward"],
                    phases["step"])



def spec_for(config: dict, name: str = "scaled"):
    from sizer.families import spec_from_config

    return spec_from_config(dict(config), name, "config")


def predict(spec, setup, device: str = "cpu") -> dict:
    """sizer.finetune's figures for `setup` on the device: weights, trained parameters, gradients,
    optimizer states and the step's moments (no CUDA context or allocator slack: torch's statistics
    see neither)."""
    from sizer.finetune.activations import CPU, CUDA, activation_parts
    from sizer.finetune.frameworks import get_framework
    from sizer.finetune.plan import model_states

    dev = CUDA if device == "cuda" else CPU
    fw = get_framework(setup.framework)
    states, p = model_states(spec, setup, fw, dev.block_bytes)
    acts = activation_parts(spec, setup, fw, setup.micro_batch_size, setup.seq_len, states.gradients, device=dev)
    return {"weights": states.weights + states.adapters, "trainable": p.trainable_bytes,
            "gradients": states.gradients, "optimizer_states": states.optimizer_states, "saved": acts.saved,
            "forward_peak": acts.forward_peak, "backward_peak": acts.backward_peak, "step_peak": acts.step_peak,
            "peak": acts.step_total}


def measure_finetune(model_or_config, method: str = "lora", seq_len: int = 128, micro_batch_size: int = 1,
                     gradient_checkpointing: bool = True, lora_rank: int = 16, optimizer: str = "adamw",
                     precision: str = "bf16", lora_dropout: float = 0.0, lora_targets: str = "all-linear",
                     attention: str = "sdpa", name: str | None = None, device: str = "cpu") -> FinetuneRecord:
    """Run two real training steps of `model_or_config` (a config.json dict, or a model name sizer
    resolves to one: build a scaled-down config first for large models) on the CPU and return the
    measured bytes beside sizer.finetune's prediction."""
    import torch

    from sizer.errors import UsageError
    from sizer.finetune.setup import FinetuneSetup, parse_targets

    if method not in FINETUNE_METHODS or optimizer not in FINETUNE_OPTIMIZERS:
        raise UsageError(f"sizer measure --finetune: methods {', '.join(FINETUNE_METHODS)}, "
                         f"optimizers {', '.join(FINETUNE_OPTIMIZERS)}")
    config, name = _config(model_or_config, name)
    config["use_cache"] = False              # training: Trainer's gradient checkpointing turns it off anyway
    targets = parse_targets(lora_targets)
    setup = FinetuneSetup(framework="trainer", method=method, lora_rank=lora_rank, lora_targets=targets, optimizer=optimizer,
                          precision=precision, gradient_checkpointing=gradient_checkpointing,
                          micro_batch_size=micro_batch_size, seq_len=seq_len, lora_dropout=lora_dropout,
                          attention=attention)
    if device == "cpu":
        torch.set_num_threads(1)
    model = build_model(config, method, precision, attention, device=device)
    peft_targets = "all-linear" if setup.target_names() is None else list(setup.target_names())
    model = prepare(model, method, gradient_checkpointing, lora_rank, lora_dropout, peft_targets)
    measured = run_steps(model, optimizer, micro_batch_size, seq_len, int(config["vocab_size"]), device)
    predicted = predict(spec_for(config, name), setup, device)
    return _record(name, config, setup, attention, measured, predicted, device)


def _config(model_or_config, name: str | None) -> tuple[dict, str]:
    if isinstance(model_or_config, dict):
        return dict(model_or_config), name or str(model_or_config.get("model_type", "model"))
    from sizer.inputs.resolve import get_config

    return dict(get_config(model_or_config)), name or str(model_or_config)


def _record(name: str, config: dict, setup, attention: str, m: Measured, pred: dict, device: str = "cpu"
            ) -> FinetuneRecord:
    torch_v, transformers_v, peft_v, machine = _versions()
    return FinetuneRecord(
        name, str(config.get("model_type", "")), setup.method, setup.precision, setup.seq_len,
        setup.micro_batch_size, setup.gradient_checkpointing, setup.lora_rank, setup.lora_dropout,
        setup.optimizer, attention, device, torch_v, transformers_v, peft_v, machine,
        m.weights, m.trainable, m.gradients, m.optimizer_states, m.saved, m.forward_peak, m.backward_peak,
        m.step_peak, m.peak, *(pred[k] for k in COMPARED))


COLUMNS = ("model", "method", "seq_len", "micro_batch_size", "gradient_checkpointing")


def render(records: list[FinetuneRecord], fmt: str = "table") -> str:
    """Records as tables (measured, predicted and error per component, in bytes), JSON or CSV."""
    if fmt == "json":
        return json.dumps([asdict(r) for r in records], indent=2) + "\n"
    if fmt == "csv":
        from sizer.render import to_csv

        return to_csv([asdict(r) for r in records], FINETUNE_RECORD_COLUMNS)
    return "\n".join(_table(r, fmt) for r in records)


FINETUNE_RECORD_COLUMNS = tuple(f.name for f in fields(FinetuneRecord))


def _table(r: FinetuneRecord, fmt: str = "table") -> str:
    from tabulate import tabulate

    from sizer.units import fmt_gib

    title = (f"{r.model} ({r.family}) · {r.method} · {r.micro_batch_size} x {r.seq_len} tokens · {r.precision} · "
             f"{r.optimizer} · gradient checkpointing {'on' if r.gradient_checkpointing else 'off'} · {r.device} "
             f"(torch {r.torch}, transformers {r.transformers}, peft {r.peft})")
    rows = [[c, f"{getattr(r, c):,}", f"{getattr(r, 'pred_' + c):,}", fmt_gib(getattr(r, c), 4),
             f"{100 * r.error(c):+.2f}%"] for c in COMPARED]
    table = tabulate(rows, headers=["component", "measured bytes", "predicted bytes", "measured GiB", "error"],
                     disable_numparse=True, tablefmt="github" if fmt == "markdown" else "simple")
    return f"{title}\nsizes in bytes (GiB: 1 GiB = 2^30 bytes); peaks above the weights and optimizer states\n\n{table}\n"


# A scaled-down model keeps the architecture (family, attention layout, gating, tied embeddings,
# biases, norms) and shrinks the sizes, so a CPU runs real steps in seconds.
SCALED_HIDDEN = 256
SCALED_HEAD_DIM = 64
SCALED_LAYERS = 2
SCALED_VOCAB = 8192


def scaled_down(config: dict) -> dict:
    """`config` with the widths, depth and vocabulary shrunk; the ratios that shape the step (query
    to key/value heads, MLP width to hidden) kept."""
    c = dict(config)
    heads = int(c.get("num_attention_heads") or 1)
    kv = int(c.get("num_key_value_heads") or heads)
    hidden = int(c.get("hidden_size") or SCALED_HIDDEN)
    new_heads = SCALED_HIDDEN // SCALED_HEAD_DIM
    c.update(hidden_size=SCALED_HIDDEN, num_attention_heads=new_heads, head_dim=SCALED_HEAD_DIM,
             num_key_value_heads=max(1, new_heads * kv // heads),
             num_hidden_layers=min(int(c.get("num_hidden_layers") or SCALED_LAYERS), SCALED_LAYERS),
             vocab_size=min(int(c.get("vocab_size") or SCALED_VOCAB), SCALED_VOCAB))
    if c.get("intermediate_size"):
        c["intermediate_size"] = max(8, int(c["intermediate_size"]) * SCALED_HIDDEN // hidden // 8 * 8)
    for key in ("layer_types", "quantization_config"):
        c.pop(key, None)
    return c
