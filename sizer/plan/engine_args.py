"""The engines' own flags, as users pass them: `--engine-args "--max-model-len 16000 -tp 2"` and whole
launch lines (`--command "vllm serve Qwen/Qwen2.5-7B-Instruct --tensor-parallel-size 2"`).

Each engine's flags are a table: the spellings the engine accepts (vLLM: `--max-model-len`,
`--max_model_len`, `--max-model-len=16000`, short forms such as `-tp`; SGLang: `--tp-size` / `--tp`;
llama.cpp: `-c` / `--ctx-size`) -> one setting name and its type. Flags that change memory become
settings; flags known not to change memory (host, port, chat template, ...) are accepted silently;
anything else is kept as `unknown` so the caller can warn in one line. Spellings and value forms
were read from the engines' argument parsers: vLLM's vllm/engine/arg_utils.py (EngineArgs.add_cli_args)
and vllm/entrypoints/openai/cli_args.py, SGLang's python/sglang/srt/server_args.py
(ServerArgs.add_cli_args), llama.cpp's common/arg.cpp.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from sizer.errors import UsageError

INT, FLOAT, STR, BOOL, JSON = "int", "float", "str", "bool", "json"


@dataclass(frozen=True)
class Flag:
    setting: str
    kind: str
    memory: bool = True        # False: accepted, changes no memory sizer models


def _flags(table: dict[str, tuple]) -> dict[str, Flag]:
    """Spelling(s) separated by '|' -> Flag; each long spelling also with underscores (vLLM and SGLang
    accept `--max_model_len` as `--max-model-len`)."""
    out: dict[str, Flag] = {}
    for spellings, args in table.items():
        flag = Flag(*args)
        for spelling in spellings.split("|"):
            out[spelling] = flag
            if spelling.startswith("--"):
                out["--" + spelling[2:].replace("-", "_")] = flag
    return out


VLLM_FLAGS = _flags({
    "--model": ("model", STR, False),
    "--tensor-parallel-size|-tp": ("tensor_parallel_size", INT),
    "--pipeline-parallel-size|-pp": ("pipeline_parallel_size", INT),
    "--data-parallel-size|-dp": ("data_parallel_size", INT),
    "--enable-expert-parallel": ("enable_expert_parallel", BOOL),
    "--max-model-len": ("max_model_len", INT),
    "--gpu-memory-utilization": ("gpu_memory_utilization", FLOAT),
    "--max-num-seqs": ("max_num_seqs", INT),
    "--max-num-batched-tokens": ("max_num_batched_tokens", INT),
    "--enforce-eager": ("enforce_eager", BOOL),
    "--enable-chunked-prefill": ("enable_chunked_prefill", BOOL),
    "--enable-prefix-caching": ("enable_prefix_caching", BOOL),
    "--kv-cache-dtype": ("kv_cache_dtype", STR),
    "--quantization|-q": ("quantization", STR),
    "--dtype": ("dtype", STR),
    "--cpu-offload-gb": ("cpu_offload_gb", FLOAT),
    "--swap-space": ("swap_space", FLOAT),
    "--block-size": ("block_size", INT),
    "--kv-cache-memory-bytes|--kv-cache-memory": ("kv_cache_memory_bytes", INT),
    "--num-gpu-blocks-override": ("num_gpu_blocks_override", INT),
    "--max-seq-len-to-capture": ("max_seq_len_to_capture", INT),
    "--cuda-graph-sizes": ("cuda_graph_sizes", STR),
    "--compilation-config|-O": ("compilation_config", JSON),
    "--enable-lora": ("enable_lora", BOOL),
    "--max-loras": ("max_loras", INT),
    "--max-lora-rank": ("max_lora_rank", INT),
    "--speculative-config": ("speculative_config", JSON),
    "--limit-mm-per-prompt": ("limit_mm_per_prompt", JSON),
    "--disable-sliding-window": ("disable_sliding_window", BOOL),
    "--hf-overrides": ("hf_overrides", JSON),
    "--rope-scaling": ("rope_scaling", JSON),
    "--max-logprobs": ("max_logprobs", INT),
    "--disable-custom-all-reduce": ("disable_custom_all_reduce", BOOL),
    "--distributed-executor-backend": ("distributed_executor_backend", STR, False),
    "--nnodes": ("nnodes", INT),
    "--node-rank": ("node_rank", INT, False),
    "--data-parallel-size-local|-dpl": ("data_parallel_size_local", INT, False),
    "--data-parallel-address|-dpa": ("data_parallel_address", STR, False),
    "--data-parallel-rpc-port|-dpp": ("data_parallel_rpc_port", INT, False),
    "--data-parallel-start-rank|-dpr": ("data_parallel_start_rank", INT, False),
    "--headless": ("headless", BOOL, False),
    **{spelling: (spelling.lstrip("-").replace("-", "_"), kind, False) for spelling, kind in {
        "--host": STR, "--port": INT, "--served-model-name": STR, "--api-key": STR, "--tokenizer": STR,
        "--tokenizer-mode": STR, "--trust-remote-code": BOOL, "--download-dir": STR, "--load-format": STR,
        "--revision": STR, "--code-revision": STR, "--tokenizer-revision": STR, "--seed": INT,
        "--chat-template": STR, "--response-role": STR, "--enable-auto-tool-choice": BOOL,
        "--tool-call-parser": STR, "--reasoning-parser": STR, "--disable-log-requests": BOOL,
        "--enable-log-requests": BOOL, "--disable-log-stats": BOOL, "--uvicorn-log-level": STR,
        "--max-log-len": INT, "--allowed-origins": JSON, "--root-path": STR, "--ssl-keyfile": STR,
        "--ssl-certfile": STR, "--disable-fastapi-docs": BOOL, "--lora-modules": STR,
        "--return-tokens-as-token-ids": BOOL, "--enable-prompt-tokens-details": BOOL, "--generation-config": STR,
        "--override-generation-config": JSON, "--guided-decoding-backend": STR, "--scheduling-policy": STR,
        "--max-parallel-loading-workers": INT, "--api-server-count": INT, "--model-impl": STR,
        "--config-format": STR, "--worker-cls": STR, "--async-scheduling": BOOL, "--enable-sleep-mode": BOOL,
        "--otlp-traces-endpoint": STR, "--max-num-partial-prefills": INT, "--long-prefill-token-threshold": INT,
        "--chat-template-content-format": STR, "--enable-request-id-headers": BOOL, "--tokenizer-pool-size": INT,
        "--use-v2-block-manager": BOOL, "--disable-frontend-multiprocessing": BOOL, "--config": STR,
        "--structured-outputs-config": JSON, "--enable-force-include-usage": BOOL, "--max-waiting-tokens": INT,
    }.items()},
})

SGLANG_FLAGS = _flags({
    "--model-path|--model": ("model", STR, False),
    "--tp-size|--tp|--tensor-parallel-size": ("tensor_parallel_size", INT),
    "--pp-size|--pipeline-parallel-size": ("pipeline_parallel_size", INT),
    "--dp-size|--dp|--data-parallel-size": ("data_parallel_size", INT),
    "--ep-size|--ep|--expert-parallel-size": ("expert_parallel_size", INT),
    "--enable-dp-attention": ("enable_dp_attention", BOOL),
    "--context-length": ("max_model_len", INT),
    "--mem-fraction-static": ("mem_fraction_static", FLOAT),
    "--max-running-requests": ("max_running_requests", INT),
    "--max-total-tokens": ("max_total_tokens", INT),
    "--chunked-prefill-size": ("chunked_prefill_size", INT),
    "--max-prefill-tokens": ("max_prefill_tokens", INT),
    "--cuda-graph-max-bs": ("cuda_graph_max_bs", INT),
    "--cuda-graph-bs": ("cuda_graph_bs", STR),
    "--disable-cuda-graph": ("disable_cuda_graph", BOOL),
    "--kv-cache-dtype": ("kv_cache_dtype", STR),
    "--quantization": ("quantization", STR),
    "--dtype": ("dtype", STR),
    "--page-size": ("page_size", INT),
    "--disable-radix-cache": ("disable_radix_cache", BOOL),
    "--cpu-offload-gb": ("cpu_offload_gb", FLOAT),
    "--enable-torch-compile": ("enable_torch_compile", BOOL),
    "--speculative-algorithm": ("speculative_algorithm", STR),
    "--nnodes": ("nnodes", INT),
    "--node-rank": ("node_rank", INT, False),
    "--dist-init-addr": ("dist_init_addr", STR, False),
    **{spelling: (spelling.lstrip("-").replace("-", "_"), kind, False) for spelling, kind in {
        "--host": STR, "--port": INT, "--served-model-name": STR, "--api-key": STR, "--tokenizer-path": STR,
        "--trust-remote-code": BOOL, "--chat-template": STR, "--reasoning-parser": STR, "--tool-call-parser": STR,
        "--random-seed": INT, "--log-level": STR, "--enable-metrics": BOOL, "--watchdog-timeout": FLOAT,
        "--schedule-policy": STR, "--schedule-conservativeness": FLOAT, "--stream-interval": INT,
        "--attention-backend": STR, "--sampling-backend": STR, "--grammar-backend": STR, "--load-format": STR,
        "--download-dir": STR, "--revision": STR, "--skip-server-warmup": BOOL, "--log-requests": BOOL,
        "--enable-mixed-chunk": BOOL, "--moe-runner-backend": STR, "--moe-a2a-backend": STR,
        "--decode-log-interval": INT, "--show-time-cost": BOOL, "--disable-overlap-schedule": BOOL,
    }.items()},
})

LLAMACPP_FLAGS = _flags({
    "-m|--model": ("model", STR, False),
    "-hf|--hf-repo": ("hf_repo", STR, False),
    "-c|--ctx-size": ("max_model_len", INT),
    "-b|--batch-size": ("batch_size", INT),
    "-ub|--ubatch-size": ("ubatch_size", INT),
    "-ngl|--gpu-layers|--n-gpu-layers": ("n_gpu_layers", STR),     # N, 999, -1, all, auto
    "-fa|--flash-attn": ("flash_attn", "onoff"),
    "-np|--parallel": ("parallel", INT),
    "-ctk|--cache-type-k": ("cache_type_k", STR),
    "-ctv|--cache-type-v": ("cache_type_v", STR),
    "-ncmoe|--n-cpu-moe": ("n_cpu_moe", INT),
    "-cmoe|--cpu-moe": ("cpu_moe", BOOL),
    "-ot|--override-tensor": ("override_tensor", STR),
    "-sm|--split-mode": ("split_mode", STR),
    "-ts|--tensor-split": ("tensor_split", STR),
    "-mg|--main-gpu": ("main_gpu", INT),
    "-nkvo|--no-kv-offload": ("no_kv_offload", BOOL),
    "--mmap": ("mmap", BOOL),
    "--no-mmap": ("no_mmap", BOOL),
    "--mlock": ("mlock", BOOL),
    "-fit|--fit": ("fit", "onoff"),
    "-kvu|--kv-unified": ("kv_unified", BOOL),
    "--swa-full": ("swa_full", BOOL),
    "-dev|--device": ("device", STR),
    "--mmproj": ("mmproj", STR),
    "--no-kv-unified": ("no_kv_unified", BOOL, False),
    "-fitt|--fit-target": ("fit_target", STR),
    **{spelling: (spelling.lstrip("-").replace("-", "_"), kind, False) for spelling, kind in {
        "--host": STR, "--port": INT, "-t": INT, "--threads": INT, "-tb": INT, "--threads-batch": INT,
        "--jinja": BOOL, "-n": INT, "--n-predict": INT, "--temp": FLOAT, "--top-k": INT, "--top-p": FLOAT,
        "--min-p": FLOAT, "-s": INT, "--seed": INT, "--alias": STR, "-a": STR, "--api-key": STR,
        "-cb": BOOL, "--cont-batching": BOOL, "--no-warmup": BOOL, "--metrics": BOOL, "--no-webui": BOOL,
        "--chat-template": STR, "--chat-template-file": STR, "--log-disable": BOOL, "-v": BOOL, "--verbose": BOOL,
        "--cache-reuse": INT, "--slots": BOOL, "--reasoning-format": STR, "-p": STR, "--prompt": STR,
        "-cnv": BOOL, "--conversation": BOOL, "-i": BOOL, "--interactive": BOOL, "--repeat-penalty": FLOAT,
        "--no-context-shift": BOOL, "--context-shift": BOOL, "-C": STR, "--cpu-mask": STR, "--numa": STR,
        "--prio": INT, "--poll": INT, "-ctxcp": INT, "--ctx-checkpoints": INT, "-sp": BOOL, "--special": BOOL,
        "--embedding": BOOL, "--embeddings": BOOL, "--rerank": BOOL, "--reranking": BOOL, "--pooling": STR,
        "-lv": INT, "--verbosity": INT, "--log-file": STR, "--timeout": INT, "--threads-http": INT,
        "--props": BOOL, "--no-slots": BOOL, "--slot-save-path": STR, "--lora": STR, "-ctk-draft": STR,
    }.items()},
})

FLAG_TABLES = {"vllm": VLLM_FLAGS, "sglang": SGLANG_FLAGS, "llamacpp": LLAMACPP_FLAGS}
_NEGATED = re.compile(r"^--no[-_](?P<rest>.+)$")
_HUMAN_INT = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<suffix>[kKmMgG]?)$")
_HUMAN_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}


@dataclass(frozen=True)
class EngineArgs:
    """The flags of one engine as the user passed them, read into settings.

    settings: memory-relevant setting -> value (vLLM's own setting names: tensor_parallel_size,
    max_model_len, gpu_memory_utilization, ...); accepted: settings that change no memory;
    unknown: flags this table does not know (the caller warns); model: the model a launch line names.
    """

    engine: str
    text: str
    settings: dict = field(default_factory=dict)
    accepted: dict = field(default_factory=dict)
    unknown: tuple[str, ...] = ()
    model: str | None = None
    env: dict = field(default_factory=dict)
    version: str | None = None

    def get(self, name: str, default=None):
        return self.settings.get(name, default)

    @property
    def warning(self) -> str | None:
        if not self.unknown:
            return None
        return (f"{self.engine} flag(s) sizer does not know, ignored: {' '.join(self.unknown)} "
                "(if they change memory, the plan does not show it)")


def parse_int(text: str, flag: str) -> int:
    """An integer as vLLM reads its token counts: 16000, 16k (x1000), 16K (x1024), 1m, 1M, also 1_000."""
    m = _HUMAN_INT.fullmatch(text.replace("_", ""))
    if not m or (m["suffix"] == "" and "." in m["n"]):
        raise UsageError(f"{flag} {text!r}: expected an integer (16000, 16k = 16000 or 16K = 16384)")
    return int(float(m["n"]) * _HUMAN_SUFFIX[m["suffix"]])


def _value(flag: Flag, spelling: str, text: str):
    if flag.kind == INT:
        return parse_int(text, spelling)
    if flag.kind == FLOAT:
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"{spelling} {text!r}: expected a number") from None
    if flag.kind == "onoff":
        value = text.lower()
        if value not in ("on", "off", "auto", "1", "0", "true", "false"):
            raise UsageError(f"{spelling} {text!r}: expected on, off or auto")
        return {"1": "on", "true": "on", "0": "off", "false": "off"}.get(value, value)
    return text


def _takes_value(flag: Flag, nxt: str | None) -> bool:
    if flag.kind == BOOL:
        return False
    if flag.kind == "onoff":           # llama.cpp's -fa: a bare flag (older builds) or on|off|auto
        return nxt is not None and nxt.lower() in ("on", "off", "auto", "1", "0", "true", "false")
    return True


def parse_engine_args(engine: str, text: str | list[str]) -> EngineArgs:
    """Read `text` (a string as typed in a shell, or already split) as `engine`'s flags."""
    table = FLAG_TABLES.get(engine)
    if table is None:
        raise UsageError(f"--engine-args: sizer reads the flags of vllm, sglang and llamacpp, not {engine!r}")
    tokens = split_command(text) if isinstance(text, str) else list(text)
    settings, accepted, unknown, positional = {}, {}, [], []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("-") or _is_number(token):
            positional.append(token)
            continue
        spelling, eq, inline = token.partition("=")
        flag = table.get(spelling)
        if flag is None and (m := _NEGATED.match(spelling)) and (positive := table.get("--" + m["rest"])):
            if positive.kind == BOOL:                       # vLLM's --no-enable-prefix-caching and friends
                (settings if positive.memory else accepted)[positive.setting] = False
                continue
        if flag is None:
            unknown.append(token)
            if not eq and i < len(tokens) and not tokens[i].startswith("-"):
                unknown.append(tokens[i])                   # its value, most likely
                i += 1
            continue
        if eq:
            value = _value(flag, spelling, inline) if flag.kind != BOOL else parse_bool(inline, spelling)
        elif _takes_value(flag, tokens[i] if i < len(tokens) else None):
            if i >= len(tokens):
                raise UsageError(f"{engine} flag {spelling} needs a value")
            value = _value(flag, spelling, tokens[i])
            i += 1
        else:
            value = True if flag.kind == BOOL else "on"
        (settings if flag.memory else accepted)[flag.setting] = value
    model = accepted.pop("model", None) or accepted.pop("hf_repo", None)
    if positional:
        if len(positional) > 1 or model:
            raise UsageError(f"{engine} arguments: unexpected {' '.join(positional)!r} (only a launch line names "
                             "the model as a word of its own)")
        model = positional[0]
    return EngineArgs(engine, text if isinstance(text, str) else shlex.join(text), settings, accepted,
                      tuple(unknown), model)


