"""ggml tensor types: values per block and bytes per block (ggml's type table, ggml-common.h).

Stdlib only: used by the GGUF reader and by the GGUF precisions of the calculator.
"""

from __future__ import annotations

from dataclasses import dataclass

from sizer.errors import UsageError


@dataclass(frozen=True)
class GgmlType:
    """One ggml tensor type: `block_size` values are stored in `type_size_bytes` bytes."""

    type_id: int
    name: str
    block_size: int
    type_size_bytes: int

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.type_size_bytes / self.block_size


_QK_K = 256  # super-block size of the k-quants and i-quants

# (id, name, values per block, bytes per block), from ggml's type table. Ids 4, 5 (Q4_2, Q4_3),
# 31-33 and 36-38 (the removed repacked Q4_0_x_y / IQ4_NL_x_y layouts) are gone from ggml.
_GGML_TYPE_ROWS: tuple[tuple[int, str, int, int], ...] = (
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 2 + 16),
    (3, "Q4_1", 32, 2 + 2 + 16),
    (6, "Q5_0", 32, 2 + 4 + 16),
    (7, "Q5_1", 32, 2 + 2 + 4 + 16),
    (8, "Q8_0", 32, 2 + 32),
    (9, "Q8_1", 32, 2 + 2 + 32),
    (10, "Q2_K", _QK_K, 2 + 2 + _QK_K // 16 + _QK_K // 4),
    (11, "Q3_K", _QK_K, 2 + _QK_K // 4 + _QK_K // 8 + 12),
    (12, "Q4_K", _QK_K, 2 + 2 + _QK_K // 2 + 12),
    (13, "Q5_K", _QK_K, 2 + 2 + _QK_K // 2 + _QK_K // 8 + 12),
    (14, "Q6_K", _QK_K, 2 + _QK_K // 2 + _QK_K // 4 + _QK_K // 16),
    (15, "Q8_K", _QK_K, 4 + _QK_K + _QK_K // 8),
    (16, "IQ2_XXS", _QK_K, 2 + _QK_K // 4),
    (17, "IQ2_XS", _QK_K, 2 + _QK_K // 4 + _QK_K // 32),
    (18, "IQ3_XXS", _QK_K, 2 + _QK_K // 4 + _QK_K // 8),
    (19, "IQ1_S", _QK_K, 2 + _QK_K // 8 + _QK_K // 16),
    (20, "IQ4_NL", 32, 2 + 16),
    (21, "IQ3_S", _QK_K, 2 + _QK_K // 4 + _QK_K // 8 + _QK_K // 32 + 4),
    (22, "IQ2_S", _QK_K, 2 + _QK_K // 4 + _QK_K // 16),
    (23, "IQ4_XS", _QK_K, 2 + 2 + _QK_K // 2 + _QK_K // 64),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", _QK_K, _QK_K // 8 + _QK_K // 16 + _QK_K // 32),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", _QK_K, 2 + 4 * 13),
    (35, "TQ2_0", _QK_K, 2 + 64),
    (39, "MXFP4", 32, 1 + 16),
    (40, "NVFP4", 64, 4 + 32),
    (41, "Q1_0", 128, 2 + 16),
    (42, "Q2_0", 64, 2 + 16),
)

GGML_TYPES: dict[int, GgmlType] = {
    type_id: GgmlType(type_id, name, block_size, type_size)
    for type_id, name, block_size, type_size in _GGML_TYPE_ROWS
}
_GGML_TYPES_BY_NAME: dict[str, GgmlType] = {t.name: t for t in GGML_TYPES.values()}


def ggml_type_by_name(name: str) -> GgmlType:
    """The ggml type called `name` ("Q4_K", "q8_0", "bf16", ...); UsageError for an unknown name."""
    found = _GGML_TYPES_BY_NAME.get(str(name).strip().upper())
    if found is None:
        known = ", ".join(t.name for t in GGML_TYPES.values())
        raise UsageError(f"unknown ggml type {name!r}; known types: {known}")
    return found


