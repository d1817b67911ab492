"""`sizer fit`: golden cases, the engines' budget arithmetic, placement rules and invariants."""

import csv
import io
import json

import pytest
from click.testing import CliRunner
from hypothesis import example, given, settings, strategies as st

from sizer import get_model
from sizer.catalog import model_entries
from sizer.cli import cli
from sizer.errors import UsageError
from sizer.gpuspec import parse_gpus, usable_memory_bytes
from sizer.plan.engines import (DOES_NOT_FIT, FITS, FIT_HEADROOM_FRACTION, MARGINAL, VLLM_CUDA_GRAPH_BYTES,
                                VLLM_NON_TORCH_BYTES_TP1, make_engine)
from sizer.plan.fit import Planner, fit
from sizer.plan.placement import Placement, choose_placement, stage_layers
from sizer.plan.recommend import recommend
from sizer.plan.report import FIT_CSV_COLUMNS
from sizer.quant import get_precision
from sizer.spec import Workload

from conftest import ROOT, benchmark_module

GiB = 2**30


def by_precision(result):
    return {o.precision: o for o in result.options}


# ---------------------------------------------------------------------------------------------
# Golden: Llama-3-70B on 2 x 48 GB


def llama3_70b_layer_bytes_bf16() -> int:
    h, kv, ff = 8192, 8 * 128, 28672
    return 2 * (2 * h * h + 2 * kv * h + 3 * h * ff + 2 * h)


def test_llama3_70b_on_2x48gb_golden():
    result = fit("llama3-70b", "2x48GB")
    options = by_precision(result)
    assert options["bf16"].verdict == DOES_NOT_FIT
    for p in ("int8", "nf4", "gptq-4bit-g128"):
        assert options[p].verdict == FITS, p
    bf16 = options["bf16"]
    assert (bf16.tensor_parallel, bf16.pipeline_parallel) == (1, 2)
    embed = 128256 * 8192 * 2
    stage0, stage1 = bf16.per_gpu
    assert stage0.weights == embed + 40 * llama3_70b_layer_bytes_bf16()
    assert stage1.weights == 40 * llama3_70b_layer_bytes_bf16() + 8192 * 2 + embed
    assert stage0.capacity == int(48 * GiB * (1 - 0.0054))
    assert stage1.kv_cache == 8192 * 40 * 2 * 8 * 128 * 2           # 40 layers of the 80 on this GPU
    assert bf16.min_gpus == 4
    assert "a lower precision" in " ".join(bf16.suggestions)
    assert options["nf4"].max_context_length == 8192 and options["nf4"].max_concurrency >= 4


def test_fit_cli_golden_table_and_json():
    r = CliRunner().invoke(cli, ["fit", "llama3-70b", "--gpus", "2x48GB", "--format", "json"])
    data = json.loads(r.output)
    assert data["gpus"]["label"] == "2x48GB" and data["engine"] == "transformers"
    assert data["workload"] == {"context_length": 8192, "batch_size": 1, "kv_dtype": "bf16"}
    verdicts = {o["precision"]: o["verdict"] for o in data["options"]}
    assert verdicts["bf16"] == "does-not-fit" and verdicts["int8"] == "fits" and verdicts["nf4"] == "fits"
    for o in data["options"]:
        g = o["per_gpu"]
        assert set(g) >= {"weights", "kv_cache", "activations", "overhead", "total", "free"}
        assert g["total"] == g["weights"] + g["kv_cache"] + g["activations"] + g["overhead"]
        assert g["free"] == g["usable_memory"] - g["total"]
    table = CliRunner().invoke(cli, ["fit", "llama3-70b", "--gpus", "2x48GB"]).output
    assert "sizes in GiB (1 GiB = 2^30 bytes)" in table and "does-not-fit" in table


# ---------------------------------------------------------------------------------------------
# vLLM budget arithmetic, worked by hand for Llama-3-8B on one H100 (defaults of vllm serve)


def test_vllm_budget_worked_example():
    """vLLM 0.20.2-0.27 at --gpu-memory-utilization 0.9: weights, the profiling peak, non-torch memory
    and CUDA graphs come off the budget (sizer.plan.vllm_releases)."""
    h100 = parse_gpus("1xH100").gpu
    total = usable_memory_bytes(h100)
    assert total == round(79.22 * GiB)                          # "total_gpu_memory 79.22GiB" in vLLM's log
    budget = int(0.9 * total)
    weights = 8_030_261_248 * 2 + 8192 * 128 * 2                # "model weights take 14.96GiB", RoPE table included
    residual = 2 * 8192 * 4096 * 2                              # profiling run: 8192 tokens
    mlp = 3 * 8192 * 14336 * 2                                  # the largest layer working set
    # the dummy sampler over 1024 requests, after the forward: the hidden states of the 8192 tokens and
    # the 1024 sampled rows held, 38 bytes per logit at its sort (sizer.plan.engines.sampler_sort_peak_bytes)
    sampler = (8192 + 1024) * 4096 * 2 + 1024 * 128256 * 38
    activation = max(residual + mlp, sampler)
    available = budget - weights - activation - VLLM_NON_TORCH_BYTES_TP1 - VLLM_CUDA_GRAPH_BYTES
    page = 16 * 32 * 2 * 8 * 128 * 2                            # block of 16 tokens over 32 layers
    tokens = available // page * 16

    option = fit("llama3-8b", "1xH100", engine="vllm==0.20.2", precision="bf16", context_length=8192,
                 gpu_memory_utilization=0.9).options[0]
    g = option.per_gpu[0]
    assert g.weights == weights and round(weights / GiB, 2) == 14.96
    assert g.activations == activation
    assert option.kv_cache_tokens == tokens
    assert option.max_concurrency == tokens // 8192
    assert g.kv_cache == available // page * page
    assert option.verdict == FITS


