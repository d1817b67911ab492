"""sizer.check.logs against real startup logs: every case in tests/data/engine_logs/<engine>/ is a log and
the JSON a person wrote reading it (version, model, settings, measured numbers). The reader must agree with
the JSON on every measured number, on the version and model where the log prints them, and on every
setting the log states."""

import functools
import json
import re
from pathlib import Path

import pytest

from sizer.check.logs import read_engine_log, read_engine_log_file
from sizer.errors import InputFileError

DATA = Path(__file__).parent / "data" / "engine_logs"
CASES = sorted(p for p in DATA.glob("*/*.json") if p.parent.name != "configs")     # configs/: model configs, not logs
GIB = 2**30

# JSON measured names -> EngineLog.measured names, where they differ by more than `_gib` -> `_bytes`
MEASURED_NAMES = {
    "usable_gpu_memory_gib": "requested_memory_bytes",
    "gpu_memory_utilization_equivalent_with_cudagraph_estimate": "gpu_memory_utilization_with_graph_profiling",
    "gpu_memory_utilization_equivalent_without_cudagraph_estimate": "gpu_memory_utilization_without_graph_profiling",
    "weight_load_gib": "weights_bytes",
    "avail_mem_after_load_gib": "avail_after_load_bytes",
    "kv_cache_k_gib": "kv_k_bytes",
    "kv_cache_v_gib": "kv_v_bytes",
    "avail_mem_after_pool_gib": "avail_after_pool_bytes",
    "cuda_graph_mem_gib": "cuda_graph_bytes",
    "avail_mem_after_cuda_graph_gib": "avail_after_cuda_graph_bytes",
    "init_dist_mem_usage_gib": "init_distributed_bytes",
}
# JSON measured names the log prints as a setting (SGLang's server_args)
MEASURED_AS_SETTINGS = {"mem_fraction_static"}
# JSON settings the reader does not take from a log (no memory sizer models, or no line states them)
SETTINGS_NOT_READ = {"attention_backend", "engine", "compilation_level", "distributed_executor_backend",
                     "is_embedding", "schedule_policy", "speculative_num_steps", "speculative_eagle_topk",
                     "speculative_num_draft_tokens"}
SETTING_NAMES = {"swap_space_gib": "swap_space"}
# how a log states a setting besides `name=`, `'name': ` and `name (`
STATED_AS = {
    "max_model_len": [r"max_seq_len=", r"Using max model len \d", r"context_length="],
    "enable_chunked_prefill": [r"chunked_prefill_enabled="],
    "tensor_parallel_size": [r"\btp_size="],
    "pipeline_parallel_size": [r"\bpp_size="],
    "block_size": [r"Setting attention block size to \d"],
    "gpu_memory_utilization": [r"Desired GPU memory utilization is \(", r"--gpu-memory-utilization[= ]",
                               r"with actual GPU utilization = \d"],
    "max_num_seqs": [r"Num Sequences = \d"],                        # Unsloth's load_vllm
    "max_num_batched_tokens": [r"Chunked prefill tokens = \d"],
}


def _slug(path: Path) -> str:
    return path.stem


@functools.cache
def _case(path: Path):
    """(the JSON a person wrote, the log as read, the log's text)."""
    log_path = path.with_suffix(".log")
    return json.loads(path.read_text()), read_engine_log_file(log_path), log_path.read_text()


def _measured_name(json_name: str) -> str:
    if json_name.startswith("draft_"):
        return "draft_" + _measured_name(json_name[len("draft_"):])
    if json_name in MEASURED_NAMES:
        return MEASURED_NAMES[json_name]
    return re.sub(r"_gib$", "_bytes", json_name)


def _agrees(json_name: str, expected, got) -> bool:
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and all(
            _agrees(json_name, e, g) for e, g in zip(expected, got))
    if got is None:
        return False
    if json_name.endswith("_gib"):
        return abs(got - expected * GIB) <= 0.005 * GIB
    if isinstance(expected, float) or isinstance(got, float):
        return abs(got - expected) <= 0.01
    return got == expected


