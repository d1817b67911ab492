"""Read the header of a GGUF file (llama.cpp's model format) without loading any tensor data.

Layout of a GGUF file (versions 2 and 3), all integers little-endian unless the file is big-endian:

    magic "GGUF" | uint32 version | uint64 tensor_count | uint64 metadata_kv_count
    metadata_kv_count x (string key | uint32 value_type | value)
    tensor_count x (string name | uint32 n_dims | n_dims x uint64 ne | uint32 ggml_type | uint64 offset)
    padding up to a multiple of `general.alignment` (default 32)
    tensor data section; each tensor's `offset` is relative to its start

A string is a uint64 byte length followed by UTF-8 bytes (no terminator). An array value is a
uint32 element type, a uint64 element count and the elements. `ne[0]` is the contiguous dimension.

Only the header is parsed; the tensor data is never read, but every tensor's byte range is checked
against the file size so that a truncated download is reported. Very long arrays (the tokenizer's
vocabulary and merges) are summarised as `ArrayInfo` and skipped without building Python objects.

`gguf_to_hf_config` turns the metadata into a Hugging Face `config.json`-style dict so the rest of
sizer can size a GGUF file like any other model.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass

import numpy as np

from sizer.errors import InputFileError
from sizer.ggml import GGML_TYPES, GgmlType, ggml_type_by_name  # noqa: F401  (re-exported)

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT_BYTES = 32
GGML_MAX_DIMS = 4
# Arrays longer than this are kept as an `ArrayInfo` (type and length) instead of a list.
MAX_ARRAY_ITEMS_KEPT = 1024
# Arrays of arrays deeper than this are rejected (the format allows nesting; real files do not use it).
MAX_ARRAY_NESTING = 8


# --------------------------------------------------------------------------------------------------
# ggml tensor types
# --------------------------------------------------------------------------------------------------


# llama.cpp's `llama_ftype` values as stored in `general.file_type`.
LLAMA_FILE_TYPE_NAMES: dict[int, str] = {
    0: "ALL_F32",
    1: "MOSTLY_F16",
    2: "MOSTLY_Q4_0",
    3: "MOSTLY_Q4_1",
    4: "MOSTLY_Q4_1_SOME_F16",
    7: "MOSTLY_Q8_0",
    8: "MOSTLY_Q5_0",
    9: "MOSTLY_Q5_1",
    10: "MOSTLY_Q2_K",
    11: "MOSTLY_Q3_K_S",
    12: "MOSTLY_Q3_K_M",
    13: "MOSTLY_Q3_K_L",
    14: "MOSTLY_Q4_K_S",
    15: "MOSTLY_Q4_K_M",
    16: "MOSTLY_Q5_K_S",
    17: "MOSTLY_Q5_K_M",
    18: "MOSTLY_Q6_K",
    19: "MOSTLY_IQ2_XXS",
    20: "MOSTLY_IQ2_XS",
    21: "MOSTLY_Q2_K_S",
    22: "MOSTLY_IQ3_XS",
    23: "MOSTLY_IQ3_XXS",
    24: "MOSTLY_IQ1_S",
    25: "MOSTLY_IQ4_NL",
    26: "MOSTLY_IQ3_S",
    27: "MOSTLY_IQ3_M",
    28: "MOSTLY_IQ2_S",
    29: "MOSTLY_IQ2_M",
    30: "MOSTLY_IQ4_XS",
    31: "MOSTLY_IQ1_M",
    32: "MOSTLY_BF16",
    33: "MOSTLY_Q4_0_4_4",
    34: "MOSTLY_Q4_0_4_8",
    35: "MOSTLY_Q4_0_8_8",
    36: "MOSTLY_TQ1_0",
    37: "MOSTLY_TQ2_0",
    38: "MOSTLY_MXFP4_MOE",
    39: "MOSTLY_NVFP4",
    40: "MOSTLY_Q1_0",
    41: "MOSTLY_Q2_0",
    1024: "GUESSED",
}


# --------------------------------------------------------------------------------------------------
# Parsed file
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrayInfo:
    """A metadata array too long to keep (e.g. a 150k-token vocabulary): its element type and length."""

    type_name: str  # GGUF value type of the elements: "STRING", "INT32", "FLOAT32", "ARRAY", ...
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass(frozen=True)
class GgufTensor:
    name: str
    type_name: str
    shape: tuple[int, ...]  # GGUF order: ne0 (the contiguous dimension) first
    n_elements: int
    n_bytes: int
    offset: int  # bytes from the start of the data section


@dataclass(frozen=True)
class GgufFile:
    path: str
    version: int
    metadata: dict[str, object]
    tensors: tuple[GgufTensor, ...]
    alignment: int
    data_offset: int  # absolute offset of the data section in the file
    file_size_bytes: int

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    def tensor(self, name: str) -> GgufTensor | None:
        for t in self.tensors:
            if t.name == name:
                return t
        return None


# GGUF metadata value types: id -> (name, struct format char or None, size in bytes or 0)
_STRING, _ARRAY, _BOOL, _FLOAT32 = 8, 9, 7, 6
_VALUE_TYPES: dict[int, tuple[str, str | None, int]] = {
    0: ("UINT8", "B", 1),
    1: ("INT8", "b", 1),
    2: ("UINT16", "H", 2),
    3: ("INT16", "h", 2),
    4: ("UINT32", "I", 4),
    5: ("INT32", "i", 4),
    6: ("FLOAT32", "f", 4),
    7: ("BOOL", "B", 1),
    8: ("STRING", None, 0),
    9: ("ARRAY", None, 0),
    10: ("UINT64", "Q", 8),
    11: ("INT64", "q", 8),
    12: ("FLOAT64", "d", 8),
}
# Smallest possible encodings, used to reject absurd counts before looping over them.
_MIN_KV_BYTES = 8 + 4 + 1  # empty key, type, one-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # empty name, n_dims = 0, type, offset


def _f32_to_float(value: float) -> float:
    """A float32 read from the file as the shortest Python float that names it (1e-05, not 9.99e-06)."""
    return float(str(np.float32(value)))


class _Reader:
    """A cursor over the file's bytes (an mmap) that raises InputFileError on any malformation."""

    def __init__(self, buf, size: int, path: str, endian: str) -> None:
        self.buf = buf
        self.size = size
        self.path = path
        self.endian = endian
        self.pos = 0
        self._u32 = struct.Struct(endian + "I")
        self._u64 = struct.Struct(endian + "Q")

    def fail(self, what: str) -> InputFileError:
        return InputFileError(f"{self.path}: {what}")

    def need(self, n_bytes: int, what: str) -> None:
        if n_bytes > self.size - self.pos:
            raise self.fail(
                f"truncated GGUF file: {what} at offset {self.pos} needs {n_bytes} bytes "
                f"but the file ends at {self.size}"
            )

    def u32(self, what: str) -> int:
        self.need(4, what)
        (value,) = self._u32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return value

    def u64(self, what: str) -> int:
        self.need(8, what)
        (value,) = self._u64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return value

    def string(self, what: str) -> str:
        n = self.u64(f"length of {what}")
        self.need(n, what)
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        # Invalid UTF-8 is replaced, not fatal: a byte-level token can hold any bytes.
        return bytes(raw).decode("utf-8", errors="replace")

    def value_type(self, what: str) -> int:
        type_id = self.u32(f"value type of {what}")
        if type_id not in _VALUE_TYPES:
            raise self.fail(f"unknown GGUF metadata value type {type_id} for {what}")
        return type_id

    def value(self, type_id: int, what: str, depth: int = 0):
        if type_id == _STRING:
            return self.string(what)
        if type_id == _ARRAY:
            return self.array(what, depth + 1)
        _, fmt, size = _VALUE_TYPES[type_id]
        self.need(size, what)
        (value,) = struct.unpack_from(self.endian + fmt, self.buf, self.pos)
        self.pos += size
        if type_id == _BOOL:
            return bool(value)
        if type_id == _FLOAT32:
            return _f32_to_float(value)
        return value

    def array(self, what: str, depth: int):
        if depth > MAX_ARRAY_NESTING:
            raise self.fail(f"arrays nested more than {MAX_ARRAY_NESTING} deep in {what}")
        item_type = self.value_type(f"elements of {what}")
        count = self.u64(f"length of {what}")
        name, fmt, size = _VALUE_TYPES[item_type]
        if fmt is not None:
            # Fixed-size elements: the whole array must fit in what is left of the file.
            self.need(count * size, f"{count} {name} elements of {what}")
            if count > MAX_ARRAY_ITEMS_KEPT:
                self.pos += count * size
                return ArrayInfo(name, count)
            values = struct.unpack_from(f"{self.endian}{count}{fmt}", self.buf, self.pos)
            self.pos += count * size
            if item_type == _BOOL:
                return [bool(v) for v in values]
            if item_type == _FLOAT32:
                return [_f32_to_float(v) for v in values]
            return list(values)
        # Strings and arrays take at least 8 / 12 bytes each.
        self.need(count * (8 if item_type == _STRING else 12), f"{count} {name} elements of {what}")
        if count > MAX_ARRAY_ITEMS_KEPT:
            if item_type == _STRING:
                self.skip_strings(count, what)
            else:
                for i in range(count):
                    self.skip_array(f"element {i} of {what}", depth + 1)
            return ArrayInfo(name, count)
        return [self.value(item_type, f"element {i} of {what}", depth) for i in range(count)]

    def skip_strings(self, count: int, what: str) -> None:
        """Step over `count` strings without decoding them (the hot loop for 150k-token vocabularies)."""
        buf, pos, end = self.buf, self.pos, self.size
        unpack = self._u64.unpack_from
        try:
            for _ in range(count):
                pos += 8 + unpack(buf, pos)[0]
        except (struct.error, OverflowError):
            pos = end + 1
        if pos > end:
            raise self.fail(f"truncated GGUF file: the {count} strings of {what} run past the end of the file")
        self.pos = pos

    def skip_array(self, what: str, depth: int) -> None:
        if depth > MAX_ARRAY_NESTING:
            raise self.fail(f"arrays nested more than {MAX_ARRAY_NESTING} deep in {what}")
        item_type = self.value_type(f"elements of {what}")
        count = self.u64(f"length of {what}")
        _, fmt, size = _VALUE_TYPES[item_type]
        if fmt is not None:
            self.need(count * size, what)
            self.pos += count * size
        elif item_type == _STRING:
            self.need(count * 8, what)
            self.skip_strings(count, what)
        else:
            self.need(count * 12, what)
            for i in range(count):
                self.skip_array(f"element {i} of {what}", depth + 1)


