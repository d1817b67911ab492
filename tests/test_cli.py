"""The command line: renderings of one object, output files, and bad input as one line."""

import csv
import io
import json

import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from sizer import estimate
from sizer.cli import cli
from sizer.calc.report import ESTIMATE_CSV_COLUMNS

from conftest import write_config


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_estimate_table_names_the_unit():
    r = run("estimate", "llama3-70b")
    assert r.exit_code == 0, r.output
    assert "sizes in GiB (1 GiB = 2^30 bytes)" in r.output
    assert "weights/attention" in r.output and "kv_cache" in r.output
    e = estimate("llama3-70b")
    assert f"{e.total_bytes:,}" in r.output


def test_estimate_json_schema():
    r = run("estimate", "llama3-70b", "--precision", "nf4", "--context-length", "4096", "-b", "2", "--format", "json")
    data = json.loads(r.output)
    for key in ("model", "params", "active_params", "precision", "kv_dtype", "context_length", "batch_size",
                "memory", "breakdown"):
        assert key in data
    assert data["params"] == 70_553_706_496 and data["precision"] == "nf4"
    assert set(data["memory"]) == {"weights", "kv_cache", "state", "activations", "overhead", "total"}
    assert data["memory"]["state"] == 0                  # attention only: no per-sequence state
    assert all(isinstance(v, int) for v in data["memory"].values())
    assert sum(data["breakdown"].values()) == data["memory"]["total"]
    assert data["memory"]["kv_cache"] == 327_680 * 4096 * 2


