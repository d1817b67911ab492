"""Ollama as a profile of the llama.cpp engine: the settings Ollama gives llama.cpp, per release.

Ollama runs a llama.cpp context (its runner, and from 0.30 llama-server itself) with n_ctx = num_ctx x
parallel slots, its flash-attention and KV-cache-type choices, and a micro-batch of num_batch (512).
sizer plans that llama.cpp context with the llama.cpp engine (sizer.plan.engines): this module only says
which settings Ollama chooses, reads Ollama's own knobs, and writes the `ollama` commands. Every default
below was read from Ollama's source at the releases named (docs/reference/ollama.md, file@tag).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from sizer.errors import UsageError
from sizer.plan.engine_args import parse_bool
from sizer.plan.releases import range_for
from sizer.units import GiB

NUM_BATCH_DEFAULT = 512          # api/types.go DefaultOptions: NumBatch 512 (every release read)
# server/routes.go@v0.15.5 Serve: the default num_ctx by the total VRAM (less OLLAMA_GPU_OVERHEAD per GPU);
# thresholds 47 and 23 GiB "to account for small differences in the exact value"
VRAM_TIERS = ((47 * GiB, 262144), (23 * GiB, 32768), (0, 4096))
# server/routes.go@v0.11.5 .. v0.15.4: below 20 GiB of total VRAM ("low vram mode") gpt-oss keeps the
# default num_ctx, else at least 8192
LOW_VRAM_BYTES = 20 * GiB
GPT_OSS_MIN_CTX = 8192
KV_CACHE_TYPES = {"f16": "fp16", "q8_0": "q8_0", "q4_0": "q4_0"}   # fs/ggml SupportsKVCacheType


@dataclass(frozen=True)
class OllamaRelease:
    """The defaults of one range of Ollama releases (first: version tuple; last: its newest, as text)."""

    first: tuple[int, int, int]
    last: str
    num_ctx: int | None              # None: by VRAM (VRAM_TIERS)
    parallel: int                    # OLLAMA_NUM_PARALLEL default; 0: auto (fallback_parallel, else 1)
    fallback_parallel: int = 0       # server/sched.go defaultParallel, tried first when parallel is 0
    kv_cache_type_env: bool = False  # OLLAMA_KV_CACHE_TYPE read (0.5.0+); needs flash attention before 0.30
    context_length_env: bool = False  # OLLAMA_CONTEXT_LENGTH read (0.5.13+)
    gpt_oss_8k: bool = False         # gpt-oss raised to 8192 unless low VRAM (0.11.5 .. 0.15.4)
    fa_architectures: tuple[str, ...] = ()   # GGUF architectures with flash attention on by default
    fa_forced: bool = False          # 0.11.8 .. 0.12.3: those architectures get it even if OLLAMA_FLASH_ATTENTION=0
    fa_auto: bool = False            # 0.30+: llama-server --flash-attn auto (on where the GPU supports it)
    caps_to_train_ctx: bool = False  # num_ctx above the model's trained context is cut to it
    single_slot: tuple[str, ...] = ()   # architectures Ollama loads with 1 slot whatever OLLAMA_NUM_PARALLEL says

    @property
    def first_text(self) -> str:
        return ".".join(map(str, self.first))


_FA_0_12_4 = ("gptoss", "gpt-oss", "qwen3", "qwen3moe")
_FA_0_15_5 = ("bert", "gemma3", "glm4moelite", "glmocr", "gptoss", "gpt-oss", "lfm2", "mistral3", "olmo3", "qwen3",
              "qwen3moe", "qwen3next", "qwen3vl", "qwen3vlmoe")
_ONE_SLOT_0_15_5 = ("mllama", "qwen3vl", "qwen3vlmoe", "qwen3next", "lfm2", "lfm2moe")
_ONE_SLOT_0_17_1 = _ONE_SLOT_0_15_5 + ("qwen35", "qwen35moe", "nemotron_h", "nemotron_h_moe", "nemotron_h_omni")
RELEASES = (
    OllamaRelease((0, 1, 39), "0.1.48", 2048, 1),
    OllamaRelease((0, 2, 0), "0.4.7", 2048, 0, 4),
    OllamaRelease((0, 5, 0), "0.5.12", 2048, 0, 4, kv_cache_type_env=True),
    OllamaRelease((0, 5, 13), "0.6.6", 2048, 0, 4, kv_cache_type_env=True, context_length_env=True),
    OllamaRelease((0, 6, 7), "0.9.6", 4096, 0, 2, kv_cache_type_env=True, context_length_env=True),
    OllamaRelease((0, 10, 0), "0.11.4", 4096, 1, kv_cache_type_env=True, context_length_env=True),
    OllamaRelease((0, 11, 5), "0.11.7", 4096, 1, kv_cache_type_env=True, context_length_env=True, gpt_oss_8k=True),
    OllamaRelease((0, 11, 8), "0.12.3", 4096, 1, kv_cache_type_env=True, context_length_env=True, gpt_oss_8k=True,
                  fa_architectures=("gptoss", "gpt-oss"), fa_forced=True, caps_to_train_ctx=True),
    OllamaRelease((0, 12, 4), "0.15.4", 4096, 1, kv_cache_type_env=True, context_length_env=True, gpt_oss_8k=True,
                  fa_architectures=_FA_0_12_4, caps_to_train_ctx=True),
    OllamaRelease((0, 15, 5), "0.17.0", None, 1, kv_cache_type_env=True, context_length_env=True,
                  fa_architectures=_FA_0_15_5, caps_to_train_ctx=True, single_slot=_ONE_SLOT_0_15_5),
    OllamaRelease((0, 17, 1), "0.29.x", None, 1, kv_cache_type_env=True, context_length_env=True,
                  fa_architectures=_FA_0_15_5, caps_to_train_ctx=True, single_slot=_ONE_SLOT_0_17_1),
    OllamaRelease((0, 30, 0), "0.32.x", None, 1, kv_cache_type_env=True, context_length_env=True, fa_auto=True,
                  caps_to_train_ctx=True, single_slot=_ONE_SLOT_0_17_1),
    OllamaRelease((0, 33, 0), "0.33.0", None, 1, kv_cache_type_env=True, context_length_env=True, fa_auto=True,
                  caps_to_train_ctx=True, single_slot=_ONE_SLOT_0_17_1),
)
NEWEST = RELEASES[-1]


def ollama_release(version: str | None) -> OllamaRelease:
    """The modelled range holding `version` (None: the newest)."""
    return range_for("ollama", "Ollama", version, RELEASES, "0.12.4")


def gguf_architecture(family: str) -> str:
    """GGUF general.architecture of a Hugging Face model_type as Ollama's lists name them, compared without
    underscores: gpt_oss -> gptoss, qwen3_moe -> qwen3moe, gemma3_text -> gemma3, nemotron_h -> nemotronh."""
    return family.lower().removesuffix("_text").replace("_", "")


def _listed(arch: str, names: tuple[str, ...]) -> bool:
    return arch in {n.replace("_", "") for n in names}


# ---------------------------------------------------------------------------------------------
# Ollama's own knobs: Modelfile PARAMETERs / API options and the server's environment variables

_OPTIONS = {"num_ctx": "num_ctx", "num_gpu": "num_gpu", "num_batch": "num_batch"}
_ENV = {"OLLAMA_NUM_PARALLEL": "parallel", "OLLAMA_FLASH_ATTENTION": "flash_attention",
        "OLLAMA_KV_CACHE_TYPE": "kv_cache_type", "OLLAMA_CONTEXT_LENGTH": "context_length",
        "OLLAMA_GPU_OVERHEAD": "gpu_overhead"}


@dataclass(frozen=True)
class OllamaKnobs:
    """What the user set (None: Ollama's default for the release)."""

    num_ctx: int | None = None
    num_gpu: int | None = None
    num_batch: int | None = None
    parallel: int | None = None
    flash_attention: bool | None = None
    kv_cache_type: str | None = None
    context_length: int | None = None     # OLLAMA_CONTEXT_LENGTH: the server-wide num_ctx default
    gpu_overhead: int | None = None       # OLLAMA_GPU_OVERHEAD, bytes per GPU


def parse_knobs(text: str | None) -> OllamaKnobs:
    """`num_ctx=8192 num_gpu=20 OLLAMA_NUM_PARALLEL=2 OLLAMA_FLASH_ATTENTION=1 OLLAMA_KV_CACHE_TYPE=q8_0`
    (also `PARAMETER num_ctx 8192` lines of a Modelfile, `/set parameter num_ctx 8192`)."""
    if not text:
        return OllamaKnobs()
    values: dict = {}
    words = _pairs(text)
    for key, value in words:
        if key in _OPTIONS:
            values[_OPTIONS[key]] = _int(key, value)
        elif key.upper() in _ENV:
            name = _ENV[key.upper()]
            if name == "flash_attention":
                values[name] = parse_bool(value, key)
            elif name == "kv_cache_type":
                if value.lower() not in KV_CACHE_TYPES:
                    raise UsageError(f"{key}={value}: Ollama's KV cache types are {', '.join(KV_CACHE_TYPES)}")
                values[name] = value.lower()
            else:
                values[name] = _int(key, value)
        else:
            raise UsageError(f"--engine-args: {key} is not an Ollama setting sizer reads (num_ctx, num_gpu, num_batch, "
                             f"{', '.join(_ENV)})")
    return OllamaKnobs(**values)


def _pairs(text: str) -> list[tuple[str, str]]:
    """NAME=VALUE words, or `PARAMETER NAME VALUE` / `/set parameter NAME VALUE` lines."""
    out = []
    for line in (part.strip() for part in re.split(r"[\n;]", text)):
        line = re.sub(r"^(?:/set\s+parameter|PARAMETER)\s+", "", line, flags=re.I)
        words = shlex.split(line)
        if len(words) == 2 and "=" not in line:
            out.append((words[0], words[1]))
            continue
        for word in words:
            key, eq, value = word.partition("=")
            if not eq:
                raise UsageError(f"--engine-args {word!r}: write Ollama settings as NAME=VALUE (num_ctx=8192 "
                                 "OLLAMA_NUM_PARALLEL=2)")
            out.append((key, value))
    return out


def _int(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{key}={value}: expected an integer") from None


# ---------------------------------------------------------------------------------------------
# The llama.cpp context Ollama asks for


@dataclass(frozen=True)
class OllamaSettings:
    """What Ollama hands llama.cpp for one model on one machine."""

    num_ctx: int                 # per sequence (llama.cpp's n_ctx is num_ctx x parallel)
    parallel: int
    flash_attention: bool
    kv_dtype: str                # sizer's KV dtype name: fp16, q8_0, q4_0
    num_batch: int
    num_gpu: int | None          # None: Ollama chooses (all layers when the estimate fits)
    notes: tuple[str, ...] = ()

    @property
    def n_ctx(self) -> int:
        return self.num_ctx * self.parallel


def default_num_ctx(release: OllamaRelease, total_vram_bytes: int) -> int:
    """num_ctx when neither the request, the Modelfile nor OLLAMA_CONTEXT_LENGTH sets it."""
    if release.num_ctx is not None:
        return release.num_ctx
    return next(ctx for floor, ctx in VRAM_TIERS if total_vram_bytes >= floor)


def ollama_settings(release: OllamaRelease, knobs: OllamaKnobs, family: str, train_ctx: int | None,
                    total_vram_bytes: int, gpu_flash_attention: bool = True) -> OllamaSettings:
    """The settings `release` gives llama.cpp for a model of `family` (HF model_type) trained to `train_ctx`
    tokens on GPUs of `total_vram_bytes` together. gpu_flash_attention: whether every GPU supports it."""
    notes = []
    arch = gguf_architecture(family)
    overhead = knobs.gpu_overhead or 0
    num_ctx = knobs.num_ctx
    if num_ctx is None and knobs.context_length is not None:
        if not release.context_length_env:
            raise UsageError(f"OLLAMA_CONTEXT_LENGTH is read from Ollama 0.5.13 on, not by {release.first_text}"
                             f"-{release.last}: set num_ctx")
        num_ctx = knobs.context_length
    if num_ctx is None:
        num_ctx = default_num_ctx(release, max(0, total_vram_bytes - overhead))
        if release.gpt_oss_8k and _listed(arch, ("gptoss", "gpt-oss")) and total_vram_bytes - overhead >= LOW_VRAM_BYTES:
            num_ctx = max(num_ctx, GPT_OSS_MIN_CTX)
        notes.append(f"Ollama's default num_ctx: {num_ctx:,}")
    if release.caps_to_train_ctx and train_ctx and num_ctx > train_ctx:
        notes.append(f"num_ctx {num_ctx:,} is cut to the model's trained context {train_ctx:,}, as Ollama does")
        num_ctx = train_ctx
    parallel = knobs.parallel or release.parallel
    if parallel != 1 and _listed(arch, release.single_slot):
        notes.append(f"Ollama loads {arch} with one slot (server/sched.go: parallel requests not supported)")
        parallel = 1
    if parallel == 0:
        parallel = release.fallback_parallel
        notes.append(f"OLLAMA_NUM_PARALLEL unset: Ollama {release.first_text}-{release.last} tries {parallel} slots "
                     f"(n_ctx {num_ctx:,} x {parallel}) and falls back to 1 when that does not fit in VRAM")
    fa = _flash_attention(release, knobs.flash_attention, arch, gpu_flash_attention)
    kv = "fp16"
    if knobs.kv_cache_type and knobs.kv_cache_type != "f16":
        if not release.kv_cache_type_env:
            notes.append(f"OLLAMA_KV_CACHE_TYPE is read from Ollama 0.5.0 on: f16 planned")
        elif not fa and not release.fa_auto:
            notes.append(f"OLLAMA_KV_CACHE_TYPE={knobs.kv_cache_type} needs flash attention, which is off: Ollama "
                         "keeps an f16 cache")
        else:
            kv = KV_CACHE_TYPES[knobs.kv_cache_type]
    return OllamaSettings(num_ctx, parallel, fa, kv, knobs.num_batch or NUM_BATCH_DEFAULT, knobs.num_gpu,
                          tuple(notes))


def _flash_attention(release: OllamaRelease, asked: bool | None, arch: str, gpu_supports: bool) -> bool:
    """Ollama's flash-attention decision (llm/server.go; llm/llama_server.go from 0.30)."""
    if release.fa_auto:
        return asked if asked is not None else gpu_supports      # --flash-attn on|off|auto
    wanted = _listed(arch, release.fa_architectures)
    fa = (asked or wanted) if release.fa_forced else (asked if asked is not None else wanted)
    return fa and gpu_supports


# ---------------------------------------------------------------------------------------------
# The commands


def ollama_launch(release: OllamaRelease, settings: OllamaSettings, knobs: OllamaKnobs, tag: str | None,
                  model_name: str, quant: str, n_layers: int) -> tuple[tuple[str, str], ...]:
    """(where, command) pairs: the server's environment and the model's num_ctx / num_gpu.
    tag: the Ollama library tag (None: a GGUF the user imports; its name is a placeholder)."""
    env = []
    if knobs.parallel or release.parallel == 0:
        env.append(f"OLLAMA_NUM_PARALLEL={settings.parallel}")
    if knobs.flash_attention is not None:
        env.append(f"OLLAMA_FLASH_ATTENTION={int(settings.flash_attention)}")
    if settings.kv_dtype != "fp16":
        env.append(f"OLLAMA_KV_CACHE_TYPE={knobs.kv_cache_type}")
    if knobs.gpu_overhead:
        env.append(f"OLLAMA_GPU_OVERHEAD={knobs.gpu_overhead}")
    model = tag or f"<{quant} GGUF of {model_name}>"
    params = [f"PARAMETER num_ctx {settings.num_ctx}"]
    if settings.num_gpu is not None:
        params.append(f"PARAMETER num_gpu {settings.num_gpu}")
    elif n_layers:
        params.append(f"PARAMETER num_gpu {n_layers + 1}")    # every repeating layer and the output layer
    if knobs.num_batch:
        params.append(f"PARAMETER num_batch {settings.num_batch}")
    name = re.sub(r"[^a-z0-9.-]+", "-", (tag or model_name).lower()).strip("-") + f"-{settings.num_ctx // 1024}k"
    modelfile = "\\n".join([f"FROM {model}", *params])
    return (("the server", " ".join(env + ["ollama", "serve"])),
            ("a Modelfile", f"printf '{modelfile}\\n' > Modelfile && ollama create {name} -f Modelfile && "
                            f"ollama run {name}"))
