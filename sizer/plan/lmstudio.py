"""LM Studio as a profile of the llama.cpp engine: its load settings as llama.cpp settings.

LM Studio's llama.cpp runtime loads a GGUF with a context length (`lms load --context-length`, 4096
unless the user or the model's preset changes it), a GPU offload ratio (`--gpu 0-1|off|max`), flash
attention and K/V cache types (llamaKCacheQuantizationType / llamaVCacheQuantizationType in the SDK's
LLMLoadModelConfig). Sources: docs/reference/lmstudio.md. Its MLX runtime (Apple Silicon) is
`--engine lmstudio-mlx`, planned by sizer.plan.mlx.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from sizer.errors import UsageError

CONTEXT_LENGTH_DEFAULT = 4096
KV_CACHE_TYPES = {"f16": "fp16", "q8_0": "q8_0", "q4_0": "q4_0"}
_KEYS = {"context_length": "context_length", "contextlength": "context_length", "gpu": "gpu",
         "flash_attention": "flash_attention", "flashattention": "flash_attention",
         "kv_cache_type": "kv_cache_type", "llamakcachequantizationtype": "kv_cache_type",
         "llamavcachequantizationtype": "kv_cache_type", "parallel": "parallel"}


@dataclass(frozen=True)
class LmStudioSettings:
    context_length: int = CONTEXT_LENGTH_DEFAULT
    gpu: str = "max"                  # offload ratio 0-1, off or max
    flash_attention: bool = False
    kv_dtype: str = "fp16"
    parallel: int = 1
    given: tuple[str, ...] = ()       # the settings the user named


def parse_settings(text: str | None) -> LmStudioSettings:
    """`context_length=8192 gpu=max flash_attention=1 kv_cache_type=q8_0` (also the `lms load` flags
    `--context-length 8192 --gpu 0.5`)."""
    if not text:
        return LmStudioSettings()
    values, words = {}, shlex.split(text)
    i = 0
    while i < len(words):
        word = words[i].lstrip("-")
        key, eq, value = word.partition("=")
        if not eq:
            if i + 1 >= len(words):
                raise UsageError(f"--engine-args {words[i]}: needs a value")
            value, i = words[i + 1], i + 1
        i += 1
        norm = key.lower().replace("-", "_")
        name = _KEYS.get(norm) or _KEYS.get(norm.replace("_", ""))
        if name is None:
            raise UsageError(f"--engine-args: {key} is not an LM Studio load setting sizer reads (context_length, gpu, "
                             "flash_attention, kv_cache_type, parallel)")
        values[name] = value
    out = {}
    if "context_length" in values:
        out["context_length"] = _int("context_length", values["context_length"])
    if "parallel" in values:
        out["parallel"] = _int("parallel", values["parallel"])
    if "gpu" in values:
        gpu = values["gpu"].lower()
        if gpu not in ("max", "off"):
            try:
                ratio = float(gpu)
            except ValueError:
                raise UsageError(f"gpu={gpu}: expected a ratio 0-1, off or max") from None
            if not 0 <= ratio <= 1:
                raise UsageError(f"gpu={gpu}: expected a ratio 0-1, off or max")
        out["gpu"] = gpu
    if "flash_attention" in values:
        v = values["flash_attention"].lower()
        if v not in ("1", "0", "true", "false", "on", "off"):
            raise UsageError(f"flash_attention={v}: expected on or off")
        out["flash_attention"] = v in ("1", "true", "on")
    if "kv_cache_type" in values:
        v = values["kv_cache_type"].lower()
        if v not in KV_CACHE_TYPES:
            raise UsageError(f"kv_cache_type={v}: LM Studio's llama.cpp cache types are {', '.join(KV_CACHE_TYPES)}")
        out["kv_dtype"] = KV_CACHE_TYPES[v]
    return LmStudioSettings(**out, given=tuple(sorted(values)))


def _int(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{key}={value}: expected an integer") from None


def lmstudio_launch(settings: LmStudioSettings, model_key: str, n_gpu_layers: int | None = None,
                    n_layers: int = 0) -> tuple[tuple[str, str], ...]:
    """`lms load`; n_gpu_layers: a partial offload's layers on the GPU, written as the --gpu ratio of the
    n_layers + 1 layer slots (rounded down to two decimals, so that it does not ask for more)."""
    gpu = settings.gpu
    if n_gpu_layers is not None and n_layers:
        gpu = f"{int(n_gpu_layers / (n_layers + 1) * 100) / 100:.2f}"
    words = ["lms", "load", model_key, "--context-length", str(settings.context_length), "--gpu", gpu]
    return (("LM Studio", " ".join(words)),)