def test_vllm_refuses_when_one_sequence_does_not_fit():
    option = fit("llama3-70b", "2xL4", engine="vllm", precision="gptq-4bit-g128", context_length=8192).options[0]
    assert option.verdict == DOES_NOT_FIT


def test_vllm_marginal_when_fewer_sequences_than_asked():
    base = fit("llama3-8b", "1xH100", engine="vllm", precision="bf16", context_length=8192).options[0]
    many = fit("llama3-8b", "1xH100", engine="vllm", precision="bf16", context_length=8192,
               batch_size=base.max_concurrency + 1).options[0]
    assert many.verdict == MARGINAL and "fewer than" in many.reason


def test_vllm_utilization_changes_the_budget():
    low = fit("llama3-8b", "1xH100", engine="vllm", precision="bf16", gpu_memory_utilization=0.5).options[0]
    high = fit("llama3-8b", "1xH100", engine="vllm", precision="bf16", gpu_memory_utilization=0.95).options[0]
    assert low.kv_cache_tokens < high.kv_cache_tokens


# ---------------------------------------------------------------------------------------------
# llama.cpp and transformers profiles


def test_llamacpp_keeps_input_embedding_in_host_memory():
    from sizer.calc.overhead import CUDA_CONTEXT_BYTES

    option = fit("llama3-8b", "1xRTX-4090", engine="llamacpp", precision="Q4_K_M", context_length=4096).options[0]
    g = option.per_gpu[0]
    spec = get_model("llama3-8b")
    from sizer.calc.weights import weight_bytes_by_component
    from sizer.quant import get_precision

    parts = weight_bytes_by_component(spec, get_precision("Q4_K_M"))
    assert option.host_bytes == parts["embeddings"]
    assert g.weights == sum(parts.values()) - parts["embeddings"]
    assert g.kv_cache == 4096 * 32 * 2 * 8 * 128 * 2                 # f16 cache
    assert g.overhead == CUDA_CONTEXT_BYTES                            # the --fit margin only with --fit


def test_llamacpp_quantized_kv_cache():
    f16 = fit("llama3-8b", "1xRTX-4090", engine="llamacpp", precision="Q4_K_M", context_length=4096).options[0]
    q8 = fit("llama3-8b", "1xRTX-4090", engine="llamacpp", precision="Q4_K_M", context_length=4096,
             kv_dtype="q8_0").options[0]
    assert q8.per_gpu[0].kv_cache * 32 == f16.per_gpu[0].kv_cache * 17


def test_transformers_verdict_agrees_with_totals():
    for option in fit("mixtral", "2xA100-80GB", context_length=32768, batch_size=4).options:
        worst = option.fullest
        if option.verdict == DOES_NOT_FIT:
            assert worst.total > worst.capacity
        elif option.verdict == MARGINAL:
            assert worst.total <= worst.capacity and worst.free < FIT_HEADROOM_FRACTION * worst.capacity
        else:
            assert all(g.free >= FIT_HEADROOM_FRACTION * g.capacity for g in option.per_gpu)


# ---------------------------------------------------------------------------------------------
# Placement


def test_stage_layers_follow_vllm():
    assert [len(r) for r in stage_layers(80, 3)] == [27, 27, 26]
    assert [len(r) for r in stage_layers(32, 5)] == [6, 6, 7, 7, 6]     # extras from the second-to-last back
    assert stage_layers(10, 1) == [range(0, 10)]


def test_impossible_tensor_parallel_proposes_layouts():
    spec = get_model("llama3-70b")
    with pytest.raises(UsageError) as e:
        choose_placement(spec, 3, 3, None, True)
    assert "64 attention heads are not divisible by tensor parallel 3" in str(e.value)
    assert "TP1 x PP3" in str(e.value)
    assert choose_placement(spec, 3, None, None, True) == Placement(1, 3)
    assert choose_placement(spec, 8, None, None, True) == Placement(8, 1)


def test_kv_heads_replicated_beyond_their_count():
    spec = get_model("llama3-8b")                  # 8 KV heads
    engine = make_engine("vllm")
    planner = Planner(spec, parse_gpus("H100").gpu, engine)
    tp8 = planner.stages(get_precision("bf16"), Placement(8, 1))[0]
    tp16_spec = get_model("llama-2-70b")           # 64 heads, 8 KV heads: TP 16 keeps 1 KV head per GPU
    p16 = Planner(tp16_spec, parse_gpus("H100").gpu, engine).stages(get_precision("bf16"), Placement(16, 1))[0]
    p8 = Planner(tp16_spec, parse_gpus("H100").gpu, engine).stages(get_precision("bf16"), Placement(8, 1))[0]
    assert p16.kv_full_bytes_per_token == p8.kv_full_bytes_per_token == 80 * 2 * 128 * 2
    assert tp8.kv_full_bytes_per_token == 32 * 2 * 128 * 2


def test_tp_times_pp_must_match_gpu_count():
    r = CliRunner().invoke(cli, ["fit", "llama3-70b", "--gpus", "4xH100", "--tensor-parallel", "2",
                                 "--pipeline-parallel", "3"])
    assert r.exit_code == 2 and "= 6, but --gpus 4xH100 names 4" in r.output


# ---------------------------------------------------------------------------------------------
# Invariants

MODELS = list(model_entries())
GPUS = ["L4", "RTX-4090", "A100-80GB", "H100", "48GB", "L40S", "H200", "MI300X"]


@settings(max_examples=40, deadline=None)
@given(model=st.sampled_from(MODELS), gpu=st.sampled_from(GPUS), engine=st.sampled_from(["transformers", "vllm", "llamacpp"]),
       count=st.integers(1, 7), ctx=st.sampled_from([512, 2048, 8192, 32768]), batch=st.integers(1, 8))
