"""The calibration text of `sizer quantize --method gptq`: read (UTF-8 text, .jsonl or .json), tokenized
and cut into windows of --seq-len tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

from sizer.errors import InputFileError, UsageError
from sizer.io import read_text_input

MAX_CALIBRATION_TEXT_BYTES = 1 << 30      # 1 GiB of text is far more than any calibration set needs


def read_calibration_text(path: str) -> list[str]:
    """Documents of a calibration file: .jsonl (a "text" field per line), .json (a list of strings or
    of {"text": ...}), anything else plain text with one document per non-empty line."""
    file = Path(path).expanduser()
    if not file.exists():
        raise UsageError(f"--calibration-text {path}: no such file")
    raw = read_text_input(file, "calibration text", MAX_CALIBRATION_TEXT_BYTES)   # binary is refused
    if "\x00" in raw:
        raise InputFileError(f"{file}: not a calibration text (it holds NUL bytes: a binary file?)")
    try:
        if file.suffix == ".jsonl":
            docs = [json.loads(line)["text"] for line in raw.splitlines() if line.strip()]
        elif file.suffix == ".json":
            data = json.loads(raw)
            docs = [d["text"] if isinstance(d, dict) else d for d in data]
        else:
            docs = [line for line in raw.splitlines() if line.strip()]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputFileError(f"--calibration-text {path}: expected a \"text\" field per record ({e})") from None
    docs = [d for d in docs if isinstance(d, str) and d.strip()]
    if not docs:
        raise InputFileError(f"--calibration-text {path}: no text in the file")
    return docs


def token_windows(token_ids: list[int], seq_len: int, samples: int, heldout: int) -> tuple[list, list]:
    """Cut one token stream into `samples` calibration windows then up to `heldout` held-out windows
    of seq_len tokens each (the held-out windows come after, so they are never calibrated on)."""
    windows = [token_ids[i:i + seq_len] for i in range(0, len(token_ids) - seq_len + 1, seq_len)]
    if not windows:
        raise UsageError(f"the calibration text has {len(token_ids)} tokens, fewer than one --seq-len {seq_len} window")
    calib = windows[:samples]
    held = windows[len(calib):len(calib) + heldout]
    return calib, held


def tokenize_documents(tokenizer, docs: list[str]) -> list[int]:
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for doc in docs:
        ids.extend(tokenizer(doc, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
    return ids