def parse_bool(text: str, spelling: str) -> bool:
    """An engine setting's on/off value as users write it (1/0, true/false, yes/no, on/off)."""
    value = text.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise UsageError(f"{spelling}={text}: expected true or false")


def _is_number(token: str) -> bool:
    return bool(re.fullmatch(r"-\d+(\.\d+)?", token))


def split_command(text: str) -> list[str]:
    """Shell words of `text`: line continuations joined, comments dropped, quotes as the shell reads them."""
    joined = re.sub(r"\\\r?\n", " ", text)
    try:
        return shlex.split(joined, comments=True)
    except ValueError as e:
        raise UsageError(f"cannot read the command line: {e}") from None


# ---------------------------------------------------------------------------------------------
# Whole launch lines

_ENV_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_ENTRY_POINTS = {
    "vllm.entrypoints.openai.api_server": "vllm", "vllm.entrypoints.api_server": "vllm",
    "sglang.launch_server": "sglang", "sglang.launch_server_grpc": "sglang",
}
_PROGRAMS = {"llama-server": "llamacpp", "llama-cli": "llamacpp", "server": "llamacpp", "main": "llamacpp"}
_IMAGE = re.compile(r"^(?:[\w.-]+/)+(?P<repo>vllm-openai|sglang)(?::v?(?P<tag>[\w.+-]+))?$")


