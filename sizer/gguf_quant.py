"""llama-quantize's choice of a ggml type for every tensor of a GGUF file, torch-free.

A llama.cpp file type (`llama-quantize` ftype: Q4_K_M, IQ2_XXS, TQ1_0, MXFP4_MOE ...) is a default
block type plus per-tensor upgrades that depend on the tensor's kind (attn_v, ffn_down, output ...),
its layer, the model (GQA ratio, expert count, Falcon, 70B), whether an importance matrix was used,
and its row length (a row that does not fill whole blocks falls back to another type).

Emulates `llama_tensor_get_type_impl`, `tensor_type_fallback` and `llama_ftype_get_default_type` of
llama.cpp's src/llama-quant.cpp at commit 0c1e57098bba (October 2026); docs/reference/quantization.md
quotes the lines.
"""

from __future__ import annotations

from dataclasses import dataclass

from sizer.errors import UsageError
from sizer.ggml import ggml_type_by_name

LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"

# llama_ftype_get_default_type: the type of ordinary tensors of each file type.
FTYPE_DEFAULT_TYPE: dict[str, str] = {
    "Q4_0": "Q4_0", "Q4_1": "Q4_1", "Q5_0": "Q5_0", "Q5_1": "Q5_1", "Q8_0": "Q8_0",
    "Q1_0": "Q1_0", "Q2_0": "Q2_0", "MXFP4_MOE": "MXFP4",
    "Q2_K_S": "Q2_K", "Q2_K": "Q2_K", "IQ3_XS": "IQ3_S",
    "Q3_K_S": "Q3_K", "Q3_K_M": "Q3_K", "Q3_K_L": "Q3_K",
    "Q4_K_S": "Q4_K", "Q4_K_M": "Q4_K", "Q5_K_S": "Q5_K", "Q5_K_M": "Q5_K", "Q6_K": "Q6_K",
    "TQ1_0": "TQ1_0", "TQ2_0": "TQ2_0",
    "IQ2_XXS": "IQ2_XXS", "IQ2_XS": "IQ2_XS", "IQ2_S": "IQ2_XS", "IQ2_M": "IQ2_S",
    "IQ3_XXS": "IQ3_XXS", "IQ1_S": "IQ1_S", "IQ1_M": "IQ1_M", "IQ4_NL": "IQ4_NL", "IQ4_XS": "IQ4_XS",
    "IQ3_S": "IQ3_S", "IQ3_M": "IQ3_S",
}
# tools/quantize/quantize.cpp QUANT_OPTIONS: "alias for Q3_K_M" ...
FTYPE_ALIASES: dict[str, str] = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}

# tensor_requires_imatrix: llama-quantize refuses these types without an importance matrix
# (outside token_embd / output), and Q2_K inside a Q2_K_S file.
IMATRIX_REQUIRED_TYPES = frozenset({"IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_M", "IQ1_S"})

# tensor_type_fallback: the type a row that does not fill whole blocks falls back to.
_FALLBACK: dict[str, str] = {
    **dict.fromkeys(("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS"), "IQ4_NL"),
    **dict.fromkeys(("Q2_0", "Q2_K", "Q3_K", "TQ1_0", "TQ2_0"), "Q4_0"),
    "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
}

# Tensor categories (tensor_get_category); attn_v, attn_qkv and attn_kv_b share attn_v's rules and counter.
ATTN_V_LIKE = frozenset({"attn_v", "attn_qkv", "attn_kv_b"})
_IQ2_FAMILY = frozenset({"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"})
_OUTPUT_Q5_K = _IQ2_FAMILY | {"IQ3_XXS"}
_TOKEN_EMBD = {**dict.fromkeys(("IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ1_M"), "Q2_K"),
               **dict.fromkeys(("IQ2_S", "IQ2_M", "IQ3_XXS"), "IQ3_S"),
               **dict.fromkeys(("TQ1_0", "TQ2_0", "Q2_0"), "Q4_K")}
_ATTN_OUTPUT_8_EXPERTS_Q5_K = frozenset({"Q2_K", "IQ3_XS", "IQ3_XXS", "Q3_K_S", "Q3_K_M", "IQ4_NL", "Q4_K_S",
                                         "Q4_K_M", "IQ3_S", "IQ3_M", "IQ4_XS"})


def canonical_ftype(name: str) -> str | None:
    """The llama-quantize file type a name stands for ("q4_k" -> "Q4_K_M"), or None."""
    key = str(name).strip().upper()
    key = FTYPE_ALIASES.get(key, key)
    return key if key in FTYPE_DEFAULT_TYPE else None