def _stated(name: str, text: str) -> bool:
    spelled = rf"(?<![\w-]){name}['\"]?(?:=|: | \()"
    return any(re.search(p, text) for p in [spelled] + STATED_AS.get(name, []))


@pytest.mark.parametrize("path", CASES, ids=_slug)
def test_engine_and_version(path):
    expected, log, text = _case(path)
    assert log.engine == expected["engine"]
    if expected["version"] in text:
        assert log.version == expected["version"]
    else:
        assert log.version is None


@pytest.mark.parametrize("path", CASES, ids=_slug)
def test_model(path):
    expected, log, text = _case(path)
    assert log.model == (expected["model"] if expected["model"] in text else None)


@pytest.mark.parametrize("path", CASES, ids=_slug)
def test_measured(path):
    expected, log, _ = _case(path)
    wrong = {}
    for json_name, value in expected["measured"].items():
        if json_name in MEASURED_AS_SETTINGS:
            got = log.settings.get(json_name)
        elif json_name.endswith("_per_rank"):
            got = log.measured_by_rank.get(_measured_name(json_name[:-len("_per_rank")]))
        else:
            got = log.measured.get(_measured_name(json_name))
        if not _agrees(re.sub(r"_per_rank$", "", json_name), value, got):
            wrong[json_name] = (value, got)
    assert wrong == {}


@pytest.mark.parametrize("path", CASES, ids=_slug)
def test_settings_the_log_states(path):
    expected, log, text = _case(path)
    wrong = {}
    for json_name, value in expected["settings"].items():
        name = SETTING_NAMES.get(json_name, json_name)
        if name in SETTINGS_NOT_READ or not _stated(name, text):
            continue
        got = log.settings.get(name, "(not read)")
        if isinstance(value, float) and isinstance(got, (int, float)):
            ok = abs(got - value) <= 0.005           # printed with two decimals
        else:
            ok = got == value
        if not ok:
            wrong[name] = (value, got)
    assert wrong == {}


@pytest.mark.parametrize("path", CASES, ids=_slug)
def test_every_measured_number_has_its_line(path):
    _, log, text = _case(path)
    uncoloured = re.sub(r"\x1b?\[\d+(?:;\d+)*m", "", text)
    assert set(log.lines) >= set(log.measured)
    for line in log.lines.values():
        assert all(piece in uncoloured for piece in line.split("\n"))


def test_tp_ranks_keep_every_value_and_take_the_minimum():
    """Qwen3-235B on 8 L40S (vLLM 0.10.2): the engine core logs one KV config per worker before it unifies
    them to the smallest; 14834 blocks x 16 tokens = 237,344, the smallest logged."""
    log = read_engine_log_file(DATA / "vllm" / "qwen3-235b-a22b-fp8-l40s-tp8-v0.10.2.log")
    assert log.measured_by_rank["kv_tokens"] == [238208, 237392, 237344, 237520, 238256, 237344, 237392, 237520]
    assert log.measured["kv_tokens"] == 237344 == log.measured["num_gpu_blocks"] * 16
    assert log.measured["max_concurrency"] == 7.24
    assert len(log.measured_by_rank["kv_cache_bytes"]) == 8
    assert log.measured["kv_cache_bytes"] == round(10.64 * GIB)
    assert "237,344 tokens" in log.lines["kv_tokens"]


def test_ray_folded_lines_are_noted():
    log = read_engine_log_file(DATA / "vllm" / "qwen3-30b-a3b-gh200-tp4-pp2-v0.10.1.2.log")
    assert log.measured_by_rank["kv_cache_bytes"] == [round(76.15 * GIB), round(70.58 * GIB)]
    assert any("repeated" in note for note in log.notes)
    assert log.settings["enable_prefix_caching"] is True          # its engine config line wraps inside a word


def test_sglang_draft_model_lines_are_kept_apart():
    log = read_engine_log_file(DATA / "sglang" / "llama-2-7b-chat-eagle-h100-tp1-v0.4.2.post4.log")
    assert log.measured["kv_k_bytes"] == round(21.25 * GIB)
    assert log.measured["draft_kv_k_bytes"] == round(0.82 * GIB)
    assert "kv_k_bytes" not in log.measured_by_rank