def read_gguf(path) -> GgufFile:
    """Parse the header (metadata and tensor infos) of the GGUF file at `path`.

    Raises InputFileError, with the path in the message, for anything that is not a well-formed
    GGUF v2/v3 file or whose tensor data does not lie inside the file (a truncated download).
    """
    path_str = os.fspath(path)
    try:
        f = open(path_str, "rb")
    except OSError as e:
        raise InputFileError(f"{path_str}: cannot open: {e.strerror or e}") from None
    with f:
        try:
            size = os.fstat(f.fileno()).st_size
        except OSError as e:
            raise InputFileError(f"{path_str}: cannot read: {e.strerror or e}") from None
        if size < 24:
            head = f.read(4)
            if head != GGUF_MAGIC:
                raise InputFileError(f"{path_str}: not a GGUF file (magic bytes {head!r}, expected b'GGUF')")
            raise InputFileError(f"{path_str}: truncated GGUF file: {size} bytes is shorter than the 24-byte header")
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            buf = f.read()  # a file that cannot be mapped: read it (rare; special files)
        try:
            return _parse(buf, size, path_str)
        except (struct.error, UnicodeDecodeError, IndexError, OverflowError, ValueError, MemoryError) as e:
            # Defence in depth: every known malformation is checked explicitly above this line.
            raise InputFileError(f"{path_str}: malformed GGUF header ({type(e).__name__}: {e})") from None
        finally:
            if isinstance(buf, mmap.mmap):
                buf.close()


