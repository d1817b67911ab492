"""Engine startup logs read into numbers: what vLLM or SGLang measured while it started (weights, KV
cache, CUDA graphs, activation peak), the settings it ran with, its version and its model.

A log is read after taking off what terminals and launchers add: ANSI colours (also with the escape
byte lost, `[1;36m`), the `vLLM STDOUT: ` and srun `0: ` prefixes, the process tags
`(VllmWorker rank=1 pid=219)`, `(EngineCore_DP0 pid=..)`, `(Worker_TP1 pid=..)`, `(RayWorkerWrapper
pid=.., ip=..)` and Ray's `[repeated 7x across cluster]`. A line with no log time near its start
(level and time, or SGLang's `[time TPn]`) continues the line before it, glued without a space:
vLLM 0.6.5-0.7.3 print the profiling summary as one message with embedded newlines, and pasted logs
wrap long lines, sometimes inside a word.

Memory is kept in bytes. Both engines print GiB (x 2**30) whatever the unit says ("GB" in vLLM's
"Loading model weights took" and in every SGLang line). A quantity printed by several workers (TP
ranks, PP stages, one KV config per worker) is kept whole in `measured_by_rank`, and `measured` holds
the minimum, the one the engine goes by (vLLM unifies the workers' KV configs to the smallest, SGLang
takes the minimum free memory over its ranks). An SGLang rank that prints a quantity a second time is
loading the speculative draft model after the target: that value is kept as `draft_<quantity>`.

The formats, per version: docs/reference/vllm-versions-v0.md and vllm-versions-v1.md (section 5),
docs/reference/sglang-memory.md ("Which log line first appears where").
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field, replace

from sizer.errors import InputFileError
from sizer.io import read_text_input
from sizer.plan.engine_args import FLAG_TABLES, JSON

GIB = 2**30
VLLM, SGLANG = "vllm", "sglang"
FILL, ARGS, CONFIG = 0, 1, 2        # how much a settings source is trusted: a later, resolved source wins

# --- what terminals and launchers add to a line
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|\[\d+(?:;\d+)*m")
LAUNCHER_PREFIX = re.compile(r"^(?:\d{1,4}: |vLLM STDOUT: )+")
PROCESS_TAGS = re.compile(r"^(?:\((?P<worker>[A-Za-z]\w*(?: rank=\d+)? pid=\d+(?:, ip=[\w.:]+)?)\)\s*)+")
RAY_REPEATED = re.compile(r"\s*\[repeated (?P<times>\d+)x across cluster\]")
# a log line has its time near the start (after a docker compose `vllm-1 | ` or journald prefix, say)
LOG_TIME = re.compile(r"(?:INFO|WARNING|WARN|ERROR|DEBUG|CRITICAL)\s+\d\d-\d\d \d\d:\d\d:\d\d"
                      r"|\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")
LOG_TIME_WITHIN = 120
SGLANG_RANK = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (?P<rank>[A-Z]+\d+(?: [A-Z]+\d+)*)\]")

# --- which engine wrote the log
VLLM_SIGNS = re.compile(r"vLLM API server version|vLLM server version|LLM engine \(v|non-default args: \{"
                        r"|Loading model weights took|Model loading took|GPU KV cache size:"
                        r"|# (?:GPU|cuda|CUDA) blocks:|Available KV cache memory:")
SGLANG_SIGNS = re.compile(r"server_args=ServerArgs\(|Load weight (?:begin|end)\.|KV Cache is allocated\."
                          r"|max_total_num_tokens=|Memory pool end\.")

# --- version and model
VERSION_LINES = (
    re.compile(r"vLLM API server version (?P<version>\S+)"),
    re.compile(r"vLLM server version (?P<version>[^\s,]+)"),
    re.compile(r"LLM engine \(v(?P<version>[^)\s]+)\)"),
    re.compile(r"█\s+version\s+(?P<version>\S+)"),             # the 0.15+ ASCII logo
    re.compile(r"\bvLLM version (?P<version>\S+)"),
)
MODEL_LINES = (
    re.compile(r"█\s+model\s+(?P<model>\S+)"),
    re.compile(r"vLLM server version [^\s,]+, serving model (?P<model>\S+)"),
)

# --- settings lines: key=value lists and a dict literal
NAMESPACE_ARGS = re.compile(r"\bargs: Namespace\((?P<body>.*)")
NON_DEFAULT_ARGS = re.compile(r"non-default args: (?P<body>\{.*)")
ENGINE_CONFIG = re.compile(r"LLM engine \(v[^)\s]*\) with config: (?P<body>.*)")
SERVER_ARGS = re.compile(r"server_args(?:=ServerArgs\(| \.\.\. )(?P<body>.*)")      # also as quoted, elided with " ... "
QUOTED = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
KEY_VALUE = re.compile(rf"(?<![\w.])(?P<key>[a-z_][a-z0-9_]*)=(?P<value>{QUOTED}|[^,\s)]+)")
DICT_ITEM = re.compile(rf"'(?P<key>\w+)': (?P<value>{QUOTED}|[^,}}]+)")
CONFIG_NAMES = {"max_seq_len": "max_model_len", "chunked_prefill_enabled": "enable_chunked_prefill"}

# --- lines that state one setting each (they fill what the settings lines leave open)
SETTING_LINES = {
    VLLM: (
        re.compile(r"Using max model len (?P<max_model_len>\d+)"),
        re.compile(r"Chunked prefill is enabled with max_num_batched_tokens=(?P<max_num_batched_tokens>\d+)"),
        re.compile(r"x gpu_memory_utilization \((?P<gpu_memory_utilization>[\d.]+)\)"),
        re.compile(r"Memory profiling results: .*gpu_memory_utilization=(?P<gpu_memory_utilization>[\d.]+)"),
        re.compile(r"Desired GPU memory utilization is \((?P<gpu_memory_utilization>[\d.]+),"),
        re.compile(r"The current --gpu-memory-utilization=(?P<gpu_memory_utilization>[\d.]+)"),
        re.compile(r"increase --gpu-memory-utilization from (?P<gpu_memory_utilization>[\d.]+) to"),
        re.compile(r"Setting attention block size to (?P<block_size>\d+) tokens"),
    ),
    SGLANG: (
        re.compile(r"Load weight end\..*?dtype=(?:torch\.)?(?P<dtype>\w+)"),
        re.compile(r"max_total_num_tokens=.*?context_len=(?P<max_model_len>\d+)"),
    ),
}

# --- what Unsloth's load_vllm prints before it starts vLLM and passes to it as engine arguments
# (unsloth_zoo/vllm_utils.py@2025.2.4 and @2025.6.8: `gpu_memory_utilization = actual_gpu_memory_utilization`,
# `max_num_batched_tokens = chunked_prefill_tokens`, `max_num_seqs = approx_max_num_seqs`); the percentage
# is printed to two decimals, finer than vLLM's own "gpu_memory_utilization (0.70)"
UNSLOTH_ARGS = (
    re.compile(r"Unsloth: vLLM loading \S+ with actual GPU utilization = (?P<gpu_memory_utilization_percent>[\d.]+)%"),
    re.compile(r"Unsloth: Using conservativeness = [\d.]+\. Chunked prefill tokens = (?P<max_num_batched_tokens>\d+)\. "
               r"Num Sequences = (?P<max_num_seqs>\d+)\."),
    re.compile(r"Unsloth: Retrying vLLM to process (?P<max_num_seqs>\d+) sequences"),   # after an out-of-memory start
)
# --- lines that show a setting without printing it: (pattern, setting, value)
FLAG_LINES = {
    # vLLM's LoRA manager picks its Punica wrapper only with --enable-lora (lora/punica_wrapper/punica_selector.py)
    VLLM: ((re.compile(r"\] Using Punica\w+\."), "enable_lora", True),),
    SGLANG: (),
}
# Unsloth's BitsAndBytesConfig wrapper prints the arguments vLLM's config was made with (unsloth_zoo
# vllm_utils.py patch_vllm_compute_dtype): the checkpoint's quantization_config, or vLLM's defaults
BNB_CONFIG_LINE = re.compile(r"Bitsandbytes config using kwargs = (?P<body>\{.*\})")
BNB_SETTINGS = ("bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "llm_int8_skip_modules")

# --- measured quantities: each named group is one; a `_gib` group becomes `_bytes` (x 2**30)
NUMBER = r"-?\d+(?:\.\d+)?"
MEASURED_LINES = {
    VLLM: (
        re.compile(rf"Loading model weights took (?P<weights_gib>{NUMBER}) GB"),                     # 0.4-0.8 V0
        re.compile(rf"Model loading took (?P<weights_gib>{NUMBER}) Gi?B"),                            # 0.8+
        re.compile(rf"Memory profiling takes (?P<memory_profiling_secs>{NUMBER}) seconds"),           # 0.6.5-0.8 V0
        re.compile(rf"total_gpu_memory \((?P<total_gpu_memory_gib>{NUMBER}) ?GiB\) x gpu_memory_utilization "
                   rf"\([\d.]+\) = (?P<requested_memory_gib>{NUMBER}) ?GiB"),
        re.compile(rf"non_torch_memory takes (?P<non_torch_gib>{NUMBER}) ?GiB"),
        re.compile(rf"PyTorch activation peak memory takes (?P<activation_peak_gib>{NUMBER}) ?GiB"),
        re.compile(rf"the rest of the memory reserved for KV Cache is (?P<kv_cache_gib>{NUMBER}) ?GiB"),
        re.compile(rf"Memory profiling results: total_gpu_memory=(?P<total_gpu_memory_gib>{NUMBER})GiB "   # 0.6.4
                   rf"initial_memory_usage=(?P<initial_memory_usage_gib>{NUMBER})GiB "
                   rf"peak_torch_memory=(?P<peak_torch_memory_gib>{NUMBER})GiB "
                   rf"memory_usage_post_profile=(?P<memory_usage_post_profile_gib>{NUMBER})Gi[bB] "
                   rf"non_torch_memory=(?P<non_torch_gib>{NUMBER})GiB kv_cache_size=(?P<kv_cache_gib>{NUMBER})GiB"),
        re.compile(r"# (?:GPU|cuda|CUDA) blocks: (?P<num_gpu_blocks>\d+)(?:, # CPU blocks: (?P<num_cpu_blocks>\d+))?"),
        re.compile(r"with initialization after num_gpu_blocks is: (?P<num_gpu_blocks>\d+)"),         # V1 stats logger
        re.compile(rf"Available KV cache memory: (?P<kv_cache_gib>{NUMBER}) GiB"),                    # 0.9.1+
        re.compile(r"GPU KV cache size: (?P<kv_tokens>\d[\d,]*) tokens"),
        re.compile(rf"Maximum concurrency for (?P<max_concurrency_tokens>\d[\d,]*) tokens per request: "
                   rf"(?P<max_concurrency>{NUMBER})x"),
        re.compile(rf"Graph capturing finished in (?P<cuda_graph_capture_secs>{NUMBER}) secs"
                   rf"(?:, took (?P<cuda_graph_gib>{NUMBER}) GiB)?"),
        re.compile(rf"torch\.compile takes (?P<torch_compile_secs>{NUMBER}) s in total"),
        re.compile(rf"Free memory on device \((?P<free_gpu_memory_at_start_gib>{NUMBER})/"                # 0.10.2-0.11
                   rf"(?P<total_gpu_memory_gib>{NUMBER}) GiB\) on startup\. Desired GPU memory utilization is "
                   rf"\([\d.]+, (?P<requested_memory_gib>{NUMBER}) GiB\)\. Actual usage is [\d.]+ GiB for weight, "
                   rf"(?P<activation_peak_gib>{NUMBER}) GiB for peak activation, "
                   rf"(?P<non_torch_gib>{NUMBER}) GiB for non-torch memory"),
        re.compile(rf"Free memory on device \((?P<free_gpu_memory_at_start_gib>{NUMBER})/"                # 0.2x
                   rf"(?P<total_gpu_memory_gib>{NUMBER}) GiB\) on startup\. Desired GPU memory utilization is "
                   rf"\([\d.]+, (?P<requested_memory_gib>{NUMBER}) GiB\)\. Actual usage is (?P<consumed_gib>{NUMBER}) GiB "
                   rf"for consumed memory \(weights \+ non-torch\), (?P<activation_peak_gib>{NUMBER}) GiB for peak "
                   rf"activation, and (?P<cuda_graph_profiled_gib>{NUMBER}) GiB for CUDAGraph memory"),
        re.compile(rf"Current kv cache memory in use is (?P<kv_cache_in_use_gib>{NUMBER}) GiB"),
        re.compile(r"--kv-cache-memory=(?P<kv_cache_memory_fit_bytes>\d+)`?(?: \([\d.]+ GiB\))? to fit into requested "
                   r"memory, or `?--kv-cache-memory=(?P<kv_cache_memory_full_bytes>\d+)`?(?: \([\d.]+ GiB\))? to fully utilize"),
        re.compile(r"Current kv cache memory in use is (?P<kv_cache_in_use_bytes>\d+) bytes"),
        re.compile(rf"Estimated CUDA graph memory: (?P<cuda_graph_estimated_gib>{NUMBER}) GiB"),      # 0.19+
        re.compile(rf"increase --gpu-memory-utilization from [\d.]+ to "
                   rf"(?P<gpu_memory_utilization_with_graph_profiling>{NUMBER}) to maintain"),
        re.compile(rf"is equivalent to --gpu-memory-utilization=(?P<gpu_memory_utilization_without_graph_profiling>"
                   rf"{NUMBER}) without CUDA graph memory profiling"),
    ),
    SGLANG: (
        re.compile(rf"Init torch distributed ends\. mem usage=(?P<init_distributed_gib>{NUMBER}) GB"),
        re.compile(rf"Load weight begin\. avail mem=(?P<avail_before_load_gib>{NUMBER}) GB"),
        re.compile(rf"Load weight end\..*?avail mem=(?P<avail_after_load_gib>{NUMBER}) GB"
                   rf"(?:, mem usage=(?P<weights_gib>{NUMBER}) GB)?"),
        re.compile(rf"KV Cache is allocated\.(?: dtype: [\w.]+,?)?(?: #tokens: (?P<kv_tokens>\d+),)? "
                   rf"K size: (?P<kv_k_gib>{NUMBER}) GB, V size: (?P<kv_v_gib>{NUMBER}) GB"),
        re.compile(rf"Memory pool end\. avail mem=(?P<avail_after_pool_gib>{NUMBER}) GB"),
        re.compile(rf"Capture cuda graph begin\..*?avail mem=(?P<avail_before_cuda_graph_gib>{NUMBER}) GB"),
        re.compile(rf"Capture cuda graph end\. Time elapsed: (?P<cuda_graph_capture_secs>{NUMBER}) s"),
        re.compile(rf"Capture cuda graph end\..*?mem usage=(?P<cuda_graph_gib>{NUMBER}) GB"),
        re.compile(rf"Capture cuda graph end\..*?avail mem=(?P<avail_after_cuda_graph_gib>{NUMBER}) GB"),
        re.compile(r"max_total_num_tokens=(?P<max_total_num_tokens>\d+)"),
        re.compile(r"max_total_num_tokens=.*?chunked_prefill_size=(?P<chunked_prefill_size>-?\d+)"),
        re.compile(r"max_total_num_tokens=.*?max_prefill_tokens=(?P<max_prefill_tokens>\d+)"),
        re.compile(r"max_total_num_tokens=.*?max_running_requests=(?P<max_running_requests>\d+)"),
        re.compile(r"max_total_num_tokens=.*?context_len=(?P<context_len>\d+)"),
    ),
}

# --- what a whole startup log has: (any of these quantities, what is missing without them)
MILESTONES = {
    VLLM: ((("weights_bytes",), "no model-loading line ('Model loading took' / 'Loading model weights took')"),
           (("kv_cache_bytes", "num_gpu_blocks", "kv_tokens"),
            "no KV cache line ('Available KV cache memory' / '# GPU blocks' / 'GPU KV cache size')")),
    SGLANG: ((("avail_after_load_bytes",), "no 'Load weight end' line"),
             (("kv_k_bytes", "avail_after_pool_bytes"), "no KV pool line ('KV Cache is allocated' / 'Memory pool end')"),
             (("max_total_num_tokens",), "no scheduler line ('max_total_num_tokens=...')")),
}
LOOKED_FOR = ("sizer reads vLLM startup logs ('vLLM API server version', 'Model loading took', 'GPU KV cache size', "
              "'# GPU blocks') and SGLang ones ('server_args=ServerArgs(', 'Load weight end', 'KV Cache is allocated', "
              "'max_total_num_tokens=')")


@dataclass(frozen=True)
class EngineLog:
    """One engine's startup log, read.

    settings: the engine's settings under vLLM's names as in sizer/plan/engine_args.py (SGLang's tp_size is
    tensor_parallel_size, context_length max_model_len; its own mem_fraction_static, chunked_prefill_size,
    cuda_graph_max_bs, ... keep theirs). measured: memory in bytes (`*_bytes`), counts and seconds as printed;
    the minimum over workers where several print it. measured_by_rank: every value, in log order, of the
    quantities printed more than once. lines: quantity -> the line(s) it was read from, for quoting.
    notes: what could not be read.
    """

    engine: str
    origin: str
    version: str | None
    model: str | None
    settings: dict = field(default_factory=dict)
    measured: dict = field(default_factory=dict)
    measured_by_rank: dict = field(default_factory=dict)
    lines: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()


@dataclass
class _Record:
    """One log message: its physical lines glued (decorations off), who printed it, and the lines as printed."""

    worker: str = ""
    printed: list = field(default_factory=list)        # (offset in text, the line as printed)
    pieces: list = field(default_factory=list)         # the lines' messages, glued into `text` once all are in
    length: int = 0
    text: str = ""

    def add(self, line: str, body: str) -> None:
        self.printed.append((self.length, line))
        self.pieces.append(body)
        self.length += len(body)

    def quote(self, start: int, end: int) -> str:
        stops = [offset for offset, _ in self.printed[1:]] + [len(self.text)]
        return "\n".join(line for (offset, line), stop in zip(self.printed, stops) if offset < end and stop > start)

    @property
    def rank(self) -> str:
        m = SGLANG_RANK.search(self.text, 0, 80)
        return self.worker or (m["rank"] if m else "")


@dataclass
class _Reader:
    """What has been read so far."""

    engine: str
    values: dict = field(default_factory=dict)          # quantity -> [(value, line)]
    seen: set = field(default_factory=set)              # (SGLang rank, quantity)
    settings: dict = field(default_factory=dict)
    trust: dict = field(default_factory=dict)           # setting -> FILL / ARGS / CONFIG
    version: str | None = None
    settings_lines: int = 0
    lines: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def measure(self, group: str, text: str, rank: str, line: str) -> None:
        try:
            key, value = _quantity(group, text)
        except ValueError:                              # a number too long for int()
            self.notes.append(f"{group}: cannot read {text[:40]!r}")
            return
        if self.engine == SGLANG and (rank, key) in self.seen:
            key = "draft_" + key
        self.seen.add((rank, key))
        self.values.setdefault(key, []).append((value, line))

    def put(self, name: str, value, trust: int) -> None:
        """A setting: a value beats no value (None); between values, the more trusted (or later equal) source wins."""
        if name not in self.settings or (value is not None and (self.settings[name] is None or
                                                                 trust >= self.trust[name])):
            self.settings[name], self.trust[name] = value, trust


def with_settings(log: EngineLog, settings: dict, origin: str) -> EngineLog:
    """The log with the settings it does not print taken from `settings` (a launch line's, under the same
    names); what the log prints wins. A log cut to its last lines (no `server_args=` / `args:` line) says
    nothing of TP or the memory fraction; origin names where the rest came from, in the notes."""
    added = {k: v for k, v in settings.items() if log.settings.get(k) is None and v is not None}
    if not added:
        return log
    note = f"settings the log does not print, from {origin}: " + ", ".join(f"{k}={v}" for k, v in added.items())
    return replace(log, settings={**log.settings, **added}, notes=log.notes + (note,))


def read_engine_log_file(path: str | os.PathLike) -> EngineLog:
    return read_engine_log(read_text_input(path, "engine log"), str(path))


def read_engine_log(text: str, origin: str) -> EngineLog:
    """A vLLM or SGLang startup log (its text; `origin` names it in messages)."""
    if not text.strip():
        raise InputFileError(f"{origin}: empty, not an engine log ({LOOKED_FOR})")
    reader = _Reader(_engine(text, origin))
    for record in _records(text, reader.notes):
        _read_record(reader, record)
    return _finish(reader, origin)


def _engine(text: str, origin: str) -> str:
    vllm, sglang = len(VLLM_SIGNS.findall(text)), len(SGLANG_SIGNS.findall(text))
    if not vllm and not sglang:
        raise InputFileError(f"{origin}: not a vLLM or SGLang startup log ({LOOKED_FOR})")
    return VLLM if vllm >= sglang else SGLANG


def _records(text: str, notes: list) -> list[_Record]:
    """The log's messages; a line that does not start like a log line continues the message before it."""
    records, current, folded = [], None, 0
    for printed in text.splitlines():
        line = ANSI_COLOUR.sub("", printed).rstrip()
        body, worker, times = _undecorated(line)
        folded += times
        if not body:
            current = None
            continue
        if current is None or LOG_TIME.search(body, 0, LOG_TIME_WITHIN):
            current = _Record(worker=worker)
            records.append(current)
        current.add(line, body)
    for record in records:
        record.text = "".join(record.pieces)
    if folded:
        notes.append(f"Ray folded {folded} lines of other workers into '[repeated Nx across cluster]': "
                     "only the values shown are read")
    return records


