"""Partial offload as an answer: llama.cpp's --fit layer search, the fits-with-offload verdict, the
system RAM check, the speed with layers in system RAM, CPU-only plans (docs/calculation.md)."""

import csv
import io
import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from sizer.cli import cli
from sizer.gpuspec import parse_gpus, usable_memory_bytes
from sizer.inputs.resolve import get_model
from sizer.plan.engines import (DOES_NOT_FIT, FITS_WITH_OFFLOAD, HOST_RESERVE_BYTES, LlamaCppEngine, VERDICT_ORDER,
                                make_engine)
from sizer.plan.fit import Planner, fit
from sizer.plan.llamacpp import FIT_MARGIN_BYTES, LlamaCppSettings
from sizer.plan.placement import Placement
from sizer.plan.report import FIT_CSV_COLUMNS
from sizer.quant import get_precision
from sizer.spec import Workload

GiB = 2**30
DONE = ["fit", "llama-3.1-70b", "-p", "Q4_K_M", "--gpus", "RTX-3060", "--ram", "64GB", "--engine", "llamacpp"]


def run(*args):
    r = CliRunner().invoke(cli, list(args))
    assert r.exit_code == 0, r.output
    return r.output


def _usage(engine, spec, precision, n_devices, workload, counts, capacity):
    """Each GPU's use with `counts` layer slots per GPU, as the engine reports it."""
    plan = engine.plan(spec, precision, n_devices, workload, counts)
    return engine._usage(plan, spec, capacity, workload.batch_size, 0)


@pytest.mark.parametrize("ngl", [1, 20, 57])
def test_fit_search_keeps_the_margin_exactly(ngl):
    """A GPU whose memory is exactly what -ngl N uses plus --fit's 1024 MiB takes N layers; a byte less, N-1."""
    spec, q4 = get_model("llama-3.1-70b"), get_precision("Q4_K_M")
    work = Workload(4096, 1)
    used = _usage(LlamaCppEngine(), spec, q4, 1, work, (ngl,), 1)[0].total
    for capacity, expected in ((used + FIT_MARGIN_BYTES, ngl), (used + FIT_MARGIN_BYTES - 1, ngl - 1)):
        engine = LlamaCppEngine()
        counts = engine.fit_layers(spec, q4, 1, work, lambda plan, c=capacity: engine._usage(plan, spec, c, 1, 0))
        assert counts == (expected,)


def test_fit_search_fills_the_last_gpu_first():
    """common/fit.cpp fills devices back to front: the last GPU takes the most slots that keep its margin,
    then the one before it, from what is left."""
    spec, q4 = get_model("llama-3.1-70b"), get_precision("Q4_K_M")
    work, capacity = Workload(4096, 1), 12 * GiB
    engine = LlamaCppEngine()
    usage = lambda plan: engine._usage(plan, spec, capacity, 1, 0)      # noqa: E731
    first, last = engine.fit_layers(spec, q4, 2, work, usage)
    fits = lambda counts, d: usage(engine.plan(spec, q4, 2, work, counts))[d].total + FIT_MARGIN_BYTES <= capacity  # noqa: E731
    assert fits((0, last), 1) and not fits((0, last + 1), 1)
    assert fits((first, last), 0) and not fits((first + 1, last), 0)
    assert 0 < first and 0 < last and first + last < spec.n_layers + 1


def test_verdict_order_puts_offload_between_marginal_and_does_not_fit():
    assert list(VERDICT_ORDER) == ["fits", "marginal", FITS_WITH_OFFLOAD, DOES_NOT_FIT]