def _parse(buf, size: int, path: str) -> GgufFile:
    version, endian = _version(buf, path)
    r = _Reader(buf, size, path, endian)
    r.pos = 8
    n_tensors = r.u64("tensor count")
    n_kv = r.u64("metadata count")
    if n_kv * _MIN_KV_BYTES > size - r.pos:
        raise r.fail(f"truncated or corrupt GGUF file: {n_kv} metadata entries cannot fit in {size} bytes")
    if n_tensors * _MIN_TENSOR_INFO_BYTES > size - r.pos:
        raise r.fail(f"truncated or corrupt GGUF file: {n_tensors} tensor infos cannot fit in {size} bytes")
    metadata = _metadata(r, n_kv)
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT_BYTES)
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise r.fail(f"general.alignment must be a positive power of two, got {alignment!r}")
    infos = _tensor_infos(r, n_tensors)
    data_offset = -(-r.pos // alignment) * alignment
    tensors = tuple(_tensor(r, info, alignment, data_offset, size) for info in infos)
    return GgufFile(path=path, version=version, metadata=metadata, tensors=tensors, alignment=alignment,
                    data_offset=data_offset, file_size_bytes=size)


def _version(buf, path: str) -> tuple[int, str]:
    """(GGUF version, struct byte order) after checking the magic bytes."""
    magic = bytes(buf[0:4])
    if magic != GGUF_MAGIC:
        raise InputFileError(f"{path}: not a GGUF file (magic bytes {magic!r}, expected b'GGUF')")
    (version,) = struct.unpack_from("<I", buf, 4)
    endian = "<"
    if version & 0xFFFF == 0 and version != 0:
        # A big-endian file: its version reads byte-swapped on a little-endian reader.
        endian = ">"
        (version,) = struct.unpack_from(">I", buf, 4)
    if version not in SUPPORTED_VERSIONS:
        extra = " (GGUF v1 files from 2023 must be re-converted)" if version == 1 else ""
        raise InputFileError(f"{path}: unsupported GGUF version {version}; sizer reads versions 2 and 3{extra}")
    return version, endian


def _metadata(r: _Reader, n_kv: int) -> dict[str, object]:
    metadata: dict[str, object] = {}
    for i in range(n_kv):
        key = r.string(f"key of metadata entry {i}")
        type_id = r.value_type(f"metadata key {key!r}")
        if key in metadata:
            raise r.fail(f"duplicate metadata key {key!r}")
        metadata[key] = r.value(type_id, f"metadata key {key!r}")
    return metadata


def _tensor_infos(r: _Reader, n_tensors: int) -> list[tuple[str, tuple[int, ...], int, int]]:
    """(name, shape, ggml type id, data offset) of each tensor, as the header lists them."""
    infos, seen = [], set()
    for i in range(n_tensors):
        name = r.string(f"name of tensor {i}")
        if name in seen:
            raise r.fail(f"duplicate tensor name {name!r}")
        seen.add(name)
        n_dims = r.u32(f"dimension count of tensor {name!r}")
        if n_dims > GGML_MAX_DIMS:
            raise r.fail(f"tensor {name!r} has {n_dims} dimensions; ggml allows at most {GGML_MAX_DIMS}")
        shape = tuple(r.u64(f"dimension {d} of tensor {name!r}") for d in range(n_dims))
        type_id = r.u32(f"type of tensor {name!r}")
        offset = r.u64(f"data offset of tensor {name!r}")
        infos.append((name, shape, type_id, offset))
    return infos


def _tensor(r: _Reader, info: tuple, alignment: int, data_offset: int, size: int) -> GgufTensor:
    """One tensor's sizes, after checking its type, block alignment and that its data lies in the file."""
    name, shape, type_id, offset = info
    gtype = GGML_TYPES.get(type_id)
    if gtype is None:
        raise r.fail(f"tensor {name!r} has unknown ggml type id {type_id}")
    n_elements = 1
    for dim in shape:
        n_elements *= dim
    if shape and shape[0] % gtype.block_size:
        raise r.fail(f"tensor {name!r} of type {gtype.name} has a first dimension of {shape[0]}, "
                     f"not a multiple of the block size {gtype.block_size}")
    if n_elements % gtype.block_size:
        raise r.fail(f"tensor {name!r} of type {gtype.name} has {n_elements} elements, "
                     f"not a multiple of the block size {gtype.block_size}")
    n_bytes = n_elements // gtype.block_size * gtype.type_size_bytes
    if offset % alignment:
        raise r.fail(f"tensor {name!r} has data offset {offset}, not a multiple of the alignment {alignment}")
    if data_offset + offset + n_bytes > size:
        raise r.fail(f"truncated GGUF file: the data of tensor {name!r} ({n_bytes} bytes at offset "
                     f"{data_offset + offset}) extends past the end of the file ({size} bytes)")
    return GgufTensor(name, gtype.name, shape, n_elements, n_bytes, offset)


# --------------------------------------------------------------------------------------------------
# GGUF metadata -> Hugging Face config.json keys
# --------------------------------------------------------------------------------------------------

GGUF_ARCH_TO_MODEL_TYPE: dict[str, str] = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "qwen3moe": "qwen3_moe",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3_text",
    "phi2": "phi",
    "phi3": "phi3",
    "falcon": "falcon",
    "bloom": "bloom",
    "mpt": "mpt",
    "starcoder": "gpt_bigcode",
    "gptneox": "gpt_neox",
    "deepseek2": "deepseek_v3",
    "gpt-oss": "gpt_oss",
    "mistral": "mistral",
    "mistral3": "mistral",
}