def _undecorated(line: str) -> tuple[str, str, int]:
    """(the message, the process that printed it, how many lines Ray folded into it)."""
    body = LAUNCHER_PREFIX.sub("", line)
    tags = PROCESS_TAGS.match(body)
    worker = tags["worker"] if tags else ""
    body = body[tags.end():] if tags else body
    repeated = RAY_REPEATED.search(body)
    if repeated:
        body = RAY_REPEATED.sub("", body)
    return body.strip(), worker, int(repeated["times"]) if repeated else 0


def _read_record(reader: _Reader, record: _Record) -> None:
    text = record.text
    for pattern in MEASURED_LINES[reader.engine]:
        if m := pattern.search(text):
            for group, value in m.groupdict().items():
                if value is not None:
                    reader.measure(group, value, record.rank, record.quote(*m.span()))
    for pattern in SETTING_LINES[reader.engine]:
        if m := pattern.search(text):
            for name, value in m.groupdict().items():
                reader.put(name, _literal(value), FILL)
    if reader.engine == VLLM:
        _read_unsloth_args(reader, text)
    for pattern, name, value in FLAG_LINES[reader.engine]:
        if pattern.search(text):
            reader.put(name, value, FILL)
    if m := BNB_CONFIG_LINE.search(text):
        kwargs = _dict_literal(m["body"])
        for name in BNB_SETTINGS:
            if name in kwargs:
                reader.put(name, kwargs[name], ARGS)
    _read_version_and_model(reader, record)
    _read_settings(reader, text)