WRAPPED_PROFILE = """\
INFO 03-07 09:39:34 model_runner.py:1115] Loading model weights took 5.5976 GB
INFO 03-07 09:39:49 worker.py:267] Memory profiling takes 14.16 seconds
the current vLLM instance can use total_gpu_memory (14.74GiB) x gpu_memory_utilization (0.59) = 8.76GiB
model weights take 5.60GiB; non_torch_memory takes 0.03GiB; PyTorch activation peak mem
ory takes 0.74GiB; the rest of the memory reserved for KV Cache is 2.39GiB.
INFO 03-07 09:39:50 executor_base.py:111] # cuda blocks: 1224, # CPU blocks: 1024
"""


def test_wrapped_profiling_message():
    """vLLM 0.6.5-0.7.3 log the profiling summary as one message with newlines in it; a pasted log may also
    wrap inside a word."""
    log = read_engine_log(WRAPPED_PROFILE, "wrapped.log")
    assert log.measured["total_gpu_memory_bytes"] == round(14.74 * GIB)
    assert log.measured["requested_memory_bytes"] == round(8.76 * GIB)
    assert log.measured["activation_peak_bytes"] == round(0.74 * GIB)
    assert log.measured["kv_cache_bytes"] == round(2.39 * GIB)
    assert log.measured["weights_bytes"] == round(5.5976 * GIB)
    assert log.settings["gpu_memory_utilization"] == 0.59
    assert log.lines["activation_peak_bytes"] == ("model weights take 5.60GiB; non_torch_memory takes 0.03GiB; "
                                                  "PyTorch activation peak mem\nory takes 0.74GiB; the rest of the "
                                                  "memory reserved for KV Cache is 2.39GiB.")
    assert log.lines["kv_cache_bytes"] == "ory takes 0.74GiB; the rest of the memory reserved for KV Cache is 2.39GiB."


def test_ansi_colours_and_worker_tags():
    text = ("\x1b[1;36m(VllmWorker rank=1 pid=219)\x1b[0;0m INFO 08-31 14:45:44 [gpu_worker.py:232] "
            "Available KV cache memory: 10.04 GiB\n"
            "\x1b[1;36m(VllmWorker rank=0 pid=218)\x1b[0;0m INFO 08-31 14:45:44 [gpu_worker.py:232] "
            "Available KV cache memory: 9.98 GiB\n"
            "[1;36m(EngineCore_0 pid=82)[0;0m INFO 08-27 21:02:45 [gpu_model_runner.py:2007] "
            "Model loading took 14.9889 GiB and 11.314340 seconds\n")
    log = read_engine_log(text, "colour.log")
    assert log.engine == "vllm"
    assert log.measured["kv_cache_bytes"] == round(9.98 * GIB)
    assert log.measured_by_rank["kv_cache_bytes"] == [round(10.04 * GIB), round(9.98 * GIB)]
    assert log.measured["weights_bytes"] == round(14.9889 * GIB)
    assert "\x1b" not in log.lines["kv_cache_bytes"] and "[1;36m" not in log.lines["weights_bytes"]


def test_docker_compose_prefix():
    """`docker compose logs` puts `service-1  | ` before every line: the lines still split where each starts."""
    text = ("vllm-1  | (VllmWorker rank=0 pid=218) INFO 08-31 14:45:44 [gpu_worker.py:232] Available KV cache memory: "
            "10.04 GiB\n"
            "vllm-1  | (VllmWorker rank=1 pid=219) INFO 08-31 14:45:44 [gpu_worker.py:232] Available KV cache memory: "
            "9.5 GiB\n")
    log = read_engine_log(text, "compose.log")
    assert log.measured_by_rank["kv_cache_bytes"] == [round(10.04 * GIB), round(9.5 * GIB)]