# `ARCH.<suffix>` integer keys -> HF key. Per-layer arrays become their maximum plus the list.
HF_INT_KEYS: tuple[tuple[str, str], ...] = (
    ("embedding_length", "hidden_size"),
    ("block_count", "num_hidden_layers"),
    ("feed_forward_length", "intermediate_size"),
    ("attention.head_count", "num_attention_heads"),
    ("attention.head_count_kv", "num_key_value_heads"),
    ("attention.key_length", "head_dim"),
    ("context_length", "max_position_embeddings"),
    ("attention.sliding_window", "sliding_window"),
    ("expert_used_count", "num_experts_per_tok"),
    ("expert_feed_forward_length", "moe_intermediate_size"),
    ("expert_shared_feed_forward_length", "shared_expert_intermediate_size"),
    ("expert_shared_count", "n_shared_experts"),
    ("leading_dense_block_count", "first_k_dense_replace"),
    ("expert_group_count", "n_group"),
    ("expert_group_used_count", "topk_group"),
    ("attention.kv_lora_rank", "kv_lora_rank"),
    ("attention.q_lora_rank", "q_lora_rank"),
    ("rope.dimension_count", "_gguf_rope_dimension_count"),
    ("attention.value_length", "_gguf_value_length"),
)
HF_FLOAT_KEYS: tuple[tuple[str, str], ...] = (
    ("attention.layer_norm_rms_epsilon", "rms_norm_eps"),
    ("attention.layer_norm_epsilon", "layer_norm_epsilon"),
    ("rope.freq_base", "rope_theta"),
    ("attn_logit_softcapping", "attn_logit_softcapping"),
    ("final_logit_softcapping", "final_logit_softcapping"),
    ("expert_weights_scale", "routed_scaling_factor"),
)
_PER_LAYER_KEY = {
    "feed_forward_length": "_gguf_feed_forward_length_per_layer",
    "attention.head_count_kv": "_gguf_head_count_kv_per_layer",
    "attention.head_count": "_gguf_head_count_per_layer",
}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def gguf_to_hf_config(g: GgufFile) -> dict:
    """A Hugging Face `config.json`-style dict for the model in `g`.

    Keys that exist only in GGUF are prefixed `_gguf_`. An architecture without a mapping gets
    `model_type` = "gguf:<arch>" so the caller can report it as unsupported.
    """
    md = g.metadata
    arch = md.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise InputFileError(f"{g.path}: GGUF file has no general.architecture string")
    cfg: dict[str, object] = {"_gguf_architecture": arch, **_numeric_keys(g, arch)}
    cfg.update(_experts(g, arch))
    vocab_size = _vocab_size(g, arch)
    if vocab_size is not None:
        cfg["vocab_size"] = vocab_size
    split_count = md.get("split.count")
    if _is_int(split_count) and split_count > 1:
        # output.weight usually lives in the last shard: its absence from this one proves nothing.
        cfg["_gguf_split_count"] = split_count
    else:
        cfg["tie_word_embeddings"] = g.tensor("output.weight") is None
    scaling = _rope_scaling(md, arch)
    if scaling:
        cfg["rope_scaling"] = scaling
    _family_keys(arch, md, cfg)
    file_type = md.get("general.file_type")
    if _is_int(file_type):
        cfg["_gguf_file_type"] = LLAMA_FILE_TYPE_NAMES.get(file_type, f"UNKNOWN_{file_type}")
    if isinstance(md.get("general.name"), str):
        cfg["_gguf_name"] = md["general.name"]
    return cfg


