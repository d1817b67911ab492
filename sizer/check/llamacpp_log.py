"""llama.cpp startup logs read into numbers: the build, the model's shape as the loader prints it,
the context's settings and every buffer the backends allocate, per device, in bytes.

The same lines come from llama-cli, llama-server, llama-perplexity and the other tools, and from
Ollama's embedded runner (which prints llama.cpp's log through its own). Four generations of names
are read: `llm_load_print_meta` / `llm_load_tensors` / `llama_new_context_with_model` (to build
~4500), `print_info` / `load_tensors` / `llama_init_from_model` (~4500-4900), `llama_context` with
`init:` or `llama_kv_cache_unified:` (~4900-6000) and `llama_kv_cache:` / `llama_kv_cache_iswa:`
(later). A line is matched anywhere in it, so the prefixes that CI timestamps (`0.00.039.905 I `),
journald (`Feb 28 12:44:32 host ollama[854770]: `) and terminals add do not matter.

Buffers are printed in MiB with two decimals; they are kept in bytes (MiB x 2**20, rounded to the
nearest byte). A log may hold several contexts (llama-save-load-state opens three): the context
read is the first one, up to its `graph splits` line. A KV cache in two parts (the non-SWA and
SWA caches of `llama_kv_cache_iswa`) is summed per device.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from sizer.io import read_text_input

MIB = 2**20
MIB_NUMBER = r"(?P<mib>\d+(?:\.\d+)?) MiB"

# --- build
BUILD_LINES = (
    re.compile(r"\bbuild(?: =|:) (?P<number>\d+) \((?P<commit>[0-9a-f]{7,40})\)"),  # main: build = N (hash)
    re.compile(r"\bversion: (?P<number>\d+) \((?P<commit>[0-9a-f]{7,40})\)"),       # --version
)

# --- the model loader's summary: `print_info: n_layer = 32` (`llm_load_print_meta:` before ~b4500)
MODEL_INFO = re.compile(r"\b(?:print_info|llm_load_print_meta): (?P<key>[A-Za-z_.][A-Za-z0-9_. ]*?)\s*= (?P<value>.*)$")
INTEGER_KEYS = frozenset({
    "n_ctx_train", "n_embd", "n_layer", "n_head", "n_head_kv", "n_rot", "n_swa", "n_embd_head_k",
    "n_embd_head_v", "n_gqa", "n_embd_k_gqa", "n_embd_v_gqa", "n_ff", "n_expert", "n_expert_used",
    "n_vocab", "n_merges", "n_ctx_orig_yarn",
})
OFFLOADED = re.compile(r"offloaded (?P<offloaded>\d+)/(?P<total>\d+) layers to GPU")

# --- buffers: `<device> model buffer size = X MiB` (`<device> buffer size` before ~b4500)
MODEL_BUFFER = re.compile(rf"\b(?:llm_)?load_tensors:\s+(?P<device>\S+) (?:model )?buffer size\s*=\s*{MIB_NUMBER}")
KV_BUFFER = re.compile(rf"\s(?P<device>\S+) KV buffer size\s*=\s*{MIB_NUMBER}")
COMPUTE_BUFFER = re.compile(rf"\s(?P<device>\S+) compute buffer size\s*=\s*{MIB_NUMBER}")
OUTPUT_BUFFER = re.compile(rf"\s(?P<device>\S+)\s+output buffer size\s*=\s*{MIB_NUMBER}")
INPUT_BUFFER = re.compile(rf"\s(?P<device>\S+) input buffer size\s*=\s*{MIB_NUMBER}")   # until ~b2100
KV_SPLIT = re.compile(r"K \((?P<type_k>\w+)\):\s*(?P<k_mib>\d+(?:\.\d+)?) MiB, "
                      r"V \((?P<type_v>\w+)\):\s*(?P<v_mib>\d+(?:\.\d+)?) MiB")

# --- the context's settings
CONTEXT_FUNCTIONS = r"(?:llama_context|llama_init_from_model|llama_new_context_with_model)"
CONTEXT_SETTING = re.compile(rf"\b{CONTEXT_FUNCTIONS}: (?P<key>n_seq_max|n_ctx|n_ctx_per_seq|n_ctx_seq|n_batch"
                             rf"|n_ubatch|flash_attn|causal_attn)\s*= (?P<value>\S+)")
FLASH_ATTN_AUTO = re.compile(r"Flash Attention was auto, set to (?P<value>enabled|disabled)")
KV_SETTINGS = re.compile(r"kv_size = (?P<kv_size>\d+), offload = (?P<offload>\d), type_k = '(?P<type_k>\w+)', "
                         r"type_v = '(?P<type_v>\w+)', n_layer = (?P<n_layer>\d+)")
PIPELINE_COPIES = re.compile(r"pipeline parallelism enabled \(n_copies=(?P<copies>\d+)\)")
GRAPH_NODES = re.compile(r"graph nodes\s*=\s*(?P<nodes>\d+)")
GRAPH_SPLITS = re.compile(r"graph splits\s*=\s*(?P<splits>\d+)(?: \(with bs=\d+\), (?P<splits_bs1>\d+) \(with bs=1\))?")

# --- devices
CUDA_DEVICE = re.compile(r"Device (?P<index>\d+): (?P<name>[^,]+), (?:compute capability|gfx)")
USING_DEVICE = re.compile(r"using device (?P<device>\S+) \((?P<name>.*)\) - (?P<free_mib>\d+) MiB free")
METAL_GPU = re.compile(r"ggml_metal_init: GPU name:\s+(?P<name>.+?)\s*$")


def mib_to_bytes(mib: str) -> int:
    """A printed MiB figure ("871.83") in bytes, rounded to the nearest byte."""
    return int((Decimal(mib) * MIB).to_integral_value(rounding=ROUND_HALF_EVEN))


@dataclass
class LlamaCppLog:
    """What one llama.cpp startup log states. Values the log does not print stay None or empty."""

    build_number: int | None = None
    build_commit: str | None = None
    model_info: dict[str, int | str] = field(default_factory=dict)   # print_info keys, first value each
    offloaded_layers: int | None = None
    total_layers: int | None = None
    settings: dict[str, int | str | bool] = field(default_factory=dict)
    model_buffer_bytes: dict[str, int] = field(default_factory=dict)   # per buffer type: CUDA0, CPU_Mapped, ...
    kv_buffer_bytes: dict[str, int] = field(default_factory=dict)
    compute_buffer_bytes: dict[str, int] = field(default_factory=dict)
    output_buffer_bytes: dict[str, int] = field(default_factory=dict)
    input_buffer_bytes: dict[str, int] = field(default_factory=dict)
    k_cache_bytes: int | None = None
    v_cache_bytes: int | None = None
    graph_nodes: int | None = None
    graph_splits: int | None = None
    graph_splits_single_token: int | None = None
    pipeline_copies: int | None = None
    gpu_names: list[str] = field(default_factory=list)
    device_free_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def file_type(self) -> str | None:
        """The GGUF file type as printed (`print_info: file type`, before ~b4500 `model ftype`)."""
        value = self.model_info.get("file type", self.model_info.get("model ftype"))
        return None if value is None else str(value)

    @property
    def kv_cache_bytes(self) -> int | None:
        return None if self.k_cache_bytes is None else self.k_cache_bytes + (self.v_cache_bytes or 0)


def _add_bytes(table: dict[str, int], device: str, mib: str) -> None:
    table[device] = table.get(device, 0) + mib_to_bytes(mib)


def _setting_value(key: str, value: str) -> int | str | bool:
    if key in ("flash_attn", "causal_attn"):
        return {"1": True, "0": False, "enabled": True, "disabled": False}.get(value, value)
    return int(value) if value.isdigit() else value


def _read_model_line(log: LlamaCppLog, line: str) -> None:
    if m := MODEL_INFO.search(line):
        key, value = m["key"].strip(), m["value"].strip()
        if key not in log.model_info:
            log.model_info[key] = int(value) if key in INTEGER_KEYS and value.isdigit() else value
    elif m := OFFLOADED.search(line):
        log.offloaded_layers, log.total_layers = int(m["offloaded"]), int(m["total"])
    elif m := MODEL_BUFFER.search(line):
        log.model_buffer_bytes[m["device"]] = mib_to_bytes(m["mib"])


def _read_context_line(log: LlamaCppLog, line: str) -> bool:
    """Reads one line of the first context; True once its last line (`graph splits`) is read."""
    if m := CONTEXT_SETTING.search(line):
        log.settings.setdefault(m["key"], _setting_value(m["key"], m["value"]))
    elif m := FLASH_ATTN_AUTO.search(line):
        log.settings["flash_attn"] = m["value"] == "enabled"
    elif m := KV_SETTINGS.search(line):
        for key in ("kv_size", "type_k", "type_v", "n_layer"):
            log.settings.setdefault(key if key != "n_layer" else "kv_n_layer", _setting_value(key, m[key]))
        log.settings.setdefault("kv_offload", m["offload"] == "1")
    elif m := KV_BUFFER.search(line):
        _add_bytes(log.kv_buffer_bytes, m["device"], m["mib"])
    elif m := KV_SPLIT.search(line):
        log.k_cache_bytes = (log.k_cache_bytes or 0) + mib_to_bytes(m["k_mib"])
        log.v_cache_bytes = (log.v_cache_bytes or 0) + mib_to_bytes(m["v_mib"])
        log.settings.setdefault("type_k", m["type_k"])
        log.settings.setdefault("type_v", m["type_v"])
    elif m := COMPUTE_BUFFER.search(line):
        _add_bytes(log.compute_buffer_bytes, m["device"], m["mib"])
    elif m := OUTPUT_BUFFER.search(line):
        _add_bytes(log.output_buffer_bytes, m["device"], m["mib"])
    elif m := INPUT_BUFFER.search(line):
        _add_bytes(log.input_buffer_bytes, m["device"], m["mib"])
    elif m := PIPELINE_COPIES.search(line):
        log.pipeline_copies = int(m["copies"])
    elif m := GRAPH_NODES.search(line):
        log.graph_nodes = int(m["nodes"])
    elif m := GRAPH_SPLITS.search(line):
        log.graph_splits = int(m["splits"])
        log.graph_splits_single_token = int(m["splits_bs1"]) if m["splits_bs1"] else None
        return True
    return False


def _read_device_line(log: LlamaCppLog, line: str) -> None:
    if m := USING_DEVICE.search(line):
        log.device_free_bytes.setdefault(m["device"], int(m["free_mib"]) * MIB)
    m = m or CUDA_DEVICE.search(line) or METAL_GPU.search(line)
    if m and m["name"] not in log.gpu_names:
        log.gpu_names.append(m["name"])


def parse_llamacpp_log(text: str) -> LlamaCppLog:
    """Reads a llama.cpp startup log: the first model load and the first context after it."""
    log = LlamaCppLog()
    context_done = False
    for line in text.splitlines():
        if log.build_number is None:
            for pattern in BUILD_LINES:
                if m := pattern.search(line):
                    log.build_number, log.build_commit = int(m["number"]), m["commit"]
                    break
        if context_done:
            continue
        _read_device_line(log, line)
        _read_model_line(log, line)
        context_done = _read_context_line(log, line)
    return log


def read_llamacpp_log_file(path: str | os.PathLike) -> LlamaCppLog:
    return parse_llamacpp_log(read_text_input(path, "llama.cpp log"))