def default_has_imatrix(ftype: str) -> bool:
    """sizer's assumption: the i-quants (and Q2_K_S) are made with an importance matrix, as
    llama-quantize demands for IQ1/IQ2/IQ3_XXS tensors; K and legacy quants without one."""
    return ftype.startswith("IQ") or ftype == "Q2_K_S"


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's choice of layers that get a larger type in the _M mixes: the first and last
    eighth of the layers and every third layer in between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def fallback_type(type_name: str, row_values: int) -> str:
    """tensor_type_fallback: `type_name` if a row of `row_values` fills whole blocks, else its
    fallback, else F16. A type of blocks over 32 values without a fallback (Q1_0) is refused, as
    llama-quantize refuses it ("no tensor type fallback is defined")."""
    block = ggml_type_by_name(type_name).block_size
    if row_values % block == 0:
        return type_name
    if type_name not in _FALLBACK and block > 32:
        raise UsageError(f"llama.cpp cannot quantize rows of {row_values} values to {type_name} (blocks of {block}, "
                         "and llama-quantize defines no fallback type for it)")
    fallback = _FALLBACK.get(type_name, type_name)
    return fallback if row_values % ggml_type_by_name(fallback).block_size == 0 else "F16"


@dataclass(frozen=True)
class ModelTraits:
    """What llama_tensor_get_type_impl reads from the model's hyperparameters."""

    n_gqa: int            # n_head / n_head_kv
    n_expert: int
    falcon: bool = False
    is_70b: bool = False  # LLM_TYPE_70B


@dataclass(frozen=True)
class Slot:
    """One tensor as llama-quantize meets it: its category, its place in the counters, its shape."""

    category: str          # output, token_embd, attn_v, attn_qkv, attn_k, attn_q, attn_output, ffn_down ...
    row_values: int        # ne[0]: values per row
    i_layer: int = 0       # layer (ffn_*: layer_info) or attention-v index (attn_v-like)
    n_layer: int = 1
    i_counter: int = 0     # raw i_ffn_down / i_attention_wv counter (IQ1/IQ2 ffn_down rule)
    is_3d: bool = False    # ne[2] > 1: merged expert tensor


def tensor_type(ftype: str, slot: Slot, model: ModelTraits, has_imatrix: bool,
                output_type: str | None = None, token_embd_type: str | None = None) -> str:
    """The ggml type of a quantizable tensor: the ftype's choice, then the shape fallback
    (llama_tensor_get_type). `output_type` / `token_embd_type` are --output-tensor-type /
    --token-embedding-type, which llama.cpp applies without a fallback."""
    if token_embd_type is not None and slot.category == "token_embd":
        return token_embd_type
    if output_type is not None and slot.category == "output":
        return output_type
    return fallback_type(_impl_type(ftype, slot, model, has_imatrix), slot.row_values)


def _impl_type(ftype: str, s: Slot, m: ModelTraits, imatrix: bool) -> str:
    """llama_tensor_get_type_impl: the standard choice for a category, before the fallback."""
    default = FTYPE_DEFAULT_TYPE[ftype]
    cat = s.category
    if cat == "output":             # also the tied token embedding
        if ftype == "MXFP4_MOE" or m.falcon or s.row_values % ggml_type_by_name(default).block_size:
            return "Q8_0"
        if ftype in _OUTPUT_Q5_K:
            return "Q5_K"
        return default if default == "Q8_0" else "Q6_K"
    if ftype == "MXFP4_MOE":        # merged experts in MXFP4, every other tensor Q8_0
        return "MXFP4" if s.is_3d else "Q8_0"
    if cat == "token_embd":
        return _TOKEN_EMBD.get(ftype, default)
    if ftype in _IQ2_FAMILY:
        return _iq2_family_type(ftype, s, m, default)
    rule = {"attn_k": _attn_k_type, "attn_q": _attn_q_type, "ffn_down": _ffn_down_type,
            "attn_output": _attn_output_type, "ffn_gate": _ffn_gate_up_type, "ffn_up": _ffn_gate_up_type}
    if cat in ATTN_V_LIKE:         # attn_qkv too: its own later branch is never reached at 0c1e570
        return _attn_v_type(ftype, s, m, imatrix, default)
    return rule[cat](ftype, s, m, imatrix, default) if cat in rule else default


def _iq2_family_type(ftype: str, s: Slot, m: ModelTraits, default: str) -> str:
    """IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ2_M."""
    s_or_m = ftype in ("IQ2_S", "IQ2_M")
    if s.category in ATTN_V_LIKE:
        if m.n_gqa >= 4 or m.n_expert >= 4:
            return "Q4_K"
        return "IQ3_S" if s_or_m else "Q2_K"
    if m.n_expert == 8 and s.category == "attn_k":
        return "Q4_K"
    if s.category == "ffn_down":
        # the raw counter over ffn_down tensors, against n_layer / 8
        return ("IQ3_S" if s_or_m else "Q2_K") if s.i_counter < s.n_layer // 8 else default
    if s.category == "attn_output":
        if m.n_expert == 8:
            return "Q5_K"
        if ftype in ("IQ1_S", "IQ1_M"):
            return "IQ2_XXS"
        if s_or_m:
            return "IQ3_S"
    return default