def _bad(g: GgufFile, key: str, want: str, value: object) -> InputFileError:
    return InputFileError(f"{g.path}: GGUF metadata {key} should be {want}, got {value!r}")


def _numeric_keys(g: GgufFile, arch: str) -> dict:
    """The `ARCH.*` integer and float keys under their HF names; per-layer arrays as their maximum
    plus the list."""
    cfg: dict[str, object] = {}
    for suffix, hf_key in HF_INT_KEYS:
        key, value = f"{arch}.{suffix}", g.metadata.get(f"{arch}.{suffix}")
        if value is None:
            continue
        if isinstance(value, list):
            if not value or not all(_is_int(v) for v in value):
                raise _bad(g, key, "an integer or a list of integers", value)
            cfg[hf_key] = max(value)
            cfg[_PER_LAYER_KEY.get(suffix, f"_gguf_{suffix.replace('.', '_')}_per_layer")] = list(value)
        elif _is_int(value):
            cfg[hf_key] = value
        else:
            raise _bad(g, key, "an integer", value)
    for suffix, hf_key in HF_FLOAT_KEYS:
        key, value = f"{arch}.{suffix}", g.metadata.get(f"{arch}.{suffix}")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(g, key, "a number", value)
        cfg[hf_key] = float(value)
    return cfg