def parse_command(text: str) -> EngineArgs:
    """A whole launch line: `vllm serve MODEL ...`, `python -m vllm.entrypoints.openai.api_server --model M`,
    `python -m sglang.launch_server --model-path M`, `llama-server -m M.gguf`, `docker run ...
    vllm/vllm-openai:v0.6.4 --model M` (the image tag is the version), with leading VAR=value words
    (CUDA_VISIBLE_DEVICES and the engine's own variables are kept in `env`)."""
    words = split_command(text)
    env = {}
    while words and _ENV_WORD.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    engine, rest, version = _locate_engine(words)
    if engine is None:
        raise UsageError("--command: not a launch line sizer reads (vllm serve MODEL ..., python -m "
                         "vllm.entrypoints.openai.api_server ..., python -m sglang.launch_server ..., "
                         "llama-server -m FILE ..., or a docker run of the vllm/vllm-openai or lmsysorg/sglang image)")
    args = parse_engine_args(engine, rest)
    if args.model is None:
        raise UsageError(f"--command: the launch line names no model ({'--model-path' if engine == 'sglang' else '--model'})")
    return EngineArgs(args.engine, text, args.settings, args.accepted, args.unknown, args.model, env, version)


def _locate_engine(words: list[str]) -> tuple[str | None, list[str], str | None]:
    """(engine, the words after the program, the version a docker image tag names)."""
    version = None
    for i, word in enumerate(words):
        base = word.rsplit("/", 1)[-1]
        if base == "vllm" and i + 1 < len(words) and words[i + 1] == "serve":
            return "vllm", words[i + 2:], version
        if base == "sglang" and i + 1 < len(words) and words[i + 1] == "serve":
            return "sglang", words[i + 2:], version
        if word == "-m" and i + 1 < len(words) and words[i + 1] in _ENTRY_POINTS:
            return _ENTRY_POINTS[words[i + 1]], words[i + 2:], version
        if base in _PROGRAMS and (base.startswith("llama-") or i == 0):
            return _PROGRAMS[base], words[i + 1:], version
        if (m := _IMAGE.match(word)) and i > 0 and _is_docker(words[:i]):
            version = m["tag"] if m["tag"] and m["tag"][0].isdigit() else None
            return ("vllm" if m["repo"].startswith("vllm") else "sglang"), _after_image(words[i + 1:]), version
    return None, [], None


