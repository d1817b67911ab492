"""Ollama library tags as model names: `llama3.1:8b`, `mistral:7b-instruct-q4_K_M`, `qwen3` (`:latest`).

sizer/data/ollama_tags.json maps each size tag (NAME:SIZE) to a catalog model with the same shapes and the
tag's default GGUF quantization; `:latest` and other aliases point at a size tag. A longer tag names a flavour
and a quantization after the size (`8b-instruct-q8_0`, `7b-text-fp16`): the flavour (instruct, text, chat)
has the same shapes, the quantization replaces the default. Tags whose model the catalog lacks are listed with
the reason, and unknown tags are refused with the closest known ones.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from sizer.errors import UsageError

# GGUF file types as Ollama's tags spell them (case-insensitive): q4_K_M, q8_0, fp16, ...
_QUANTS = ("q2_K", "q3_K_S", "q3_K_M", "q3_K_L", "q4_0", "q4_1", "q4_K_S", "q4_K_M", "q5_0", "q5_1", "q5_K_S",
           "q5_K_M", "q6_K", "q8_0", "fp16", "bf16", "mxfp4")
_QUANT_SUFFIX = re.compile(r"-(?P<quant>" + "|".join(_QUANTS) + r")$", re.I)
_TAG = re.compile(r"^(?:(?:registry\.)?ollama\.(?:com|ai)/)?(?:library/)?(?P<name>[a-z0-9][a-z0-9._-]*)"
                  r"(?::(?P<tag>[A-Za-z0-9][A-Za-z0-9._-]*))?$")


@dataclass(frozen=True)
class OllamaTag:
    tag: str           # the size tag resolved (llama3.1:8b)
    asked: str         # what the user wrote
    model: str         # the catalog model
    quant: str         # sizer's precision name (Q4_K_M, Q8_0, fp16, mxfp4)
    what: str          # the model behind the tag, and why the catalog entry stands for it
    source: str

    @property
    def note(self) -> str:
        return f"Ollama tag {self.asked}: {self.what}, {self.quant} ({self.source})"


@lru_cache(maxsize=1)
def _table() -> dict:
    return json.loads(resources.files("sizer.data").joinpath("ollama_tags.json").read_text())


def looks_like_tag(text: str) -> bool:
    """NAME:TAG (or ollama.com/library/NAME[:TAG]) - a catalog or Hub name has no colon."""
    return ":" in text and "/" not in text.replace("ollama.com/library/", "") and bool(_TAG.match(text))


def known_name(text: str) -> bool:
    """A bare Ollama library name with a table entry (`llama3.1` = `llama3.1:latest`)."""
    return f"{text.lower()}:latest" in _table()["aliases"]


def is_ollama_name(text: str) -> bool:
    """Whether MODEL names an Ollama tag: NAME:TAG, or a bare library name the catalog does not hold."""
    from sizer.catalog import find_model

    return looks_like_tag(text) or (known_name(text) and find_model(text) is None)


def resolve_tag(text: str) -> OllamaTag:
    """The catalog model and quantization of an Ollama tag; a UsageError names close tags otherwise."""
    m = _TAG.match(text.strip())
    if not m:
        raise UsageError(f"{text!r} is not an Ollama tag (NAME:TAG, like llama3.1:8b)")
    name, tag = m["name"].lower(), m["tag"] or "latest"
    quant = None
    if q := _QUANT_SUFFIX.search(tag):
        quant, tag = _precision(q["quant"]), tag[:q.start()]
    table = _table()
    full = f"{name}:{tag}"
    key = table["aliases"].get(full.lower(), full.lower())
    if key not in table["tags"]:
        size = f"{name}:{tag.split('-')[0]}".lower()       # 8b-instruct -> 8b
        key = table["aliases"].get(size, size)
    if key in table["unmapped"] or full.lower() in table["unmapped"]:
        raise UsageError(f"Ollama tag {text}: {table['unmapped'].get(key) or table['unmapped'][full.lower()]}; "
                         "give its Hugging Face repository id or a .gguf file instead")
    entry = table["tags"].get(key)
    if entry is None:
        known = list(table["tags"]) + list(table["aliases"])
        close = difflib.get_close_matches(full.lower(), known, n=4, cutoff=0.6) or \
            [k for k in known if k.startswith(name + ":")][:4]
        hint = f" (close: {', '.join(close)})" if close else ""
        raise UsageError(f"unknown Ollama tag {text!r}{hint}")
    return OllamaTag(key, text, entry["model"], quant or _precision(entry["quant"]), entry["what"], entry["source"])


def tag_for(model: str, quant: str) -> str | None:
    """The size tag of a catalog model (and, when `quant` is not the tag's default, its quantization suffix
    as the library spells it: llama3.1:8b-q8_0); None if the table has none."""
    for tag, entry in _table()["tags"].items():
        if entry["model"] == model:
            if _precision(entry["quant"]) == quant:
                return tag
            spelled = next((q for q in _QUANTS if _precision(q) == quant), None)
            return f"{tag}-{spelled}" if spelled else None
    return None


def _precision(text: str) -> str:
    """sizer's precision name of a GGUF type as a tag spells it."""
    low = text.lower()
    if low in ("fp16", "bf16", "mxfp4"):
        return low
    return text.upper()
