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
import re
from dataclasses import dataclass
from functools import lru_cache
from math import ceil

from sizer.errors import UsageError
from sizer.ggml import ggml_type_by_name
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


def bnb_int8_mlp(spec: ModelSpec, precision_name: str) -> bool:
    """Whether the model's dense MLP runs on bitsandbytes int8 Linears, by precision name (for
    callers that hold a name; the planner asks the format object: `fmt.int8_mlp(spec)`)."""
    return get_precision(precision_name).int8_mlp(spec) if precision_name else False


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
            return self.quantized_bytes(t.n_elements) * t.copies
        return _kept_bytes(t)

    def keeps_16bit(self) -> str:
        return "embeddings, lm_head, norms, biases, MoE routers and fused experts"


@dataclass(frozen=True)
class GroupQuantFormat(FormatTraits):
    """GPTQ (v1 checkpoint layout) or AWQ (GEMM layout): `bits`-bit integer weights with a float16
    scale and a packed integer zero per group of `group_size` input features (-1: one group).

    GPTQ tensors: qweight int32 [K*b/32, N], qzeros int32 [G, N*b/32], scales fp16 [G, N],
    g_idx int32 [K]. AWQ: qweight int32 [K, N*b/32], qzeros int32 [G, N*b/32], scales fp16 [G, N].
    Decoder Linear layers (experts included) are quantized; embeddings, lm_head, routers and norms
    stay 16-bit, and biases are stored in float16.
    """

    method: str                # "gptq" or "awq"
    bits: int
    group_size: int            # -1 for one group over all input features
    sym: bool = True           # symmetric zero points (2^(bits-1)); sizes are the same either way
    desc_act: bool = False     # act-order: columns quantized by descending Hessian diagonal (g_idx permuted)
    damp_percent: float = 0.01  # Hessian dampening, as a fraction of its mean diagonal
    static_groups: bool = False

    kind = "group"
    compute_bytes = BF16_BYTES

    def quantization_config(self) -> dict:
        """config.json "quantization_config" (and quantize_config.json), every setting explicit:
        quantizers disagree on defaults (damp 0.01 / 0.05 / 0.1; act-order on or off)."""
        if self.method != "gptq":
            raise ValueError(f"{self.method} checkpoints are not written by sizer")
        # act-order with static groups leaves nothing to reorder (g_idx = k // g): written as desc_act false,
        # the only act-order vLLM 0.32 loads (it removed desc_act with groups), static_groups true saying how
        desc_act = self.desc_act and not (self.static_groups and self.group_size != -1)
        return {"quant_method": "gptq", "bits": self.bits, "group_size": self.group_size, "desc_act": desc_act,
                "sym": self.sym, "damp_percent": self.damp_percent, "static_groups": self.static_groups,
                "true_sequential": True, "checkpoint_format": "gptq"}

    @property
    def name(self) -> str:
        return f"{self.method}-{self.bits}bit-g{self.group_size}"

    @property
    def description(self) -> str:
        group = "per output channel" if self.group_size == -1 else f"group size {self.group_size}"
        return f"{self.method.upper()} {self.bits}-bit, {group}, fp16 scales; embeddings, lm_head in 16-bit"

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

    def tensor_bytes(self, t: TensorSpec, spec: ModelSpec) -> int:
        if t.kind == LINEAR and t.component in DECODER_LINEAR_COMPONENTS:
            return self.linear_bytes(t.in_features, t.out_features) * t.copies
        return _kept_bytes(t)

    def keeps_16bit(self) -> str:
        return "embeddings, lm_head, router, norms, biases"


# ---------------------------------------------------------------------------------------------
# GGUF (llama.cpp)