def _read_unsloth_args(reader: _Reader, text: str) -> None:
    """The engine arguments Unsloth passes to vLLM, trusted as arguments (UNSLOTH_ARGS)."""
    for pattern in UNSLOTH_ARGS:
        if m := pattern.search(text):
            for name, value in m.groupdict().items():
                if name == "gpu_memory_utilization_percent":
                    reader.put("gpu_memory_utilization", round(float(value) / 100, 4), ARGS)
                else:
                    reader.put(name, int(value), ARGS)


def _read_version_and_model(reader: _Reader, record: _Record) -> None:
    for pattern in VERSION_LINES:
        if reader.version is None and (m := pattern.search(record.text)):
            reader.version = m["version"]
            reader.lines["version"] = record.quote(*m.span())
    for pattern in MODEL_LINES:
        if m := pattern.search(record.text):
            reader.put("model", m["model"], FILL)


def _settings_body(text: str) -> tuple[dict, int] | None:
    """The key/value pairs of a settings line (args Namespace, non-default args, engine config, ServerArgs)."""
    if m := ENGINE_CONFIG.search(text):
        return _key_values(m["body"]), CONFIG
    if m := NON_DEFAULT_ARGS.search(text):
        return _dict_literal(m["body"]), ARGS
    if m := NAMESPACE_ARGS.search(text) or SERVER_ARGS.search(text):
        return _key_values(m["body"]), ARGS
    return None