def test_done_command_answers_with_layers_ram_and_speed():
    out = run(*DONE)
    row = next(line for line in out.splitlines() if line.startswith("Q4_K_M"))
    assert "fits-with-offload" in row
    data = json.loads(run(*DONE, "--format", "json"))
    o = data["options"][0]
    ngl, host = o["n_gpu_layers"], o["host"]
    assert 0 < ngl < 81 and o["gpu_count"] == 1
    assert f"-ngl {ngl}" in out and f"{ngl}/81 layers on the GPU" in out
    assert f"{host['total'] / GiB:.1f} GiB in system RAM (of 64.0 GiB)" in out
    assert 0.2 < o["decode_tokens_per_s"] < 5 and "tok/s decode" in out
    # prompt processing: the GPU's rate for every layer, slowed by copying the host weights in per micro-batch
    on_gpus = fit("llama-3.1-70b", "5xRTX-3060", "llamacpp", "Q4_K_M").options[0].throughput.prefill_tokens_per_s
    assert 0 < o["prefill_tokens_per_s"] < on_gpus and "tok/s prompt" in out
    assert data["ram_bytes"] == 64 * GiB and data["ram_free_bytes"] == 64 * GiB - HOST_RESERVE_BYTES
    assert host["free"] == 64 * GiB - host["total"]
    # the host part is the layers below -ngl: weights of 80 + 1 - ngl layer slots plus the embedding
    assert host["weights"] > (80 - ngl) / 80 * 35 * GiB


def test_ram_too_small_is_does_not_fit_with_the_numbers():
    data = json.loads(run(*DONE, "--format", "json"))
    host_total = data["options"][0]["host"]["total"]
    exact = host_total + HOST_RESERVE_BYTES
    ok = fit("llama-3.1-70b", "RTX-3060", "llamacpp", "Q4_K_M", ram_bytes=exact).options[0]
    short = fit("llama-3.1-70b", "RTX-3060", "llamacpp", "Q4_K_M", ram_bytes=exact - 1).options[0]
    assert ok.verdict == FITS_WITH_OFFLOAD and short.verdict == DOES_NOT_FIT
    assert f"needs {host_total / GiB:.1f} GiB of system RAM" in short.reason and not short.launch
    out = CliRunner().invoke(cli, [*DONE[:-4], "--ram", "32GB", "--engine", "llamacpp"]).output
    assert "does-not-fit" in out and "more than the 32.0 GiB of RAM" in out


def test_unknown_ram_is_said_not_refused():
    o = fit("llama-3.1-70b", "1xRTX-3060", "llamacpp", "Q4_K_M").options[0]
    assert o.verdict == FITS_WITH_OFFLOAD and "system RAM not given (--ram)" in o.reason


def test_user_ngl_and_fit_off_are_kept():
    """-ngl set by the user or --fit off: llama.cpp does not search (common/fit.cpp aborts the layer step)."""
    spec, q4 = get_model("llama-3.1-70b"), get_precision("Q4_K_M")
    gpu = parse_gpus("RTX-3060").gpu
    for flags, verdict, ngl in (({"n_gpu_layers": "20"}, FITS_WITH_OFFLOAD, 20), ({"fit": "off"}, DOES_NOT_FIT, 81)):
        engine = make_engine("llamacpp", llamacpp_settings=flags)
        ev = Planner(spec, gpu, engine, "fp16").evaluate(q4, Placement(1, 1), Workload(4096, 1))
        assert (ev.verdict, ev.engine_values["n_gpu_layers"]) == (verdict, ngl)


def test_speed_of_the_host_layers_scales_with_the_ram_bandwidth():
    """A token's time is the GPU's part plus the host layers' bytes over the host bandwidth: 1/tok/s is
    linear in 1/bandwidth, and the host part is what the slope says."""
    def seconds(bw):
        return 1 / fit("llama-3.1-70b", "RTX-3060", "llamacpp", "Q4_K_M", ram_bytes=64 * GiB,
                       ram_bandwidth_gbps=bw).options[0].throughput.decode_tokens_per_s
    s50, s100, s200 = seconds(50), seconds(100), seconds(200)
    assert s50 > s100 > s200
    assert (s50 - s100) == pytest.approx(2 * (s100 - s200), rel=1e-3)     # the same b x (1/bw1 - 1/bw2)
    full = fit("llama-3.1-70b", "5xRTX-3060", "llamacpp", "Q4_K_M").options[0]
    assert full.throughput.decode_tokens_per_s > 5 / s100


