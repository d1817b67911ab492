"""The fast path for 4-bit GPTQ weights: torch's built-in int4 weight-only matmul ("tinygemm").

torch ships a fused int4 x (bf16 | fp16 | fp32) kernel for CPU (`aten._weight_int4pack_mm_for_cpu`)
and a tensor-core one for CUDA, sm80 and newer (`aten._weight_int4pack_mm`, bf16 only). Both
multiply by a weight stored as unsigned 4-bit codes q with one (scale, zero) pair per group of
input features, dequantized as

    w = (q - 8) * scale + zero

GPTQ v1 dequantizes as w = (q - z) * s with an integer zero point z, which is the same weight with
scale = s and zero = (8 - z) * s. Scale and zero are held in the compute dtype: float32 on CPU makes
the path exact to float32 rounding; the CUDA kernel takes bf16 only, the rounding of a bf16 matmul.

The kernel wants each group's input features contiguous. GPTQ with act-order (`desc_act`) scatters
them (g_idx is a permutation of k // group_size); sorting the input features by group restores the
layout, and the activations are gathered through the same permutation at each call.

Layouts differ by device (CUDA's is tiled for tensor cores), so a converted weight is bound to the
device it was converted on. This module never sees how the codes were chosen, only the v1 tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sizer.kernels.gptq_pack import unpack_gptq_v1
from sizer.kernels.layout import INT4_KERNEL_GROUP_SIZES

_K_TILE = 16                              # the CUDA layout tiles K by inner_k_tiles * 16
_INNER_K_TILES = (8, 4, 2)                # preferred first (torchao's default is 8)
_N_MULTIPLE = 16                          # the CPU repacking needs N % 16 (CUDA's N % 8)


def effective_group(group_size: int, in_features: int) -> int:
    """Input features per group (-1: one group of all of them)."""
    return in_features if group_size == -1 else group_size


def int4_kernel_problem(bits: int, group_size: int, in_features: int, out_features: int,
                        g_idx: torch.Tensor | None = None) -> str | None:
    """Why this Linear cannot run on the int4 kernel, or None when it can."""
    group = effective_group(group_size, in_features)
    if bits != 4:
        return f"the int4 kernel takes 4-bit weights, not {bits}-bit"
    if group not in INT4_KERNEL_GROUP_SIZES:
        return f"the int4 kernel takes group sizes {', '.join(map(str, INT4_KERNEL_GROUP_SIZES))}, not {group}"
    if in_features % group:
        return (f"in_features {in_features} is not a multiple of the group size {group}: torch's int4 kernel "
                f"takes whole groups only, not a partial last group of {in_features % group}")
    if in_features % (_INNER_K_TILES[-1] * _K_TILE):
        return f"in_features {in_features} is not a multiple of {_INNER_K_TILES[-1] * _K_TILE}"
    if out_features % _N_MULTIPLE:
        return f"out_features {out_features} is not a multiple of {_N_MULTIPLE}"
    if g_idx is not None:
        counts = torch.bincount(g_idx.to(torch.int64).cpu(), minlength=in_features // group)
        if counts.numel() != in_features // group or bool((counts != group).any()):
            return "g_idx does not give every group exactly group_size input features"
    return None


@dataclass
class Int4Weight:
    """One Linear's weight in the int4 kernel's layout, bound to `packed.device`."""

    packed: torch.Tensor            # CPU: uint8 [N, K/2]; CUDA: int32 tiled [N/8, K/(t*16), 32, t/2]
    scales_and_zeros: torch.Tensor  # [G, N, 2] in the compute dtype (CUDA: bf16); cast to the input's
    perm: torch.Tensor | None       # int32 [K]: input features sorted by group (act-order), else None
    group_size: int
    out_features: int


def _inner_k_tiles(in_features: int) -> int:
    return next(t for t in _INNER_K_TILES if in_features % (t * _K_TILE) == 0)


def _pack_codes(codes: torch.Tensor, inner_k_tiles: int) -> torch.Tensor:
    """codes int32 [N, K] in [0, 16) -> the device's packed layout."""
    if codes.device.type == "cuda":
        pairs = (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8)   # even k in the high nibble
        return torch.ops.aten._convert_weight_to_int4pack(pairs.contiguous(), inner_k_tiles)
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.contiguous(), inner_k_tiles)


def to_int4_weight(tensors: dict[str, torch.Tensor], bits: int, group_size: int, in_features: int,
                   out_features: int, scale_dtype: torch.dtype = torch.float32) -> Int4Weight:
    """Convert one Linear's GPTQ v1 tensors (4-bit) to the int4 kernel's layout on their device, scales
    and zeros in `scale_dtype` (bf16 on CUDA whatever is asked: the only dtype its kernel takes)."""
    g_idx = tensors["g_idx"].to(torch.int64)
    problem = int4_kernel_problem(bits, group_size, in_features, out_features, g_idx)
    if problem:
        raise ValueError(problem)
    group = effective_group(group_size, in_features)
    codes, zeros, scales, _ = unpack_gptq_v1(tensors, 4, in_features, out_features)   # [N, K], [G, N], [G, N]
    in_order = torch.equal(g_idx, torch.arange(in_features, device=g_idx.device) // group)
    perm = None if in_order else torch.argsort(g_idx, stable=True).to(torch.int32)
    if perm is not None:
        codes = codes[:, perm]
    scale = scales.to(torch.float32)
    zero = (8 - zeros).to(torch.float32) * scale
    on_cuda = codes.device.type == "cuda"
    scales_and_zeros = torch.stack([scale, zero], dim=-1).to(torch.bfloat16 if on_cuda else scale_dtype).contiguous()
    packed = _pack_codes(codes.to(torch.int32), _inner_k_tiles(in_features))
    return Int4Weight(packed, scales_and_zeros, perm, group, out_features)


def int4_linear(x: torch.Tensor, weight: Int4Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] @ W.T (+ bias) on the int4 kernel; the result has x's dtype."""
    if x.device.type != weight.packed.device.type:
        raise RuntimeError(f"the int4 weight was converted on {weight.packed.device.type}; the input is on "
                           f"{x.device.type} (convert again after moving the model)")
    lead = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    if weight.perm is not None:
        flat = flat.index_select(1, weight.perm)
    if x.device.type == "cuda":
        out = torch.ops.aten._weight_int4pack_mm(flat.to(torch.bfloat16).contiguous(), weight.packed,
                                                 weight.group_size, weight.scales_and_zeros).to(x.dtype)
    else:
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat.contiguous(), weight.packed, weight.group_size,
                                                         weight.scales_and_zeros.to(x.dtype))
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out.reshape(*lead, weight.out_features)
