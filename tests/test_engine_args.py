"""The engines' own flags (`fit --engine-args`) and whole launch lines (`fit --command`): spellings as
the engines' argument parsers accept them, values, what becomes a plan option, contradictions."""

import json

import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from sizer.cli import cli
from sizer.errors import UsageError
from sizer.plan.engine_args import parse_command, parse_engine_args, parse_int


@pytest.mark.parametrize("text", [
    "--max-model-len 16000 --tensor-parallel-size 2",
    "--max_model_len=16000 -tp 2",
    "--max-model-len=16k --tensor_parallel_size=2",
])
def test_vllm_spellings(text):
    args = parse_engine_args("vllm", text)
    assert args.settings == {"max_model_len": 16000, "tensor_parallel_size": 2}
    assert args.unknown == () and args.model is None


@pytest.mark.parametrize("text, value", [("16000", 16000), ("16k", 16000), ("16K", 16384), ("1m", 1_000_000),
                                         ("1M", 1 << 20), ("1_000", 1000), ("2.5k", 2500)])
def test_human_readable_integers(text, value):
    assert parse_int(text, "--max-model-len") == value


@pytest.mark.parametrize("text", ["16.5", "k", "16 k", "-3", "16kb", ""])
def test_bad_integers(text):
    with pytest.raises(UsageError, match="--max-model-len"):
        parse_int(text, "--max-model-len")


def test_booleans_negations_and_harmless_flags():
    args = parse_engine_args("vllm", "--enforce-eager --no-enable-prefix-caching --enable-chunked-prefill=false "
                                     "--host 0.0.0.0 --port 8000 --trust-remote-code --served-model-name m "
                                     "--gpu-memory-utilization 0.95 --kv-cache-dtype fp8_e4m3 --swap-space 4")
    assert args.settings == {"enforce_eager": True, "enable_prefix_caching": False, "enable_chunked_prefill": False,
                             "gpu_memory_utilization": 0.95, "kv_cache_dtype": "fp8_e4m3", "swap_space": 4.0}
    assert args.accepted == {"host": "0.0.0.0", "port": 8000, "trust_remote_code": True, "served_model_name": "m"}


def test_unknown_flags_are_kept_with_their_values_for_one_warning():
    args = parse_engine_args("vllm", "--frobnicate 3 --max-num-seqs 64 --shiny")
    assert args.settings == {"max_num_seqs": 64}
    assert args.unknown == ("--frobnicate", "3", "--shiny")
    assert args.warning == ("vllm flag(s) sizer does not know, ignored: --frobnicate 3 --shiny (if they change "
                            "memory, the plan does not show it)")


@pytest.mark.parametrize("engine, text, message", [
    ("vllm", "--max-model-len", "vllm flag --max-model-len needs a value"),
    ("vllm", "--max-model-len lots", "--max-model-len 'lots': expected an integer"),
    ("vllm", "--gpu-memory-utilization most", "--gpu-memory-utilization 'most': expected a number"),
    ("vllm", "--enforce-eager=maybe", "--enforce-eager=maybe: expected true or false"),
    ("llamacpp", "-fa sometimes -c 512", None),            # -fa without on|off|auto is the bare flag
    ("transformers", "--max-model-len 5", "sizer reads the flags of vllm, sglang and llamacpp, not 'transformers'"),
    ("vllm", "'unclosed", "cannot read the command line"),
])
def test_bad_values_are_one_clear_error(engine, text, message):
    if message is None:
        args = parse_engine_args(engine, text)
        assert args.settings == {"flash_attn": "on", "max_model_len": 512} and args.model == "sometimes"
        return
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_engine_args(engine, text)


def test_llamacpp_spellings():
    args = parse_engine_args("llamacpp", "-m model.gguf -c 8192 -ngl 99 -fa on -ctk q8_0 -ctv q8_0 -np 4 -ub 256 "
                                         "--no-mmap -t 8 --host 0.0.0.0")
    assert args.model == "model.gguf"
    assert args.settings == {"max_model_len": 8192, "n_gpu_layers": "99", "flash_attn": "on", "cache_type_k": "q8_0",
                             "cache_type_v": "q8_0", "parallel": 4, "ubatch_size": 256, "no_mmap": True}
    assert parse_engine_args("llamacpp", "-fa -c 4096").settings == {"flash_attn": "on", "max_model_len": 4096}


