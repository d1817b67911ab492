"""Safetensors shards read one tensor at a time (a header parse and a seek; no file is mapped whole)
and written as they come, so the streamed GPTQ run holds one layer of the model at a time.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sizer.errors import InputFileError

_TORCH_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                 "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
                 "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


class ShardReader:
    """Tensors of a safetensors checkpoint by name, each read with one positioned read into memory
    the tensor owns. No file stays memory-mapped, so pages already read do not linger in the
    process's resident set (an mmap-based reader would show the whole checkpoint there by the end)."""

    def __init__(self, folder: Path):
        from sizer.inputs.safetensors import read_header

        self.where: dict[str, Path] = {}
        self._info: dict[str, tuple[Path, int, int, str, list]] = {}
        for path in sorted(folder.glob("*.safetensors")):
            header = read_header(path)            # validated: offsets within the file, sizes match shapes
            with path.open("rb") as f:
                data_start = 8 + int.from_bytes(f.read(8), "little")
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                begin, end = info["data_offsets"]
                self.where[name] = path
                self._info[name] = (path, data_start + begin, end - begin, info["dtype"], info["shape"])

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def get(self, name: str):
        import torch

        if name not in self._info:
            raise InputFileError(f"checkpoint has no tensor {name!r}")
        path, offset, size, dtype, shape = self._info[name]
        if dtype not in _TORCH_DTYPES:
            raise InputFileError(f"{path}: tensor {name!r} has dtype {dtype}, which sizer cannot read")
        buffer = bytearray(size)
        with path.open("rb") as f:
            f.seek(offset)
            if f.readinto(buffer) != size:
                raise InputFileError(f"{path}: truncated while reading tensor {name!r}")
        if size == 0:
            return torch.empty(shape, dtype=getattr(torch, _TORCH_DTYPES[dtype]))
        return torch.frombuffer(buffer, dtype=getattr(torch, _TORCH_DTYPES[dtype])).reshape(shape)


_SAFETENSORS_DTYPES = {value: key for key, value in _TORCH_DTYPES.items()}


_COPY_CHUNK_BYTES = 64 * 1024 ** 2


class ShardWriter:
    """Write tensors into safetensors shards of about max_bytes without holding them: each tensor's
    bytes go straight to a data file on disk; when a shard is full its header is written and the data
    appended (in 64 MiB chunks). Shards are then named the transformers way (model.safetensors, or
    model-0000i-of-0000n.safetensors plus model.safetensors.index.json).

    Format (huggingface/safetensors): u64 little-endian header length, the JSON header (name ->
    dtype, shape, data_offsets; padded with spaces to a multiple of 8 bytes), then the data."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder, self.max_bytes = folder, max_bytes
        self._files: list[tuple[Path, list[str]]] = []
        self._data = None
        self._entries: dict = {}
        self._offset = 0
        self.bytes_written = 0

    def add(self, name: str, tensor) -> None:
        import torch

        size = tensor.numel() * tensor.element_size()
        if self._entries and self._offset + size > self.max_bytes:
            self.flush()
        if self._data is None:
            self._data = (self.folder / f"part-{len(self._files) + 1:05d}.data").open("wb")
        t = tensor.detach().cpu().contiguous()
        if str(t.dtype).removeprefix("torch.") not in _SAFETENSORS_DTYPES:
            raise ValueError(f"cannot write tensor {name!r} of dtype {t.dtype}")
        if size:
            self._data.write(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
        self._entries[name] = {"dtype": _SAFETENSORS_DTYPES[str(t.dtype).removeprefix("torch.")],
                               "shape": list(t.shape), "data_offsets": [self._offset, self._offset + size]}
        self._offset += size

    def flush(self) -> None:
        if not self._entries:
            return
        data_path = Path(self._data.name)
        self._data.close()
        header = json.dumps({"__metadata__": {"format": "pt"}, **self._entries}, separators=(",", ":")).encode()
        header += b" " * (-len(header) % 8)
        path = self.folder / f"part-{len(self._files) + 1:05d}.safetensors"
        with path.open("wb") as out, data_path.open("rb") as data:
            out.write(len(header).to_bytes(8, "little"))
            out.write(header)
            shutil.copyfileobj(data, out, _COPY_CHUNK_BYTES)
        data_path.unlink()
        self._files.append((path, list(self._entries)))
        self.bytes_written += path.stat().st_size
        self._data, self._entries, self._offset = None, {}, 0

    def close(self) -> None:
        self.flush()
        n = len(self._files)
        if n == 1:
            self._files[0][0].rename(self.folder / "model.safetensors")
            return
        weight_map = {}
        for i, (path, names) in enumerate(self._files, start=1):
            final = f"model-{i:05d}-of-{n:05d}.safetensors"
            path.rename(self.folder / final)
            weight_map.update({name: final for name in names})
        index = {"metadata": {"total_size": self.bytes_written}, "weight_map": dict(sorted(weight_map.items()))}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