def test_estimate_csv_fixed_header_and_same_numbers():
    r = run("estimate", "mixtral", "-p", "gptq-4bit-g128", "-c", "2048", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert len(rows) == 1
    assert tuple(rows[0]) == ESTIMATE_CSV_COLUMNS
    as_json = json.loads(run("estimate", "mixtral", "-p", "gptq-4bit-g128", "-c", "2048", "--format", "json").output)
    assert int(rows[0]["memory/total"]) == as_json["memory"]["total"]
    assert int(rows[0]["weights/experts"]) == as_json["breakdown"]["weights/experts"]
    assert rows[0]["weights/position_embeddings"] == "0"


def test_markdown():
    r = run("estimate", "phi-2", "--format", "markdown")
    assert r.exit_code == 0 and "| component" in r.output and "GiB" in r.output


def test_output_file_atomic_and_not_overwritten(tmp_path):
    out = tmp_path / "est.json"
    assert run("estimate", "phi-2", "--format", "json", "-o", str(out)).exit_code == 0
    first = out.read_text()
    assert json.loads(first)["model"] == "phi-2"
    r = run("estimate", "llama3-8b", "--format", "json", "-o", str(out))
    assert r.exit_code == 2 and "already exists (use --force to overwrite)" in r.output
    assert out.read_text() == first
    assert run("estimate", "llama3-8b", "--format", "json", "-o", str(out), "--force").exit_code == 0
    assert json.loads(out.read_text())["model"] == "Meta-Llama-3-8B"
    assert [p.name for p in tmp_path.iterdir()] == ["est.json"]          # no temporary file left


def one_line_error(r, code):
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    lines = [l for l in r.output.splitlines() if l.strip()]
    assert lines[-1].startswith("Error: "), r.output
    return lines[-1]


def test_unknown_model_did_you_mean():
    line = one_line_error(run("estimate", "mixtrall"), 2)
    assert "unknown model 'mixtrall'; did you mean" in line and "mixtral" in line


def test_unknown_precision():
    assert "unknown precision 'int3'" in one_line_error(run("estimate", "phi-2", "-p", "int3"), 2)


@pytest.mark.parametrize("value", ["0", "-4"])
def test_non_positive_context(value):
    r = run("estimate", "phi-2", "--context-length", value)
    assert r.exit_code == 2 and "must be a positive integer" in r.output and "Traceback" not in r.output


def test_broken_config_exit_1(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{broken")
    assert "not valid JSON" in one_line_error(run("estimate", str(path)), 1)


def test_unsupported_family_exit_1(tmp_path):
    path = write_config(tmp_path / "m", {"model_type": "mamba", "hidden_size": 64})
    assert "'mamba' is not supported" in one_line_error(run("estimate", str(path)), 1)


def test_models_lists_the_catalog():
    r = run("models", "--format", "json")
    rows = json.loads(r.output)
    names = {row["name"] for row in rows}
    assert {"Meta-Llama-3-70B", "DeepSeek-V3", "Mixtral-8x7B-v0.1"} <= names
    llama = next(row for row in rows if row["name"] == "Meta-Llama-3-70B")
    assert llama["params"] == 70_553_706_496 and llama["kv_bytes_per_token_bf16"] == 327_680
    assert llama["released"] == "2024-04-18"
    assert run("models", "--family", "mixtral").output.count("Mixtral") >= 1


def test_models_csv_has_the_release_date():
    from sizer.cli import MODEL_COLUMNS

    r = run("models", "--family", "qwen3", "--format", "csv")
    assert r.output.splitlines()[0] == ",".join(MODEL_COLUMNS)
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert {row["name"]: row["released"] for row in rows}["Qwen3-32B"] == "2025-04-29"
    assert "2025-04-29" in run("models", "--family", "qwen3").output       # the table shows it too


def test_gpus_lists_catalog_and_says_plainly_when_no_local_gpu():
    r = run("gpus")
    assert r.exit_code == 0 and "H100-SXM" in r.output
    assert "no local GPUs found" in r.output or "local GPU 0" in r.output
    data = json.loads(run("gpus", "--format", "json").output)
    assert any(g["name"] == "A100-80GB" for g in data["catalog"])


def test_version_and_help():
    assert run("--version").output.startswith("sizer, version ")
    assert "GiB" in run("--help").output
    assert "--context-length" in run("estimate", "-h").output


ARG = st.one_of(st.sampled_from(["estimate", "models", "gpus", "llama3-70b", "-p", "--precision", "nf4", "bf16",
                                 "-c", "--context-length", "-b", "--batch-size", "--kv-dtype", "fp8", "--format",
                                 "json", "csv", "-1", "0", "abc", "1e9", "--attention", "eager", "--logits", "all",
                                 "Q4_K_M", "gptq-3bit-g-1", "/nonexistent", "--force"]),
                st.text(min_size=0, max_size=12))


@settings(max_examples=150, deadline=None)
@given(args=st.lists(ARG, min_size=1, max_size=7))
def test_random_arguments_never_traceback(args):
    r = CliRunner().invoke(cli, args)
    assert r.exit_code in (0, 1, 2), (args, r.output, r.exception)
    assert "Traceback" not in r.output and "internal error" not in r.output, (args, r.output)
    if r.exception is not None:
        assert isinstance(r.exception, SystemExit), (args, repr(r.exception))


@pytest.fixture(scope="module")
def unreadable_inputs(tmp_path_factory):
    """Paths a careless user or a broken download hands sizer: a pipe, a folder without a config,
    binary bytes, a truncated GGUF, an empty file, a config of the wrong shape."""
    import os

    folder = tmp_path_factory.mktemp("unreadable")
    os.mkfifo(folder / "pipe.json")
    (folder / "empty").mkdir()
    (folder / "binary.json").write_bytes(bytes(range(256)))
    (folder / "cut.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    (folder / "zero.json").write_text("")
    (folder / "list.json").write_text("[1, 2]")
    return [str(folder / name) for name in ("pipe.json", "empty", "binary.json", "cut.gguf", "zero.json", "list.json")]


WORDS = st.sampled_from(["estimate", "fit", "models", "gpus", "calibrate", "llama3-8b", "mixtral", "phi-2",
                         "falcon-7b", "-p", "nf4,int8", "fp8", "gptq-4bit-g128", "Q4_K_M", "-c", "-b", "0", "-1",
                         "7", "1e9", "99999999999", "", "--gpus", "2x48GB", "H100", "0x4090", "local", "M3-Max",
                         "--engine", "vllm", "llamacpp", "transformers==5.24", "transformers==9", "--tensor-parallel",
                         "3", "--pipeline-parallel", "--recommend", "--max-gpus", "--kv-dtype", "q4_0", "--format",
                         "json", "csv", "markdown", "--gpu-memory-utilization", "1.5", "--max-num-seqs",
                         "--calibration", "--family", "qwen3", "finetune", "--method", "qlora,full", "dora",
                         "--zero", "--fsdp", "hybrid", "--offload-optimizer", "cpu", "--offload-params",
                         "--lora-targets", "q,k", "--lora-rank", "--seq-len", "--dataset-tokens", "1.5B",
                         "--optimizer", "paged-adamw-8bit", "--framework", "unsloth"])


@settings(max_examples=2000, deadline=None)
@given(data=st.data())
def test_fuzz_the_cli(unreadable_inputs, data):
    """The whole CLI in-process: never an internal error, exit 0 never on an unreadable input."""
    args = data.draw(st.lists(st.one_of(WORDS, st.sampled_from(unreadable_inputs), st.text(max_size=10)),
                              min_size=1, max_size=8))
    r = CliRunner().invoke(cli, args)
    assert r.exit_code in (0, 1, 2), (args, r.output, r.exception)
    assert "Traceback" not in r.output and "internal error" not in r.output, (args, r.output)
    if r.exception is not None:
        assert isinstance(r.exception, SystemExit), (args, repr(r.exception))
    model_like = args[1] if len(args) > 1 and args[0] in ("estimate", "fit", "finetune") else None
    if model_like in unreadable_inputs:
        assert r.exit_code != 0, (args, r.output)


def test_truncated_gguf_is_one_line(tmp_path):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    path = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_embedding_length(64)
    w.add_tensor("token_embd.weight", np.zeros((128, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    path.write_bytes(path.read_bytes()[:-1000])
    line = one_line_error(run("estimate", str(path)), 1)
    assert str(path) in line


def test_fit_models_the_transformers_release_asked_for():
    """--engine transformers==5.24 plans with that release's Falcon (its cache note); the default is
    the newest release sizer models, named in the JSON and the table."""
    args = ("fit", "falcon-40b", "--gpus", "2xA100", "-p", "bf16", "-c", "4096", "--format", "json")
    old = json.loads(run(*args, "--engine", "transformers==5.24").output)
    new = json.loads(run(*args).output)
    assert (old["engine"], old["engine_version"]) == ("transformers", "5.24")
    assert (new["engine"], new["engine_version"]) == ("transformers", "5.25")
    assert any(n.startswith("transformers 5.24's Falcon cache stores K/V expanded") for n in old["notes"])
    assert not any("Falcon cache" in n for n in new["notes"])
    assert json.loads(run(*args[:-2], "--format", "json", "--engine", "vllm").output)["engine_version"] == "0.34.0"
    assert json.loads(run(*args[:-2], "--format", "json", "--engine", "llamacpp").output)["engine_version"] == ""
    table = run(*args[:-2], "--engine", "transformers==5.24.0")
    assert table.exit_code == 0 and "· engine transformers 5.24\n" in table.output


@pytest.mark.parametrize("engine, message", [
    ("transformers==5.23", "sizer models transformers 5.24, 5.25"),
    ("transformers==five", "'five' is not a transformers release"),
    ("vllm==0.99", "newer than the newest release sizer models (0.34.0)"),
    ("llamacpp==b4000", "transformers, vLLM and SGLang are modelled per release"),
    ("tgi", "unknown engine 'tgi' (known: transformers, vllm, sglang, llamacpp"),
])
def test_fit_bad_engine_is_one_line(engine, message):
    r = run("fit", "llama3-8b", "--gpus", "H100", "--engine", engine)
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    assert len([line for line in r.output.splitlines() if line.startswith("Error")]) == 1


# ---------------------------------------------------------------------------------------------
# Inputs that are not what they claim: one line, a non-zero exit, no hang


def _fifo(tmp_path, name):
    import os

    path = tmp_path / name
    os.mkfifo(path)
    return str(path)


def test_a_fifo_is_refused_wherever_a_file_is_read(tmp_path):
    """Reading a FIFO would block until a writer comes: sizer refuses every non-regular file."""
    message = "not a regular file"
    assert message in one_line_error(run("estimate", _fifo(tmp_path, "config.json")), 1)
    assert message in one_line_error(run("estimate", _fifo(tmp_path, "model.gguf")), 1)
    assert message in one_line_error(run("estimate", "phi-2", "--calibration", _fifo(tmp_path, "cal.json")), 1)
    assert message in one_line_error(run("calibrate", _fifo(tmp_path, "runs.csv")), 1)
    folder = tmp_path / "ckpt"
    write_config(folder, {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                          "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 128})
    _fifo(folder, "model.safetensors")
    assert message in one_line_error(run("estimate", str(folder)), 1)


def test_empty_and_overlong_model_names(tmp_path):
    assert "MODEL is empty" in one_line_error(run("estimate", ""), 2)
    assert "MODEL is empty" in one_line_error(run("fit", "  ", "--gpus", "H100"), 2)
    assert "File name too long" in one_line_error(run("estimate", "/tmp/" + "x" * 5000), 2)


@pytest.mark.parametrize("text, message", [
    ('{"model_type": "llama", "hidden_size": NaN}', "NaN is not a number JSON allows"),
    ('{"model_type": "llama", "hidden_size": Infinity}', "Infinity is not a number JSON allows"),
    ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply for a config file"),
    ('{"model_type": "llama"', "not valid JSON"),
])
def test_malformed_config_json(tmp_path, text, message):
    path = tmp_path / "config.json"
    path.write_text(text)
    assert message in one_line_error(run("estimate", str(path)), 1)


def test_binary_and_oversized_inputs(tmp_path):
    binary = tmp_path / "runs.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    assert "not a record file (not UTF-8 text)" in one_line_error(run("calibrate", str(binary)), 1)
    huge = tmp_path / "config.json"
    with huge.open("wb") as f:
        f.truncate(65 * 2**20)              # sparse: nothing is written, and nothing may be read
    assert "is too large for a config file" in one_line_error(run("estimate", str(huge)), 1)


@pytest.mark.parametrize("value", ["1e999", "1" + "0" * 400])
def test_calibration_constants_must_be_finite(tmp_path, value):
    from sizer.calc.calibration import default_calibration

    data = json.loads(default_calibration().to_json())
    text = json.dumps(data).replace(f'"activation_scale": {json.dumps(data["activation_scale"])}',
                                    f'"activation_scale": {value}')
    path = tmp_path / "cal.json"
    path.write_text(text)
    assert "activation_scale must be a finite number" in one_line_error(
        run("estimate", "phi-2", "--calibration", str(path)), 1)


def test_safetensors_header_with_a_list_for_dtype(tmp_path):
    import struct

    folder = tmp_path / "ckpt"
    write_config(folder, {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                          "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 128})
    header = json.dumps({"lm_head.weight": {"dtype": ["BF16"], "shape": [128, 64], "data_offsets": [0, 16384]}})
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header.encode() + bytes(16384))
    assert "corrupt safetensors header entry for tensor 'lm_head.weight'" in one_line_error(
        run("estimate", str(folder)), 1)


@pytest.mark.parametrize("key, value, message", [
    ("num_hidden_layers", 2**31, "num_hidden_layers = 2,147,483,648 is beyond any real model (sizer accepts up to 100,000)"),
    ("hidden_size", 10**12, "hidden_size = 1,000,000,000,000 is beyond any real model"),
    ("vocab_size", 1e300, "vocab_size = 1,000,000,000,000,000,0"),
    ("intermediate_size", "1e999", "intermediate_size must be an integer, got inf"),
])
def test_absurd_dimensions_are_refused_at_once(tmp_path, key, value, message):
    config = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "vocab_size": 128}
    text = json.dumps({**config, key: 0}).replace(f'"{key}": 0', f'"{key}": {value}')
    path = tmp_path / "config.json"
    path.write_text(text)
    assert message in one_line_error(run("estimate", str(path)), 1)


def metadata_only_gguf(path, block_count: int):
    """A GGUF file with a llama header and no tensors."""
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, number in (("llama.block_count", block_count), ("llama.embedding_length", 64),
                        ("llama.vocab_size", 128), ("llama.feed_forward_length", 128),
                        ("llama.attention.head_count", 4), ("llama.context_length", 128)):
        writer.add_uint32(key, number)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def test_a_gguf_with_absurd_block_count_is_refused(tmp_path):
    path = metadata_only_gguf(tmp_path / "huge.gguf", 2**31)
    assert "is beyond any real model" in one_line_error(run("estimate", path), 1)


def test_a_gguf_without_tensors_is_refused(tmp_path):
    path = metadata_only_gguf(tmp_path / "meta.gguf", 2)
    assert "holds no tensors" in one_line_error(run("estimate", path), 1)


# ---------------------------------------------------------------------------------------------
# Output files and folders


def test_outputs_follow_the_umask_and_never_replace_links(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        out = tmp_path / "e.json"
        assert run("estimate", "phi-2", "--format", "json", "-o", str(out)).exit_code == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        os.umask(0o077)
        private = tmp_path / "p.json"
        assert run("estimate", "phi-2", "--format", "json", "-o", str(private)).exit_code == 0
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    link = tmp_path / "link.json"
    link.symlink_to(out)
    line = one_line_error(run("estimate", "phi-2", "-o", str(link), "--force"), 2)
    assert "not a regular file" in line and link.is_symlink()
    assert "not a regular file" in one_line_error(
        run("estimate", "phi-2", "-o", _fifo(tmp_path, "pipe.csv"), "--force"), 2)


def test_output_into_an_unwritable_folder_is_one_line(tmp_path):
    import os

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        line = one_line_error(run("estimate", "phi-2", "-o", str(folder / "x.csv")), 1)
        assert "cannot write in" in line
    finally:
        folder.chmod(0o700)


def test_output_name_too_long_is_one_line(tmp_path):
    assert "File name too long" in one_line_error(run("estimate", "phi-2", "-o", str(tmp_path / ("x" * 5000))), 2)


def test_quantize_output_folder_lifecycle(tmp_path):
    """The quantize output: refused before any work when it exists or is a link; folders of killed
    runs removed by the next run; SIGTERM cleans up as Ctrl-C does; the folder follows the umask."""
    import os
    import signal
    import stat
    import subprocess
    import sys

    from sizer.errors import UsageError
    from sizer.quantize.folders import atomic_output_dir, check_output_dir, remove_stale_partials

    out = tmp_path / "ckpt"
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(UsageError, match="not a folder"):
        check_output_dir(link, force=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".ckpt.{dead.stdout.strip()}.abc123.partial"
    stale.mkdir()
    live = tmp_path / f".ckpt.{os.getpid()}.def456.partial"
    live.mkdir()
    assert remove_stale_partials(out) == [stale] and live.exists() and not stale.exists()
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(out, force=False) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            os.kill(os.getpid(), signal.SIGTERM)
    assert not out.exists() and [p.name for p in tmp_path.glob(".ckpt.*")] == [live.name]
    old = os.umask(0o022)
    try:
        with atomic_output_dir(out, force=False) as tmp:
            (tmp / "weights.bin").write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755 and (out / "weights.bin").exists()
    with pytest.raises(UsageError, match="already exists"):
        check_output_dir(out, force=False)


def test_more_bad_arguments_are_one_line():
    line = one_line_error(run("models", "--family", "nope"), 2)
    assert "no catalog model of family 'nope' (families: " in line and "llama" in line
    assert run("models", "--family", "falcon").exit_code == 0
    huge = "1" + "0" * 400 + "GB"
    assert "at most 1,048,576 GiB" in one_line_error(run("fit", "llama3-8b", "--gpus", huge), 2)
    assert "--context-length is empty" in one_line_error(run("measure", "phi-2", "-c", ""), 2)


def test_quantize_calibration_text_has_its_own_name(tmp_path):
    """`--calibration` is a constants file in estimate, fit and measure; quantize's text is
    --calibration-text, and the old spelling is refused with the new one named."""
    text = tmp_path / "text.txt"
    text.write_text("some calibration text\n")
    r = run("quantize", str(tmp_path), "--method", "gptq", "--calibration", str(text), "--output", str(tmp_path / "o"))
    assert "quantize takes its calibration text as --calibration-text FILE" in one_line_error(r, 2)
    r = run("quantize", str(tmp_path), "--method", "nf4", "--calibration-text", str(text), "--output", str(tmp_path / "o"))
    assert "--calibration-text applies to --method gptq only" in one_line_error(r, 2)
    assert "--calibration-text" in run("quantize", "--help").output
    assert "--calibration " not in run("quantize", "--help").output


def test_quantize_needs_an_output_unless_it_only_plans(tmp_path):
    for method in ("nf4", "gptq"):
        r = run("quantize", str(tmp_path), "--method", method)
        assert "quantize needs --output FOLDER" in one_line_error(r, 2)
    assert not list(tmp_path.iterdir())                      # nothing written


def test_a_nul_byte_in_an_argument_is_one_line():
    """Found by the fuzz test: `calibrate '\\x00'` reached os.stat and raised ValueError."""
    for args in (["calibrate", "\x00"], ["estimate", "phi\x00-2"], ["fit", "llama3-8b", "--gpus", "H1\x0000"]):
        r = run(*args)
        assert r.exit_code == 2 and "an argument holds a NUL byte" in r.output and "internal error" not in r.output