def _is_docker(words: list[str]) -> bool:
    return any(w.rsplit("/", 1)[-1] in ("docker", "podman") for w in words) and "run" in words


def _after_image(words: list[str]) -> list[str]:
    """The vLLM image's entry point is the OpenAI server; the SGLang image needs its command spelled out."""
    for i, word in enumerate(words):
        if word == "-m" and i + 1 < len(words) and words[i + 1] in _ENTRY_POINTS:
            return words[i + 2:]
        if word == "serve" and i > 0 and words[i - 1].rsplit("/", 1)[-1] in ("vllm", "sglang"):
            return words[i + 1:]
    return words


# ---------------------------------------------------------------------------------------------
# The flags as sizer's `fit` options

# vLLM --kv-cache-dtype / SGLang --kv-cache-dtype / llama.cpp -ctk,-ctv -> sizer's --kv-dtype (None: the model's)
KV_DTYPES = {"auto": None, "fp8": "fp8", "fp8_e4m3": "fp8", "fp8_e5m2": "fp8", "fp8_inc": "fp8",
              "bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "f16": "fp16", "fp16": "fp16",
              "f32": "fp32", "q8_0": "q8_0", "q4_0": "q4_0"}
# --quantization -> the precision it loads an unquantized checkpoint at (vLLM quantizes online only
# to fp8 and, in releases that had it, bitsandbytes; a quantized checkpoint names its own method)
_ONLINE_QUANTIZATION = {"fp8": "fp8", "bitsandbytes": "nf4"}     # bitsandbytes: 4-bit nf4, as vLLM loads it
DTYPES = {"auto": None, "half": "fp16", "float16": "fp16", "bfloat16": "bf16", "float": "fp32",
           "float32": "fp32"}