# Gemma 4 E2B's last layers share earlier layers' KV: a pipeline stage of them alone holds no KV pool
@example(model="gemma-4-E2B-it", gpu="L4", engine="vllm", count=2, ctx=512, batch=1)
def test_more_gpus_never_turn_a_fit_into_a_misfit(model, gpu, engine, count, ctx, batch):
    precision = get_precision({"transformers": "nf4", "vllm": "gptq-4bit-g128", "llamacpp": "Q4_K_M"}[engine])
    gpu_spec = parse_gpus(gpu).gpu
    planner = Planner(get_model(model), gpu_spec, make_engine(engine))
    try:
        small, large = planner.placement(count), planner.placement(count + 1)
    except UsageError:
        return
    if planner.serves(precision, small, Workload(ctx, batch)):
        assert planner.serves(precision, large, Workload(ctx, batch))


@settings(max_examples=30, deadline=None)
@given(model=st.sampled_from(MODELS), gpu=st.sampled_from(GPUS), engine=st.sampled_from(["transformers", "vllm", "llamacpp"]),
       batch=st.integers(1, 16))
def test_max_context_decreases_as_batch_grows(model, gpu, engine, batch):
    precision = get_precision({"transformers": "nf4", "vllm": "awq-4bit-g128", "llamacpp": "Q4_K_M"}[engine])
    planner = Planner(get_model(model), parse_gpus(gpu).gpu, make_engine(engine))
    placement = Placement(1, 1)
    assert planner.max_context_length(precision, placement, Workload(1, batch + 1)) <= \
        planner.max_context_length(precision, placement, Workload(1, batch))


@settings(max_examples=30, deadline=None)
@given(model=st.sampled_from(MODELS), gpu=st.sampled_from(GPUS), ctx=st.sampled_from([1024, 8192, 65536]),
       batch=st.integers(1, 32))
def test_verdict_agrees_with_per_gpu_totals(model, gpu, ctx, batch):
    planner = Planner(get_model(model), parse_gpus(gpu).gpu, make_engine("transformers"))
    ev = planner.evaluate(get_precision("bf16"), Placement(1, 1), Workload(ctx, batch))
    g = ev.per_gpu[0]
    assert (ev.verdict == DOES_NOT_FIT) == (g.total > g.capacity)
    assert (ev.verdict == FITS) == (g.free >= FIT_HEADROOM_FRACTION * g.capacity)


# ---------------------------------------------------------------------------------------------
# Recommend, CSV, plot


def test_recommend_ranks_by_price_and_counts_are_minimal():
    result = recommend("llama3-70b", engine="vllm", precision="awq-4bit-g128", context_length=8192, batch_size=4)
    prices = [o.price_per_hour for o in result.options if o.price_per_hour is not None]
    assert prices == sorted(prices) and prices
    for option in result.options[:8]:
        assert option.verdict != DOES_NOT_FIT
        planner = Planner(get_model("llama3-70b"), parse_gpus(option.gpu).gpu, make_engine("vllm"))
        assert planner.min_gpus(get_precision("awq-4bit-g128"), Workload(8192, 4), 8)[0] == option.gpu_count