def test_apple_unified_memory_counts_the_gpu_part_against_the_same_ram():
    """A Mac: the GPU's wired limit bounds its layers, the rest run on the CPU side of the same memory,
    read at the chip's bandwidth; the GPU's part and the host's share the RAM."""
    mac = parse_gpus("m4-max-48gb").gpu
    o = fit("llama-3.1-70b", "m4-max-48gb", "llamacpp", "Q4_K_M").options[0]
    g, host = o.fullest, o.engine_values["host"]
    assert o.verdict == FITS_WITH_OFFLOAD and o.gpu_count == 1
    assert g.total + FIT_MARGIN_BYTES <= usable_memory_bytes(mac) == mac.gpu_memory_limit_bytes
    r = fit("llama-3.1-70b", "m4-max-48gb", "llamacpp", "Q4_K_M")
    assert r.host.ram_bytes == mac.memory_bytes and r.host.bandwidth_gbps == mac.memory_bandwidth_gbps
    exact = g.total + host["total"] + HOST_RESERVE_BYTES
    assert fit("llama-3.1-70b", "m4-max-48gb", "llamacpp", "Q4_K_M", ram_bytes=exact).options[0].verdict \
        == FITS_WITH_OFFLOAD
    assert fit("llama-3.1-70b", "m4-max-48gb", "llamacpp", "Q4_K_M", ram_bytes=exact - 1).options[0].verdict \
        == DOES_NOT_FIT


def test_json_and_csv_carry_the_host_side():
    data = json.loads(run(*DONE, "--format", "json"))
    o = data["options"][0]
    assert set(o["host"]) >= {"weights", "kv_cache", "compute", "output", "total", "free"}
    rows = list(csv.DictReader(io.StringIO(run(*DONE, "--format", "csv"))))
    assert list(rows[0])[-6:] == ["n_gpu_layers", "host_weights_bytes", "host_kv_cache_bytes", "host_total_bytes",
                                  "ram_bytes", "ram_free_bytes"] == list(FIT_CSV_COLUMNS[-6:])
    assert int(rows[0]["n_gpu_layers"]) == o["n_gpu_layers"] and int(rows[0]["host_total_bytes"]) == o["host"]["total"]
    assert int(rows[0]["ram_bytes"]) == 64 * GiB


def test_cpu_only_plans_llamacpp_with_every_layer_in_ram():
    o = json.loads(run("fit", "llama3-8b", "-p", "Q4_K_M", "--gpus", "cpu", "--ram", "16GB", "--engine", "llamacpp",
                       "--format", "json"))
    opt = o["options"][0]
    assert opt["verdict"] == "fits" and opt["n_gpu_layers"] == 0 and opt["gpu"] == "CPU"
    assert opt["per_gpu"]["usable_memory"] == 16 * GiB - HOST_RESERVE_BYTES
    assert opt["per_gpu"]["total"] == opt["host"]["total"] and "-ngl 0" in opt["launch"][0]["command"]
    assert opt["decode_tokens_per_s"] > 0
    small = json.loads(run("fit", "llama3-8b", "-p", "Q4_K_M", "--gpus", "none", "--ram", "8GB", "--engine",
                           "llamacpp", "--format", "json"))["options"][0]
    assert small["verdict"] == "does-not-fit"


def test_local_without_gpus_plans_the_cpu(monkeypatch):
    import sizer.env.hardware as hardware

    monkeypatch.setattr(hardware, "local_gpus", lambda: ([], "no local GPUs found: CPU-only (test)"))
    monkeypatch.setattr(hardware, "system_ram_bytes", lambda: 32 * GiB)
    out = run("fit", "llama3-8b", "-p", "Q4_K_M", "--engine", "llamacpp")
    assert "CPU only" in out and "-ngl 0" in out and "32.0 GiB (this machine's RAM)" in out
    r = CliRunner().invoke(cli, ["fit", "llama3-8b", "--engine", "vllm"])
    assert r.exit_code == 2 and "CPU-only plans are llama.cpp's" in r.output


