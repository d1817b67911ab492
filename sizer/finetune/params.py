"""What a fine-tuning run trains and what it holds frozen, per tensor of the model spec.

LoRA adds A (rank x in) and B (out x rank) to every targeted Linear; DoRA also a magnitude vector
(out). PEFT 0.22's "all-linear" is every torch.nn.Linear but the output head; on the MoE families
transformers 5 fuses (its weight-conversion patterns "mixtral" and "qwen2_moe"), PEFT also targets
the router weight and the fused 3-D expert parameters through lora.ParamWrapper, whose A and B
stack the experts along the rank (gate and up fused: rank doubled). QLoRA stores the base Linears
as bitsandbytes 4-bit; what bitsandbytes leaves unquantized stays 16-bit, or float32 where the
framework upcasts it. Sources: docs/reference/finetune.md, "Parameters, gradients and optimizer
states"."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from sizer.errors import UsageError
from sizer.finetune.frameworks import Framework, adapter_param_bytes
from sizer.finetune.setup import FinetuneSetup
from sizer.quant import get_precision
from sizer.spec import LINEAR, OTHER, ModelSpec, TensorSpec

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
FP32_BYTES = 4

# transformers 5.25 conversion_mapping._MODEL_TO_CONVERSION_PATTERN (plus PEFT's own "mixtral" and
# "qwen2_moe"): the MoE families whose experts PEFT 0.22 re-targets as fused parameters
# (peft/utils/transformers_weight_conversion.py _MOE_TARGET_MODULE_MAPPING), keyed by pattern.
MIXTRAL_PATTERN = frozenset({"mixtral", "minimax", "minimax_m2"})
QWEN2_MOE_PATTERN = frozenset({
    "qwen2_moe", "afmoe", "beam", "cohere2_moe", "deepseek_v2", "deepseek_v3", "deepseek_v32", "dots1", "ernie4_5_moe",
    "exaone_moe", "flex_olmo", "glm4_moe", "glm4_moe_lite", "glm4v_moe", "glm_moe_dsa", "hunyuan_v1_moe",
    "longcat_flash", "mellum", "olmoe", "qwen3_moe", "qwen3_next", "qwen3_omni_moe", "qwen3_omni_moe_text",
    "qwen3_omni_moe_thinker", "sarvam_mla", "solar_open"})
# v4 names PEFT maps onto the v5 parameters: (gate-up names, down names, router name)
MOE_TARGET_NAMES = {"mixtral": (("w1", "w3"), ("w2",), "gate"),
                    "qwen2_moe": (("gate_proj", "up_proj"), ("down_proj",), "gate")}
# MoE routers that are torch.nn.Linear (or a subclass) in transformers 5.25: all-linear adapts them
LINEAR_ROUTER_FAMILIES = frozenset({"llama4", "phimoe", "afmoe"})
LINEAR_ROUTER_NAMES = frozenset({"shared_expert_gate"})


@dataclass(frozen=True)
class TrainedParams:
    """Parameters of one run, whole model (sharding divides them later)."""

    trainable: int                   # parameters the optimizer updates
    trainable_bytes: int             # those parameters as held (adapters, or the model for full fine-tuning)
    param_bytes: int                 # bytes per trainable parameter (the dtype of most of them)
    frozen_bytes: int                # frozen base weights as held (quantized for QLoRA)
    trainable_shapes: tuple[tuple[int, ...], ...]   # every trainable tensor's shape, in the model's order
    largest_layer_params: int        # DeepSpeed's largest_layer_params: the biggest single parameter tensor
    trainable_widths: tuple[int, ...] = ()          # bytes per element of each trainable tensor (its dtype)

    def widths(self) -> tuple[int, ...]:
        return self.trainable_widths or (self.param_bytes,) * len(self.trainable_shapes)


def module_name(t: TensorSpec) -> str:
    """The Linear's own name: "layers.self_attn.q_proj.weight" -> "q_proj"."""
    parts = t.name.split(".")
    return parts[-2] if len(parts) >= 2 else parts[0]


def moe_pattern(spec: ModelSpec) -> str | None:
    """PEFT's MoE target conversion that applies to this family, if any."""
    if spec.family in MIXTRAL_PATTERN:
        return "mixtral"
    return "qwen2_moe" if spec.family in QWEN2_MOE_PATTERN else None


def _is_weight_matrix(t: TensorSpec) -> bool:
    """A Linear's weight, or a router's (which a spec may list as OTHER: kept in float32)."""
    linear = t.kind == LINEAR or (t.component == "router" and t.kind == OTHER)
    return linear and t.name.endswith(".weight") and len(t.shape) == 2 and t.component != "lm_head"