def test_sglang_spellings():
    args = parse_engine_args("sglang", "--model-path Qwen/Qwen3-8B --tp 2 --mem-fraction-static 0.85 "
                                       "--context-length 32768 --enable-dp-attention --dp-size 2")
    assert args.model == "Qwen/Qwen3-8B"
    assert args.settings == {"tensor_parallel_size": 2, "mem_fraction_static": 0.85, "max_model_len": 32768,
                             "enable_dp_attention": True, "data_parallel_size": 2}


@pytest.mark.parametrize("line, engine, model, version", [
    ("vllm serve Qwen/Qwen2.5-7B-Instruct --tensor-parallel-size 2", "vllm", "Qwen/Qwen2.5-7B-Instruct", None),
    ("python -m vllm.entrypoints.openai.api_server --model meta-llama/Llama-3.1-8B -tp 2", "vllm",
     "meta-llama/Llama-3.1-8B", None),
    ("CUDA_VISIBLE_DEVICES=0,1 VLLM_USE_V1=1 python3 -m vllm.entrypoints.openai.api_server \\\n"
     "    --model m --tensor-parallel-size 2  # two GPUs", "vllm", "m", None),
    ("docker run --runtime nvidia --gpus all -v ~/.cache/huggingface:/root/.cache/huggingface -p 8000:8000 "
     "--ipc=host --name vllm vllm/vllm-openai:v0.6.4 --model mistralai/Mistral-7B-v0.1 -tp 2",
     "vllm", "mistralai/Mistral-7B-v0.1", "0.6.4"),
    ("docker run --gpus all lmsysorg/sglang:latest python3 -m sglang.launch_server --model-path Qwen/Qwen3-8B --tp 2",
     "sglang", "Qwen/Qwen3-8B", None),
    ("python -m sglang.launch_server --model-path deepseek-ai/DeepSeek-V3 --tp 8 --trust-remote-code", "sglang",
     "deepseek-ai/DeepSeek-V3", None),
    ("./build/bin/llama-server -m models/llama-3-8b.Q4_K_M.gguf -c 8192 -ngl 99", "llamacpp",
     "models/llama-3-8b.Q4_K_M.gguf", None),
])
def test_launch_lines(line, engine, model, version):
    args = parse_command(line)
    assert (args.engine, args.model, args.version) == (engine, model, version)
    assert args.unknown == ()
    if engine != "llamacpp":
        assert args.settings["tensor_parallel_size"] == (8 if "DeepSeek" in model else 2)


def test_launch_line_environment():
    args = parse_command("CUDA_VISIBLE_DEVICES=0,1 VLLM_USE_V1=0 vllm serve m -tp 2")
    assert args.env == {"CUDA_VISIBLE_DEVICES": "0,1", "VLLM_USE_V1": "0"}


@pytest.mark.parametrize("line, message", [
    ("ls -la", "not a launch line sizer reads"),
    ("vllm serve --tensor-parallel-size 2", "the launch line names no model (--model)"),
    ("python -m sglang.launch_server --tp 2", "the launch line names no model (--model-path)"),
    ("vllm serve a b", "unexpected 'a b'"),
])
def test_launch_line_errors(line, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_command(line)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["--max-model-len", "-tp", "16k", "2", "--enforce-eager", "--no-enable-prefix-caching",
                                 "--gpu-memory-utilization", "0.9", "x", "--host", "=", "--dtype=half", "-c", "-fa",
                                 "on", "--model", "m", "'", "\\", "#", "--quantization", "fp8", "--tp"]), max_size=8),
       st.sampled_from(["vllm", "sglang", "llamacpp"]))
def test_any_words_parse_or_fail_in_one_line(words, engine):
    try:
        args = parse_engine_args(engine, " ".join(words))
    except UsageError as e:
        assert "\n" not in str(e)
    else:
        assert all(isinstance(k, str) for k in args.settings)


