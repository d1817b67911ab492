"""Read safetensors headers only: exact bytes, dtype and shape of every tensor, no data loaded.

Format (huggingface/safetensors): 8 bytes little-endian u64 N, then N bytes of JSON mapping each
tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the end of the
header), plus an optional "__metadata__" object; then the data.
"""

from __future__ import annotations

import struct
from math import prod
from pathlib import Path

from sizer.errors import InputFileError
from sizer.io import parse_json, regular_file_size
from sizer.inputs.names import component_of
from sizer.spec import CheckpointTensor

# Bytes per element for the dtypes whose size is whole bytes; sub-byte types are checked by offsets only.
DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
               "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1}
MAX_HEADER_BYTES = 100 * 1024 * 1024   # the safetensors library refuses larger headers too


def read_header(path: Path) -> dict:
    """The parsed JSON header of one .safetensors file, validated against the file size."""
    size = regular_file_size(path, "safetensors file")
    with path.open("rb") as f:
        head = f.read(8)
        n = header_length(head, str(path), size)
        raw = f.read(n)
    return parse_header(raw, str(path), size - 8 - n)


def header_length(head: bytes, origin: str, size: int | None) -> int:
    """The JSON header's length from a file's first 8 bytes, checked against the file size (if known)."""
    if len(head) < 8:
        raise InputFileError(f"{origin}: truncated safetensors file ({len(head)} bytes, no header length)")
    (n,) = struct.unpack("<Q", head[:8])
    if n > MAX_HEADER_BYTES or (size is not None and 8 + n > size):
        raise InputFileError(f"{origin}: truncated or corrupt safetensors file (header of {n} bytes, file of {size})")
    return n


def parse_header(raw: bytes, origin: str, data_bytes: int | None) -> dict:
    """A JSON header's bytes (those after the 8-byte length) as a validated dict; `data_bytes`, the size
    of the data section after the header, bounds every tensor's offsets when it is known."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputFileError(f"{origin}: corrupt safetensors header ({e.__class__.__name__}: {e})") from None
    header = parse_json(text, origin, "safetensors header", "corrupt safetensors header")
    if not isinstance(header, dict):
        raise InputFileError(f"{origin}: corrupt safetensors header (not a JSON object)")
    _check_offsets(origin, header, data_bytes)
    return header


def _check_offsets(path: str, header: dict, data_bytes: int | None) -> None:
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = info["data_offsets"]
            dtype, shape = info["dtype"], info["shape"]
            ok = (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end and isinstance(dtype, str)
                  and isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape))
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise InputFileError(f"{path}: corrupt safetensors header entry for tensor {name!r}")
        if data_bytes is not None and end > data_bytes:
            raise InputFileError(f"{path}: truncated safetensors file: tensor {name!r} ends at byte {end} "
                                 f"of a data section of {data_bytes} bytes")
        expected = prod(shape) * DTYPE_BYTES[dtype] if dtype in DTYPE_BYTES else None
        if expected is not None and expected != end - begin:
            raise InputFileError(f"{path}: tensor {name!r} has {end - begin} bytes, but {dtype} {shape} needs {expected}")


def read_tensors(folder: Path) -> list[CheckpointTensor]:
    """Every tensor of every *.safetensors file in `folder` (sharded checkpoints included)."""
    return [t for path in sorted(folder.glob("*.safetensors")) for t in header_tensors(read_header(path))]


def header_tensors(header: dict) -> list[CheckpointTensor]:
    """The tensors one validated header describes, in its order."""
    tensors = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        tensors.append(CheckpointTensor(name, component_of(name), info["dtype"], tuple(info["shape"]), end - begin))
    return tensors