def _read_settings(reader: _Reader, text: str) -> None:
    found = _settings_body(text)
    if found is None:
        return
    items, trust = found
    reader.settings_lines += 1
    table = FLAG_TABLES[reader.engine]
    for key, value in items.items():
        flag = table.get("--" + CONFIG_NAMES.get(key, key))
        if flag is None or not (flag.memory or flag.setting == "model"):
            continue
        if flag.kind == JSON and isinstance(value, str):
            continue                    # a nested config printed as a repr, cut at its first comma
        reader.put(flag.setting, _torchless(value), trust)


def _key_values(body: str) -> dict:
    """`key=value, key=value` as Python's repr prints a Namespace or a dataclass (first of each key)."""
    out = {}
    for m in KEY_VALUE.finditer(body):
        out.setdefault(m["key"], _literal(m["value"]))
    return out


def _dict_literal(body: str) -> dict:
    """vLLM's `non-default args: {...}`; item by item where the dict does not parse (a cut line, an object repr)."""
    end = body.rfind("}")
    try:
        value = ast.literal_eval(body[:end + 1])
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        value = None
    if isinstance(value, dict):
        return value
    return {m["key"]: _literal(m["value"].strip()) for m in DICT_ITEM.finditer(body)}


def _literal(text: str):
    """A printed value as Python reads it ('x', 4096, 0.9, True, None), else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return text


def _torchless(value):
    """`torch.bfloat16` (vLLM's engine config prints the dtype object) as the flag spells it: `bfloat16`."""
    return value[len("torch."):] if isinstance(value, str) and value.startswith("torch.") else value


def _quantity(group: str, text: str) -> tuple[str, int | float]:
    """(quantity name, value): a `_gib` group in bytes, a count as an int (1,652,080 -> 1652080), else a float."""
    text = text.replace(",", "")
    if group.endswith("_gib"):
        return group[:-len("_gib")] + "_bytes", round(float(text) * GIB)
    return group, int(text) if re.fullmatch(r"-?\d+", text) else float(text)


def _finish(reader: _Reader, origin: str) -> EngineLog:
    measured, by_rank, lines = {}, {}, dict(reader.lines)
    for key, printed in reader.values.items():
        value, line = min(printed, key=lambda pair: pair[0])
        measured[key], lines[key] = value, line
        if len(printed) > 1:
            by_rank[key] = [v for v, _ in printed]
    settings = dict(reader.settings)
    model = settings.pop("model", None)
    notes = reader.notes + _missing(reader, measured, model)
    return EngineLog(reader.engine, origin, reader.version, model, settings, measured, by_rank, lines, tuple(notes))


def _missing(reader: _Reader, measured: dict, model: str | None) -> list[str]:
    notes = [f"{what}: the log may be cut before it" for keys, what in MILESTONES[reader.engine]
             if not any(k in measured for k in keys)]
    if reader.version is None:
        notes.append("no version line" + (" (SGLang does not print its version at startup)"
                                          if reader.engine == SGLANG else ""))
    if model is None:
        notes.append("no line names the model")
    if not reader.settings_lines:
        notes.append("no settings line (args: Namespace, non-default args, engine config, server_args=ServerArgs)")
    return notes