def fit_json(*args):
    result = CliRunner().invoke(cli, ["fit", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_fit_command_plans_the_launch_line():
    out = fit_json("--command", "vllm serve Qwen/Qwen3-8B --max-model-len 16k -tp 2 --gpu-memory-utilization 0.8 "
                                "--max-num-seqs 64 --kv-cache-dtype fp8 --enforce-eager", "--gpus", "2xL40S")
    assert out["engine"] == "vllm" and out["model"] == "Qwen3-8B"
    assert out["workload"]["context_length"] == 16000 and out["workload"]["kv_dtype"] == "fp8"
    [option] = out["options"]                               # the launch line runs one precision: the checkpoint's
    assert (option["precision"], option["tensor_parallel"], option["pipeline_parallel"]) == ("bf16", 2, 1)
    assert "0.8 x" in option["reason"]
    assert option["launch"][0]["command"].endswith("--gpu-memory-utilization 0.8 --enforce-eager --max-num-seqs 64 "
                                                   "--kv-cache-dtype fp8")
    assert not any("not yet in sizer's plan" in n for n in out["notes"])
    graphs = fit_json("--command", "vllm serve Qwen/Qwen3-8B --max-model-len 16k -tp 2 --gpu-memory-utilization 0.8 "
                                   "--max-num-seqs 64 --kv-cache-dtype fp8", "--gpus", "2xL40S")["options"][0]
    assert option["per_gpu"]["overhead"] < graphs["per_gpu"]["overhead"]      # no CUDA graphs when eager


def test_a_docker_image_tag_pins_the_vllm_release():
    out = fit_json("--command", "docker run --gpus all vllm/vllm-openai:v0.6.4 --model Qwen/Qwen3-8B -tp 2",
                   "--gpus", "2xL40S")
    assert out["engine_version"] == "0.6.4"
    assert "--command: the image names vllm 0.6.4, the release planned" in out["notes"]


def test_fit_command_default_context_is_the_models():
    out = fit_json("--command", "vllm serve Qwen/Qwen3-8B", "--gpus", "1xH100")
    assert out["workload"]["context_length"] == out["model_max_context_length"] == 40960


def test_fit_engine_args_agree_with_sizer_options_and_keep_the_precision_set():
    plain = fit_json("Qwen/Qwen3-8B", "--engine", "vllm", "--gpus", "1xH100", "-c", "8192",
                     "--gpu-memory-utilization", "0.85")
    flags = fit_json("Qwen/Qwen3-8B", "--engine", "vllm", "--gpus", "1xH100", "-c", "8192",
                     "--engine-args", "--gpu-memory-utilization=0.85 --max-model-len 8192 --port 8000")
    assert flags["options"] == plain["options"] and len(flags["options"]) > 1


@pytest.mark.parametrize("args, message", [
    (["Qwen/Qwen3-8B", "--engine", "vllm", "-c", "8192", "--engine-args", "--max-model-len 16000"],
     "--context-length 8192 contradicts --engine-args (context length 16000): give it once"),
    (["--command", "vllm serve Qwen/Qwen3-8B --enforce-eager", "--engine-args", "-tp 2"],
     "--command already holds the engine's flags"),
    (["--command", "vllm serve Qwen/Qwen3-8B -tp 2", "--tensor-parallel", "4"],
     "--tensor-parallel 4 contradicts --command (tensor parallel 2): give it once"),
    (["--command", "vllm serve Qwen/Qwen3-8B", "--engine", "llamacpp"],
     "--engine llamacpp contradicts --command, a vllm launch line"),
    (["llama3-8b", "--command", "vllm serve Qwen/Qwen3-8B"], "MODEL llama3-8b contradicts --command"),
    (["Qwen/Qwen3-8B", "--engine-args", "--max-model-len 8192"],
     "sizer reads the flags of vllm, sglang and llamacpp, not 'transformers'"),
    (["Qwen/Qwen3-8B", "--engine", "vllm", "--engine-args", "--model x"], "--engine-args names a model (x)"),
    (["--gpus", "H100"], "MODEL is missing: name a model, or give a whole launch line with --command"),
    (["Qwen/Qwen3-8B", "--engine", "vllm", "--engine-args", "--quantization awq"],
     "--quantization awq: vLLM loads a checkpoint quantized with awq"),
])
def test_fit_refuses_contradictions_in_one_line(args, message):
    result = CliRunner().invoke(cli, ["fit", *args, "--gpus", "2xH100"] if "--gpus" not in args else ["fit", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output


def test_unknown_flag_is_a_warning_on_stderr():
    result = CliRunner().invoke(cli, ["fit", "--command", "vllm serve Qwen/Qwen3-8B --shiny", "--gpus", "1xH100",
                                      "--format", "json"])
    assert result.exit_code == 0
    assert result.stderr == ("warning: vllm flag(s) sizer does not know, ignored: --shiny (if they change memory, "
                             "the plan does not show it)\n")
