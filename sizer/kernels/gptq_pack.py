"""GPTQ v1 checkpoint layout: packing integer codes into int32 words, and the exact inverse.

The layout transformers, vLLM, SGLang, TGI and GPTQModel read (docs/reference/quantization.md),
for a Linear with in_features K, out_features N, `bits` b, group size g, G groups:

    qweight  int32   [K * b / 32, N]   codes packed along K
    qzeros   int32   [G, N * b / 32]   stored zero points (zero - 1, the v1 convention) packed along N
    scales   float16 [G, N]
    g_idx    int32   [K]               group of each input feature

Packing is one rule for every width: along the packed dimension the values form a little-endian bit
stream, value i occupying bits [b*i, b*i + b). For b = 2, 4, 8 a word holds 32/b whole values; for
b = 3, 32 values fill 3 words and values 10 and 21 straddle word boundaries (the "10 + 1 + 10 + 1 +
10" layout). This module never sees how codes were chosen (sizer.kernels.gptq does that).
"""

from __future__ import annotations

from math import gcd

import torch

from sizer.kernels.layout import DEQUANT_CHUNK_ROWS

SUPPORTED_BITS = (2, 3, 4, 8)
_WORD_BITS = 32
_MASK32 = (1 << 32) - 1


def _period(bits: int) -> tuple[int, int]:
    """(values, words) of one repeating unit of the bit stream: 32 values in 3 words for 3 bits."""
    common = gcd(bits, _WORD_BITS)
    return _WORD_BITS // common, bits // common


def _check(bits: int, length: int, what: str) -> None:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"GPTQ packs 2, 3, 4 or 8 bits, got {bits}")
    values, _ = _period(bits)
    if length % values:
        raise ValueError(f"{what} of {length} is not a multiple of {values}: {bits}-bit GPTQ packs "
                         f"{values} values per {_period(bits)[1]} int32 word(s)")


def pack_rows(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes [M, C] (values in [0, 2^bits)) along dim 0 into int32 [M * bits / 32, C]."""
    m, c = codes.shape
    _check(bits, m, "the packed dimension")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 1 << bits):
        raise ValueError(f"codes must lie in [0, {1 << bits}) for {bits}-bit packing")
    values, words = _period(bits)
    q = codes.to(torch.int64).reshape(m // values, values, c)            # [units, values, C]
    out = torch.zeros(m // values, words, c, dtype=torch.int64, device=codes.device)
    for i in range(values):
        offset = bits * i
        word, shift = divmod(offset, _WORD_BITS)
        out[:, word] |= (q[:, i] << shift) & _MASK32
        spill = shift + bits - _WORD_BITS
        if spill > 0:                                                     # the value straddles two words
            out[:, word + 1] |= q[:, i] >> (bits - spill)
    out = out.reshape(m // values * words, c)
    return torch.where(out >= 1 << 31, out - (1 << 32), out).to(torch.int32)   # two's complement int32


def unpack_rows(packed: torch.Tensor, bits: int, rows: int) -> torch.Tensor:
    """The exact inverse of pack_rows: int32 [rows * bits / 32, C] -> codes int32 [rows, C]."""
    _check(bits, rows, "the unpacked dimension")
    values, words = _period(bits)
    c = packed.shape[1]
    w = packed.to(torch.int64) & _MASK32
    w = w.reshape(rows // values, words, c)
    mask = (1 << bits) - 1
    out = torch.empty(rows // values, values, c, dtype=torch.int64, device=packed.device)
    for i in range(values):
        word, shift = divmod(bits * i, _WORD_BITS)
        value = w[:, word] >> shift
        spill = shift + bits - _WORD_BITS
        if spill > 0:
            value = value | (w[:, word + 1] << (bits - spill))
        out[:, i] = value & mask
    return out.reshape(rows, c).to(torch.int32)


def pack_gptq_v1(codes: torch.Tensor, zeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor,
                 bits: int) -> dict[str, torch.Tensor]:
    """The checkpoint tensors of one Linear from codes [N, K] (values in [0, 2^bits)), actual zero
    points [G, N], scales [G, N] and g_idx [K]. v1 stores `zero - 1` (masked to `bits`); loaders
    add the 1 back, so a zero point of 0 cannot be represented (the quantizer must avoid it)."""
    if int(zeros.min()) < 1:
        raise ValueError("GPTQ v1 cannot store a zero point of 0 (it stores zero - 1); clamp zeros to >= 1")
    stored = (zeros.to(torch.int64) - 1) & ((1 << bits) - 1)
    return {
        "qweight": pack_rows(codes.t(), bits),
        "qzeros": pack_rows(stored.t(), bits).t().contiguous(),
        "scales": scales.to(torch.float16).contiguous(),
        "g_idx": g_idx.to(torch.int32).contiguous(),
    }


def unpack_gptq_v1(tensors: dict[str, torch.Tensor], bits: int, in_features: int, out_features: int):
    """(codes [N, K], zeros [G, N], scales [G, N] float16, g_idx [K]) from the v1 tensors."""
    codes = unpack_rows(tensors["qweight"], bits, in_features).t()
    zeros = unpack_rows(tensors["qzeros"].t(), bits, out_features).t() + 1
    return codes, zeros, tensors["scales"], tensors["g_idx"]


def dequantize_gptq_v1(tensors: dict[str, torch.Tensor], bits: int, in_features: int, out_features: int,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """W [N, K] = scales[g_idx[k], n] * (q[k, n] - (stored_zero[g_idx[k], n] + 1)): the reference path.

    Works through DEQUANT_CHUNK_ROWS input features at a time, so besides the [N, K] result in
    `dtype` only one chunk's temporaries are alive (sizer.quantize.plan.gptq_reference_workspace_bytes);
    the arithmetic is float32 whatever `dtype` is.
    """
    _check(bits, in_features, "the unpacked dimension")
    values, words = _period(bits)
    qweight, g = tensors["qweight"], tensors["g_idx"].to(torch.int64)
    zeros = (unpack_rows(tensors["qzeros"].t(), bits, out_features).t() + 1).to(torch.float32)   # [G, N]
    scales = tensors["scales"].to(torch.float32)
    out = torch.empty(out_features, in_features, dtype=dtype, device=qweight.device)
    step = max(values, DEQUANT_CHUNK_ROWS // values * values)
    for start in range(0, in_features, step):
        rows = min(step, in_features - start)
        codes = unpack_rows(qweight[start // values * words:(start + rows) // values * words], bits, rows)
        gi = g[start:start + rows]
        out[:, start:start + rows] = (scales[gi] * (codes.to(torch.float32) - zeros[gi])).t()
    return out