# settings sizer's plan takes today, per engine: setting -> fit option
_FIT_OPTIONS = {
    "vllm": {"tensor_parallel_size": "tensor_parallel", "pipeline_parallel_size": "pipeline_parallel",
             "max_model_len": "context_length", "gpu_memory_utilization": "gpu_memory_utilization",
             "max_num_seqs": "max_num_seqs", "max_num_batched_tokens": "max_num_batched_tokens",
             "enforce_eager": "enforce_eager", "data_parallel_size": "data_parallel",
             "enable_expert_parallel": "expert_parallel", "enable_lora": "enable_lora",
             "max_lora_rank": "max_lora_rank", "max_loras": "max_loras"},
    "sglang": {"tensor_parallel_size": "tensor_parallel", "pipeline_parallel_size": "pipeline_parallel",
               "max_model_len": "context_length", "mem_fraction_static": "mem_fraction_static",
               "chunked_prefill_size": "chunked_prefill_size", "page_size": "page_size",
               "data_parallel_size": "data_parallel", "enable_dp_attention": "dp_attention",
               "max_running_requests": "max_running_requests"},
    "llamacpp": {},
}
# llama-server's flags that become its profile's settings (sizer.plan.llamacpp.settings_from_flags)
LLAMACPP_SETTINGS = frozenset({
    "max_model_len", "batch_size", "ubatch_size", "n_gpu_layers", "flash_attn", "parallel", "cache_type_k",
    "cache_type_v", "n_cpu_moe", "cpu_moe", "override_tensor", "split_mode", "tensor_split", "main_gpu",
    "no_kv_offload", "mmap", "no_mmap", "mlock", "fit", "fit_target", "kv_unified"})