def test_ollama_and_lmstudio_write_the_offload_into_their_commands():
    out = run("fit", "llama-3.1-70b", "-p", "Q4_K_M", "--gpus", "RTX-3060", "--ram", "64GB", "--engine", "ollama",
              "--format", "json")
    o = json.loads(out)["options"][0]
    assert o["verdict"] == FITS_WITH_OFFLOAD and f"PARAMETER num_gpu {o['n_gpu_layers']}" in o["launch"][1]["command"]
    lm = json.loads(run("fit", "llama-3.1-70b", "-p", "Q4_K_M", "--gpus", "RTX-3060", "--ram", "64GB", "--engine",
                        "lmstudio", "--format", "json"))["options"][0]
    ratio = float(lm["launch"][0]["command"].rsplit("--gpu ", 1)[1])
    assert round(ratio * 81) <= lm["n_gpu_layers"] < round((ratio + 0.01) * 81) + 1
    set20 = json.loads(run("fit", "llama-3.1-70b", "-p", "Q4_K_M", "--gpus", "RTX-3060", "--ram", "64GB", "--engine",
                           "ollama", "--engine-args", "num_gpu=20", "--format", "json"))["options"][0]
    assert set20["n_gpu_layers"] == 20


def test_old_ollama_keeps_its_own_margin():
    """Ollama before 0.30 chose num_gpu with its 457 MiB minimum (not llama.cpp's 1024 MiB target): at
    least as many layers as 0.30's llama-server --fit."""
    new = fit("llama-3.1-70b", "RTX-3060", "ollama==0.33.0", "Q4_K_M", ram_bytes=64 * GiB).options[0]
    old = fit("llama-3.1-70b", "RTX-3060", "ollama==0.11.4", "Q4_K_M", ram_bytes=64 * GiB).options[0]
    assert old.engine_values["n_gpu_layers"] >= new.engine_values["n_gpu_layers"]
    assert old.fullest.free >= 457 * 2**20 and new.fullest.free >= FIT_MARGIN_BYTES


def test_recommend_and_min_gpus_count_gpus_that_hold_every_layer():
    o = fit("llama-3.1-70b", "RTX-3060", "llamacpp", "Q4_K_M").options[0]
    assert o.verdict != FITS_WITH_OFFLOAD and o.gpu_count == o.min_gpus
    spec = get_model("llama-3.1-70b")
    engine = replace(LlamaCppEngine(), settings=LlamaCppSettings())
    planner = Planner(spec, parse_gpus("RTX-3060").gpu, engine, "fp16")
    assert not planner.serves(get_precision("Q4_K_M"), Placement(1, 1), Workload(8192, 1), offload=False)


def test_host_memory_names_list_the_catalog_rows():
    from sizer.catalog import host_memory_entries
    from sizer.cli import fit as fit_command

    help_text = next(p.help for p in fit_command.params if p.name == "host_memory")
    assert all(name in help_text for name in host_memory_entries())
    r = CliRunner().invoke(cli, [*DONE, "--host-memory", "DDR9"])
    assert r.exit_code == 2 and "DDR5-5600-2ch" in r.output
    slow = fit("llama-3.1-70b", "RTX-3060", "llamacpp", "Q4_K_M", ram_bytes=64 * GiB, host_memory="ddr4-3200-2ch")
    assert slow.host.bandwidth_gbps == host_memory_entries()["DDR4-3200-2ch"].bandwidth_gbps


def test_lmstudio_gpu_ratio_and_off():
    """LM Studio's --gpu: a ratio of the n_layers + 1 layer slots, off for none."""
    ratio = json.loads(run("fit", "llama3-8b", "-p", "Q4_K_M", "--gpus", "RTX-3060", "--ram", "32GB", "--engine",
                           "lmstudio", "--engine-args", "gpu=0.5", "--format", "json"))["options"][0]
    assert ratio["n_gpu_layers"] == round(0.5 * 33) and ratio["verdict"] == FITS_WITH_OFFLOAD
    off = json.loads(run("fit", "llama3-8b", "-p", "Q4_K_M", "--gpus", "RTX-3060", "--ram", "32GB", "--engine",
                         "lmstudio", "--engine-args", "gpu=off", "--format", "json"))["options"][0]
    assert off["n_gpu_layers"] == 0 and off["host"]["weights"] > ratio["host"]["weights"]
