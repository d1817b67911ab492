"""QuantLinear: a Linear stored in the GPTQ v1 layout, so sizer can load, run and measure its own
GPTQ checkpoints without GPTQModel.

Forward has two paths:
- reference (every bit width, every device): dequantize the weight (sizer.kernels.gptq_pack) and
  multiply. The dequantized weight is cached per dtype and device only when `cache_dequantized` is
  set (faster, but it holds a 16-bit copy of the weight); by default it is rebuilt at each call, so
  memory stays that of the packed tensors plus one transient weight.
- int4 (4-bit, group size 32-256, CPU or CUDA sm80+): `use_int4_kernel()` repacks the weight once
  into torch's fused int4 matmul layout (sizer.kernels.int4_matmul) and frees the GPTQ tensors, as
  serving engines repack GPTQ for their kernels at load. No dequantized copy ever exists.
"""

from __future__ import annotations

import torch
from torch import nn

from sizer.kernels.gptq_pack import dequantize_gptq_v1
from sizer.kernels.int4_matmul import Int4Weight, effective_group, int4_linear, to_int4_weight

_PACKED = ("qweight", "qzeros", "scales", "g_idx")
INT4_BUFFERS = ("int4_packed", "int4_scales_and_zeros", "int4_perm")


class QuantLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bits: int, group_size: int, bias: bool,
                 cache_dequantized: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size = bits, group_size
        self.cache_dequantized = cache_dequantized
        groups = 1 if group_size == -1 else -(-in_features // group_size)
        self.register_buffer("qweight", torch.zeros(in_features * bits // 32, out_features, dtype=torch.int32))
        self.register_buffer("qzeros", torch.zeros(groups, out_features * bits // 32, dtype=torch.int32))
        self.register_buffer("scales", torch.zeros(groups, out_features, dtype=torch.float16))
        self.register_buffer("g_idx", torch.zeros(in_features, dtype=torch.int32))
        self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float16) if bias else None)
        self._cached: torch.Tensor | None = None
        self.kernel = "reference"

    def packed(self) -> dict[str, torch.Tensor]:
        if self.kernel != "reference":
            raise RuntimeError("this QuantLinear was repacked for the int4 kernel; its GPTQ tensors are gone")
        return {name: getattr(self, name) for name in _PACKED}

    def weight_tensors(self) -> list[torch.Tensor]:
        """The tensors that hold the weight and bias, in whichever layout the kernel uses."""
        names = _PACKED if self.kernel == "reference" else INT4_BUFFERS
        return [t for t in (getattr(self, n) for n in (*names, "bias")) if t is not None]

    def use_int4_kernel(self, scale_dtype: torch.dtype = torch.float32) -> None:
        """Repack for torch's int4 kernel on the current device, scales and zeros in `scale_dtype`
        (the compute dtype; bf16 on CUDA), and free the GPTQ tensors. Raises ValueError, with the
        reason, for weights the kernel cannot take."""
        weight = to_int4_weight(self.packed(), self.bits, self.group_size, self.in_features, self.out_features, scale_dtype)
        for name in _PACKED:
            self.register_buffer(name, None)
        self._cached = None
        self.register_buffer("int4_packed", weight.packed)
        self.register_buffer("int4_scales_and_zeros", weight.scales_and_zeros)
        self.register_buffer("int4_perm", weight.perm)
        self.kernel = "int4"

    def _int4_weight(self) -> Int4Weight:
        return Int4Weight(self.int4_packed, self.int4_scales_and_zeros, self.int4_perm,
                          effective_group(self.group_size, self.in_features), self.out_features)

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight [out, in] in `dtype`."""
        cached = self._cached
        if cached is not None and cached.dtype == dtype and cached.device == self.qweight.device:
            return cached
        weight = dequantize_gptq_v1(self.packed(), self.bits, self.in_features, self.out_features, dtype)
        if self.cache_dequantized:
            self._cached = weight
        return weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        if self.kernel == "int4":
            return int4_linear(x, self._int4_weight(), bias)
        return nn.functional.linear(x, self.dequantized(x.dtype), bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, bias={self.bias is not None}, kernel={self.kernel}")


def replace_linears(model: nn.Module, names: set[str], bits: int, group_size: int) -> list[str]:
    """Swap the nn.Linear modules called `names` (dotted, as in state-dict keys without ".qweight")
    for empty QuantLinear modules on the same device; returns the names replaced."""
    replaced = []
    for name in sorted(names):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        if not isinstance(old, nn.Linear):
            raise ValueError(f"{name} is a {type(old).__name__}, not a Linear")
        new = QuantLinear(old.in_features, old.out_features, bits, group_size, old.bias is not None)
        setattr(parent, child, new.to(old.weight.device))
        replaced.append(name)
    return replaced