# what each fit option is called on sizer's command line, for messages
SIZER_FLAG = {"tensor_parallel": "--tensor-parallel", "pipeline_parallel": "--pipeline-parallel",
              "context_length": "--context-length", "gpu_memory_utilization": "--gpu-memory-utilization",
              "max_num_seqs": "--max-num-seqs", "max_num_batched_tokens": "--max-num-batched-tokens",
              "kv_dtype": "--kv-dtype", "precision": "--precision", "enforce_eager": "--enforce-eager",
              "mem_fraction_static": "--mem-fraction-static", "chunked_prefill_size": "--chunked-prefill-size",
              "page_size": "--page-size", "data_parallel": "--data-parallel", "expert_parallel": "--expert-parallel"}


@dataclass(frozen=True)
class FitSettings:
    """What the engine flags set among `fit`'s options, and the flags sizer reads but does not model yet."""

    options: dict
    not_modelled: tuple[str, ...]
    defaults: dict = field(default_factory=dict)     # what a launch line implies where it says nothing


@dataclass(frozen=True)
class EngineFlags:
    """The engine's flags as the user gave them (`--engine-args` or `--command`), for `fit`."""

    args: EngineArgs
    source: str                     # "--engine-args" or "--command"

    @classmethod
    def from_args(cls, engine: str, text: str) -> "EngineFlags":
        args = parse_engine_args(engine, text)
        if args.model is not None:
            raise UsageError(f"--engine-args names a model ({args.model}): give MODEL as sizer's argument, or the "
                             "whole launch line with --command")
        return cls(args, "--engine-args")

    @classmethod
    def from_command(cls, text: str) -> "EngineFlags":
        return cls(parse_command(text), "--command")

    def settings_for(self, spec) -> FitSettings:
        """The flags as `fit` options for `spec` (a quantized checkpoint's --quantization changes nothing)."""
        quantized = spec.checkpoint is not None or bool(spec.native_precision and spec.native_precision not in
                                                         ("bf16", "fp16", "fp32"))
        settings = fit_settings(self.args, spec.native_precision if quantized else None)
        if self.source == "--command":
            # a launch line runs one configuration: the checkpoint as stored (or as --dtype / --quantization
            # say) and, without --max-model-len, the model's whole context (vLLM's and SGLang's default)
            defaults = {"context_length": spec.max_context_length or None,
                        "precision": None if spec.checkpoint is not None else (spec.native_precision or "bf16")}
            settings = FitSettings(settings.options, settings.not_modelled, {k: v for k, v in defaults.items() if v})
        return settings

    def notes(self, settings: FitSettings) -> list[str]:
        out = []
        if self.args.version:
            out.append(f"{self.source}: the image names {self.args.engine} {self.args.version}, the release planned")
        if settings.not_modelled:
            out.append(f"{self.source}: read but not yet in sizer's plan: {', '.join(settings.not_modelled)}")
        if self.args.warning:
            out.append(self.args.warning)
        return out