def _attn_v_type(ftype: str, s: Slot, m: ModelTraits, imatrix: bool, default: str) -> str:
    i, n, gqa4 = s.i_layer, s.n_layer, m.n_gqa >= 4
    t = default
    if ftype == "Q2_K":
        t = "Q4_K" if gqa4 else "Q3_K"
    elif ftype == "Q2_K_S" and gqa4:
        t = "Q4_K"
    elif ftype == "IQ3_XXS":
        t = "Q4_K" if gqa4 else ("IQ3_XXS" if imatrix else "IQ3_S")
    elif ftype in ("IQ3_XS", "IQ3_S") and gqa4:
        t = "Q4_K"
    elif ftype == "IQ3_M":
        t = "Q4_K"
    elif ftype == "Q3_K_M":
        t = "Q5_K" if i < 2 else "Q4_K"
    elif ftype == "Q3_K_L":
        t = "Q5_K"
    elif ftype in ("IQ4_NL", "IQ4_XS") and gqa4:
        t = "Q5_K"
    elif ftype in ("Q4_K_M", "Q5_K_M") and use_more_bits(i, n):
        t = "Q6_K"
    elif ftype == "Q4_K_S" and i < 4:
        t = "Q5_K"
    if m.is_70b and t in ("Q3_K", "Q4_K"):
        t = "Q5_K"          # 70B: attn_v is 8x smaller than attn_q, more bits cost little
    return "Q8_0" if m.n_expert == 8 else t


def _attn_k_type(ftype: str, s: Slot, m: ModelTraits, imatrix: bool, default: str) -> str:
    if m.n_expert == 8:
        return "Q8_0"
    return {"IQ3_XS": "IQ3_XXS", "IQ3_XXS": "IQ2_S"}.get(ftype, default)


def _attn_q_type(ftype: str, s: Slot, m: ModelTraits, imatrix: bool, default: str) -> str:
    return {"IQ3_XS": "IQ3_XXS", "IQ3_XXS": "IQ2_S"}.get(ftype, default)


def _ffn_down_type(ftype: str, s: Slot, m: ModelTraits, imatrix: bool, default: str) -> str:
    i, n, falcon = s.i_layer, s.n_layer, m.falcon
    if ftype == "Q2_K":
        return "Q3_K"
    if ftype == "Q2_K_S":
        return "Q4_K" if i < n // 8 else default
    if ftype == "IQ3_XXS" and not imatrix:
        return "Q4_K" if i < n // 8 else "Q3_K"
    if ftype == "Q3_K_M":
        return "Q5_K" if i < n // 16 else ("Q4_K" if not falcon or use_more_bits(i, n) else "Q3_K")
    if ftype == "IQ3_M" and (i < n // 8 or (m.n_expert == 8 and use_more_bits(i, n))):
        return "Q4_K"
    if ftype == "Q3_K_L":
        return "Q4_K" if falcon else "Q5_K"
    if ftype == "Q4_K_M":
        if falcon:
            return "Q6_K" if i < n // 16 else ("Q5_K" if use_more_bits(i, n) else "Q4_K")
        return "Q6_K" if use_more_bits(i, n) else default
    if i < n // 8 and ftype in ("IQ4_NL", "IQ4_XS") and not imatrix:
        return "Q5_K"
    if ftype == "Q5_K_M":
        return "Q6_K" if use_more_bits(i, n) else default
    if ftype == "Q4_K_S" and not falcon and i < n // 8:
        return "Q5_K"
    if ftype in ("Q4_0", "Q5_0") and imatrix and i < n // 8:
        return "Q4_1" if ftype == "Q4_0" else "Q5_1"
    return default


def _attn_output_type(ftype: str, s: Slot, m: ModelTraits, imatrix: bool, default: str) -> str:
    if m.falcon:
        return "Q4_K" if ftype == "Q3_K_L" else default
    if m.n_expert == 8:
        return "Q5_K" if ftype in _ATTN_OUTPUT_8_EXPERTS_Q5_K else default
    return {"Q2_K": "Q3_K", "IQ3_XXS": "IQ3_S", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K",
            "IQ3_M": "Q4_K"}.get(ftype, default)


def _ffn_gate_up_type(ftype: str, s: Slot, m: ModelTraits, imatrix: bool, default: str) -> str:
    if ftype == "IQ3_XS" and s.n_layer // 8 <= s.i_layer < 7 * s.n_layer // 8:
        return "IQ3_XXS"
    return default