def _experts(g: GgufFile, arch: str) -> dict:
    """model_type (llama with experts is Mixtral) and the expert count under the family's HF key."""
    md = g.metadata
    expert_count = md.get(f"{arch}.expert_count")
    if expert_count is not None and not _is_int(expert_count):
        raise _bad(g, f"{arch}.expert_count", "an integer", expert_count)
    n_experts = expert_count or 0
    mixtral = arch == "llama" and n_experts > 0
    cfg: dict[str, object] = {"model_type": "mixtral" if mixtral else GGUF_ARCH_TO_MODEL_TYPE.get(arch, f"gguf:{arch}")}
    if n_experts > 0:  # some converters write expert_count = 0 for dense models
        key = {"qwen2moe": "num_experts", "qwen3moe": "num_experts", "olmoe": "num_experts",
               "deepseek2": "n_routed_experts"}.get(arch, "num_local_experts")
        cfg[key] = expert_count
    norm_topk = md.get(f"{arch}.expert_weights_norm")
    if isinstance(norm_topk, bool):
        cfg["norm_topk_prob"] = norm_topk
    return cfg


def _vocab_size(g: GgufFile, arch: str) -> int | None:
    """Rows of the embedding matrix, else the declared size, else the tokenizer's list."""
    embd = g.tensor("token_embd.weight")
    tokens = g.metadata.get("tokenizer.ggml.tokens")
    declared = g.metadata.get(f"{arch}.vocab_size")
    if embd is not None and len(embd.shape) == 2:
        return embd.shape[1]
    if _is_int(declared):
        return declared
    if isinstance(tokens, (list, ArrayInfo)):
        return len(tokens)
    return None


def _rope_scaling(md: dict, arch: str) -> dict | None:
    scaling_type = md.get(f"{arch}.rope.scaling.type")
    if not isinstance(scaling_type, str) or scaling_type in ("", "none"):
        return None
    scaling: dict[str, object] = {"rope_type": scaling_type}
    factor = md.get(f"{arch}.rope.scaling.factor")
    if isinstance(factor, (int, float)) and not isinstance(factor, bool):
        scaling["factor"] = float(factor)
    original = md.get(f"{arch}.rope.scaling.original_context_length")
    if _is_int(original):
        scaling["original_max_position_embeddings"] = original
    return scaling


def _family_keys(arch: str, md: dict, cfg: dict) -> None:
    """Keys whose HF spelling or meaning depends on the family."""
    if arch == "deepseek2":
        _mla_keys(md, cfg)
        return
    head_dim = cfg.get("head_dim")
    hidden, heads = cfg.get("hidden_size"), cfg.get("num_attention_heads")
    rope_dims = cfg.get("_gguf_rope_dimension_count")
    if head_dim is None and isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
        head_dim = hidden // heads
    if cfg.get("_gguf_value_length") == cfg.get("head_dim"):
        cfg.pop("_gguf_value_length", None)
    if isinstance(rope_dims, int) and isinstance(head_dim, int) and 0 < rope_dims < head_dim:
        cfg["partial_rotary_factor"] = rope_dims / head_dim
        if arch == "gptneox":
            cfg["rotary_pct"] = rope_dims / head_dim
    if arch in ("gptneox", "phi2") and cfg.get("layer_norm_epsilon") is not None:
        cfg["layer_norm_eps"] = cfg["layer_norm_epsilon"]
    fixup = _FAMILY_FIXUPS.get(arch)
    if fixup:
        fixup(arch, md, cfg)