def fit_settings(args: EngineArgs, stored_precision: str | None = None) -> FitSettings:
    """`fit` options from the engine's flags. stored_precision: the checkpoint's own (a quantized
    checkpoint's --quantization names what it stores and changes nothing)."""
    mapping = _FIT_OPTIONS[args.engine]
    options, not_modelled = {}, []
    if args.engine == "llamacpp":
        return _llamacpp_fit_settings(args)
    for setting, value in args.settings.items():
        if setting in mapping:
            options[mapping[setting]] = value
        elif setting in ("kv_cache_dtype", "cache_type_k", "cache_type_v"):
            options["kv_dtype"] = _kv_dtype(args, setting, value, options.get("kv_dtype"))
        elif setting == "quantization":
            if stored_precision is None and value in _ONLINE_QUANTIZATION:
                options["precision"] = _ONLINE_QUANTIZATION[value]
            elif stored_precision is None:
                raise UsageError(f"{_spelling(args, setting)} {value}: vLLM loads a checkpoint quantized with "
                                 f"{value}; pass that checkpoint (a folder or Hub id) or a precision (-p)")
        elif setting == "dtype":
            if value not in DTYPES:
                raise UsageError(f"{_spelling(args, setting)} {value!r}: expected auto, half, float16, bfloat16 or float32")
            if DTYPES[value] and stored_precision is None and "quantization" not in args.settings:
                options["precision"] = DTYPES[value]
        elif setting == "flash_attn":
            options["flash_attention"] = value
        elif setting == "expert_parallel_size":              # SGLang --ep-size N: experts over N ranks
            options["expert_parallel"] = int(value) > 1
        else:
            not_modelled.append(_spelling(args, setting))
    return FitSettings(options, tuple(not_modelled))


