"""sizer.kernels: numeric cores of the quantizer (GPTQ solver, GPTQ v1 packing and unpacking, the
int4 matmul repack, QuantLinear).

A subpackage of `sizer`, never a top-level package: PyPI's unrelated `kernels` (a dependency of
transformers >= 5.25) must stay the only `kernels` Python can import (see kernels/README.md at the
repository root). Modules here may import torch; nothing on the calculator path imports this package.
"""