# K-quant fallback when a row is not a multiple of 256 values (llama-quant.cpp).
_K_FALLBACK = {"Q2_K": "IQ4_NL", "Q3_K": "IQ4_NL", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


def ggml_bytes(type_name: str, n_elements: int) -> int:
    t = ggml_type_by_name(type_name)
    return ceil(n_elements / t.block_size) * t.type_size_bytes


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's choice of layers that get a larger type in the _M mixes: the first and last
    eighth of the layers and every third layer in between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


# ftypes whose per-tensor upgrades llama.cpp applies (the legacy Q4_0 ... Q8_0 types only upgrade the output).
_K_MIXES = frozenset({"Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M"})


def _is_llama_70b(spec: ModelSpec) -> bool:
    """llama.cpp's LLM_TYPE_70B: 80 layers of width 8192 (Llama 2/3 70B and their fine-tunes)."""
    return spec.n_layers == 80 and spec.hidden_size == 8192


def _role(t: TensorSpec) -> str:
    """llama.cpp tensor role of a sizer tensor: attn_v, attn_k, attn_qkv, attn_output, ffn_down, ... or other."""
    leaf = t.name.rsplit(".", 2)[-2] if t.name.count(".") >= 1 else t.name
    if t.component == "attention":
        if leaf in ("query_key_value", "Wqkv", "c_attn", "qkv_proj"):
            return "attn_qkv"
        roles = {"v_proj": "attn_v", "k_proj": "attn_k", "o_proj": "attn_output", "dense": "attn_output",
                 "out_proj": "attn_output", "c_proj": "attn_output"}
        return roles.get(leaf, "attn_other")
    if t.component in ("mlp", "experts", "shared_experts"):
        return "ffn_down" if leaf in ("down_proj", "dense_4h_to_h", "fc2", "c_proj") else "ffn_other"
    return t.component


@dataclass(frozen=True)
class GgufMixFormat(FormatTraits):
    """A llama.cpp file type (`llama-quantize` ftype): a base block type plus per-tensor upgrades.

    Norms, biases and other 1-D tensors are float32; the MoE router (ffn_gate_inp) is kept float32;
    the output matrix (or the tied token embedding) is Q6_K unless the base is Q8_0.
    """

    name: str                  # "Q4_K_M"
    base: str                  # block type of ordinary tensors

    kind = "gguf"
    compute_bytes = BF16_BYTES

    @property
    def description(self) -> str:
        return f"llama.cpp {self.name} (base {self.base}; output Q6_K; norms F32)"

    def keeps_16bit(self) -> str:
        return "norms and biases in F32"

    def layer_type(self, role: str, i: int, n: int, spec: ModelSpec) -> str:
        """Block type for a tensor of `role` in layer i of n (llama_tensor_get_type, common ftypes)."""
        name = self.name
        t = self._attn_v_type(i, n, spec) if role == "attn_v" else {
            "ffn_down": self._ffn_down_type, "attn_output": self._attn_output_type,
            "attn_qkv": self._attn_qkv_type}.get(role, lambda i, n, spec: self.base)(i, n, spec)
        if role in ("attn_v", "attn_k") and spec.n_experts == 8:
            return "Q8_0"     # 8-expert models (Mixtral): attn_k and attn_v at Q8_0
        if role == "attn_v" and _is_llama_70b(spec) and t in ("Q3_K", "Q4_K"):
            return "Q5_K"     # 70B: attn_v is 8x smaller than attn_q, so it gets more bits
        return t if name in _K_MIXES else self.base

    def _attn_v_type(self, i: int, n: int, spec: ModelSpec) -> str:
        name, gqa = self.name, spec.n_heads // max(1, spec.n_kv_heads)
        if name == "Q2_K":
            return "Q4_K" if gqa >= 4 else "Q3_K"
        if name == "Q3_K_M":
            return "Q5_K" if i < 2 else "Q4_K"
        if name == "Q3_K_L":
            return "Q5_K"
        if name in ("Q4_K_M", "Q5_K_M") and use_more_bits(i, n):
            return "Q6_K"
        if name == "Q4_K_S" and i < 4:
            return "Q5_K"
        return self.base

    def _ffn_down_type(self, i: int, n: int, spec: ModelSpec) -> str:
        name, falcon = self.name, spec.family == "falcon"
        if name == "Q2_K":
            return "Q3_K"
        if name == "Q3_K_S" and i < n // 8:
            return "Q4_K"
        if name == "Q3_K_M":
            return "Q5_K" if i < n // 16 else ("Q4_K" if not falcon or use_more_bits(i, n) else "Q3_K")
        if name == "Q3_K_L":
            return "Q4_K" if falcon else "Q5_K"
        if name in ("Q4_K_M", "Q5_K_M"):
            if falcon:
                return "Q6_K" if i < n // 16 else ("Q5_K" if use_more_bits(i, n) else self.base)
            return "Q6_K" if use_more_bits(i, n) else self.base
        if name in ("Q4_K_S", "Q5_K_S") and i < n // 8 and not falcon:
            return "Q5_K" if name == "Q4_K_S" else "Q6_K"
        return self.base

    def _attn_output_type(self, i: int, n: int, spec: ModelSpec) -> str:
        if spec.family == "falcon":
            return self.base
        if spec.n_experts == 8 and self.name in ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M"):
            return "Q5_K"
        return {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K"}.get(self.name, self.base)

    def _attn_qkv_type(self, i: int, n: int, spec: ModelSpec) -> str:
        return {"Q3_K_M": "Q4_K", "Q3_K_L": "Q4_K", "Q4_K_M": "Q5_K", "Q5_K_M": "Q6_K"}.get(self.name, self.base)

    def _fit(self, type_name: str, in_features: int) -> str:
        """The type llama.cpp falls back to when a row does not fill whole blocks."""
        if in_features % ggml_type_by_name(type_name).block_size == 0:
            return type_name
        fallback = _K_FALLBACK.get(type_name, "F16")
        return fallback if in_features % ggml_type_by_name(fallback).block_size == 0 else "F16"

    def tensor_bytes(self, t: TensorSpec, spec: ModelSpec) -> int:
        if len(t.shape) < 2 or t.component == "router":
            return _elements(t) * FP32_BYTES
        is_output = t.component == "lm_head" or (t.kind == EMBEDDING and t.component == "embeddings" and spec.tied_embeddings)
        if is_output:
            return ggml_bytes(self._fit("Q8_0" if self.base == "Q8_0" else "Q6_K", t.in_features), _elements(t))
        if t.layers is None:
            return ggml_bytes(self._fit(self.base, t.in_features), _elements(t))
        role = _role(t)
        total = 0
        for i in t.layers:
            layer_type = self._fit(self.layer_type(role, i, spec.n_layers, spec), t.in_features)
            total += ggml_bytes(layer_type, t.n_elements) * t.experts
        return total


GGUF_MIXES = {
    "Q8_0": "Q8_0", "Q6_K": "Q6_K", "Q5_K_M": "Q5_K", "Q5_K_S": "Q5_K", "Q5_0": "Q5_0", "Q5_1": "Q5_1",
    "Q4_K_M": "Q4_K", "Q4_K_S": "Q4_K", "Q4_0": "Q4_0", "Q4_1": "Q4_1",
    "Q3_K_L": "Q3_K", "Q3_K_M": "Q3_K", "Q3_K_S": "Q3_K", "Q2_K": "Q2_K",
}

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
             "awq": "awq-4bit-g128", "int4": "gptq-4bit-g128"}
_GROUP_RE = re.compile(r"^(gptq|awq)-(\d+)bit(?:-g(-1|\d+))?$")

# Precisions `fit` and `estimate --precision all` walk through, in display order.
COMMON_PRECISIONS = ("bf16", "fp8", "int8", "gptq-8bit-g128", "nf4", "gptq-4bit-g128", "awq-4bit-g128", "Q4_K_M")


def precision_names() -> list[str]:
    """Canonical names accepted by --precision (GPTQ/AWQ also take any bits/group in the grammar)."""
    group = [f"{m}-{b}bit-g{g}" for m in ("gptq", "awq") for b in (2, 3, 4, 8) for g in (32, 64, 128, -1)]
    return [*FLOATS, "fp8", "fp8-block128", "mxfp4", "int8", "nf4", "nf4-dq", "fp4", "fp4-dq", *group, *GGUF_MIXES]


@lru_cache(maxsize=None)
def get_precision(name: str):
    """A precision by name: fp32 fp16 bf16 fp8 int8 nf4[-dq] fp4[-dq] gptq|awq-<b>bit[-g<G>] Q4_K_M ..."""
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
        return _group_format(name, m.group(1), int(m.group(2)), int(m.group(3) or 128))
    if key.upper() in GGUF_MIXES:
        return GgufMixFormat(key.upper(), GGUF_MIXES[key.upper()])
    close = difflib.get_close_matches(low, [p.lower() for p in precision_names()], n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UsageError(f"unknown precision {name!r}{hint} (known: fp32, fp16, bf16, fp8, fp8-block128, mxfp4, int8, nf4, nf4-dq, fp4, "
                     "fp4-dq, gptq-<2|3|4|8>bit-g<32|64|128|-1>, awq-4bit-g128, Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, Q3_K_M, Q2_K)")


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
    return get_precision(name or spec.native_precision or default)