def _llamacpp_fit_settings(args: EngineArgs) -> FitSettings:
    """llama-server's flags: -c is the total n_ctx, split over the -np slots (each slot's context is
    sizer's --context-length); the rest go to the llama.cpp profile whole (`llamacpp_settings`)."""
    from sizer.plan.llamacpp import settings_from_flags

    flags = {k: v for k, v in args.settings.items() if k in LLAMACPP_SETTINGS}
    try:
        settings = settings_from_flags(flags)
    except ValueError as e:
        raise UsageError(str(e)) from None
    options: dict = {"llamacpp_settings": flags}
    if settings.n_ctx:
        slots = 1 if settings.kv_unified else (settings.n_seq_max or 1)
        options["context_length"] = settings.n_ctx // slots
    if "flash_attn" in flags:
        options["flash_attention"] = flags["flash_attn"]
    kv = KV_DTYPES.get(settings.type_k)
    if settings.type_k == settings.type_v and kv is not None and ("cache_type_k" in flags or "cache_type_v" in flags):
        options["kv_dtype"] = kv
    not_modelled = tuple(_spelling(args, k) for k in args.settings if k not in LLAMACPP_SETTINGS)
    return FitSettings(options, not_modelled)


def _kv_dtype(args: EngineArgs, setting: str, value: str, before: str | None) -> str | None:
    key = str(value).lower()
    if key not in KV_DTYPES:
        raise UsageError(f"{_spelling(args, setting)} {value!r}: a KV cache dtype sizer does not know "
                         f"(known: {', '.join(KV_DTYPES)})")
    dtype = KV_DTYPES[key]
    if before is not None and dtype != before:
        raise UsageError("-ctk and -ctv with different types: sizer sizes one KV cache type for K and V")
    return dtype


def _spelling(args: EngineArgs, setting: str) -> str:
    """The flag as the engine spells it (its first long spelling)."""
    table = FLAG_TABLES[args.engine]
    names = [s for s, f in table.items() if f.setting == setting and s.startswith("--") and "_" not in s]
    return names[0] if names else setting


def merge_fit_options(explicit: dict, from_engine: FitSettings, source: str) -> dict:
    """sizer's own options beside the engine's flags: equal values agree, different ones are refused."""
    merged = dict(explicit)
    for option, value in from_engine.defaults.items():
        if merged.get(option) is None and from_engine.options.get(option) is None:
            merged[option] = value
    for option, value in from_engine.options.items():
        if value is None:
            continue
        mine = explicit.get(option)
        if mine is None:
            merged[option] = value
        elif not _same(mine, value):
            raise UsageError(f"{SIZER_FLAG.get(option, option)} {_text(mine)} contradicts {source} "
                             f"({option.replace('_', ' ')} {_text(value)}): give it once")
    return merged


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)):
        return len(a) == 1 and _same(a[0], b)
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) < 1e-9
    return str(a).lower() == str(b).lower()


def _text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