def test_truncated_log_reads_what_is_there_and_says_what_is_missing():
    lines = (DATA / "vllm" / "qwen3-8b-a100-40gb-tp1-v0.9.2.log").read_text().splitlines()
    cut = "\n".join(lines[:7]) + "\nINFO 06-10 10:58:13 [gpu_wor"
    log = read_engine_log(cut, "cut.log")
    assert (log.version, log.model) == ("0.9.2", "Qwen/Qwen3-8B")
    assert log.measured == {"weights_bytes": round(15.2683 * GIB)}
    assert log.settings["max_model_len"] == 40960
    assert any(note.startswith("no KV cache line") for note in log.notes)


@pytest.mark.parametrize("text", ["hello\nthis is not a log\n", '{"model": "x"}', "INFO 01-01 00:00:00 x.py:1] hi"],
                         ids=["prose", "json", "other-log"])
def test_not_an_engine_log(tmp_path, text):
    path = tmp_path / "garbage.log"
    path.write_text(text)
    with pytest.raises(InputFileError) as err:
        read_engine_log_file(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: not a vLLM or SGLang startup log")
    assert "Model loading took" in message and "server_args=ServerArgs(" in message


@pytest.mark.parametrize("text", ["", "\n  \n"], ids=["empty", "blank"])
def test_empty_file(tmp_path, text):
    path = tmp_path / "empty.log"
    path.write_text(text)
    with pytest.raises(InputFileError, match=r"^\S+empty\.log: empty, not an engine log") as err:
        read_engine_log_file(path)
    assert "\n" not in str(err.value)


def test_not_a_file(tmp_path):
    with pytest.raises(InputFileError, match="is a folder"):
        read_engine_log_file(tmp_path)
    (tmp_path / "binary.log").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputFileError, match="not UTF-8"):
        read_engine_log_file(tmp_path / "binary.log")


def test_non_default_args_that_do_not_parse_are_read_item_by_item():
    text = ("INFO 06-10 10:57:31 [cli_args.py:325] non-default args: {'model': 'Qwen/Qwen3-8B', "
            "'max_model_len': 4096, 'compilation_config': <object at 0x7f>, 'tensor_parallel_size': 2\n"
            "INFO 06-10 10:57:57 [gpu_model_runner.py:1801] Model loading took 15.2683 GiB and 3.6 seconds\n")
    log = read_engine_log(text, "cut-args.log")
    assert log.model == "Qwen/Qwen3-8B"
    assert log.settings == {"max_model_len": 4096, "tensor_parallel_size": 2}


def test_module_loads_with_the_standard_library_only():
    import subprocess
    import sys

    check = ("import sys, sizer.check.logs; print(sorted(m for m in ('torch', 'transformers', 'numpy') "
             "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_unsloth_prints_the_engine_args_it_passes():
    """Unsloth's load_vllm prints gpu_memory_utilization (as a percentage), max_num_batched_tokens and max_num_seqs
    before vLLM starts; vLLM 0.7's own line rounds the utilization to 0.70, so Unsloth's value is the one kept."""
    log = read_engine_log_file(DATA / "vllm" / "phi-4-bnb4bit-t4-tp1-v0.7.1-lora.log")
    assert "x gpu_memory_utilization (0.70)" in (DATA / "vllm" / "phi-4-bnb4bit-t4-tp1-v0.7.1-lora.log").read_text()
    assert log.settings["gpu_memory_utilization"] == 0.6952
    assert log.settings["max_num_seqs"] == 128 and log.settings["max_num_batched_tokens"] == 512


def test_settings_from_a_launch_line_fill_only_what_the_log_does_not_print():
    from sizer.check.logs import with_settings

    log = read_engine_log_file(DATA / "sglang" / "deepseek-r1-h20-tp16-2node-v0.4.3.log")
    assert "tensor_parallel_size" not in log.settings and log.settings["max_model_len"] == 163840
    filled = with_settings(log, {"tensor_parallel_size": 16, "max_model_len": 4096, "page_size": None}, "--command")
    assert filled.settings == {"max_model_len": 163840, "tensor_parallel_size": 16}
    assert filled.notes[-1] == "settings the log does not print, from --command: tensor_parallel_size=16"
    assert with_settings(log, {"max_model_len": 4096}, "--command") is log