def _mla_keys(md: dict, cfg: dict) -> None:
    """DeepSeek-2/3 MLA. Current converters store the cached widths under key_length / value_length
    (kv_lora_rank + rope dims, kv_lora_rank) and the per-head widths under the *_mla keys; files from
    before 2025 store the per-head widths under the plain keys."""
    arch, heads, rope_dims = "deepseek2", cfg.get("num_attention_heads"), cfg.get("_gguf_rope_dimension_count")
    key_mla = md.get(f"{arch}.attention.key_length_mla")
    value_mla = md.get(f"{arch}.attention.value_length_mla")
    value_len = cfg.pop("_gguf_value_length", None)
    key_len = cfg.pop("head_dim", None)
    per_head_k = key_mla if isinstance(key_mla, int) else key_len
    per_head_v = value_mla if isinstance(value_mla, int) else value_len
    if isinstance(rope_dims, int):
        cfg["qk_rope_head_dim"] = rope_dims
        if isinstance(per_head_k, int):
            cfg["qk_nope_head_dim"] = per_head_k - rope_dims
    if isinstance(per_head_v, int):
        cfg["v_head_dim"] = per_head_v
    cfg.setdefault("q_lora_rank", None)
    if isinstance(heads, int) and key_mla is not None:
        # llama.cpp stores MLA as one shared latent "KV head"; HF counts one per query head.
        cfg["_gguf_head_count_kv"] = cfg.get("num_key_value_heads")
        cfg["num_key_value_heads"] = heads


def _gptneox_keys(arch: str, md: dict, cfg: dict) -> None:
    parallel = md.get(f"{arch}.use_parallel_residual")
    if isinstance(parallel, bool):
        cfg["use_parallel_residual"] = parallel


def _gpt_oss_keys(arch: str, md: dict, cfg: dict) -> None:
    if "intermediate_size" not in cfg and "moe_intermediate_size" in cfg:
        cfg["intermediate_size"] = cfg["moe_intermediate_size"]


def _falcon_keys(arch: str, md: dict, cfg: dict) -> None:
    kv_heads = cfg.get("num_key_value_heads")
    if isinstance(kv_heads, int):
        cfg["num_kv_heads"] = kv_heads
        cfg["multi_query"] = kv_heads == 1
        cfg["new_decoder_architecture"] = kv_heads > 1


def _bloom_keys(arch: str, md: dict, cfg: dict) -> None:
    _alias(cfg, {"num_hidden_layers": "n_layer", "num_attention_heads": "n_head"})


def _starcoder_keys(arch: str, md: dict, cfg: dict) -> None:
    _alias(cfg, {"hidden_size": "n_embd", "num_hidden_layers": "n_layer", "num_attention_heads": "n_head",
                 "max_position_embeddings": "n_positions", "intermediate_size": "n_inner"})
    if isinstance(cfg.get("num_key_value_heads"), int):
        cfg["multi_query"] = cfg["num_key_value_heads"] == 1


def _mpt_keys(arch: str, md: dict, cfg: dict) -> None:
    _alias(cfg, {"hidden_size": "d_model", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
                 "max_position_embeddings": "max_seq_len"})
    ffn, hidden = cfg.get("intermediate_size"), cfg.get("hidden_size")
    if isinstance(ffn, int) and isinstance(hidden, int) and hidden > 0:
        ratio = ffn / hidden
        cfg["expansion_ratio"] = int(ratio) if ratio == int(ratio) else ratio


_FAMILY_FIXUPS = {"gptneox": _gptneox_keys, "gpt-oss": _gpt_oss_keys, "falcon": _falcon_keys, "bloom": _bloom_keys,
                  "starcoder": _starcoder_keys, "mpt": _mpt_keys}


def _alias(cfg: dict, names: dict[str, str]) -> None:
    for canonical, native in names.items():
        if canonical in cfg:
            cfg[native] = cfg[canonical]
