"""The published llama.cpp data (tests/data/llamacpp/): every startup log parses to the values its
.json records (typed from the log by hand, in MiB as printed), and every llama-bench record re-parses
from its quoted row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sizer.check.llama_bench import BenchRowError, BenchTest, parse_header, parse_row, parse_test
from sizer.check.llamacpp_log import parse_llamacpp_log, read_llamacpp_log_file

DATA = Path(__file__).parent / "data" / "llamacpp"
LOG_RECORDS = sorted((DATA / "logs").glob("*.json"))
BENCH = json.loads((DATA / "llama_bench.json").read_text())["records"]
MODELS = Path(__file__).parents[1] / "sizer" / "data" / "models"
MIB = 2**20


def bytes_from_mib(mib: float) -> int:
    return round(mib * MIB)


def load(record_path: Path) -> tuple[dict, object]:
    record = json.loads(record_path.read_text())
    return record, read_llamacpp_log_file(record_path.with_suffix(".log"))


def test_the_data_set_is_as_large_and_as_varied_as_issue_18_asks():
    backends = {json.loads(p.read_text())["backend"] for p in LOG_RECORDS}
    assert len(LOG_RECORDS) >= 15 and {"CUDA", "Metal", "Vulkan", "CPU"} <= backends
    bench_backends = {r["backend"].split(",")[0] for r in BENCH}
    assert len(BENCH) >= 40 and {"CUDA", "Metal", "Vulkan", "ROCm", "CPU"} <= bench_backends
    assert len({r["model"] for r in BENCH}) >= 2


@pytest.mark.parametrize("record_path", LOG_RECORDS, ids=lambda p: p.stem)
def test_log_buffers_equal_the_recorded_values(record_path):
    record, log = load(record_path)
    measured = record["measured"]
    for table, parsed in (("model_buffer_mib", log.model_buffer_bytes), ("kv_buffer_mib", log.kv_buffer_bytes),
                          ("compute_buffer_mib", log.compute_buffer_bytes),
                          ("output_buffer_mib", log.output_buffer_bytes), ("input_buffer_mib", log.input_buffer_bytes)):
        expected = {device: bytes_from_mib(mib) for device, mib in measured.get(table, {}).items()}
        assert parsed == expected, table
    for key, parsed in (("k_cache_mib", log.k_cache_bytes), ("v_cache_mib", log.v_cache_bytes)):
        assert parsed == (bytes_from_mib(measured[key]) if key in measured else None), key
    assert log.graph_nodes == measured.get("graph_nodes")
    assert log.graph_splits == measured.get("graph_splits")
    assert log.graph_splits_single_token == measured.get("graph_splits_single_token")
    offloaded = measured.get("offloaded_layers")
    assert [log.offloaded_layers, log.total_layers] == (offloaded or [None, None])


@pytest.mark.parametrize("record_path", LOG_RECORDS, ids=lambda p: p.stem)
def test_log_settings_and_build_equal_the_recorded_ones(record_path):
    record, log = load(record_path)
    settings = record["settings"]
    for key in record["settings_in_log"]:
        assert log.settings[key] == settings[key], key
    for key in ("flash_attn", "type_k", "type_v", "n_seq_max"):
        if key in log.settings:
            assert log.settings[key] == settings[key], key
    assert log.build_number == record["build"]
    if log.settings.get("kv_size") is not None:
        assert log.settings["kv_size"] == settings["n_ctx"]
    assert log.pipeline_copies == settings.get("pipeline_copies")


@pytest.mark.parametrize("record_path", LOG_RECORDS, ids=lambda p: p.stem)
def test_the_kv_buffers_add_up_to_the_k_and_v_caches(record_path):
    _, log = load(record_path)
    if log.kv_buffer_bytes and log.kv_cache_bytes is not None:
        assert abs(sum(log.kv_buffer_bytes.values()) - log.kv_cache_bytes) <= 2 * MIB // 100   # two roundings


@pytest.mark.parametrize("record_path", LOG_RECORDS, ids=lambda p: p.stem)
def test_log_records_name_sources_devices_and_catalog_models(record_path):
    record = json.loads(record_path.read_text())
    assert record["engine"] == "llamacpp" and record["id"] == record_path.stem
    assert record["source"].startswith("https://github.com/") and record["source_note"]
    assert record["devices"] and record["quoted_lines"]
    text = record_path.with_suffix(".log").read_text()
    assert all(line in text for line in record["quoted_lines"])
    catalog = record["model"]["catalog_model"]
    assert catalog is None or (MODELS / f"{catalog}.json").is_file()


def test_the_loader_summary_is_read_in_each_generation_of_names():
    _, metal = load(DATA / "logs" / "ci-pythia-1.4b-q4_k-m4-metal-b4581.json")
    assert (metal.model_info["arch"], metal.model_info["n_layer"], metal.model_info["n_embd"]) == ("gptneox", 24, 2048)
    assert metal.model_info["n_vocab"] == 50304 and metal.file_type == "Q4_K - Medium"
    assert metal.gpu_names == ["Apple M4"] and metal.device_free_bytes == {"Metal": 10922 * MIB}
    _, old = load(DATA / "logs" / "issue-llamacpp-5137-mixtral-iq2_xxs-cpu-b1971.json")
    assert old.file_type == "IQ2_XSS - 2.0625 bpw" and old.model_info["model params"] == "46.70 B"


def test_only_the_first_context_is_read():
    text = (DATA / "logs" / "ci-pythia-2.8b-q4_0-v100-cuda-fa-b4581.log").read_text()
    second = ("llama_init_from_model: n_ctx         = 4096\n"
              "llama_kv_cache_init:      CUDA0 KV buffer size =  1280.00 MiB\n"
              "llama_init_from_model:      CUDA0 compute buffer size =   200.00 MiB\n"
              "llama_init_from_model: graph splits = 2\n")
    log = parse_llamacpp_log(text + second)
    assert log.settings["n_ctx"] == 2048
    assert log.kv_buffer_bytes == {"CUDA0": 640 * MIB} and log.compute_buffer_bytes["CUDA0"] == round(103.25 * MIB)


def test_a_kv_cache_in_two_parts_is_summed_per_device():
    text = ("llama_kv_cache_iswa: creating non-SWA KV cache, size = 4096 cells\n"
            "llama_kv_cache:      Metal KV buffer size =    96.00 MiB\n"
            "llama_kv_cache: size =   96.00 MiB (  4096 cells,  12 layers,  1/1 seqs), "
            "K (f16):   48.00 MiB, V (f16):   48.00 MiB\n"
            "llama_kv_cache_iswa: creating     SWA KV cache, size = 768 cells\n"
            "llama_kv_cache:      Metal KV buffer size =    18.00 MiB\n"
            "llama_kv_cache: size =   18.00 MiB (   768 cells,  12 layers,  1/1 seqs), "
            "K (f16):    9.00 MiB, V (f16):    9.00 MiB\n")
    log = parse_llamacpp_log(text)
    assert log.kv_buffer_bytes == {"Metal": 114 * MIB} and log.kv_cache_bytes == 114 * MIB


@pytest.mark.parametrize("record", BENCH, ids=lambda r: f"{r['device'][:24]}-{r['model']}-{r['test']}")
def test_bench_records_reparse_from_their_quoted_rows(record):
    row = parse_row(parse_header(record["header_row"]), record["quoted_row"])
    assert (row.model, row.backend, row.test) == (record["model"], record["backend"], record["test"])
    assert row.size_bytes == record["size_bytes"]
    assert row.params_billions == record["params_billions"]
    assert (row.tokens_per_s, row.tokens_per_s_std) == (record["tokens_per_s"], record["tokens_per_s_std"])
    for option in ("ngl", "threads", "n_batch", "n_ubatch", "fa", "type_k", "type_v", "mmap", "nkvo"):
        assert row.options.get(option) == record.get(option), option
    assert record["source"].startswith("https://github.com/") and record["device"]


def test_bench_tests_name_prompt_generation_and_depth():
    assert parse_test("pp512") == BenchTest(512, 0)
    assert parse_test("tg 128") == BenchTest(0, 128)
    assert parse_test("pp4096+tg128") == BenchTest(4096, 128)
    assert parse_test("pp512@d32768") == BenchTest(512, 0, 32768)
    with pytest.raises(BenchRowError):
        parse_test("decode")


def test_a_row_of_another_table_is_refused():
    header = parse_header("| model | size | params | backend | ngl | test | t/s |")
    with pytest.raises(BenchRowError):
        parse_row(header, "| llama 7B Q4_0 | 3.56 GiB | 6.74 B | CUDA | 99 | 1 | pp512 | 100.00 ± 1.00 |")
    with pytest.raises(BenchRowError):
        parse_header("| Model | Quant | Decode (t/s) |")
