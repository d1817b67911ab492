"""Weight precisions and quantization formats: exact storage bytes per tensor, torch-free.

Every format answers one question, `tensor_bytes(tensor, spec)`: how many bytes all copies of a
parameter tensor occupy, including the format's own overhead (scales, zeros, absmax, g_idx) and
leaving in 16-bit what the format really keeps in 16-bit. The calculator sizes weights with these
objects and `sizer quantize` (later) applies the same config objects, so the two cannot drift.

Sources of the layouts: docs/reference/quantization.md (GPTQ v1 tensors, bitsandbytes block
sizes, GGUF bits per weight), bitsandbytes `functional.quantize_4bit` / `Int8Params` (absmax and SCB
are float32), llama.cpp `ggml-common.h` (block structs) and `src/llama-quant.cpp` (K-quant mixes).
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from math import ceil, prod

from sizer.errors import UsageError
from sizer.ggml import ggml_type_by_name
from sizer.gguf_quant import (ATTN_V_LIKE, FTYPE_DEFAULT_TYPE, ModelTraits, Slot, canonical_ftype,
                              default_has_imatrix, tensor_type)
from sizer.spec import EMBEDDING, LINEAR, ModelSpec, TensorSpec

BF16_BYTES = 2
FP32_BYTES = 4

# Components whose Linear layers live inside the decoder blocks (what GPTQ/AWQ/fp8 quantize).
DECODER_LINEAR_COMPONENTS = frozenset({"attention", "mlp", "experts", "shared_experts"})


def _elements(t: TensorSpec) -> int:
    return t.n_elements * t.copies


def _kept_bytes(t: TensorSpec) -> int:
    """A tensor a format leaves unquantized: 16-bit, or 32-bit where the model keeps it in fp32."""
    return _elements(t) * (FP32_BYTES if t.fp32 else BF16_BYTES)


class FormatTraits:
    """What the planner asks of every format, with the answer most formats give: whether its weights
    are FP8 (engines' hardware rules), whether bitsandbytes runs it, whether it is a checkpoint as
    stored, and whether the model's dense MLP runs on bitsandbytes int8 Linears (their temporaries
    enter the activation peak: sizer.calc.activations.int8_linear_bytes)."""

    is_fp8 = False
    is_bitsandbytes = False
    stored = False
    checkpoint_only = False    # only a checkpoint in this format holds it: engines cannot quantize to it at load

    def int8_mlp(self, spec: ModelSpec) -> bool:
        return False


@dataclass(frozen=True)
class FloatFormat(FormatTraits):
    """Every tensor stored at one float width: fp32, fp16, bf16."""

    name: str
    value_bytes: int
    description: str

    kind = "float"

    @property
    def compute_bytes(self) -> int:
        return self.value_bytes

    def tensor_bytes(self, t: TensorSpec, spec: ModelSpec) -> int:
        return _elements(t) * max(self.value_bytes, FP32_BYTES if t.fp32 else 0)

    def keeps_16bit(self) -> str:
        return "" if self.value_bytes == BF16_BYTES else "nothing: every tensor at this width"


@dataclass(frozen=True)
class Fp8Format(FormatTraits):
    """FP8 E4M3 weights: decoder Linear weights at one byte, with a float32 scale per tensor
    (vLLM / llm-compressor "FP8") or per `block` x `block` tile (DeepSeek-V3's checkpoint,
    `weight_block_size: [128, 128]`, scales stored as `weight_scale_inv`). Embeddings, lm_head,
    routers, norms and biases stay 16-bit."""

    block: int = 0             # 0: one scale per tensor

    kind = "fp8"
    compute_bytes = BF16_BYTES
    is_fp8 = True

    @property
    def name(self) -> str:
        return f"fp8-block{self.block}" if self.block else "fp8"

    @property
    def description(self) -> str:
        scale = f"{self.block}x{self.block} block scales" if self.block else "per-tensor scale"
        return f"FP8 E4M3 weights, {scale}; embeddings, lm_head, router, norms in 16-bit"

    def scale_count(self, t: TensorSpec) -> int:
        if not self.block:
            return 1
        return ceil(t.out_features / self.block) * ceil(t.in_features / self.block)

    def tensor_bytes(self, t: TensorSpec, spec: ModelSpec) -> int:
        if t.kind == LINEAR and t.component in DECODER_LINEAR_COMPONENTS:
            return _elements(t) + t.copies * self.scale_count(t) * FP32_BYTES
        return _kept_bytes(t)

    def keeps_16bit(self) -> str:
        return "embeddings, lm_head, router, norms, biases"


MXFP4_BLOCK = 32               # OCP microscaling: 32 FP4 (E2M1) values share one E8M0 scale byte


@dataclass(frozen=True)
class Mxfp4Format(FormatTraits):
    """MXFP4 MoE experts (gpt-oss checkpoints): per expert `*_blocks` uint8 [out, in/32, 16] and
    `*_scales` uint8 [out, in/32], i.e. 17 bytes per 32 weights (4.25 bits); attention, router,
    embeddings, lm_head and expert biases stay bf16 (the checkpoint's modules_to_not_convert)."""

    name: str = "mxfp4"
    description: str = "MXFP4 MoE experts (4.25 bits per weight); everything else bf16"

    kind = "mxfp4"
    compute_bytes = BF16_BYTES

    def tensor_bytes(self, t: TensorSpec, spec: ModelSpec) -> int:
        if t.kind == LINEAR and t.component == "experts":
            blocks = ceil(t.in_features / MXFP4_BLOCK)
            return t.copies * t.out_features * blocks * (MXFP4_BLOCK // 2 + 1)
        return _kept_bytes(t)

    def keeps_16bit(self) -> str:
        return "attention, router, embeddings, lm_head, norms, biases"


# Families whose projections are subclasses of nn.Linear (FalconLinear): transformers' bitsandbytes
# integration replaces only modules whose type is exactly nn.Linear, so it quantizes none of them.
BNB_UNCONVERTED_FAMILIES = frozenset({"falcon"})


def _bnb_quantizes(t: TensorSpec, spec: ModelSpec) -> bool:
    """transformers replaces only torch.nn.Linear modules (`type(module) is nn.Linear`) with
    bitsandbytes layers, skipping the output embedding (get_keys_to_not_convert). In transformers 5
    the routed experts and routers of MoE models are fused 3D nn.Parameters, not nn.Linear, so they
    stay in 16-bit; so does every projection of a family built on an nn.Linear subclass (Falcon)."""
    return (t.kind == LINEAR and t.component in ("attention", "mlp", "shared_experts")
            and spec.family not in BNB_UNCONVERTED_FAMILIES)


def precision_notes(spec: ModelSpec, precision_names) -> list[str]:
    """What a report says about how `precision_names` apply to this model: bitsandbytes leaves the
    projections of a family built on an nn.Linear subclass in 16-bit."""
    names = [n for n in precision_names if n]
    bnb = [n for n in names if n.lower().split("-")[0] in ("int8", "nf4", "fp4")]
    if not bnb or spec.family not in BNB_UNCONVERTED_FAMILIES:
        return []
    return [f"bitsandbytes ({', '.join(bnb)}) leaves {spec.family}'s projections in 16-bit: transformers converts "
            f"only modules of type nn.Linear, and {spec.family} builds them from a subclass (sized so)"]


@dataclass(frozen=True)
class BnbInt8Format(FormatTraits):
    """bitsandbytes LLM.int8 (Linear8bitLt): int8 weight plus one float32 scale (SCB) per output row.
    Outlier features are handled in 16-bit at run time, not stored."""

    name: str = "int8"
    description: str = "bitsandbytes LLM.int8: int8 weights + fp32 row scales; embeddings, lm_head, MoE experts in 16-bit"

    kind = "bnb"
    compute_bytes = BF16_BYTES
    is_bitsandbytes = True

    def int8_mlp(self, spec: ModelSpec) -> bool:
        """Whether the model's dense MLP runs on bitsandbytes int8 Linears (their temporaries enter the
        activation peak: sizer.calc.activations.int8_linear_bytes): not for a family whose
        projections bitsandbytes leaves in 16-bit."""
        return spec.family not in BNB_UNCONVERTED_FAMILIES

    def tensor_bytes(self, t: TensorSpec, spec: ModelSpec) -> int:
        if _bnb_quantizes(t, spec):
            return _elements(t) + t.copies * t.out_features * FP32_BYTES
        return _kept_bytes(t)

    def keeps_16bit(self) -> str:
        return "embeddings, lm_head, norms, biases, MoE routers and fused experts"


BNB_4BIT_BLOCK = 64            # bitsandbytes Linear4bit default blocksize
BNB_NESTED_BLOCK = 256         # double quantization: absmax quantized to 8 bits in blocks of 256
BNB_4BIT_CODE_BYTES = 16 * FP32_BYTES      # quant_map: the 16 NF4/FP4 values in float32
BNB_NESTED_CODE_BYTES = 256 * FP32_BYTES   # nested_quant_map: the 8-bit dynamic map in float32


@dataclass(frozen=True)
class Bnb4bitFormat(FormatTraits):
    """bitsandbytes NF4 / FP4 (Linear4bit): two 4-bit values per byte, one float32 absmax per block
    of 64 (4.5 bits per weight); with double quantization the absmax is stored as uint8 with a
    float32 absmax per 256 blocks and an offset (4.127 bits per weight)."""

    name: str
    quant_type: str            # "nf4" or "fp4"
    double_quant: bool
    kept_modules: tuple[str, ...] = ()   # decoder-layer modules the checkpoint keeps 16-bit ("model.layers.2.mlp")

    kind = "bnb"
    compute_bytes = BF16_BYTES
    is_bitsandbytes = True

    @property
    def description(self) -> str:
        dq = " with double quantization" if self.double_quant else ""
        return f"bitsandbytes {self.quant_type.upper()}{dq}, blocks of 64; embeddings, lm_head, MoE experts in 16-bit"

    def quantized_bytes(self, n_elements: int) -> int:
        """Bytes of one quantized tensor of `n_elements` values, quantization state included."""
        blocks = ceil(n_elements / BNB_4BIT_BLOCK)
        packed = ceil(n_elements / 2)
        if not self.double_quant:
            return packed + blocks * FP32_BYTES + BNB_4BIT_CODE_BYTES
        nested_blocks = ceil(blocks / BNB_NESTED_BLOCK)
        return (packed + blocks + nested_blocks * FP32_BYTES + FP32_BYTES    # uint8 absmax, nested absmax, offset
                + BNB_4BIT_CODE_BYTES + BNB_NESTED_CODE_BYTES)

    def tensor_bytes(self, t: TensorSpec, spec: ModelSpec) -> int:
        if _bnb_quantizes(t, spec):
            kept = self.kept_copies(t)
            return self.quantized_bytes(t.n_elements) * (t.copies - kept) + kept * t.n_elements * BF16_BYTES
        return _kept_bytes(t)

    def kept_copies(self, t: TensorSpec) -> int:
        """Copies of `t` inside a module of kept_modules (llm_int8_skip_modules naming one layer's
        module, as Unsloth's dynamic checkpoints do): those stay 16-bit."""
        if not self.kept_modules or t.layers is None or not t.name.startswith("layers."):
            return 0
        prefixes = tuple(m[m.index("layers."):] + "." for m in self.kept_modules if "layers." in m)
        rest = t.name[len("layers."):]
        return t.experts * sum(1 for i in t.layers if f"layers.{i}.{rest}".startswith(prefixes))

    def keeps_16bit(self) -> str:
        return "embeddings, lm_head, norms, biases, MoE routers and fused experts"


@dataclass(frozen=True)
class GroupQuantFormat(FormatTraits):
    """GPTQ (v1 checkpoint layout) or AWQ (GEMM layout): `bits`-bit integer weights with a float16
    scale and a packed integer zero per group of `group_size` input features (-1: one group).

    GPTQ tensors: qweight int32 [K*b/32, N], qzeros int32 [G, N*b/32], scales fp16 [G, N],
    g_idx int32 [K]. AWQ: qweight int32 [K, N*b/32], qzeros int32 [G, N*b/32], scales fp16 [G, N].
    Decoder Linear layers (experts included) are quantized; embeddings, lm_head, routers and norms
    stay 16-bit, and biases are stored in float16. A published checkpoint's config can change that
    (`group_quant_label`): Linears it leaves unquantized (`keep`: AWQ modules_to_not_convert, GPTQ
    `dynamic` negative rules and modules_in_block_to_quantize), a quantized lm_head (`lm_head`, config
    "lm_head": true) and, for AWQ, routers quantized because the config does not exclude them (`router`).
    """

    method: str                # "gptq" or "awq"
    bits: int
    group_size: int            # -1 for one group over all input features
    sym: bool = True           # symmetric zero points (2^(bits-1)); sizes are the same either way
    desc_act: bool = False     # act-order: columns quantized by descending Hessian diagonal (g_idx permuted)
    damp_percent: float = 0.01  # Hessian dampening, as a fraction of its mean diagonal
    static_groups: bool = False
    keep: tuple[KeepRule, ...] = ()   # decoder Linears the checkpoint leaves in 16-bit
    lm_head: bool = False      # lm_head quantized too (written "-qhead")
    router: bool = False       # MoE routers quantized too (written "-qrouter")

    kind = "group"
    compute_bytes = BF16_BYTES

    def quantization_config(self) -> dict:
        """config.json "quantization_config" (and quantize_config.json), every setting explicit:
        quantizers disagree on defaults (damp 0.01 / 0.05 / 0.1; act-order on or off)."""
        if self.method != "gptq":
            raise ValueError(f"{self.method} checkpoints are not written by sizer")
        if self.keep or self.lm_head or self.router:
            raise ValueError(f"{self.name}: sizer writes GPTQ checkpoints of every decoder Linear only")
        # act-order with static groups leaves nothing to reorder (g_idx = k // g): written as desc_act false,
        # the only act-order vLLM 0.32 loads (it removed desc_act with groups), static_groups true saying how
        desc_act = self.desc_act and not (self.static_groups and self.group_size != -1)
        return {"quant_method": "gptq", "bits": self.bits, "group_size": self.group_size, "desc_act": desc_act,
                "sym": self.sym, "damp_percent": self.damp_percent, "static_groups": self.static_groups,
                "true_sequential": True, "checkpoint_format": "gptq"}

    @property
    def name(self) -> str:
        extra = ("-qhead" if self.lm_head else "") + ("-qrouter" if self.router else "")
        return f"{self.method}-{self.bits}bit-g{self.group_size}{extra}" + _keep_text(self.keep)

    @property
    def description(self) -> str:
        group = "per output channel" if self.group_size == -1 else f"group size {self.group_size}"
        kept = [*(rule.text for rule in self.keep), "embeddings", *([] if self.lm_head else ["lm_head"])]
        return f"{self.method.upper()} {self.bits}-bit, {group}, fp16 scales; {', '.join(kept)} in 16-bit"

    def groups(self, in_features: int) -> int:
        return 1 if self.group_size == -1 else ceil(in_features / self.group_size)

    def linear_bytes(self, in_features: int, out_features: int) -> int:
        """Bytes of one quantized Linear weight (bias excluded)."""
        k, n, b = in_features, out_features, self.bits
        g = self.groups(k)
        qweight = ceil(k * b / 32) * n * 4 if self.method == "gptq" else k * ceil(n * b / 32) * 4
        qzeros = g * ceil(n * b / 32) * 4
        scales = g * n * 2
        g_idx = k * 4 if self.method == "gptq" else 0
        return qweight + qzeros + scales + g_idx

    def bits_per_weight(self, in_features: int, out_features: int) -> float:
        return 8 * self.linear_bytes(in_features, out_features) / (in_features * out_features)

    def quantizes(self, t: TensorSpec) -> bool:
        """Whether `t` is a Linear this format quantizes (in the layers its `keep` rules leave alone)."""
        return t.kind == LINEAR and (t.component in DECODER_LINEAR_COMPONENTS or (self.lm_head and t.component == "lm_head")
                                     or (self.router and t.component == "router"))

    def tensor_bytes(self, t: TensorSpec, spec: ModelSpec) -> int:
        if not self.quantizes(t):
            return _kept_bytes(t)
        n_layers = len(t.layers) if t.layers is not None else 1
        kept = _kept_count(self.keep, t)
        quantized = (n_layers - kept) * self.linear_bytes(t.in_features, t.out_features)
        return (quantized + kept * t.n_elements * BF16_BYTES) * t.experts

    def keeps_16bit(self) -> str:
        return ", ".join([*(rule.text for rule in self.keep), "embeddings", *([] if self.lm_head else ["lm_head"]),
                          *([] if self.router else ["router"]), "norms", "biases"])


# ---------------------------------------------------------------------------------------------
# compressed-tensors checkpoints (llm-compressor, RedHatAI / neuralmagic, NVIDIA, Kimi K2.5)

CT_SCALE_BYTES = BF16_BYTES    # scales and static input scales are stored in the model's dtype (16-bit)
CT_SHAPE_BYTES = 2 * 8         # weight_shape: torch.tensor(weight.shape), int64 [2]
CT_COMPONENTS = ("attention", "mlp", "experts", "shared_experts")   # the Linears a config group can target


@dataclass(frozen=True)
class CompressedTensorsFormat(FormatTraits):
    """A compressed-tensors checkpoint (quant_method "compressed-tensors"): its Linear tensors exactly as
    the library writes them, per Linear of shape [N, K] (out, in):

    - "float-quantized" FP8: `weight` F8_E4M3 [N, K] and `weight_scale` in the model dtype, [1] ("tensor"),
      [N, 1] ("channel"), [ceil(N/b0), ceil(K/b1)] ("block") or [N, ceil(K/g)] ("group");
    - "pack-quantized" INT4/INT8: `weight_packed` int32 [N, ceil(K/(32/bits))], `weight_scale` as above,
      `weight_shape` int64 [2], and when asymmetric (group/channel) `weight_zero_point` int32
      [ceil(N/(32/bits)), groups] (packed along the output dimension);
    - "naive-quantized" / "int-quantized" INT8: `weight` int8 [N, K], `weight_scale`, and when asymmetric an
      int8 `weight_zero_point` of the scale's shape;
    - `weight_g_idx` int32 [K] with actorder "group"; `input_scale` [1] in the model dtype with static
      per-tensor input activations (dynamic activations store nothing).

    Sources (compressed-tensors, vllm-project/compressed-tensors): quantization/lifecycle/initialize.py
    `initialize_qparams` (scale shapes per strategy; scale dtype = the weight's dtype), compressors/
    quantized_compressors/pack_quantized.py `pack_to_int32` and `PackedQuantizationCompressor`
    (`compress_module`, `compression_param_info`), compressors/quantized_compressors/base.py
    `BaseQuantizationCompressor.compress` (symmetric zero points and g_idx of -1 are not saved).

    `keep` lists the components the config's `ignore` list (or narrower `targets`) leaves in 16-bit, with
    the layers where only some are (None: every layer); embeddings, lm_head, routers, norms and biases
    are always 16-bit. A fused MoE tensor `experts.gate_up_proj` is stored as two Linears (gate_proj and
    up_proj per expert), as llm-compressor saves them.
    """

    scheme: str                # "fp8", "int4" or "int8"
    strategy: str              # "tensor", "channel", "group" or "block"
    group: int = 0             # group size (strategy "group")
    block: tuple[int, int] = (0, 0)    # block_structure (strategy "block")
    symmetric: bool = True
    packed: bool = False       # pack-quantized int32 words (always for int4)
    g_idx: bool = False        # actorder "group": weight_g_idx int32 [K]
    static_input: bool = False  # a static per-tensor input_scale
    keep: tuple[tuple[str, tuple[int, ...] | None], ...] = ()

    compute_bytes = BF16_BYTES

    @property
    def kind(self) -> str:
        return "fp8" if self.scheme == "fp8" else "group"

    @property
    def is_fp8(self) -> bool:
        return self.scheme == "fp8"

    @property
    def bits(self) -> int:
        return 4 if self.scheme == "int4" else 8

    @property
    def name(self) -> str:
        how = {"group": f"g{self.group}", "block": _block_text(self.block)}.get(self.strategy, self.strategy)
        flags = "".join(f"-{f}" for f, on in (("asym", not self.symmetric), ("packed", self.packed and self.scheme == "int8"),
                                              ("gidx", self.g_idx), ("static", self.static_input)) if on)
        keep = "+".join(c if layers is None else f"{c}@{_ranges_text(layers)}" for c, layers in self.keep)
        return f"ct-{self.scheme}-{how}{flags}" + (f"-keep-{keep}" if keep else "")

    @property
    def description(self) -> str:
        kept = ", ".join(c if layers is None else f"{c} (layers {_ranges_text(layers)})" for c, layers in self.keep)
        return (f"compressed-tensors {self.scheme.upper()} weights, {self.strategy} scales in 16-bit; "
                f"{kept + ', ' if kept else ''}embeddings, lm_head, router, norms in 16-bit")

    def keeps_16bit(self) -> str:
        return ", ".join([*(c for c, _ in self.keep), "embeddings", "lm_head", "router", "norms", "biases"])

    def scale_shape(self, n: int, k: int) -> tuple[int, int]:
        """weight_scale's shape for a Linear [n, k] (initialize_qparams)."""
        if self.strategy == "tensor":
            return (1, 1)
        if self.strategy == "channel":
            return (n, 1)
        if self.strategy == "group":
            return (n, ceil(k / self.group))
        return (ceil(n / self.block[0]), ceil(k / self.block[1]))

    def linear_tensors(self, n: int, k: int) -> dict[str, tuple[str, tuple[int, ...]]]:
        """The tensors one quantized Linear [n, k] is stored as: suffix -> (safetensors dtype, shape)."""
        rows, cols = self.scale_shape(n, k)
        scale_shape = (1,) if self.strategy == "tensor" else (rows, cols)
        out: dict[str, tuple[str, tuple[int, ...]]] = {}
        if self.scheme == "fp8":
            out["weight"] = ("F8_E4M3", (n, k))
        elif self.packed or self.scheme == "int4":
            out["weight_packed"] = ("I32", (n, ceil(k / (32 // self.bits))))
        else:
            out["weight"] = ("I8", (n, k))
        out["weight_scale"] = ("BF16", scale_shape)
        if not self.symmetric:
            if self.scheme != "fp8" and (self.packed or self.scheme == "int4") and self.strategy in ("group", "channel"):
                out["weight_zero_point"] = ("I32", (ceil(rows / (32 // self.bits)), cols))
            else:
                out["weight_zero_point"] = ("I8", scale_shape)
        if self.scheme != "fp8" and (self.packed or self.scheme == "int4"):
            out["weight_shape"] = ("I64", (2,))
        if self.g_idx:
            out["weight_g_idx"] = ("I32", (k,))
        if self.static_input:
            out["input_scale"] = ("BF16", (1,))
        return out

    def linear_bytes(self, n: int, k: int) -> int:
        """Bytes of one quantized Linear [n, k] (bias excluded)."""
        size = {"F8_E4M3": 1, "I8": 1, "BF16": 2, "I32": 4, "I64": 8}
        return sum(size[dtype] * prod(shape) for dtype, shape in self.linear_tensors(n, k).values())

    def kept_layers(self, t: TensorSpec) -> int:
        """How many of `t`'s layers the config leaves in 16-bit."""
        for component, layers in self.keep:
            if component == t.component:
                if layers is None or t.layers is None:
                    return len(t.layers) if t.layers is not None else 1
                return len(set(layers) & set(t.layers))
        return 0

    def tensor_bytes(self, t: TensorSpec, spec: ModelSpec) -> int:
        if t.kind != LINEAR or t.component not in CT_COMPONENTS:
            return _kept_bytes(t)
        n_layers = len(t.layers) if t.layers is not None else 1
        kept = self.kept_layers(t)
        n, k = t.out_features, t.in_features
        fused = t.component == "experts" and "gate_up_proj" in t.name and n % 2 == 0
        per_copy = 2 * self.linear_bytes(n // 2, k) if fused else self.linear_bytes(n, k)
        return ((n_layers - kept) * per_copy + kept * t.n_elements * BF16_BYTES) * t.experts


def _block_text(block: tuple[int, int]) -> str:
    return f"block{block[0]}" if block[0] == block[1] else f"block{block[0]}x{block[1]}"


def _ranges_text(layers: tuple[int, ...]) -> str:
    """0-47 / 0-2.5: sorted layer indices as dot-separated ranges (names travel in comma lists)."""
    parts, start = [], None
    for i, x in enumerate(layers):
        if start is None:
            start = x
        if i + 1 == len(layers) or layers[i + 1] != x + 1:
            parts.append(str(start) if start == x else f"{start}-{x}")
            start = None
    return ".".join(parts)


def _parse_ranges(text: str, name: str) -> tuple[int, ...]:
    layers: set[int] = set()
    for part in text.split("."):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise UsageError(f"precision {name!r}: bad layer list {text!r} (expected e.g. 0-47 or 0-2.5)")
        layers.update(range(int(lo), int(hi or lo) + 1))
    return tuple(sorted(layers))


_CT_RE = re.compile(r"^ct-(fp8|int4|int8)-(tensor|channel|g\d+|block\d+(?:x\d+)?)((?:-(?:asym|packed|gidx|static))*)"
                    r"(?:-keep-(.+))?$")


def _ct_format(name: str, m: re.Match) -> CompressedTensorsFormat:
    """A compressed-tensors format from its name: ct-<fp8|int4|int8>-<tensor|channel|g<G>|block<B>[x<C>]>
    [-asym][-packed][-gidx][-static][-keep-<component>[@<layers>]+...]."""
    scheme, how, flags, keep_text = m.group(1), m.group(2), m.group(3).split("-")[1:], m.group(4)
    group, block, strategy = 0, (0, 0), how
    if how.startswith("g"):
        strategy, group = "group", int(how[1:])
    elif how.startswith("block"):
        rows, _, cols = how[5:].partition("x")
        strategy, block = "block", (int(rows), int(cols or rows))
    if group < 0 or (strategy == "group" and group == 0) or (strategy == "block" and 0 in block):
        raise UsageError(f"precision {name!r}: group and block sizes must be positive")
    if strategy == "block" and scheme != "fp8":
        raise UsageError(f"precision {name!r}: block scales are an FP8 strategy (use g<G> for int4/int8)")
    keep = []
    for part in (keep_text.split("+") if keep_text else []):
        component, _, layers = part.partition("@")
        if component not in CT_COMPONENTS:
            raise UsageError(f"precision {name!r}: cannot keep {component!r} in 16-bit (one of {', '.join(CT_COMPONENTS)})")
        keep.append((component, _parse_ranges(layers, name) if layers else None))
    return CompressedTensorsFormat(scheme, strategy, group, block, "asym" not in flags,
                                   scheme == "int4" or "packed" in flags, "gidx" in flags, "static" in flags, tuple(keep))


# compressed-tensors `ignore` / `targets` entries are matched against module names as the library does
# (compressed_tensors.utils.match: a name equal to the entry, or `re.match` of an entry "re:<pattern>");
# sizer checks them against these module names of each component, in every layer they mention.
_CT_PROBES = {
    "attention": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "self_attn.qkv_proj",
                  "self_attn.q_a_proj", "self_attn.q_b_proj", "self_attn.kv_a_proj_with_mqa", "self_attn.kv_b_proj"),
    "mlp": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj", "feed_forward.gate_proj", "feed_forward.up_proj",
            "feed_forward.down_proj"),
    "experts": ("mlp.experts.0.gate_proj", "mlp.experts.0.up_proj", "mlp.experts.0.down_proj",
                "feed_forward.experts.0.gate_proj", "feed_forward.experts.0.up_proj", "feed_forward.experts.0.down_proj"),
    "shared_experts": ("mlp.shared_experts.gate_proj", "mlp.shared_experts.up_proj", "mlp.shared_experts.down_proj",
                       "mlp.shared_expert.gate_proj", "mlp.shared_expert.up_proj", "mlp.shared_expert.down_proj",
                       "feed_forward.shared_expert.gate_proj", "feed_forward.shared_expert.up_proj",
                       "feed_forward.shared_expert.down_proj"),
}
_CT_PREFIXES = ("model.layers.", "language_model.model.layers.", "model.language_model.layers.", "layers.")
_CT_ANY_LAYER = 1 << 20        # stands for every layer the entries do not name
_CT_LAYER_RE = re.compile(r"layers\\?\.(\d+)\\?\.")


class _CtUnsupported(Exception):
    """A compressed-tensors config sizer cannot size: its message names the scheme."""


def _ct_matcher(entries: list[str]):
    exact = {e for e in entries if not e.startswith("re:")}
    patterns = [re.compile(e[3:]) for e in entries if e.startswith("re:")]

    def matches(module: str) -> bool:
        names = [p + module for p in _CT_PREFIXES]
        return any(n in exact for n in names) or any(p.match(n) for p in patterns for n in names)
    return matches


def _ct_keep(targets: list[str], ignore: list[str]) -> tuple:
    """The components (and layers) a config group's targets and ignore list leave in 16-bit."""
    entries = [str(e) for e in [*targets, *ignore]]
    layers = {int(x) for e in entries for x in _CT_LAYER_RE.findall(e)} | {_CT_ANY_LAYER}
    if any(e.startswith("re:") and "layers" in e for e in entries):
        layers |= set(range(256))
    all_linear = "Linear" in targets
    targeted, ignored = _ct_matcher([t for t in targets if t != "Linear"]), _ct_matcher(ignore)
    keep = []
    for component, probes in _CT_PROBES.items():
        def kept(i: int) -> bool:
            modules = [f"{i}.{p}" for p in probes]
            return (not all_linear and not any(map(targeted, modules))) or any(map(ignored, modules))
        kept_layers = sorted(i for i in layers if kept(i))
        if _CT_ANY_LAYER in kept_layers:
            if len(kept_layers) != len(layers):
                raise _CtUnsupported(f"quantizes {component} only in the layers its entries name")
            keep.append((component, None))
        elif kept_layers:
            keep.append((component, tuple(kept_layers)))
    return tuple(keep)


def _ct_weights(w: dict, fmt: str, static_input: bool) -> CompressedTensorsFormat:
    """A config group's "weights" arguments (QuantizationArgs) and storage format as a sizer format."""
    kind, bits, strategy = str(w.get("type", "int")), w.get("num_bits", 8), str(w.get("strategy") or "tensor")
    symmetric, group, block = w.get("symmetric", True) is not False, w.get("group_size") or 0, w.get("block_structure")
    if kind == "float" and bits == 8 and fmt == "float-quantized":
        scheme, packed = "fp8", False
    elif kind == "int" and bits in (4, 8) and fmt == "pack-quantized":
        scheme, packed = f"int{bits}", True
    elif kind == "int" and bits == 8 and fmt in ("naive-quantized", "int-quantized"):
        scheme, packed = "int8", False
    else:
        raise _CtUnsupported(f"{kind} {bits}-bit weights in format {fmt!r}")
    if strategy == "block" and not (isinstance(block, list) and len(block) == 2):
        raise _CtUnsupported("block strategy without a block_structure [rows, cols]")
    if strategy not in ("tensor", "channel", "group", "block") or (strategy == "group" and not group):
        raise _CtUnsupported(f"weight strategy {strategy!r}")
    return CompressedTensorsFormat(scheme, strategy, int(group) if strategy == "group" else 0,
                                   tuple(block) if strategy == "block" else (0, 0), symmetric, packed,
                                   w.get("actorder") == "group", static_input)


def _ct_group_format(group: dict, fmt: str) -> CompressedTensorsFormat:
    w, a = group.get("weights"), group.get("input_activations")
    if not isinstance(w, dict):
        raise _CtUnsupported("a config group without weight quantization")
    static_input = isinstance(a, dict) and not a.get("dynamic", False)
    if static_input and (a.get("strategy") not in (None, "tensor") or a.get("symmetric", True) is False):
        raise _CtUnsupported(f"static {a.get('strategy')} input activations")
    return _ct_weights(w, str(group.get("format") or fmt), static_input)


def compressed_tensors_label(q: dict) -> str:
    """The sizer precision name of a compressed-tensors quantization_config, e.g. "ct-fp8-channel-keep-attention"
    (RedHatAI Llama 4 Scout FP8-dynamic) or "ct-int4-g32" (Kimi K2.5). A scheme sizer cannot size comes back
    as "compressed-tensors:<scheme>", which get_precision refuses in one line naming it."""
    fmt = str(q.get("format") or "")
    groups = q.get("config_groups") if isinstance(q.get("config_groups"), dict) else {}
    try:
        formats = {key: _ct_group_format(g, fmt) for key, g in groups.items() if isinstance(g, dict)}
        if not formats:
            raise _CtUnsupported("no config_groups")
        if len(set(formats.values())) > 1:
            raise _CtUnsupported("mixed config_groups (" + ", ".join(f"{k}: {f.name}" for k, f in formats.items()) + ")")
        targets = [str(t) for g in groups.values() if isinstance(g, dict) for t in g.get("targets") or []]
        keep = _ct_keep(targets, [str(e) for e in q.get("ignore") or []])
    except (_CtUnsupported, re.error) as e:
        return f"compressed-tensors:{fmt or 'unknown format'}: {e}"
    return replace(next(iter(formats.values())), keep=keep).name


# ---------------------------------------------------------------------------------------------
# FBGEMM FP8 (Meta's Llama 3.1 405B FP8) and NVIDIA ModelOpt FP8 / NVFP4 checkpoints
#
# Both keep in 16-bit the Linear modules their config lists (`modules_to_not_convert`, `exclude_modules` /
# `ignore`), often only some projections of some layers (DeepSeek NVFP4: the MLA projections but not
# o_proj). A format holds what it keeps as `KeepRule`s, written in its name after "-keep-" as
# `component[.module][@layers]` joined by "+": "attention+mlp@0.125", "attention.q_a_proj".

@dataclass(frozen=True)
class KeepRule:
    """Linear weights a checkpoint leaves in 16-bit: those of `component`, only the modules named `module`
    (the last part of the module path: q_a_proj) when set, in `layers` (None: every layer)."""

    component: str
    module: str | None = None
    layers: tuple[int, ...] | None = None

    @property
    def text(self) -> str:
        where = f"@{_ranges_text(self.layers)}" if self.layers is not None else ""
        return f"{self.component}{'.' + self.module if self.module else ''}{where}"

    def kept_layers(self, t: TensorSpec) -> int:
        """How many of `t`'s layers this rule keeps in 16-bit."""
        if t.component != self.component or (self.module and module_leaf(t) != self.module):
            return 0
        if t.layers is None:
            return 1
        return len(t.layers) if self.layers is None else len(set(self.layers) & set(t.layers))


def module_leaf(t: TensorSpec) -> str:
    """The last module name of a tensor: "q_a_proj" for layers.self_attn.q_a_proj.weight."""
    parts = t.name.split(".")
    return parts[-2] if len(parts) >= 2 else parts[0]


def _keep_text(keep: tuple[KeepRule, ...]) -> str:
    return "-keep-" + "+".join(rule.text for rule in keep) if keep else ""


def _parse_keep(text: str | None, name: str, components: tuple[str, ...]) -> tuple[KeepRule, ...]:
    rules = []
    for part in (text.split("+") if text else []):
        what, _, layers = part.partition("@")
        component, _, module = what.partition(".")
        if component not in components:
            raise UsageError(f"precision {name!r}: cannot keep {component!r} in 16-bit (one of {', '.join(components)})")
        rules.append(KeepRule(component, module or None, _parse_ranges(layers, name) if layers else None))
    return tuple(rules)


def _kept_count(keep: tuple[KeepRule, ...], t: TensorSpec) -> int:
    """How many of `t`'s layers (or of its single copy) the rules keep in 16-bit."""
    return max((rule.kept_layers(t) for rule in keep), default=0)


def _linear_copies_bytes(t: TensorSpec, keep: tuple[KeepRule, ...], linear_bytes) -> int:
    """All copies of a Linear tensor: quantized (linear_bytes(n, k) each) except those kept in 16-bit. A fused
    expert `gate_up_proj` is two Linears per expert in these checkpoints (gate_proj and up_proj)."""
    n_layers = len(t.layers) if t.layers is not None else 1
    kept = _kept_count(keep, t)
    n, k = t.out_features, t.in_features
    fused = t.component == "experts" and "gate_up_proj" in t.name and n % 2 == 0
    per_copy = 2 * linear_bytes(n // 2, k) if fused else linear_bytes(n, k)
    return ((n_layers - kept) * per_copy + kept * t.n_elements * BF16_BYTES) * t.experts


FBGEMM_COMPONENTS = ("attention", "mlp", "shared_experts")
MODELOPT_COMPONENTS = ("attention", "mlp", "experts", "shared_experts")   # vLLM's FusedMoE experts get no fbgemm method: 16-bit


@dataclass(frozen=True)
class FbgemmFp8Format(FormatTraits):
    """An FBGEMM FP8 checkpoint (quant_method "fbgemm_fp8", Meta's Llama 3.1 405B FP8): every Linear not in
    modules_to_not_convert stores `weight` float8_e4m3fn [N, K] and `weight_scale` float32 [N, 1] (one scale
    per output row); activations are quantized per row at run time (bound `activation_scale_ub`), so no
    input scale is stored. transformers FbgemmFp8Linear and vLLM FBGEMMFp8LinearMethod.create_weights
    (docs/reference/quantized-checkpoints.md)."""

    keep: tuple[KeepRule, ...] = ()

    kind = "fp8"
    compute_bytes = BF16_BYTES
    is_fp8 = True
    checkpoint_only = True

    @property
    def name(self) -> str:
        return "fbgemm-fp8" + _keep_text(self.keep)

    @property
    def description(self) -> str:
        kept = "".join(f"{rule.text}, " for rule in self.keep)
        return f"FBGEMM FP8 E4M3 weights, fp32 scale per output row; {kept}embeddings, lm_head, norms in 16-bit"

    def keeps_16bit(self) -> str:
        return ", ".join([*(rule.text for rule in self.keep), "embeddings", "lm_head", "router", "MoE experts",
                          "norms", "biases"])

    @staticmethod
    def linear_bytes(n: int, k: int) -> int:
        """weight F8_E4M3 [n, k] + weight_scale F32 [n, 1]."""
        return n * k + n * FP32_BYTES

    def tensor_bytes(self, t: TensorSpec, spec: ModelSpec) -> int:
        if t.kind != LINEAR or t.component not in FBGEMM_COMPONENTS:
            return _kept_bytes(t)
        return _linear_copies_bytes(t, self.keep, self.linear_bytes)


NVFP4_GROUP = 16               # ModelOpt NVFP4: one FP8 E4M3 scale per 16 E2M1 values
# The projection that makes an attention layer's keys (one per layer that has a KV cache).
KEY_PROJECTIONS = frozenset({"k_proj", "kv_a_proj_with_mqa", "qkv_proj", "query_key_value", "c_attn", "Wqkv"})


@dataclass(frozen=True)
class ModelOptFormat(FormatTraits):
    """An NVIDIA ModelOpt checkpoint (quant_method "modelopt"), per quantized Linear [N, K] as vLLM's
    modelopt.py creates it (ModelOptFp8LinearMethod / ModelOptNvFp4LinearMethod.create_weights):

    - FP8: `weight` float8_e4m3fn [N, K], `weight_scale` and `input_scale` float32 scalars (per tensor, static);
    - NVFP4: `weight` uint8 [N, K/2] (two E2M1 values a byte), `weight_scale` float8_e4m3fn [N, K/group],
      `weight_scale_2` and `input_scale` float32 scalars.

    MoE experts store the same tensors per expert. Linears matched by exclude_modules / ignore (`keep`),
    embeddings, lm_head, routers and norms stay 16-bit. A checkpoint declaring an FP8 KV cache
    (kv_cache_quant_algo "FP8", or kv_cache_scheme) also stores `self_attn.k_proj.k_scale` and
    `self_attn.v_proj.v_scale`, float32 scalars, in every attention layer (MLA ones too), counted with
    the layer's key projection."""

    algo: str                  # "fp8" or "nvfp4"
    group: int = NVFP4_GROUP   # NVFP4 block size
    keep: tuple[KeepRule, ...] = ()
    kv_scales: bool = False    # an FP8 KV cache's k_scale and v_scale, float32 scalars per attention layer

    compute_bytes = BF16_BYTES
    checkpoint_only = True

    @property
    def kind(self) -> str:
        return "fp8" if self.algo == "fp8" else "nvfp4"

    @property
    def is_fp8(self) -> bool:
        return self.algo == "fp8"

    @property
    def name(self) -> str:
        group = f"-g{self.group}" if self.algo == "nvfp4" and self.group != NVFP4_GROUP else ""
        return f"modelopt-{self.algo}{group}{'-kv8' if self.kv_scales else ''}" + _keep_text(self.keep)

    @property
    def description(self) -> str:
        kept = "".join(f"{rule.text}, " for rule in self.keep)
        how = ("FP8 E4M3 weights, fp32 weight and input scale per tensor" if self.algo == "fp8" else
               f"NVFP4 (E2M1) weights, FP8 scale per {self.group} + fp32 scales per tensor")
        return f"NVIDIA ModelOpt {how}; {kept}embeddings, lm_head, router, norms in 16-bit"

    def keeps_16bit(self) -> str:
        return ", ".join([*(rule.text for rule in self.keep), "embeddings", "lm_head", "router", "norms", "biases"])

    def linear_tensors(self, n: int, k: int) -> dict[str, tuple[str, tuple[int, ...]]]:
        """The tensors one quantized Linear [n, k] is stored as: suffix -> (safetensors dtype, shape)."""
        if self.algo == "fp8":
            return {"weight": ("F8_E4M3", (n, k)), "weight_scale": ("F32", ()), "input_scale": ("F32", ())}
        return {"weight": ("U8", (n, ceil(k / 2))), "weight_scale": ("F8_E4M3", (n, ceil(k / self.group))),
                "weight_scale_2": ("F32", ()), "input_scale": ("F32", ())}

    def linear_bytes(self, n: int, k: int) -> int:
        size = {"F8_E4M3": 1, "U8": 1, "F32": FP32_BYTES}
        return sum(size[dtype] * prod(shape) for dtype, shape in self.linear_tensors(n, k).values())

    def tensor_bytes(self, t: TensorSpec, spec: ModelSpec) -> int:
        if t.kind != LINEAR or t.component not in MODELOPT_COMPONENTS:
            return _kept_bytes(t)
        kv = 2 * FP32_BYTES * t.copies if self.kv_scales and t.component == "attention" and \
            module_leaf(t) in KEY_PROJECTIONS else 0
        return _linear_copies_bytes(t, self.keep, self.linear_bytes) + kv


_FBGEMM_RE = re.compile(r"^fbgemm-fp8(?:-keep-(.+))?$")
_MODELOPT_RE = re.compile(r"^modelopt-(fp8|nvfp4)(?:-g(\d+))?(-kv8)?(?:-keep-(.+))?$")


def _scaled_format(name: str, low: str):
    """fbgemm-fp8[-keep-...] or modelopt-<fp8|nvfp4>[-g<G>][-kv8][-keep-...] (and nvfp4, the ModelOpt NVFP4
    default)."""
    if low == "nvfp4":
        return ModelOptFormat("nvfp4")
    m = _FBGEMM_RE.match(low)
    if m:
        return FbgemmFp8Format(_parse_keep(m.group(1), name, FBGEMM_COMPONENTS))
    m = _MODELOPT_RE.match(low)
    if m:
        group = int(m.group(2) or NVFP4_GROUP)
        if group < 1 or (m.group(2) and m.group(1) == "fp8"):
            raise UsageError(f"precision {name!r}: a group size is an NVFP4 setting and must be positive")
        return ModelOptFormat(m.group(1), group, _parse_keep(m.group(4), name, MODELOPT_COMPONENTS), bool(m.group(3)))
    return None


# Where a sizer tensor sits in a checkpoint: "layers.self_attn.q_proj.weight" of layer 3 is
# model.layers.3.self_attn.q_proj (backbone.layers.3... in Nemotron-H, model.language_model.layers.3... in
# multimodal wrappers); one expert stands for all (experts.0.gate_proj).
CHECKPOINT_PREFIXES = ("model.", "backbone.", "model.language_model.", "language_model.model.", "")


def _module_paths(t: TensorSpec, layer: int) -> list[str]:
    rest = t.name.removeprefix("layers.").removesuffix(".weight")
    if t.component == "experts":
        rest = rest.replace("experts.", "experts.0.", 1)
    return [f"{prefix}layers.{layer}.{rest}" for prefix in CHECKPOINT_PREFIXES]


def keep_rules(spec: ModelSpec, components: tuple[str, ...], excluded, by_layer: bool = False) -> tuple[KeepRule, ...]:
    """The KeepRules that leave in 16-bit exactly the Linear tensors of `components` whose checkpoint module
    path `excluded(path)` says the config excludes (`excluded(tensor, layer)` when `by_layer`): a whole
    component where every module of it is kept in the same layers, else one rule per module name."""
    kept: dict[str, dict[str, set[int]]] = {}        # component -> module -> kept layers
    present: dict[str, dict[str, set[int]]] = {}
    for t in spec.tensors:
        if t.kind != LINEAR or t.component not in components or t.layers is None:
            continue
        leaf = module_leaf(t)
        present.setdefault(t.component, {}).setdefault(leaf, set()).update(t.layers)
        hits = {i for i in t.layers if (excluded(t, i) if by_layer else any(map(excluded, _module_paths(t, i))))}
        kept.setdefault(t.component, {}).setdefault(leaf, set()).update(hits)
    rules: list[KeepRule] = []
    for component, modules in present.items():
        by_module = kept[component]
        if not any(by_module.values()):
            continue
        all_layers = set().union(*modules.values())
        kept_layers = set().union(*by_module.values())
        whole = all(by_module[m] == modules[m] & kept_layers for m in modules)
        if whole:
            rules.append(KeepRule(component, None, None if kept_layers == all_layers else tuple(sorted(kept_layers))))
            continue
        for module in sorted(m for m in modules if by_module[m]):
            layers = by_module[module]
            rules.append(KeepRule(component, module, None if layers == modules[module] else tuple(sorted(layers))))
    return tuple(rules)


def fbgemm_label(q: dict, spec: ModelSpec | None = None) -> str:
    """The sizer precision name of an fbgemm_fp8 quantization_config: modules_to_not_convert entries match a
    module path exactly (vLLM is_layer_skipped) or as a prefix ending at a dot (transformers)."""
    entries = {str(e) for e in q.get("modules_to_not_convert") or []}

    def excluded(path: str) -> bool:
        return path in entries or any(path.startswith(e + ".") for e in entries)
    keep = keep_rules(spec, FBGEMM_COMPONENTS, excluded) if spec is not None else ()
    return FbgemmFp8Format(keep).name


def modelopt_settings(q: dict) -> dict:
    """A ModelOpt config in either form as one dict: hf_quant_config.json's {"producer", "quantization": {...}}
    or config.json's quantization_config (quant_method "modelopt", `ignore` for exclude_modules)."""
    inner = q.get("quantization") if isinstance(q.get("quantization"), dict) else q
    excluded = inner.get("exclude_modules") or inner.get("ignore") or q.get("ignore") or []
    scheme = inner.get("kv_cache_scheme") if isinstance(inner.get("kv_cache_scheme"), dict) else {}
    kv_fp8 = str(inner.get("kv_cache_quant_algo") or "").upper() == "FP8" or \
        (scheme.get("type") == "float" and scheme.get("num_bits") == 8)
    return {"quant_algo": str(inner.get("quant_algo") or ""), "group_size": inner.get("group_size"),
            "exclude_modules": [str(e) for e in excluded], "kv_cache_fp8": kv_fp8}


def modelopt_label(q: dict, spec: ModelSpec | None = None) -> str:
    """The sizer precision name of a ModelOpt config ("modelopt-nvfp4-keep-attention"), or "modelopt:<algo>"
    for an algorithm sizer does not size (refused by get_precision in one line). exclude_modules entries
    match a module path exactly, as a substring or as an fnmatch wildcard (vLLM modelopt.py)."""
    s = modelopt_settings(q)
    algo = {"FP8": "fp8", "NVFP4": "nvfp4"}.get(s["quant_algo"].upper())
    if algo is None:
        return f"modelopt:{s['quant_algo'] or 'unknown algorithm'}"
    entries = s["exclude_modules"]

    def excluded(path: str) -> bool:
        return any(e == path or e in path or fnmatch.fnmatchcase(path, e) for e in entries)
    keep = keep_rules(spec, MODELOPT_COMPONENTS, excluded) if spec is not None else ()
    group = int(s["group_size"] or NVFP4_GROUP) if algo == "nvfp4" else NVFP4_GROUP
    return ModelOptFormat(algo, group, keep, s["kv_cache_fp8"]).name


# ---------------------------------------------------------------------------------------------
# GPTQ and AWQ checkpoints: what their quantization_config leaves unquantized
#
# vLLM decides per layer from the layer's own prefix, which names fused layers (qkv_proj, gate_up_proj) and
# the FusedMoE block ("...mlp.experts"), not the checkpoint's per-projection tensors: AWQ skips a layer when
# a modules_to_not_convert entry is a substring of that prefix (awq.py is_layer_skipped_awq); GPTQ when the
# first `dynamic` rule whose regex matches it (re.match) is a "-:" rule (gptq_utils.py get_dynamic_override).

GROUP_COMPONENTS = ("attention", "mlp", "experts", "shared_experts")
# vLLM's fused layers: the projection a checkpoint stores -> the layer vLLM builds it into
_VLLM_FUSED = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj", "gate_proj": "gate_up_proj",
               "up_proj": "gate_up_proj"}
# vLLM's prefix of the decoder layers: text models, multimodal wrappers (Qwen2.5-VL's language_model.model)
VLLM_PREFIXES = ("model.", "language_model.model.")


def vllm_layer_paths(t: TensorSpec, layer: int) -> list[str]:
    """The prefixes vLLM gives the layer holding `t` in decoder layer `layer`: "model.layers.3.self_attn.qkv_proj"
    for q_proj, "model.layers.3.mlp.experts" for every expert tensor, "model.layers.3.mlp.gate" for a router."""
    rest = t.name.removeprefix("layers.").removesuffix(".weight")
    if t.component == "experts":
        rest = rest[:rest.index("experts") + len("experts")]
    else:
        head, _, leaf = rest.rpartition(".")
        rest = f"{head}.{_VLLM_FUSED.get(leaf, leaf)}" if head else _VLLM_FUSED.get(leaf, leaf)
    return [f"{prefix}layers.{layer}.{rest}" for prefix in VLLM_PREFIXES]


def _block_relative_name(t: TensorSpec) -> str:
    """A decoder Linear's module name inside its block as a checkpoint stores it: "self_attn.q_proj",
    "mlp.experts.0.gate_proj" (expert 0 standing for all)."""
    return _module_paths(t, 0)[-1].removeprefix("layers.0.")


def _dynamic_rule(dynamic: dict, path: str):
    """(pattern, overrides) of the first `dynamic` rule matching `path`, as get_dynamic_override reads them:
    "-:" rules skip the module, "+:" (or unprefixed) rules override bits / group_size; None when none matches."""
    for pattern, overrides in dynamic.items():
        if re.match(pattern.removeprefix("-:").removeprefix("+:"), path):
            return pattern, overrides if isinstance(overrides, dict) else {}
    return None


def _skipped_layers(t: TensorSpec, skipped) -> set[int]:
    """The decoder layers in which `skipped` names the vLLM layer holding `t`."""
    return {i for i in t.layers if any(map(skipped, vllm_layer_paths(t, i)))}


def group_quant_label(q: dict, spec: ModelSpec | None = None) -> str:
    """The sizer precision name of a GPTQ or AWQ quantization_config ("awq-4bit-g128-keep-mlp.gate_proj"): with
    the model's `spec`, the decoder Linears the config leaves in 16-bit, a quantized lm_head ("lm_head": true)
    and AWQ routers the config does not exclude. A GPTQ `dynamic` rule that gives some module other bits or
    another group size is not sized: the name is then "gptq:<why>", which get_precision refuses in one line."""
    method = str(q.get("quant_method", "")).lower()
    bits = int(q.get("bits", q.get("w_bit", 4)))
    group = int(q.get("group_size", q.get("q_group_size", 128)))
    base = GroupQuantFormat(method, bits, group)
    if spec is None:
        return base.name
    dynamic = {str(k): v for k, v in (q.get("dynamic") or {}).items()} if method == "gptq" else {}
    entries = [str(e) for e in q.get("modules_to_not_convert") or []] if method == "awq" else []
    inside = {str(m) for group_ in q.get("modules_in_block_to_quantize") or [] for m in
              (group_ if isinstance(group_, list) else [group_])} if method == "gptq" else set()
    for t in spec.tensors:
        if t.kind != LINEAR or t.layers is None:
            continue
        for path in {p for i in t.layers for p in vllm_layer_paths(t, i)}:
            rule = _dynamic_rule(dynamic, path)
            if rule and not rule[0].startswith("-:") and (rule[1].get("bits", bits) != bits or
                                                          rule[1].get("group_size", group) != group):
                return (f"gptq:dynamic rule {rule[0]!r} gives {path} bits {rule[1].get('bits', bits)}, group size "
                        f"{rule[1].get('group_size', group)}")

    def skipped(path: str) -> bool:
        rule = _dynamic_rule(dynamic, path)
        return any(e in path for e in entries) or (rule is not None and rule[0].startswith("-:"))

    def kept(t: TensorSpec, layer: int) -> bool:
        outside = bool(inside) and _block_relative_name(t) not in inside
        return outside or any(map(skipped, vllm_layer_paths(t, layer)))
    keep = keep_rules(spec, GROUP_COMPONENTS, kept, by_layer=True)
    routers = [t for t in spec.tensors if t.kind == LINEAR and t.component == "router" and t.layers is not None]
    router = method == "awq" and bool(routers) and not any(_skipped_layers(t, skipped) for t in routers)
    lm_head = bool(q.get("lm_head")) and not skipped("lm_head") and any(t.component == "lm_head" for t in spec.tensors)
    return replace(base, keep=keep, lm_head=lm_head, router=router).name


# ---------------------------------------------------------------------------------------------
# GGUF (llama.cpp)

def ggml_bytes(type_name: str, n_elements: int) -> int:
    t = ggml_type_by_name(type_name)
    return ceil(n_elements / t.block_size) * t.type_size_bytes


def _is_llama_70b(spec: ModelSpec) -> bool:
    """llama.cpp's LLM_TYPE_70B: 80 layers of width 8192 (Llama 2/3 70B and their fine-tunes)."""
    return spec.n_layers == 80 and spec.hidden_size == 8192


_ATTN_CATEGORIES = {"q_proj": "attn_q", "query": "attn_q", "k_proj": "attn_k", "key": "attn_k",
                    "v_proj": "attn_v", "value": "attn_v", "query_key_value": "attn_qkv", "Wqkv": "attn_qkv",
                    "c_attn": "attn_qkv", "qkv_proj": "attn_qkv", "o_proj": "attn_output",
                    "dense": "attn_output", "out_proj": "attn_output", "c_proj": "attn_output", "wo": "attn_output"}
_FFN_CATEGORIES = {"down_proj": "ffn_down", "dense_4h_to_h": "ffn_down", "fc2": "ffn_down", "c_proj": "ffn_down",
                   "w2": "ffn_down", "gate_proj": "ffn_gate", "w1": "ffn_gate", "up_proj": "ffn_up",
                   "gate_up_proj": "ffn_up", "dense_h_to_4h": "ffn_up", "fc1": "ffn_up", "c_fc": "ffn_up",
                   "w3": "ffn_up"}
# GGUF order of a layer's ffn_down tensors (names sorted): ffn_down < ffn_down_exps < ffn_down_shexp
_FFN_DOWN_ORDER = {"mlp": 0, "experts": 1, "shared_experts": 2}


def gguf_category(t: TensorSpec, spec: ModelSpec) -> str:
    """llama.cpp's tensor category (tensor_get_category) of a sizer tensor: output, token_embd,
    attn_q/k/v/qkv/output, ffn_gate/up/down or other."""
    if t.component == "lm_head" or (t.component == "embeddings" and t.kind == EMBEDDING and spec.tied_embeddings):
        return "output"
    if t.component == "embeddings" and t.kind == EMBEDDING:
        return "token_embd"
    leaf = t.name.rsplit(".", 2)[-2] if t.name.count(".") >= 1 else t.name
    if t.component == "attention" and "linear_attn" not in t.name:
        return _ATTN_CATEGORIES.get(leaf, "other")
    if t.component in ("mlp", "experts", "shared_experts"):
        return _FFN_CATEGORIES.get(leaf, "other")
    return "other"


def _quantizable(t: TensorSpec) -> bool:
    """tensor_allows_quantization, as far as sizer's tensors tell: 2-D and 3-D weights other than
    norms, the MoE router (ffn_gate_inp) and small non-Linear tensors (ssm_conv1d, sinks ...)."""
    return len(t.shape) >= 2 and t.kind in (LINEAR, EMBEDDING) and t.component != "router"


def _counter_order(spec: ModelSpec, categories) -> list[tuple[int, int, str]]:
    """(layer, order, tensor name) of every copy in `categories`, in the order llama-quantize meets
    them (weights sorted by layer, then name)."""
    rows = []
    for t in spec.tensors:
        if t.layers is not None and _quantizable(t) and gguf_category(t, spec) in categories:
            rows += [(i, _FFN_DOWN_ORDER.get(t.component, 0), t.name) for i in t.layers]
    return sorted(rows)


@dataclass(frozen=True)
class GgufMixFormat(FormatTraits):
    """A llama.cpp file type (`llama-quantize` ftype): a default block type plus per-tensor upgrades
    (sizer.gguf_quant). Norms, biases and other 1-D tensors are float32; the MoE router
    (ffn_gate_inp) is kept float32. `embed_output_type` is bartowski's _L/_XL recipe (the ftype run
    with --output-tensor-type and --token-embedding-type Q8_0)."""

    name: str                  # "Q4_K_M", "IQ2_XXS", "Q4_K_L"
    ftype: str                 # the llama-quantize file type: "Q4_K_M"
    has_imatrix: bool = False  # quantized with an importance matrix (--imatrix)
    embed_output_type: str | None = None

    kind = "gguf"
    compute_bytes = BF16_BYTES

    @property
    def base(self) -> str:
        """Block type of ordinary tensors."""
        return FTYPE_DEFAULT_TYPE[self.ftype]

    @property
    def description(self) -> str:
        extra = f"; embeddings and output {self.embed_output_type}" if self.embed_output_type else ""
        imatrix = ", imatrix" if self.has_imatrix else ""
        return f"llama.cpp {self.name} (base {self.base}{imatrix}{extra}; norms F32)"

    def keeps_16bit(self) -> str:
        return "norms and biases in F32"

    def _traits(self, spec: ModelSpec) -> ModelTraits:
        return ModelTraits(n_gqa=spec.n_heads // max(1, spec.n_kv_heads), n_expert=spec.n_experts,
                           falcon=spec.family == "falcon", is_70b=_is_llama_70b(spec))

    def layer_types(self, t: TensorSpec, spec: ModelSpec) -> list[str]:
        """The ggml type of each copy of `t` (one per layer; one for a global tensor)."""
        if not _quantizable(t):
            return ["F32"] * (len(t.layers) if t.layers is not None else 1)
        cat, traits = gguf_category(t, spec), self._traits(spec)
        over = self.embed_output_type

        def choose(slot: Slot) -> str:
            return tensor_type(self.ftype, slot, traits, self.has_imatrix, over, over)

        if t.layers is None:
            return [choose(Slot(cat, t.in_features))]
        counted = ATTN_V_LIKE if cat in ATTN_V_LIKE else {"ffn_down"} if cat == "ffn_down" else None
        order = _counter_order(spec, counted) if counted else []
        key = _FFN_DOWN_ORDER.get(t.component, 0)
        types = []
        for i in t.layers:
            counter = order.index((i, key, t.name)) if order else i
            index, n = (counter, len(order)) if cat in ATTN_V_LIKE else (i, spec.n_layers)
            slot = Slot(cat, t.in_features, index, n, counter, is_3d=t.experts > 1)
            types.append(choose(slot))
        return types

    def tensor_bytes(self, t: TensorSpec, spec: ModelSpec) -> int:
        n = t.n_elements * t.experts
        if not _quantizable(t):
            return _elements(t) * FP32_BYTES
        return sum(ggml_bytes(type_name, n) for type_name in self.layer_types(t, spec))


# bartowski's _L / _XL files: the ftype with embeddings and output in Q8_0 (model cards: "Uses Q8_0 for
# embed and output weights").
GGUF_EMBED_OUTPUT_Q8_0 = {"Q2_K_L": "Q2_K", "Q3_K_XL": "Q3_K_L", "Q4_K_L": "Q4_K_M", "Q5_K_L": "Q5_K_M",
                          "Q6_K_L": "Q6_K"}
GGUF_MIXES = {**{name: FTYPE_DEFAULT_TYPE[name] for name in FTYPE_DEFAULT_TYPE},
              **{name: FTYPE_DEFAULT_TYPE[ftype] for name, ftype in GGUF_EMBED_OUTPUT_Q8_0.items()}}
_UD_RE = re.compile(r"^(?:UD-)?(I?Q\d\w*?)(?:_XL|-UD)$|^UD-(.+)$")


def gguf_format(name: str) -> GgufMixFormat | None:
    """The GGUF format a name stands for (llama-quantize ftypes, their aliases, bartowski's _L/_XL),
    None for other names; UsageError for Unsloth Dynamic names, which are no llama.cpp type."""
    key = name.strip().upper()
    if key in GGUF_EMBED_OUTPUT_Q8_0:
        ftype = GGUF_EMBED_OUTPUT_Q8_0[key]
        return GgufMixFormat(key, ftype, default_has_imatrix(ftype), "Q8_0")
    ftype = canonical_ftype(key)
    if ftype is not None:
        return GgufMixFormat(ftype, ftype, default_has_imatrix(ftype))
    m = _UD_RE.match(key)
    if m:
        raise UsageError(_ud_refusal(name, m.group(1) or m.group(2)))
    return None


def _ud_refusal(name: str, stem: str) -> str:
    stem = stem.removesuffix("_XL").removesuffix("-UD")
    closest = canonical_ftype(stem) or canonical_ftype(stem + "_M") or ("Q8_0" if stem.startswith("Q8") else None)
    hint = f"; the closest llama.cpp type is {closest} (-p {closest})" if closest else ""
    return (f"{name!r} is an Unsloth Dynamic (UD) GGUF, not a llama.cpp file type: Unsloth picks each tensor's "
            f"type itself, so no rule sizes it; pass the .gguf file (sizer reads its tensor table){hint}")


# ---------------------------------------------------------------------------------------------
# Names users type

FLOATS = {
    "fp32": FloatFormat("fp32", 4, "float32 weights"),
    "fp16": FloatFormat("fp16", 2, "float16 weights"),
    "bf16": FloatFormat("bf16", 2, "bfloat16 weights"),
}
_SYNONYMS = {"float32": "fp32", "f32": "fp32", "float16": "fp16", "half": "fp16", "f16": "fp16",
             "bfloat16": "bf16", "float8": "fp8", "fp8_e4m3": "fp8", "e4m3": "fp8", "llm.int8": "int8",
             "bnb-int8": "int8", "bnb-nf4": "nf4", "bnb-fp4": "fp4", "gptq": "gptq-4bit-g128",
             "awq": "awq-4bit-g128", "int4": "gptq-4bit-g128", "fp8-channel": "ct-fp8-channel",
             "fp8-tensor": "ct-fp8-tensor", "w4a16": "ct-int4-g128", "w8a16": "ct-int8-channel-packed"}
_GROUP_RE = re.compile(r"^(gptq|awq)-(\d+)bit(?:-g(-1|\d+))?(-qhead)?(-qrouter)?(?:-keep-(.+))?$")

# Precisions `fit` and `estimate --precision all` walk through, in display order.
COMMON_PRECISIONS = ("bf16", "fp8", "int8", "gptq-8bit-g128", "nf4", "gptq-4bit-g128", "awq-4bit-g128", "Q4_K_M")


def precision_names() -> list[str]:
    """Canonical names accepted by --precision (GPTQ/AWQ also take any bits/group in the grammar)."""
    group = [f"{m}-{b}bit-g{g}" for m in ("gptq", "awq") for b in (2, 3, 4, 8) for g in (32, 64, 128, -1)]
    ct = ["ct-fp8-tensor", "ct-fp8-channel", "ct-fp8-block128", "ct-int4-g32", "ct-int4-g128", "ct-int4-g128-asym",
          "ct-int8-channel", "ct-int8-channel-packed"]
    scaled = ["fbgemm-fp8", "modelopt-fp8", "nvfp4", "modelopt-nvfp4"]
    return [*FLOATS, "fp8", "fp8-block128", "mxfp4", "int8", "nf4", "nf4-dq", "fp4", "fp4-dq", *group, *GGUF_MIXES, *ct,
            *scaled]


@lru_cache(maxsize=None)
def get_precision(name: str):
    """A precision by name: fp32 fp16 bf16 fp8 int8 nf4[-dq] fp4[-dq] gptq|awq-<b>bit[-g<G>] Q4_K_M ...
    ct-<fp8|int4|int8>-... (compressed-tensors, `CompressedTensorsFormat`), fbgemm-fp8[-keep-...]
    (`FbgemmFp8Format`), modelopt-<fp8|nvfp4>[-keep-...] and nvfp4 (`ModelOptFormat`)."""
    key = name.strip()
    low = _SYNONYMS.get(key.lower(), key.lower())
    if low in FLOATS:
        return FLOATS[low]
    if low == "fp8":
        return Fp8Format()
    if low.startswith("fp8-block") and low[9:].isdigit() and int(low[9:]) > 0:
        return Fp8Format(int(low[9:]))
    if low == "mxfp4":
        return Mxfp4Format()
    if low == "int8":
        return BnbInt8Format()
    if low in ("nf4", "fp4", "nf4-dq", "fp4-dq"):
        return Bnb4bitFormat(low, low[:3], low.endswith("-dq"))
    m = _GROUP_RE.match(low)
    if m:
        fmt = _group_format(name, m.group(1), int(m.group(2)), int(m.group(3) or 128))
        return replace(fmt, lm_head=bool(m.group(4)), router=bool(m.group(5)),
                       keep=_parse_keep(m.group(6), name, GROUP_COMPONENTS))
    gguf = gguf_format(key)
    if gguf is not None:
        return gguf
    m = _CT_RE.match(low)
    if m:
        return _ct_format(name, m)
    scaled = _scaled_format(name, low)
    if scaled is not None:
        return scaled
    if low.startswith("modelopt"):
        algo = key.partition(":")[2] or "unknown algorithm"
        raise UsageError(f"NVIDIA ModelOpt {algo} checkpoint: sizer sizes ModelOpt FP8 and NVFP4 only "
                         "(docs/reference/quantized-checkpoints.md); pass the checkpoint folder to size it exactly from "
                         "its tensor headers, or -p to size it at another precision")
    if low.startswith(("gptq:", "awq:")):
        raise UsageError(f"{key.partition(':')[0].upper()} checkpoint not sized: {key.partition(':')[2]}; sizer sizes one "
                         "bit width and group size per checkpoint (docs/reference/quantized-checkpoints.md); pass the "
                         "checkpoint folder to size it from its tensor headers, or -p to size it at another precision")
    if low.startswith("compressed-tensors"):
        scheme = key.partition(":")[2] or "no config_groups"
        raise UsageError(f"compressed-tensors checkpoint not supported: {scheme}; sizer sizes float-quantized FP8 "
                         "and pack/naive-quantized INT4/INT8 weights (pass -p to size it at another precision, or "
                         "the checkpoint folder to size it from its tensor headers)")
    close = difflib.get_close_matches(low, [p.lower() for p in precision_names()], n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UsageError(f"unknown precision {name!r}{hint} (known: fp32, fp16, bf16, fp8, fp8-block128, mxfp4, int8, nf4, nf4-dq, fp4, "
                     "fp4-dq, gptq-<2|3|4|8>bit-g<32|64|128|-1>, awq-4bit-g128, a llama-quantize type (Q8_0, Q6_K, Q5_K_M, Q4_K_M, "
                     "Q4_0, Q3_K_M, Q2_K, IQ4_XS, IQ3_M, IQ2_XXS, IQ1_S, TQ1_0, MXFP4_MOE ...; Q4_K_L, Q3_K_XL), "
                     "ct-<fp8|int4|int8>-<tensor|channel|g<N>|block<N>>[-asym][-keep-attention...], fbgemm-fp8[-keep-...], "
                     "modelopt-<fp8|nvfp4>[-kv8][-keep-...], nvfp4)")


def _group_format(name: str, method: str, bits: int, group: int) -> GroupQuantFormat:
    if bits not in (2, 3, 4, 8):
        raise UsageError(f"precision {name!r}: {method.upper()} bits must be 2, 3, 4 or 8, got {bits}")
    if group != -1 and group < 1:
        raise UsageError(f"precision {name!r}: group size must be positive or -1, got {group}")
    return GroupQuantFormat(method, bits, group)


# ---------------------------------------------------------------------------------------------
# A checkpoint as stored (safetensors folder or GGUF file)

# Storage dtypes (safetensors, GGUF) whose activations run in fp32.
_FP32_STORAGE = ("f32", "fp32", "float32")
# Storage dtypes of FP8 E4M3 / E5M2 weights as safetensors names them.
_FP8_STORAGE = ("f8_e4m3", "f8_e5m2", "f8_e4m3fn")


@dataclass(frozen=True)
class CheckpointFormat:
    """The weights of a checkpoint as stored: sized from its tensor headers (exact bytes), not by a
    format's rules. `like` is the format its label names when sizer knows it ("gptq-4bit-g128",
    "nf4", "Q4_K_M", "fp8"), which decides how an engine runs it; None for a plain dtype sizer
    reads only from the headers."""

    name: str                  # the label reports print: the quantization, else the main dtype
    like: object = None        # a format of this module, or None

    stored = True

    @property
    def kind(self) -> str:
        return self.like.kind if self.like is not None else "float"

    @property
    def compute_bytes(self) -> int:
        if self.like is not None and self.like.kind != "float":
            return self.like.compute_bytes
        return FP32_BYTES if self.name.lower() in _FP32_STORAGE else BF16_BYTES

    @property
    def is_fp8(self) -> bool:
        return self.like.is_fp8 if self.like is not None else self.name.lower() in _FP8_STORAGE

    @property
    def is_bitsandbytes(self) -> bool:
        return self.like is not None and self.like.is_bitsandbytes

    @property
    def description(self) -> str:
        return f"the checkpoint as stored ({self.name})"

    def int8_mlp(self, spec: ModelSpec) -> bool:
        return self.like is not None and self.like.int8_mlp(spec)

    def tensor_bytes(self, t: TensorSpec, spec: ModelSpec) -> int:
        raise ValueError("a checkpoint as stored is sized from its tensor headers (spec.checkpoint), not per tensor")


def checkpoint_format(spec: ModelSpec) -> CheckpointFormat:
    """The format object of `spec`'s checkpoint as stored (spec.checkpoint must be set)."""
    ckpt = spec.checkpoint
    label = ckpt.quantization or ckpt.dtypes[0].lower()
    try:
        like = get_precision(label)
    except UsageError:
        like = None
    return CheckpointFormat(label, like)


def resolve_precision(spec: ModelSpec, name: str | None, default: str = "bf16"):
    """The one format object a precision name stands for: `name`'s format; None means the
    checkpoint as stored for a model read from files, else the checkpoint's own format
    (quantization_config), else `default`. Callers resolve once and pass the object on."""
    if name is None and spec.checkpoint is not None:
        return checkpoint_format(spec)
    if not isinstance(name, (str, type(None))):
        return name                 # already a format object
    official = official_checkpoint(spec, name)
    return get_precision(official[1] if official else name or spec.native_precision or default)


def official_checkpoint(spec: ModelSpec, name: str | None) -> tuple[str, str, str] | None:
    """(precision asked, as stored, hub id) of the model's official checkpoint in precision `name`
    (Qwen/Qwen3-32B-FP8 for `-p fp8` of Qwen3-32B), or None."""
    if not name:
        return None
    return next((o for o in spec.official_checkpoints if o[0] == name.strip().lower()), None)