def test_csv_header_is_the_documented_one():
    r = CliRunner().invoke(cli, ["fit", "mixtral", "--gpus", "2xH100", "--engine", "vllm", "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert tuple(rows[0]) == FIT_CSV_COLUMNS
    assert ",".join(FIT_CSV_COLUMNS) in (ROOT / "README.md").read_text()
    assert {row["precision"] for row in rows} >= {"bf16", "fp8", "awq-4bit-g128"}
    for row in rows:
        assert int(row["total_per_gpu_bytes"]) + int(row["free_per_gpu_bytes"]) == int(row["usable_memory_per_gpu_bytes"])
        assert row["verdict"] in ("fits", "marginal", "fits-with-offload", "does-not-fit")
        assert float(row["price_per_hour_usd"]) > 0


def test_plot_written(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "fit.png"
    r = CliRunner().invoke(cli, ["fit", "llama3-70b", "--gpus", "2x48GB", "--plot", str(out)])
    assert r.exit_code == 0, r.output
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "fit.svg"
    assert CliRunner().invoke(cli, ["fit", "phi-2", "--gpus", "T4", "--plot", str(svg)]).exit_code == 0
    assert svg.read_text().lstrip().startswith("<?xml")
    again = CliRunner().invoke(cli, ["fit", "phi-2", "--gpus", "T4", "--plot", str(svg)])
    assert again.exit_code == 2 and "already exists" in again.output


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("args, message", [
    (["--gpus", "0x48GB"], "between 1 and 1024"),
    (["--gpus", "-2xH100"], "between 1 and 1024"),
    (["--gpus", "2xH1000"], "unknown GPU 'H1000'; did you mean"),
    (["--gpus", "2x48TB"], "cannot read '48TB' as a memory size"),
    (["--gpus", "3xH100", "--tensor-parallel", "3"], "not divisible by tensor parallel 3"),
    (["--recommend", "--gpus", "H100"], "leave out --gpus"),
    (["--gpus", "H100", "--gpu-memory-utilization", "0.8"], "apply to --engine vllm"),
    (["--gpus", "H100", "--engine", "vllm", "--gpu-memory-utilization", "0"], "must be in (0, 1]"),
    (["--gpus", "H100", "--kv-dtype", "fp6"], "unknown KV cache dtype"),
])
def test_bad_input_is_one_line(args, message):
    r = CliRunner().invoke(cli, ["fit", "llama3-70b", *args])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert message in r.output.strip().splitlines()[-1]


GPU_TEXT = st.one_of(st.text(max_size=14), st.from_regex(r"\A-?\d{0,3}[xX*]?[A-Za-z0-9.\-]{0,12}\Z"))


@settings(max_examples=120, deadline=None)
@given(gpus=GPU_TEXT, extra=st.lists(st.sampled_from(["--engine", "vllm", "llamacpp", "--tensor-parallel", "2", "0",
                                                      "--pipeline-parallel", "-c", "-b", "4096", "--recommend",
                                                      "--max-gpus", "x", "-p", "nf4", "Q4_K_M"]), max_size=4))
def test_random_gpu_strings_never_traceback(gpus, extra):
    r = CliRunner().invoke(cli, ["fit", "phi-2", "--gpus", gpus, *extra])
    assert r.exit_code in (0, 1, 2), (gpus, extra, r.output)
    assert "Traceback" not in r.output
    if r.exception is not None:
        assert isinstance(r.exception, SystemExit), (gpus, extra, repr(r.exception))


def test_claims_doc_is_up_to_date():
    """docs/claims.md is generated from sizer's numbers; regenerate with python benchmarks/claims.py."""
    claims = benchmark_module("claims")
    assert len(claims.CLAIMS) == 12
    assert (ROOT / "docs" / "claims.md").read_text() == claims.render()


@pytest.mark.parametrize("engine", ["transformers", "vllm", "llamacpp"])
def test_sweep_agrees_with_the_planner(engine):
    from sizer.plan.sweep import sweep

    points = sweep(models=["llama3-8b", "mixtral", "gemma-2-9b"], gpus=["L4", "RTX-4090", "H100"],
                   precisions=["bf16", "Q4_K_M"] if engine == "llamacpp" else ["bf16", "nf4"],
                   contexts=(1024, 32768), engine=engine, batch_size=2)
    assert len(points) == 3 * 3 * 2 * 2
    for p in points:
        planner = Planner(get_model(p.model), parse_gpus(p.gpu).gpu, make_engine(engine))
        ev = planner.evaluate(get_precision(p.precision), Placement(1, 1), Workload(p.context_length, 2))
        assert (ev.verdict, ev.fullest.total) == (p.verdict, p.total_bytes)


def test_local_gpus_through_nvml(monkeypatch):
    """--gpus local (the default when NVML sees GPUs) plans for the machine's own GPUs."""
    import sizer.env.hardware as hardware

    fake = [hardware.LocalGpu(i, "NVIDIA H100 80GB HBM3", 85520809984, 85000000000, "570.86") for i in range(2)]
    monkeypatch.setattr(hardware, "local_gpus", lambda: (fake, ""))
    data = json.loads(CliRunner().invoke(cli, ["fit", "llama3-70b", "--engine", "vllm", "--format", "json"]).output)
    assert data["gpus"]["label"] == "2xH100-SXM"
    assert data["options"][0]["tensor_parallel"] == 2
    monkeypatch.setattr(hardware, "local_gpus", lambda: ([], "no local GPUs found: no NVIDIA driver"))
    r = CliRunner().invoke(cli, ["fit", "llama3-70b"])
    assert r.exit_code == 2 and "no local GPUs found" in r.output and "--recommend" in r.output


def test_vllm_concurrency_ratio_in_json():
    data = json.loads(CliRunner().invoke(cli, ["fit", "llama3-8b", "--gpus", "H100", "--engine", "vllm",
                                               "-p", "bf16", "--format", "json"]).output)
    o = data["options"][0]
    assert o["max_concurrency_x"] == round(o["kv_cache_tokens"] / 8192, 2)
    assert o["max_concurrency"] == int(o["kv_cache_tokens"] // 8192)


def test_vllm_notes_the_precisions_it_no_longer_loads():
    """vLLM 0.32 has no bitsandbytes and loads GPTQ at 4/8-bit symmetric only; its default precisions
    carry no such note."""
    from sizer.plan.fit import fit

    result = fit("llama3-8b", "1x24GB", engine="vllm", precision=["nf4", "gptq-3bit-g128", "gptq-4bit-g128", "int8"])
    assert [n for n in result.notes if "vLLM 0.32" in n] == [
        "nf4, int8: vLLM 0.32 has no bitsandbytes support (0.11 had it); these rows size an older vLLM",
        "gptq-3bit-g128: vLLM 0.32 will not load it (it loads 4- and 8-bit GPTQ only, not 3-bit)"]
    assert not any("vLLM 0.32" in n for n in fit("llama3-8b", "1x24GB", engine="vllm").notes)
    assert not any("vLLM 0.32" in n for n in fit("llama3-8b", "1x24GB", precision=["nf4"]).notes)


def test_each_engine_caches_in_its_own_dtype_by_default():
    """llama.cpp's cache is f16 unless --cache-type-k/-v say otherwise; transformers and vLLM cache in
    the model's dtype: the label follows, the bytes (2 per value either way) do not change."""
    llamacpp = fit("llama3-8b", "1xRTX-4090", engine="llamacpp", precision="Q4_K_M", context_length=4096)
    assert llamacpp.kv_dtype == "fp16"
    assert fit("llama3-8b", "1xRTX-4090", engine="llamacpp", precision="Q4_K_M", context_length=4096,
               kv_dtype="bf16").options[0].fullest.kv_cache == llamacpp.options[0].fullest.kv_cache
    assert fit("llama3-8b", "1xH100", engine="vllm", context_length=4096).kv_dtype == "bf16"
    assert fit("llama3-8b", "1xH100", context_length=4096).kv_dtype == "bf16"


def test_json_and_csv_share_field_names():
    """One name, one meaning: a quantity in both renderings carries the same name and value."""
    from click.testing import CliRunner

    from sizer.cli import cli

    for engine in ("transformers", "vllm"):
        args = ["fit", "llama3-8b", "--gpus", "2xA100", "-p", "bf16,fp8", "-c", "4096", "--engine", engine]
        data = json.loads(CliRunner().invoke(cli, args + ["--format", "json"]).output)
        rows = list(csv.DictReader(io.StringIO(CliRunner().invoke(cli, args + ["--format", "csv"]).output)))
        assert len(rows) == len(data["options"]) == 2
        for option, row in zip(data["options"], rows):
            shared = set(option) & set(row)
            assert {"price_per_hour_usd", "cost_per_million_tokens_usd", "max_context_length", "min_gpus",
                    "layouts_compared"} <= shared
            for key in shared - {"layouts_compared", "launch"}:
                assert row[key] == ("" if option[key] is None else str(option[key])), key
            # a list in JSON is one cell in CSV: the layouts' names, the chosen first; the launch steps
            assert row["layouts_compared"] == ";".join(c["layout"] for c in option["layouts_compared"])
            assert row["launch"] == " ; ".join(f"[{s['on']}] {s['command']}" for s in option["launch"])
            assert int(row["usable_memory_per_gpu_bytes"]) == option["per_gpu"]["usable_memory"]
            assert option["per_gpu"]["usable_memory"] < data["gpus"]["memory_bytes"]
        assert (engine == "vllm") == all(len(o["layouts_compared"]) == 2 for o in data["options"])


def test_table_says_when_fewer_gpus_serve():
    """min_gpus was in JSON and CSV only: `mixtral --gpus 8xH100` never said two GPUs would do."""
    from click.testing import CliRunner

    from sizer.cli import cli

    args = ["fit", "mixtral", "--gpus", "8xH100", "-p", "bf16,nf4"]
    table = CliRunner().invoke(cli, args).output
    for option in json.loads(CliRunner().invoke(cli, args + ["--format", "json"]).output)["options"]:
        assert option["min_gpus"] < 8
        assert f"- {option['precision']}: " in table
        assert f"{option['min_gpus']}x{option['gpu']} would serve it too (min_gpus)" in table


def test_plot_marks_what_does_not_fit_and_names_the_stages(tmp_path):
    """A bar above the usable memory says by how much; pipeline stages are spelled out."""
    pytest.importorskip("matplotlib")
    from sizer.plan.fit import fit as run_fit

    svg = tmp_path / "fit.svg"
    r = CliRunner().invoke(cli, ["fit", "llama3-70b", "--gpus", "2x48GB", "-p", "bf16,nf4", "--plot", str(svg)])
    assert r.exit_code == 0, r.output
    text = svg.read_text()
    bf16 = run_fit("llama3-70b", "2x48GB", precision="bf16").options[0]
    overs = [f">{(g.total - g.capacity) / 2**30:,.1f} GiB</text>" for g in bf16.per_gpu if g.total > g.capacity]
    assert overs and text.count(">over by</text>") == len(overs)            # nf4 fits: no mark on its bars
    assert all(text.count(mark) >= overs.count(mark) for mark in overs)
    assert "pipeline stage 1 of 2" in text and "pipeline stage 2 of 2" in text


def test_one_workload_object_through_the_planner():
    """Issue 15: the planner takes one Workload; the old (context, batch) pair survives only where
    sizer.measure calls throughput with it, and gives the same numbers."""
    from sizer.plan.throughput import estimate_throughput

    spec, gpu = get_model("llama3-8b"), parse_gpus("H100").gpu
    planner = Planner(spec, gpu, make_engine("vllm"))
    bf16, workload = get_precision("bf16"), Workload(4096, 3)
    ev = planner.evaluate(bf16, Placement(1, 1), workload)
    assert ev.max_concurrency == planner.max_concurrency(bf16, Placement(1, 1), workload) > 3
    option = fit(spec, "1xH100", "vllm", "bf16", 4096, 3, suggestions=False).options[0]
    assert (option.verdict, option.kv_cache_tokens, option.max_concurrency) == (ev.verdict, ev.kv_cache_tokens, ev.max_concurrency)
    assert option.max_context_length == planner.max_context_length(bf16, Placement(1, 1), workload) == 8192
    stages = planner.stages(bf16, Placement(1, 1))
    engine = planner.engine
    assert estimate_throughput(spec, stages, Placement(1, 1), gpu, bf16, engine, workload) == option.throughput
    with pytest.raises(UsageError, match="batch size must be a positive"):
        planner.evaluate(bf16, Placement(1, 1), Workload(4096, 0))


# ---------------------------------------------------------------------------------------------
# A context beyond the model's maximum (issue 15): one rule for estimate and fit


def test_context_beyond_the_model_maximum_is_refused_by_estimate_and_fit():
    from sizer import estimate

    line = ("context length 32,768 exceeds Meta-Llama-3-8B's maximum of 8,192 tokens (max_position_embeddings in "
            "its config; vLLM refuses it too): use --context-length 8192 or less, or --allow-long-context to plan it anyway")
    with pytest.raises(UsageError) as e:
        estimate("llama3-8b", "bf16", context_length=32768)
    assert str(e.value) == line
    with pytest.raises(UsageError) as e:
        fit("llama3-8b", "1xH100", "vllm", "bf16", 32768)
    assert str(e.value) == line
    with pytest.raises(UsageError, match="exceeds Meta-Llama-3-8B's maximum of 8,192"):
        recommend("llama3-8b", engine="vllm", precision="bf16", context_length=8193)
    # at the maximum, and the defaults (the maximum, at most 8192), plan as before
    assert estimate("llama3-8b", "bf16", context_length=8192).context_length == 8192
    assert fit("llama3-8b", "1xH100", "vllm", "bf16").context_length == 8192
    assert fit("phi-2", "1xH100", "vllm", "bf16").context_length == 2048
    # a model whose config states no maximum is unaffected
    assert get_model("falcon-7b").max_context_length is None
    assert estimate("falcon-7b", "bf16", context_length=1_000_000).context_length == 1_000_000


def test_allow_long_context_plans_it_and_says_so():
    from sizer import estimate

    note = ("the context of 32,768 tokens exceeds the model's maximum of 8,192 (max_position_embeddings), planned "
            "anyway (--allow-long-context): vLLM starts only with VLLM_ALLOW_LONG_MAX_MODEL_LEN=1, and the model may "
            "degrade beyond its trained length")
    e = estimate("llama3-8b", "bf16", context_length=32768, allow_long_context=True)
    assert note in e.details["notes"] and e.details["model_max_context_length"] == 8192
    assert e.kv_cache_bytes == 32768 * 32 * 2 * 8 * 128 * 2
    r = fit("llama3-8b", "1xH100", "vllm", "bf16", 32768, allow_long_context=True)
    assert note in r.notes and (r.context_length, r.model_max_context_length) == (32768, 8192)
    assert fit("llama3-8b", "1xH100", "vllm", "bf16", 8192).notes == ()


def test_cli_refuses_a_context_beyond_the_maximum_in_one_line():
    for args in (["estimate", "llama3-8b", "-c", "1000000"], ["fit", "llama3-8b", "--gpus", "1xH100", "-c", "32768"]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 2 and "Traceback" not in r.output
        assert r.output.strip().splitlines()[-1].startswith("Error: context length ")
        assert "maximum of 8,192 tokens (max_position_embeddings in its config" in r.output
    r = CliRunner().invoke(cli, ["fit", "llama3-8b", "--gpus", "1xH100", "-c", "32768", "--allow-long-context",
                                 "-p", "bf16", "--format", "json"])
    data = json.loads(r.output)
    assert r.exit_code == 0 and data["model_max_context_length"] == 8192
    assert any("planned anyway (--allow-long-context)" in n for n in data["notes"])
    # the help's examples stay within their models' maxima
    for command in ("fit", "estimate"):
        text = CliRunner().invoke(cli, [command, "--help"]).output
        assert "llama3.1-8b" in text and "llama3-8b --gpus H100 --engine vllm -c 32768" not in text
    assert get_model("llama3.1-8b").max_context_length == 131072


# ---------------------------------------------------------------------------------------------
# Layouts of a GPU count (issue 15): fit compares them and prefers the one that serves best


def test_more_gpus_switch_layout_rather_than_offer_less():
    """Qwen3-235B-A22B (64 heads, 4 KV heads, 94 layers): TP8 replicates each KV head over two GPUs,
    so 8 GPUs at TP8 held fewer tokens than 6 at TP2 x PP3; fit now compares 8's layouts."""
    def option(gpus, **kw):
        return fit("qwen3-235b-a22b", gpus, "vllm==0.20.2", "gptq-4bit-g128", 32768, 32, suggestions=False,
                   gpu_memory_utilization=0.9, **kw).options[0]

    six, eight = option("6xH100"), option("8xH100")
    assert [c.layout for c in six.layouts_compared] == ["TP2xPP3", "TP1xPP6"]
    assert (six.tensor_parallel, six.pipeline_parallel, six.max_context_length) == (2, 3, 40960)
    assert (eight.tensor_parallel, eight.pipeline_parallel, eight.max_context_length) == (4, 2, 40960)
    assert {c.layout for c in eight.layouts_compared} == {"TP8xPP1", "TP4xPP2", "TP2xPP4", "TP1xPP8"}
    tp8 = next(c for c in eight.layouts_compared if c.layout == "TP8xPP1")
    assert tp8.max_context_length < eight.max_context_length            # what fit used to offer
    assert eight.max_concurrency >= six.max_concurrency
    assert eight.layouts_compared[0].max_concurrency == eight.max_concurrency
    # the user's layout still wins, and then nothing else is compared
    forced = option("8xH100", tensor_parallel=8)
    assert (forced.tensor_parallel, forced.max_context_length, len(forced.layouts_compared)) == \
        (8, tp8.max_context_length, 0)
    # JSON, CSV and the table say which layouts were compared
    args = ["fit", "qwen3-235b-a22b", "-p", "gptq-4bit-g128", "--gpus", "8xH100", "-c", "32768", "-b", "32",
            "--engine", "vllm==0.20.2", "--gpu-memory-utilization", "0.9"]
    data = json.loads(CliRunner().invoke(cli, [*args, "--format", "json"]).output)
    compared = data["options"][0]["layouts_compared"]
    assert [c["layout"] for c in compared][0] == "TP4xPP2" and set(compared[0]) == {
        "layout", "verdict", "max_concurrency", "max_context_length", "decode_tokens_per_s_total"}
    row = next(csv.DictReader(io.StringIO(CliRunner().invoke(cli, [*args, "--format", "csv"]).output)))
    assert row["layouts_compared"].split(";")[0] == "TP4xPP2" and len(row["layouts_compared"].split(";")) == 4
    assert "layouts compared: TP4xPP2 (chosen), " in CliRunner().invoke(cli, args).output


def test_one_layout_engines_compare_nothing():
    option = fit("llama3-70b", "2xH100", "transformers", "bf16", 4096, suggestions=False).options[0]
    assert (option.tensor_parallel, option.pipeline_parallel, option.layouts_compared) == (1, 2, ())


@settings(max_examples=40, deadline=None)
@given(model=st.sampled_from(MODELS), gpu=st.sampled_from(GPUS), engine=st.sampled_from(["transformers", "vllm", "llamacpp"]),
       count=st.integers(1, 15), ctx=st.sampled_from([512, 2048, 8192, 32768]), batch=st.integers(1, 8))
def test_more_gpus_never_lose_the_fit_nor_max_context_with_the_chosen_layout(model, gpu, engine, count, ctx, batch):
    """With fit's own layout choice (best_layout), count + 1 GPUs of the same kind never turn a fit into
    a misfit and never offer a shorter max context than count (where both counts have a valid layout)."""
    precision = get_precision({"transformers": "nf4", "vllm": "gptq-4bit-g128", "llamacpp": "Q4_K_M"}[engine])
    spec = get_model(model)
    workload = Workload(min(ctx, spec.max_context_length or ctx), batch)
    planner = Planner(spec, parse_gpus(gpu).gpu, make_engine(engine))
    try:
        (small, s_scores), (large, l_scores) = (planner.best_layout(precision, n, workload) for n in (count, count + 1))
    except UsageError:
        return
    if planner.serves(precision, small, workload):
        assert planner.serves(precision, large, workload)
    assert planner.max_context_length(precision, large, workload) >= planner.max_context_length(precision, small, workload)


@pytest.mark.parametrize("text, name, count", [("4090", "RTX-4090", None), ("2x3090", "RTX-3090", 2),
                                               ("8x5090", "RTX-5090", 8), ("2x48GB", "48GB", 2)])
def test_gpus_people_name_by_number(text, name, count):
    """`--gpus 4090` is the GeForce card (a catalog alias), not a malformed size; sizes keep their unit."""
    selection = parse_gpus(text)
    assert (selection.gpu.name, selection.count) == (name, count)
    with pytest.raises(UsageError, match="cannot read '4091' as a memory size"):
        parse_gpus("2x4091")


def test_a_gpu_count_vllm_cannot_split_runs_on_fewer_gpus():
    """Found by the property above: Bloom (112 heads) on 9xL4 has only TP1xPP9 (max context 2,560 at
    batch 6); 8 of the 9 GPUs in TP8 serve it: fit runs on 8, leaves one idle, and says so."""
    nine = fit("bloom", "9xL4", "vllm", "gptq-4bit-g128", 2048, 6, suggestions=False).options[0]
    eight = fit("bloom", "8xL4", "vllm", "gptq-4bit-g128", 2048, 6, suggestions=False).options[0]
    assert (nine.gpu_count, nine.tensor_parallel, nine.pipeline_parallel) == (9, 8, 1)
    assert (nine.verdict, nine.max_context_length) == (eight.verdict, eight.max_context_length)
    assert nine.price_per_hour == pytest.approx(eight.price_per_hour * 9 / 8)      # the idle GPU is paid for
    assert "runs on 8 of the 9 GPUs (TP8xPP1): no layout of all 9 serves the workload as well" in nine.reason
    assert [c.layout for c in nine.layouts_compared] == ["TP8xPP1", "TP1xPP9"]
    assert nine.layouts_compared[0].max_context_length > nine.layouts_compared[1].max_context_length


# ---------------------------------------------------------------------------------------------
# Engine hardware rules (issue 15): compute capability decides what an engine runs


def test_transformers_dequantizes_fp8_below_compute_capability_8_9():
    a100 = fit("llama3-8b", "1xA100-80GB", "transformers", ["fp8", "bf16"], 4096, suggestions=False)
    h100 = fit("llama3-8b", "1xH100", "transformers", ["fp8", "bf16"], 4096, suggestions=False)
    fp8, bf16 = by_precision(a100)["fp8"], by_precision(a100)["bf16"]
    assert fp8.precision == "fp8" and fp8.fullest.weights == bf16.fullest.weights       # held as bf16
    assert by_precision(h100)["fp8"].fullest.weights < 0.6 * by_precision(h100)["bf16"].fullest.weights
    assert ("fp8 on A100-80GB: transformers dequantizes FP8 weights to bf16 below compute capability 8.9 (A100-80GB "
            "has compute capability 8.0; FineGrainedFP8HfQuantizer.validate_environment): bf16 weight memory planned") in a100.notes
    assert not any("dequantizes" in n for n in h100.notes)
    # --recommend no longer offers one A100-80GB for Llama-3-70B in fp8 (70 GB of bf16 weights do not fit it)
    offered = recommend("llama3-70b", engine="transformers", precision="fp8", context_length=4096).options
    assert not any(o.gpu == "A100-80GB" and o.gpu_count == 1 for o in offered)
    assert any(o.gpu == "H100-SXM" and o.gpu_count == 1 for o in offered)


def test_vllm_fp8_and_gptq_by_compute_capability():
    def one(gpus, precision):
        return fit("llama3-8b", gpus, "vllm", precision, 4096, suggestions=False)

    h100, a100, v100 = one("1xH100", "fp8"), one("1xA100-80GB", "fp8"), one("1xV100-32GB", "fp8")
    assert a100.options[0].fullest.weights == h100.options[0].fullest.weights        # Marlin keeps FP8 weights
    assert a100.options[0].verdict == FITS and any("through Marlin below compute capability 8.9" in n for n in a100.notes)
    o = v100.options[0]
    assert (o.verdict, o.max_concurrency, o.max_context_length, o.min_gpus) == (DOES_NOT_FIT, 0, 0, None)
    assert o.reason == ("vLLM has no FP8 kernel below compute capability 8.0 (V100-32GB has compute capability 7.0): "
                        "FP8 runs natively from 8.9 and weight-only through Marlin from 8.0")
    t4, v100 = one("1xT4", "gptq-4bit-g128").options[0], one("1xV100-32GB", "gptq-4bit-g128").options[0]
    assert t4.verdict != DOES_NOT_FIT                                   # Marlin from 7.5 (MARLIN_MIN_CAPABILITY)
    assert v100.verdict == DOES_NOT_FIT and "Marlin (>= 7.5); V100-32GB has compute capability 7.0" in v100.reason
    assert one("1xV100-32GB", "bf16").options[0].verdict == FITS
    # a GPU named by size only has no compute capability: no rule applies
    assert one("1x48GB", "fp8").options[0].verdict == FITS and parse_gpus("48GB").gpu.capability is None


def test_bitsandbytes_on_amd_says_so():
    r = fit("llama3-8b", "1xMI300X", "transformers", "nf4", 4096, suggestions=False)
    assert "nf4: bitsandbytes is built for CUDA; on MI300X (AMD) it needs bitsandbytes' ROCm build (sized as on CUDA)" in r.notes
    assert not any("bitsandbytes is built for CUDA" in n for n in fit("llama3-8b", "1xH100", "transformers", "nf4", 4096).notes)


def test_sweep_applies_the_hardware_rules_per_gpu():
    from sizer.plan.sweep import sweep

    points = sweep(models=["llama3-8b"], gpus=["A100-80GB", "H100", "V100-32GB"], precisions=["fp8"], contexts=(4096,),
                   engine="transformers")
    totals = {p.gpu: p.total_bytes for p in points}
    assert totals["A100-80GB"] == totals["V100-32GB"] > totals["H100-SXM"]
    vllm = {p.gpu: p.verdict for p in sweep(models=["llama3-8b"], gpus=["A100-80GB", "V100-32GB"], precisions=["fp8"],
                                            contexts=(4096,), engine="vllm")}
    assert vllm == {"A100-80GB": FITS, "V100-32GB": DOES_NOT_FIT}


def test_llamacpp_refuses_bitsandbytes_weights():
    r = fit("llama3-8b", "1xRTX-4090", "llamacpp", ["nf4", "int8", "Q4_K_M"], 4096, suggestions=False)
    nf4, int8, q4 = (by_precision(r)[p] for p in ("nf4", "int8", "Q4_K_M"))
    assert nf4.reason == ("llama.cpp loads GGUF files and cannot load bitsandbytes (nf4) weights: plan a GGUF type "
                          "(Q8_0, Q6_K, Q5_K_M, Q4_K_M, ...) instead")
    assert (nf4.verdict, nf4.max_context_length, nf4.max_concurrency, nf4.min_gpus) == (DOES_NOT_FIT, 0, 0, None)
    assert int8.verdict == DOES_NOT_FIT and "bitsandbytes (int8)" in int8.reason
    assert q4.verdict == FITS
    # the same precision on the other engines is planned as before
    assert fit("llama3-8b", "1xRTX-4090", "transformers", "nf4", 4096).options[0].verdict == FITS


def test_llamacpp_output_says_the_kv_cache_is_f16():
    args = ["fit", "llama3-8b", "--gpus", "1xRTX-4090", "--engine", "llamacpp", "-p", "Q4_K_M", "-c", "4096"]
    table = CliRunner().invoke(cli, args).output
    assert "workload: 1 x 4,096 tokens, KV cache fp16 · " in table
    data = json.loads(CliRunner().invoke(cli, [*args, "--format", "json"]).output)
    assert data["workload"]["kv_dtype"] == "fp16"
    assert data["options"][0]["per_gpu"]["kv_cache"] == 4096 * 32 * 2 * 8 * 128 * 2       # 2 bytes per value
    row = next(csv.DictReader(io.StringIO(CliRunner().invoke(cli, [*args, "--format", "csv"]).output)))
    assert row["kv_dtype"] == "fp16"


def test_a_checkpoints_long_keep_list_is_cut_in_the_table_only():
    """nvidia/DeepSeek-V3.1-NVFP4 keeps four attention projections 16-bit: its precision name is over 100
    characters; the table shows the format and "-keep-...", the notes and JSON the whole name."""
    args = ["fit", "deepseek-v3.1", "--gpus", "8xB200", "--engine", "vllm", "-p", "nvfp4"]
    table = CliRunner().invoke(cli, args).output
    name = json.loads(CliRunner().invoke(cli, args + ["--format", "json"]).output)["options"][0]["precision"]
    assert len(name) > 100 and name.startswith("modelopt-nvfp4")
    row = next(line for line in table.splitlines() if line.startswith("modelopt-nvfp4"))
    assert row.split()[0] == name.split("-keep-")[0] + "-keep-..."
    assert f"- {name}: " in table


@pytest.mark.parametrize("engine, precision, words", [
    ("vllm", "bf16", "vLLM has no Apple GPU (Metal) backend"),
    ("sglang", "bf16", "SGLang has no Apple GPU (Metal) backend"),
    ("transformers", "nf4", "bitsandbytes (nf4) has no Apple GPU (MPS) kernels"),
])
def test_apple_gpus_refuse_what_cannot_run_on_metal_on_one_mac(engine, precision, words):
    out = json.loads(CliRunner().invoke(cli, ["fit", "llama-3.1-8b", "--gpus", "m3-max-64gb", "--engine", engine,
                                              "-p", precision, "--format", "json"]).output)
    [option] = out["options"]
    assert option["verdict"] == "does-not-fit" and words in option["reason"]
    assert option["gpu_count"] == 1 and option["min_gpus"] is None       # no search over 32 Macs


def test_apple_gpus_run_llamacpp_and_transformers_bf16():
    for engine, precision in (("llamacpp", "Q4_K_M"), ("transformers", "bf16")):
        out = json.loads(CliRunner().invoke(cli, ["fit", "llama-3.1-8b", "--gpus", "m3-max-64gb", "--engine", engine,
                                                  "-p", precision, "--format", "json"]).output)
        assert out["options"][0]["verdict"] == "fits", (engine, out["options"][0]["reason"])
