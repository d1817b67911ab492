"""Measurement records: one row per (model, precision, context, batch) point; CSV or JSON, torch-free.

The columns are fixed and documented (docs/output.md, `sizer measure`); `sizer calibrate` reads them back.
Sizes are integer bytes; an empty cell means "not measured here" (a CPU has no CUDA context).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from sizer.errors import InputFileError
from sizer.io import parse_json, read_text_input
from sizer.render import to_csv


@dataclass
class Record:
    model: str
    family: str
    precision: str
    kv_dtype: str
    context_length: int
    batch_size: int
    new_tokens: int
    attention: str
    device: str                       # "cpu" or "cuda"
    gpu_name: str
    driver: str
    torch_version: str
    transformers_version: str
    status: str                       # "ok" or "does-not-fit" (out of memory while profiling)
    predicted_weights_bytes: int
    measured_weights_bytes: int | None
    measured_buffers_bytes: int | None
    predicted_kv_cache_bytes: int
    measured_kv_cache_bytes: int | None
    predicted_activation_bytes: int
    predicted_peak_bytes: int
    measured_peak_bytes: int | None
    measured_decode_peak_bytes: int | None
    measured_reserved_bytes: int | None
    predicted_process_bytes: int | None
    measured_process_bytes: int | None
    prefill_s: float | None
    decode_tokens_per_s: float | None
    predicted_decode_tokens_per_s: float | None
    cpu: str
    date: str
    kernel: str = ""                  # GPTQ: "reference" or "int4" (QuantLinear's path); bitsandbytes on
                                      # CPU: "dequantize" on its fallback (sizer.measure.load.bnb_kernel);
                                      # added later, so files written before it read back with ""
    predicted_decode_peak_bytes: int | None = None   # added later: empty in files written before it

    @staticmethod
    def columns() -> tuple[str, ...]:
        return tuple(f.name for f in fields(Record))


RECORD_COLUMNS = Record.columns()
_OPTIONAL = {f.name for f in fields(Record) if f.default is not MISSING}
_INT = {f.name for f in fields(Record) if "int" in str(f.type)}
_FLOAT = {f.name for f in fields(Record) if "float" in str(f.type)}


def records_to_csv(records: list[Record]) -> str:
    return to_csv([asdict(r) for r in records], RECORD_COLUMNS)


def records_to_json(records: list[Record]) -> str:
    return json.dumps([asdict(r) for r in records], indent=2) + "\n"


def _typed(row: dict, origin: str) -> Record:
    missing = [c for c in RECORD_COLUMNS if c not in row and c not in _OPTIONAL]
    if missing:
        raise InputFileError(f"{origin}: not a sizer measure record (missing {', '.join(missing[:4])})")
    values = {}
    for name in RECORD_COLUMNS:
        raw = row.get(name, "")
        if name in _OPTIONAL and raw in ("", None):
            continue
        if raw in ("", None):
            values[name] = None
        elif name in _INT:
            values[name] = int(raw)
        elif name in _FLOAT:
            values[name] = float(raw)
        else:
            values[name] = str(raw)
    return Record(**values)


def read_records(path: str | Path) -> list[Record]:
    """Records from a CSV or JSON file written by `sizer measure --record`."""
    p = Path(path)
    text = read_text_input(p, "record file")
    try:
        rows = (parse_json(text, str(p), "record file") if p.suffix.lower() == ".json"
                else list(csv.DictReader(io.StringIO(text))))
        if not isinstance(rows, list):
            raise ValueError("expected a list of records")
        return [_typed(row, str(p)) for row in rows]
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise InputFileError(f"{p}: not a sizer measure record file ({e})") from None


def write_records(path: str | Path, records: list[Record], append: bool = True) -> None:
    """Add records to a CSV or JSON file (created if absent), atomically."""
    from sizer.io import write_atomic

    p = Path(path)
    existing = read_records(p) if append and p.exists() else []
    text = records_to_json(existing + records) if p.suffix.lower() == ".json" else records_to_csv(existing + records)
    write_atomic(p, text, force=True)
