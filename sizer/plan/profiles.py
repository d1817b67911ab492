"""Ollama and LM Studio as profiles of the llama.cpp engine: what `fit` plans for them.

A profile turns the application's defaults and knobs (sizer.plan.ollama, sizer.plan.lmstudio) into the
llama.cpp settings `fit` plans with (context per sequence, parallel sequences, KV cache type, flash
attention) and writes the application's commands in place of llama-server's.
"""

from __future__ import annotations

from dataclasses import dataclass

from sizer.errors import UsageError
from sizer.plan.launch import LaunchStep

# ggml-cuda's flash-attention kernels need Volta (7.0) or newer; Ollama's GpuInfoList.FlashAttentionSupported
# asks the same of CUDA devices (docs/reference/ollama.md)
FLASH_ATTENTION_MIN_CAPABILITY = (7, 0)


@dataclass(frozen=True)
class ProfilePlan:
    """The llama.cpp settings a profile plans, its notes, and how to write its commands."""

    profile: str
    context_length: int
    batch_size: int
    kv_dtype: str
    flash_attention: bool
    notes: tuple[str, ...]
    release: object = None
    knobs: object = None
    settings: object = None
    layers: dict | None = None    # how the application chooses the layers on the GPU (engine options)

    def launch(self, spec, precision_name: str, n_gpu_layers: int | None = None) -> tuple[LaunchStep, ...]:
        """n_gpu_layers: the layers on the GPUs of a partial offload (Ollama's num_gpu), None for all."""
        if self.profile == "ollama":
            from dataclasses import replace

            from sizer.plan.ollama import ollama_launch

            settings = self.settings if n_gpu_layers is None else replace(self.settings, num_gpu=n_gpu_layers)
            steps = ollama_launch(self.release, settings, self.knobs, _ollama_tag(spec, precision_name),
                                  spec.name, precision_name, spec.n_layers)
        else:
            from sizer.plan.lmstudio import lmstudio_launch

            steps = lmstudio_launch(self.settings, f"<{precision_name} GGUF of {spec.name}>", n_gpu_layers,
                                    spec.n_layers)
        return tuple(LaunchStep(on, command) for on, command in steps)


def _ollama_tag(spec, precision_name: str) -> str | None:
    from sizer.inputs.ollama_tags import tag_for

    if spec.ollama_tag and precision_name == spec.native_precision:
        return spec.ollama_tag
    return tag_for(spec.name, precision_name) if spec.name else None


def gpu_flash_attention(gpu) -> bool:
    cc = gpu.capability
    return cc is None or cc >= FLASH_ATTENTION_MIN_CAPABILITY


def profile_plan(choice, spec, gpu, gpu_count: int | None, args: str | None, context_length: int | None,
                 batch_size: int, kv_dtype: str | None) -> ProfilePlan:
    """The settings `choice` (an EngineChoice with a profile) plans for `spec` on `gpu_count` x `gpu`.
    sizer's own -c / -b / --kv-dtype win where given; a different value in `args` is refused."""
    if choice.profile == "ollama":
        from sizer.plan.ollama import ollama_release, ollama_settings, parse_knobs

        release, knobs = ollama_release(choice.profile_version), parse_knobs(args)
        _agree("--context-length", context_length, knobs.num_ctx, "num_ctx")
        if context_length and knobs.num_ctx is None:
            from dataclasses import replace

            knobs = replace(knobs, num_ctx=context_length)
        _agree("--batch-size", batch_size if batch_size > 1 else None, knobs.parallel, "OLLAMA_NUM_PARALLEL")
        if batch_size > 1 and knobs.parallel is None:
            from dataclasses import replace

            knobs = replace(knobs, parallel=batch_size)
        total = gpu.memory_bytes * (gpu_count or 1)
        s = ollama_settings(release, knobs, spec.family, spec.max_context_length, total, gpu_flash_attention(gpu))
        notes = (f"Ollama {choice.version}: llama.cpp with n_ctx {s.n_ctx:,} ({s.parallel} x num_ctx {s.num_ctx:,}), "
                 f"flash attention {'on' if s.flash_attention else 'off'}, KV cache {s.kv_dtype}, num_batch "
                 f"{s.num_batch}",) + s.notes
        layers = ollama_layers(release, s, knobs)
        if kv_dtype and kv_dtype != s.kv_dtype:
            raise UsageError(f"--kv-dtype {kv_dtype}: Ollama's KV cache is {s.kv_dtype} here (set "
                             "OLLAMA_KV_CACHE_TYPE in --engine-args)")
        return ProfilePlan("ollama", s.num_ctx, s.parallel, s.kv_dtype, s.flash_attention, notes, release, knobs, s,
                           layers)
    from dataclasses import replace

    from sizer.plan.lmstudio import parse_settings

    s = parse_settings(args)
    _agree("--context-length", context_length, s.context_length if "context_length" in s.given else None,
           "context_length")
    if context_length:
        s = replace(s, context_length=context_length)
    layers = lmstudio_layers(s.gpu, spec.n_layers)
    fa = s.flash_attention and gpu_flash_attention(gpu)
    kv = s.kv_dtype if (fa or s.kv_dtype == "fp16") else "fp16"
    notes = (f"LM Studio (llama.cpp runtime): context {s.context_length:,}, GPU offload {s.gpu}, flash attention "
             f"{'on' if fa else 'off'}, KV cache {kv}",)
    if kv != s.kv_dtype:
        notes += ("a quantized KV cache needs flash attention, which is off: f16 planned",)
    return ProfilePlan("lmstudio", s.context_length, max(batch_size, s.parallel), kv, fa, notes, settings=s,
                       layers=layers)


def lmstudio_layers(gpu: str, n_layers: int) -> dict:
    """LM Studio's GPU offload (`lms load --gpu`): max lets its llama.cpp runtime place every layer that
    fits (planned as llama.cpp's --fit search); off keeps every layer on the CPU; a ratio 0-1 offloads
    that share of the n_layers + 1 layer slots (the output head counted, as -ngl counts it), rounded."""
    if gpu == "max":
        return {}
    if gpu == "off":
        return {"n_gpu_layers": 0}
    return {"n_gpu_layers": round(float(gpu) * (n_layers + 1))}


# Ollama before 0.30 chose num_gpu itself (llm/memory.go EstimateGPULayers up to 0.11.4; the runner's
# measured fit from 0.11.5): layers go to a GPU while its free memory exceeds OLLAMA_GPU_OVERHEAD + the
# per-GPU minimum (discover/gpu.go cudaMinimumMemory = 457 MiB) + what is placed. From 0.30 it passes no
# -ngl and llama-server's --fit chooses (llm/llama_server.go@HEAD).
OLLAMA_MINIMUM_MEMORY_BYTES = 457 * 2**20
OLLAMA_SERVER_FITS = (0, 30, 0)


def ollama_layers(release, settings, knobs) -> dict:
    """The llama.cpp engine options that choose Ollama's layers on the GPU: a num_gpu as given, else the
    search with Ollama's margin (before 0.30) or llama-server's --fit target (0.30 and later)."""
    if settings.num_gpu is not None:
        return {"n_gpu_layers": settings.num_gpu}
    if release.first >= OLLAMA_SERVER_FITS:
        return {}
    return {"layers_margin_bytes": OLLAMA_MINIMUM_MEMORY_BYTES + (knobs.gpu_overhead or 0)}


def _agree(flag: str, mine, theirs, name: str) -> None:
    if mine is not None and theirs is not None and mine != theirs:
        raise UsageError(f"{flag} {mine} contradicts --engine-args ({name}={theirs}): give it once")