def _router_adapted(t: TensorSpec, spec: ModelSpec, names: tuple[str, ...] | None) -> bool:
    """A router: an nn.Linear (all-linear or by name), or a router module's weight PEFT targets as a
    parameter on the converted MoE families."""
    linear = spec.family in LINEAR_ROUTER_FAMILIES or module_name(t) in LINEAR_ROUTER_NAMES
    pattern = moe_pattern(spec)
    if names is None:
        return linear or (pattern is not None and module_name(t) == "gate")
    return module_name(t) in names and (linear or (pattern is not None and module_name(t) == MOE_TARGET_NAMES[pattern][2]))


def adapted(t: TensorSpec, setup: FinetuneSetup, spec: ModelSpec | None = None) -> bool:
    """Whether LoRA adapts this tensor as a Linear of its own (the routed experts: `expert_adapters`)."""
    if not _is_weight_matrix(t) or t.component == "experts":
        return False
    names = setup.target_names()
    if t.component == "router":
        return spec is not None and _router_adapted(t, spec, names)
    return names is None or module_name(t) in names


def _expert_targets(spec: ModelSpec, setup: FinetuneSetup) -> tuple[bool, bool]:
    """(gate-up, down) fused expert parameters PEFT targets."""
    pattern = moe_pattern(spec)
    if pattern is None:
        return False, False
    names = setup.target_names()
    if names is None:
        return True, True
    gate_up, down, _ = MOE_TARGET_NAMES[pattern]
    hits = [n in names for n in gate_up]
    if any(hits) and not all(hits):
        raise UsageError(f"--lora-targets: PEFT cannot target {', '.join(gate_up)} of {spec.family}'s experts "
                         f"separately (transformers fuses them into gate_up_proj): name both")
    return all(hits), any(n in names for n in down)


def _expert_shapes(ts: list[TensorSpec], gate_up: bool, down: bool, r: int) -> list[tuple[int, ...]]:
    """lora.ParamWrapper on one layer's fused experts: A (rank x experts, in), B (out, rank x experts);
    gate and up fused into one parameter get twice the rank (PEFT's rank_pattern)."""
    by_name = {module_name(t): t for t in ts}
    shapes = []
    gate, up = by_name.get("gate_proj"), by_name.get("up_proj")
    if gate_up and gate is not None and up is not None:
        rank = 2 * r * gate.experts
        shapes += [(rank, gate.in_features), (gate.out_features + up.out_features, rank)]
    low = by_name.get("down_proj")
    if down and low is not None:
        shapes += [(r * low.experts, low.in_features), (low.out_features, r * low.experts)]
    return shapes


def _layer_adapters(spec: ModelSpec, setup: FinetuneSetup, layer: int | None) -> list[tuple[tuple[int, ...], bool]]:
    """(shape, on a float32 base tensor) of the adapters of one decoder layer (None: outside the layers)."""
    here = [t for t in spec.tensors if (t.layers is None if layer is None else t.layers is not None and layer in t.layers)]
    out = []
    for t in here:
        if adapted(t, setup, spec):
            out += [((setup.lora_rank, t.in_features), t.fp32), ((t.out_features, setup.lora_rank), t.fp32)]
            if setup.method == "dora":
                out.append(((t.out_features,), t.fp32))
    experts = [t for t in here if t.component == "experts" and _is_weight_matrix(t)]
    if experts:
        out += [(s, experts[0].fp32) for s in _expert_shapes(experts, *_expert_targets(spec, setup), setup.lora_rank)]
    return out


def model_order(spec: ModelSpec) -> list[TensorSpec]:
    """Every tensor copy in the order of model.parameters(): the global tensors listed before the
    first layer's, the layers one by one, the remaining global tensors (final norm, head)."""
    first = next((i for i, t in enumerate(spec.tensors) if t.layers is not None), len(spec.tensors))
    before = [t for t in spec.tensors[:first] if t.layers is None]
    after = [t for t in spec.tensors[first:] if t.layers is None]
    layers = [t for layer in range(spec.n_layers) for t in spec.tensors if t.layers is not None and layer in t.layers]
    return before + layers + after


def full_tensors(spec: ModelSpec) -> list[tuple[tuple[int, ...], bool]]:
    """(shape, kept in float32) of every parameter in model order; the routed experts of a layer as
    transformers 5 holds them: one 3-D parameter per projection, gate and up fused (experts, out, in)."""
    out, gate = [], None
    for t in model_order(spec):
        if t.component != "experts" or t.experts == 1:
            out.append((t.shape, t.fp32))
        elif module_name(t) == "gate_proj":
            gate = t
        elif module_name(t) == "up_proj" and gate is not None:
            out.append(((t.experts, gate.out_features + t.out_features, t.in_features), t.fp32))
            gate = None
        else:
            out.append(((t.experts, *t.shape), t.fp32))
    return out


def adapter_tensors(spec: ModelSpec, setup: FinetuneSetup) -> list[tuple[tuple[int, ...], bool]]:
    """(shape, on a float32 base tensor) of every adapter tensor, layer by layer."""
    out = []
    for layer in (*range(spec.n_layers), None):
        out += _layer_adapters(spec, setup, layer)
    return out


