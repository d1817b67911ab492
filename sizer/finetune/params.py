"""What a fine-tuning run trains and what it holds frozen, per tensor of the model spec.

LoRA adds A (rank x in) and B (out x rank) to every targeted Linear of the decoder layers; DoRA
also a magnitude vector (out). QLoRA stores the base Linears as bitsandbytes 4-bit; what
bitsandbytes leaves unquantized stays 16-bit, or float32 where the framework upcasts it."""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from sizer.finetune.frameworks import Framework, adapter_param_bytes
from sizer.finetune.setup import FinetuneSetup
from sizer.quant import get_precision
from sizer.spec import LINEAR, ModelSpec, TensorSpec

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
ADAPTED_COMPONENTS = frozenset({"attention", "mlp", "shared_experts"})


@dataclass(frozen=True)
class TrainedParams:
    """Parameters of one run, whole model (sharding divides them later)."""

    trainable: int                   # parameters the optimizer updates
    trainable_bytes: int             # those parameters as held (adapters, or the model for full fine-tuning)
    param_bytes: int                 # bytes per trainable parameter (its dtype)
    frozen_bytes: int                # frozen base weights as held (quantized for QLoRA)
    trainable_shapes: tuple[tuple[int, ...], ...]   # every trainable tensor's shape (optimizers keep state per tensor)
    largest_layer_params: int        # DeepSpeed's largest_layer_params: the biggest single parameter tensor


def module_name(t: TensorSpec) -> str:
    """The Linear's own name: "layers.self_attn.q_proj.weight" -> "q_proj"."""
    parts = t.name.split(".")
    return parts[-2] if len(parts) >= 2 else parts[0]


def adapted(t: TensorSpec, setup: FinetuneSetup) -> bool:
    """Whether LoRA adapts this tensor (a decoder-layer Linear weight the targets name)."""
    if t.kind != LINEAR or t.layers is None or not t.name.endswith(".weight") or len(t.shape) != 2:
        return False
    names = setup.target_names()
    if names is None:
        return t.component in ADAPTED_COMPONENTS
    return module_name(t) in names


def adapter_shapes(spec: ModelSpec, setup: FinetuneSetup) -> list[tuple[int, ...]]:
    """Shapes of the adapter tensors, one entry per tensor the run creates."""
    shapes = []
    for t in spec.tensors:
        if not adapted(t, setup):
            continue
        per_copy = [(setup.lora_rank, t.in_features), (t.out_features, setup.lora_rank)]
        if setup.method == "dora":
            per_copy.append((t.out_features,))
        shapes += per_copy * t.copies
    return shapes


def frozen_tensor_bytes(t: TensorSpec, spec: ModelSpec, setup: FinetuneSetup, fw: Framework) -> int:
    """One frozen base tensor of an adapter run as held, all its copies (quantized for QLoRA)."""
    if setup.method != "qlora":
        return t.params * (4 if t.fp32 else DTYPE_BYTES[setup.precision])
    quantized = get_precision(setup.quant).tensor_bytes(t, spec)
    return t.params * 4 if (quantized == t.params * 2 and fw.kbit_upcast_fp32) else quantized


def _base_bytes(spec: ModelSpec, setup: FinetuneSetup, fw: Framework) -> int:
    """Frozen base weights of an adapter run."""
    return sum(frozen_tensor_bytes(t, spec, setup, fw) for t in spec.tensors)


def trained_params(spec: ModelSpec, setup: FinetuneSetup, fw: Framework, master_weights: bool) -> TrainedParams:
    if setup.method == "full":
        width = 4 if master_weights or setup.precision == "fp32" else DTYPE_BYTES[setup.precision]
        shapes = [t.shape for t in spec.tensors for _ in range(t.copies)]
        return TrainedParams(spec.params, spec.params * width, width, 0, tuple(shapes),
                             max(t.n_elements for t in spec.tensors))
    shapes = adapter_shapes(spec, setup)
    width = 4 if setup.precision == "fp32" else adapter_param_bytes(fw, setup.method, setup.zero)
    n = sum(prod(s) for s in shapes)
    return TrainedParams(n, n * width, width, _base_bytes(spec, setup, fw), tuple(shapes),
                         max(t.n_elements for t in spec.tensors))
