"""Typed access to a Hugging Face config.json dict, with errors that name the file and the key."""

from __future__ import annotations

import math
from typing import Any

from sizer.errors import InputFileError

_MISSING = object()

# Upper limits on config integers, far beyond any released model (the largest have about 200 layers,
# hidden sizes near 2^14, vocabularies near 2^18 and contexts near 2^24), so that an absurd or
# corrupt config is refused in one line instead of sized for minutes into 10^39 bytes.
MAX_LAYERS = 100_000
MAX_POSITIONS = 2**31 - 1
MAX_DIMENSION = 2**24
LAYER_KEYS = frozenset({"num_hidden_layers", "n_layer", "n_layers", "max_window_layers", "first_k_dense_replace",
                        "num_nextn_predict_layers"})
POSITION_KEYS = frozenset({"max_position_embeddings", "n_positions", "max_seq_len", "sliding_window"})


def int_limit(key: str) -> int:
    """The largest value sizer accepts for config key `key`."""
    if key in LAYER_KEYS:
        return MAX_LAYERS
    return MAX_POSITIONS if key in POSITION_KEYS else MAX_DIMENSION


class ConfigView:
    """Read keys of a config.json with type checks; `origin` names the file in error messages.

    Multimodal configs nest the language model under `text_config`: its keys win, the outer ones
    fill in what it lacks (e.g. `tie_word_embeddings` kept at the top level).
    """

    def __init__(self, raw: dict[str, Any], origin: str) -> None:
        if not isinstance(raw, dict):
            raise InputFileError(f"{origin}: a config must be a JSON object, got {type(raw).__name__}")
        text = raw.get("text_config")
        self.raw = {**raw, **text} if isinstance(text, dict) else dict(raw)
        self.origin = origin
        self.has_text_config = isinstance(text, dict)

    def _get(self, keys: tuple[str, ...], default: Any) -> tuple[str, Any]:
        for key in keys:
            value = self.raw.get(key, _MISSING)
            if value is not _MISSING and value is not None:
                return key, value
        if default is _MISSING:
            raise InputFileError(f"{self.origin}: missing key {keys[0]!r}" +
                                 (f" (or {', '.join(map(repr, keys[1:]))})" if len(keys) > 1 else ""))
        return keys[0], default

    def key_of(self, *keys: str) -> str | None:
        """The first of `keys` the config sets (what `int(*keys)` reads), or None."""
        return next((k for k in keys if self.raw.get(k) is not None), None)

    def int(self, *keys: str, default: Any = _MISSING, minimum: int = 1) -> int:
        key, value = self._get(keys, default)
        if value is None:
            return value
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or (isinstance(value, float) and not math.isfinite(value)) or value != int(value)):
            raise InputFileError(f"{self.origin}: {key} must be an integer, got {value!r}")
        if int(value) < minimum:
            raise InputFileError(f"{self.origin}: {key} must be at least {minimum}, got {value!r}")
        if int(value) > int_limit(key):
            raise InputFileError(f"{self.origin}: {key} = {int(value):,} is beyond any real model "
                                 f"(sizer accepts up to {int_limit(key):,})")
        return int(value)

    def float(self, *keys: str, default: Any = _MISSING) -> float:
        key, value = self._get(keys, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputFileError(f"{self.origin}: {key} must be a number, got {value!r}")
        return float(value)

    def bool(self, *keys: str, default: Any = _MISSING) -> bool:
        key, value = self._get(keys, default)
        if not isinstance(value, bool):
            raise InputFileError(f"{self.origin}: {key} must be true or false, got {value!r}")
        return value

    def str(self, *keys: str, default: Any = _MISSING) -> str:
        key, value = self._get(keys, default)
        if not isinstance(value, str):
            raise InputFileError(f"{self.origin}: {key} must be a string, got {value!r}")
        return value

    def int_list(self, key: str, default: Any = _MISSING) -> list[int]:
        _, value = self._get((key,), default)
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise InputFileError(f"{self.origin}: {key} must be a list of integers, got {value!r}")
        return value

    def str_list(self, key: str, default: Any = _MISSING) -> list[str] | None:
        _, value = self._get((key,), default)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InputFileError(f"{self.origin}: {key} must be a list of strings, got {value!r}")
        return value

    def dict(self, key: str) -> dict[str, Any]:
        value = self.raw.get(key) or {}
        if not isinstance(value, dict):
            raise InputFileError(f"{self.origin}: {key} must be an object, got {value!r}")
        return value