def adapter_shapes(spec: ModelSpec, setup: FinetuneSetup) -> list[tuple[int, ...]]:
    """Shapes of the adapter tensors, one entry per tensor the run creates."""
    return [s for s, _ in adapter_tensors(spec, setup)]


def _check_adapters(spec: ModelSpec, setup: FinetuneSetup, tensors: list) -> None:
    if not tensors:
        raise UsageError(f"--lora-targets {','.join(setup.lora_targets)}: no Linear of {spec.family} has that name "
                         f"(its projections: {', '.join(projection_names(spec))})")
    experts = any(t.component == "experts" for t in spec.tensors) and any(_expert_targets(spec, setup))
    if setup.method == "dora" and experts:
        raise UsageError(f"DoRA: PEFT 0.22 cannot apply it to {spec.family}'s fused experts (lora.ParamWrapper "
                         f"refuses LoRA variants); target the attention projections (--lora-targets q,k,v,o)")


def projection_names(spec: ModelSpec) -> list[str]:
    """The distinct Linear names of the decoder layers (what --lora-targets can name)."""
    return list(dict.fromkeys(module_name(t) for t in spec.tensors if _is_weight_matrix(t) and t.layers is not None))


def adapter_width_bytes(setup: FinetuneSetup, fw: Framework) -> int:
    """Bytes per adapter element as the run holds them: float32 as PEFT autocasts them; bf16 for QLoRA
    under TRL (it casts the trainable parameters of a quantized model); the model's dtype under
    DeepSpeed ZeRO-3 (TRL passes autocast_adapter_dtype=False there)."""
    if setup.precision == "fp32":
        return FP32_BYTES
    if setup.zero == 3 and setup.method != "qlora" and fw.zero3_adapter_bytes is not None:
        return DTYPE_BYTES[setup.precision]
    return adapter_param_bytes(fw, setup.method)


def frozen_tensor_bytes(t: TensorSpec, spec: ModelSpec, setup: FinetuneSetup, fw: Framework) -> int:
    """One frozen base tensor of an adapter run as held, all its copies (quantized for QLoRA)."""
    if setup.method != "qlora":
        return t.params * (4 if t.fp32 else DTYPE_BYTES[setup.precision])
    if fw.kbit_head and t.component == "lm_head":
        return get_precision(setup.quant).quantized_bytes(t.n_elements) * t.copies
    quantized = get_precision(setup.quant).tensor_bytes(t, spec)
    return t.params * 4 if (quantized == t.params * 2 and fw.kbit_upcast_fp32) else quantized


def untied_head_bytes(spec: ModelSpec, setup: FinetuneSetup, fw: Framework) -> int:
    """The output head a framework holds apart from a tied checkpoint's embedding (litgpt's GPT always
    has its own lm_head: the converted checkpoint carries a copy), quantized with the base for QLoRA."""
    if not (fw.untied_head and spec.tied_embeddings):
        return 0
    n = spec.vocab_size * spec.hidden_size
    if setup.method == "qlora" and fw.kbit_head:
        return get_precision(setup.quant).quantized_bytes(n)
    return n * DTYPE_BYTES[setup.precision]


def _base_bytes(spec: ModelSpec, setup: FinetuneSetup, fw: Framework) -> int:
    """Frozen base weights of an adapter run."""
    return sum(frozen_tensor_bytes(t, spec, setup, fw) for t in spec.tensors) + untied_head_bytes(spec, setup, fw)


def trained_params(spec: ModelSpec, setup: FinetuneSetup, fw: Framework, master_weights: bool) -> TrainedParams:
    largest = max(t.n_elements for t in spec.tensors)
    if setup.method == "full":
        width = FP32_BYTES if master_weights or setup.precision == "fp32" else DTYPE_BYTES[setup.precision]
        tensors = full_tensors(spec)
        shapes = tuple(s for s, _ in tensors)
        widths = tuple(FP32_BYTES if fp32 else width for _, fp32 in tensors)     # _keep_in_fp32_modules
        held = sum(prod(s) * w for s, w in zip(shapes, widths))
        return TrainedParams(spec.params, held, width, 0, shapes, largest, widths)
    tensors = adapter_tensors(spec, setup)
    _check_adapters(spec, setup, tensors)
    width = adapter_width_bytes(setup, fw)          # DoRA's magnitude too (the method has no quantized base)
    # peft moves new adapters to the base layer's dtype before autocasting: a float32 base keeps them float32
    widths = tuple(FP32_BYTES if fp32 and setup.method != "qlora" else width for _, fp32 in tensors)
    shapes = tuple(s for s, _ in tensors)
    n = sum(prod(s) for s in shapes)
    held = sum(prod(s) * w for s, w in zip(shapes, widths))
    return TrainedParams(n, held, width, _base_bytes(spec, setup, fw), shapes, largest, widths)
