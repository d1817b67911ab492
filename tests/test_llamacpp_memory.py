"""llama.cpp as configured (issue 18, item 1): its flags, where layers / KV / compute buffers go per
device, the compute buffers against the published startup logs, and `sizer check` on those logs."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from click.testing import CliRunner

from sizer.check.llamacpp_check import check_llamacpp_log, gpu_index, shape_from_log
from sizer.check.llamacpp_log import read_llamacpp_log_file
from sizer.cli import cli
from sizer.errors import UsageError
from sizer.plan.engine_args import EngineFlags, parse_engine_args
from sizer.plan.llamacpp import (ALL_LAYERS, HOST, LlamaCppSettings, LlamaModel, kv_cells, layer_devices,
                                 model_from_spec, output_buffer_bytes, plan_llamacpp, settings_from_flags,
                                 split_points)
from sizer.plan.llamacpp_graph import DynAllocator, GraphSettings, GraphShape, Tensor, allocated_bytes

LOGS = Path(__file__).parent / "data" / "llamacpp" / "logs"
MIB = 2**20


def flags(text: str) -> LlamaCppSettings:
    return settings_from_flags(parse_engine_args("llamacpp", text).settings)


# --- flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, field, value", [
    ("-c 8192", "n_ctx", 8192), ("--ctx-size 16k", "n_ctx", 16000),
    ("-b 1024", "n_batch", 1024), ("--batch-size 4096", "n_batch", 4096),
    ("-ub 256", "n_ubatch", 256), ("--ubatch-size 1024", "n_ubatch", 1024),
    ("-ngl 20", "n_gpu_layers", 20), ("--n-gpu-layers 999", "n_gpu_layers", 999), ("-ngl all", "n_gpu_layers", ALL_LAYERS),
    ("-ngl auto", "n_gpu_layers", ALL_LAYERS), ("--gpu-layers -1", "n_gpu_layers", ALL_LAYERS),
    ("-fa on", "flash_attn", "on"), ("-fa off", "flash_attn", "off"), ("--flash-attn auto", "flash_attn", "auto"),
    ("-fa", "flash_attn", "on"),
    ("-np 4", "n_seq_max", 4), ("--parallel 2", "n_seq_max", 2), ("-kvu", "kv_unified", True),
    ("--n-cpu-moe 10", "n_cpu_moe", 10), ("-ncmoe 3", "n_cpu_moe", 3), ("-cmoe", "cpu_moe", True),
    ("-ot exps=CPU", "override_tensor", ("exps=CPU",)),
    ("--override-tensor 'blk\\.1\\.ffn=CUDA0,exps=CPU'", "override_tensor", ("blk\\.1\\.ffn=CUDA0", "exps=CPU")),
    ("-sm none", "split_mode", "none"), ("--split-mode row", "split_mode", "row"), ("-sm layer", "split_mode", "layer"),
    ("-ts 3,1", "tensor_split", (3.0, 1.0)), ("--tensor-split 1/1", "tensor_split", (1.0, 1.0)),
    ("-mg 1", "main_gpu", 1), ("-nkvo", "kv_offload", False), ("--no-kv-offload", "kv_offload", False),
    ("--no-mmap", "mmap", False), ("--mmap", "mmap", True), ("--mlock", "mlock", True),
    ("--fit on", "fit", True), ("--fit off", "fit", False),
])
def test_each_flag_sets_its_setting(text, field, value):
    assert getattr(flags(text), field) == value


@pytest.mark.parametrize("kv_type", ["f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"])
def test_every_kv_cache_type_is_read(kv_type):
    s = flags(f"-ctk {kv_type} -ctv {kv_type}")
    assert (s.type_k, s.type_v) == (kv_type, kv_type)


def test_bad_values_are_refused_in_one_line():
    for text in ("-sm diagonal", "-ngl many", "-ts 3,x", "-ctk q3_k"):
        with pytest.raises(UsageError):
            EngineFlags.from_args("llamacpp", text).settings_for(_spec())


def test_memory_neutral_flags_are_silent_and_unknown_ones_warn_once():
    args = parse_engine_args("llamacpp", "--port 8080 --host 0.0.0.0 -t 8 --jinja --frobnicate 3 -ngl 10")
    assert args.settings == {"n_gpu_layers": "10"} and "port" in args.accepted
    assert args.unknown == ("--frobnicate", "3")
    assert args.warning.count("\n") == 0 and "--frobnicate" in args.warning


def test_ctx_size_is_split_over_the_slots():
    options = EngineFlags.from_args("llamacpp", "-c 16384 -np 4").settings_for(_spec()).options
    assert options["context_length"] == 4096
    unified = EngineFlags.from_args("llamacpp", "-c 16384 -np 4 -kvu").settings_for(_spec()).options
    assert unified["context_length"] == 16384


# --- placement -------------------------------------------------------------------------------


def test_ngl_counts_the_output_head_first_in_new_builds_and_last_in_old_ones():
    new = layer_devices(32, 10, 1)
    assert new[-1] == 0 and [il for il, d in enumerate(new[:-1]) if d == 0] == list(range(23, 32))
    old = layer_devices(32, 10, 1, output_first=False)      # b4581: "layers 22-31 on CUDA0", output on the CPU
    assert old[-1] == HOST and [il for il, d in enumerate(old[:-1]) if d == 0] == list(range(22, 32))
    assert set(layer_devices(32, 999, 1)) == {0} and set(layer_devices(32, 0, 1)) == {HOST}


def test_tensor_split_cuts_layers_at_cumulative_fractions():
    assert split_points(2, (3.0, 1.0)) == [0.75, 1.0]
    where = layer_devices(32, 999, 2, tensor_split=(3.0, 1.0))
    # layer il goes to the first device whose cumulative fraction exceeds il / 33 (33 = 32 layers + output)
    first = [il for il in range(33) if il / 33 < 0.75]
    assert where.count(0) == len(first) and where[-1] == 1
    # without --tensor-split: by free memory (an RTX 3090 and an RTX 3060: 24 and 12 GiB)
    by_memory = layer_devices(32, 999, 2, free_bytes=(24 << 30, 12 << 30))
    assert by_memory.count(0) == sum(1 for il in range(33) if il / 33 < 2 / 3)


def _pythia_like() -> LlamaModel:
    shape = GraphShape("gptneox", 32, 2560, 32, 32, 80, 80, 50304, 10240)
    return LlamaModel(shape, ((2560, 2560),) * 32, (None,) * 32)


def test_kv_per_device_is_exact_for_a_split():
    plan = plan_llamacpp(_pythia_like(), LlamaCppSettings(n_ctx=2048, n_seq_max=1, tensor_split=(3.0, 1.0)), 2, 2048)
    per_layer = 2048 * (2560 + 2560) * 2                     # cells x (K + V values) x 2 bytes (f16)
    layers0 = sum(1 for il in range(32) if il / 33 < 0.75)
    assert plan.devices[0].kv_cache == layers0 * per_layer
    assert plan.devices[1].kv_cache == (32 - layers0) * per_layer
    assert plan.host.kv_cache == 0


def test_kv_types_and_no_kv_offload():
    q8 = plan_llamacpp(_pythia_like(), LlamaCppSettings(n_ctx=2048, type_k="q8_0", type_v="q8_0"), 1, 2048)
    assert q8.devices[0].kv_cache == 32 * 2048 * 2 * (2560 // 32 * 34)
    nkvo = plan_llamacpp(_pythia_like(), LlamaCppSettings(n_ctx=2048, kv_offload=False), 1, 2048)
    assert nkvo.devices[0].kv_cache == 0 and nkvo.host.kv_cache == 32 * 2048 * 5120 * 2


def test_cells_are_padded_and_windows_hold_n_swa_per_sequence_plus_a_ubatch():
    assert kv_cells(1000, None, 1, 512) == 1024 and kv_cells(1000, None, 1, 512, pad=32) == 1024
    assert kv_cells(100, None, 1, 512, pad=32) == 128
    assert kv_cells(32768, 4096, 2, 512) == 8704 and kv_cells(4096, 4096, 2, 512) == 4096


def _spec():
    from sizer.inputs.resolve import get_model

    return get_model("llama-3.1-8b")


def test_partial_offload_moves_weights_and_kv_to_the_host():
    from sizer.quant import resolve_precision

    spec = _spec()
    precision = resolve_precision(spec, "Q4_K_M")
    model = model_from_spec(spec, precision)
    full = plan_llamacpp(model, LlamaCppSettings(n_seq_max=1), 1, 8192)
    part = plan_llamacpp(model, LlamaCppSettings(n_seq_max=1, n_gpu_layers=20), 1, 8192)
    none = plan_llamacpp(model, LlamaCppSettings(n_seq_max=1, n_gpu_layers=0), 1, 8192)
    w = model.weights
    assert full.host.weights == w.input and full.n_gpu_layers == 33
    # -ngl 20: the output head and the last 19 layers on the GPU, the other 13 layers in host memory
    assert part.n_gpu_layers == 20 and part.devices[0].layers == list(range(13, 32))
    assert part.devices[0].weights == sum(w.layers[13:]) + w.output
    assert part.host.weights == w.input + sum(w.layers[:13])
    assert part.devices[0].kv_cache * 32 == full.devices[0].kv_cache * 19
    assert part.host.kv_cache + part.devices[0].kv_cache == full.devices[0].kv_cache
    assert none.devices[0].weights == 0 and none.host.weights == sum(w.layers) + w.output + w.input


def test_cpu_moe_keeps_the_routed_experts_on_the_host():
    from sizer.inputs.resolve import get_model
    from sizer.quant import resolve_precision

    spec = get_model("mixtral-8x7b-v0.1")
    model = model_from_spec(spec, resolve_precision(spec, "Q4_K_M"))
    w = model.weights
    base = plan_llamacpp(model, LlamaCppSettings(n_seq_max=1), 1, 4096)
    ncmoe = plan_llamacpp(model, LlamaCppSettings(n_seq_max=1, n_cpu_moe=4), 1, 4096)
    cmoe = plan_llamacpp(model, LlamaCppSettings(n_seq_max=1, cpu_moe=True), 1, 4096)
    ot = plan_llamacpp(model, LlamaCppSettings(n_seq_max=1, override_tensor=("exps=CPU",)), 1, 4096)
    assert ncmoe.host.weights - base.host.weights == sum(w.experts[:4]) > 0
    assert cmoe.host.weights - base.host.weights == sum(w.experts) == ot.host.weights - base.host.weights


def test_output_buffer_holds_n_seq_max_rows_of_logits():
    shape = _pythia_like().shape
    assert output_buffer_bytes(shape, 1) == 50304 * 4 and output_buffer_bytes(shape, 4) == 4 * 50304 * 4


# --- the allocator ----------------------------------------------------------------------------


def test_allocator_reuses_the_best_fitting_freed_block():
    a = DynAllocator(alignment=1)
    x, _, z = a.alloc(100), a.alloc(50), a.alloc(100)
    a.free(x, 100)
    a.free(z, 100)                                          # merges with the open end
    assert a.alloc(60) == x and a.max_size == 250


def test_inplace_ops_take_their_sole_parents_memory():
    def chain(inplace: bool) -> int:
        a = Tensor(1000, is_input=True)
        b = Tensor(1000, (a,), inplace=inplace)
        c = Tensor(1000, (b,), inplace=inplace)
        return allocated_bytes([a, b, c], alignment=1)
    assert chain(True) == 1000 and chain(False) == 2000


def test_logits_sit_beside_the_final_norm():
    """Flash attention leaves no score matrix: the peak is the logits (n_ubatch x n_vocab f32) beside
    the output norm's n_embd x n_ubatch."""
    shape = GraphShape("llama", 2, 256, 4, 4, 64, 64, 32000, 1024)
    from sizer.plan.llamacpp_graph import compute_buffer_bytes

    size = compute_buffer_bytes(shape, GraphSettings(512, 512, flash_attn=True))
    logits = 512 * 32000 * 4
    assert logits < size <= logits + 4 * 512 * 256 * 4


# --- the published logs ------------------------------------------------------------------------


def _compute_errors() -> list[float]:
    errors = []
    for record_path in sorted(LOGS.glob("*.json")):
        record = json.loads(record_path.read_text())
        log = read_llamacpp_log_file(record_path.with_suffix(".log"))
        model = record["model"].get("catalog_model")
        if shape_from_log(log) is None and model is None:
            continue
        result = check_llamacpp_log(log, record["id"], model, record["model"].get("quant_type"), record["settings"])
        errors += [abs(r.error) for r in result.rows if r.component.startswith("compute_buffer") and r.error is not None]
    return errors


def test_compute_buffers_within_10_percent_median_of_the_published_logs():
    errors = _compute_errors()
    assert len(errors) >= 15
    assert statistics.median(errors) < 0.10


def test_pythia_compute_buffer_is_the_logits_beside_one_hidden_state():
    log = read_llamacpp_log_file(LOGS / "ci-pythia-1.4b-q4_k-m4-metal-b4581.log")
    rows = {r.component: r for r in check_llamacpp_log(log, "pythia").rows}
    # llama.cpp prints MiB with two decimals: the same figure as printed
    assert round(rows["compute_buffer Metal"].predicted / MIB, 2) == log.compute_buffer_bytes["Metal"] / MIB == 102.25
    assert rows["kv_buffer Metal"].predicted == log.kv_buffer_bytes["Metal"]


def test_check_on_a_partial_offload_log():
    r = CliRunner().invoke(cli, ["check", str(LOGS / "ci-pythia-2.8b-q4_0-v100-cuda-ngl10-b4581.log"), "--format", "json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    rows = {c["component"]: c for c in out["components"]}
    assert rows["kv_buffer CUDA0"]["error"] == 0 and rows["kv_buffer host"]["error"] == 0
    assert rows["kv_buffer CUDA0"]["measured"] == 200 * MIB and out["engine"] == "llamacpp"
    assert {"compute_buffer CUDA0", "compute_buffer host", "output_buffer"} <= set(rows)


def test_check_asks_for_the_model_when_the_log_has_no_loader_summary():
    r = CliRunner().invoke(cli, ["check", str(LOGS / "issue-ollama-9068-64-layer-2gpu-cuda.log")])
    assert r.exit_code != 0 and "--model" in r.output


def test_buffer_names():
    assert [gpu_index(b) for b in ("CUDA0", "CUDA1", "Metal", "Vulkan0", "CPU", "CUDA_Host", "CPU_Mapped")] == \
        [0, 1, 0, 0, None, None, None]


# --- fit ----------------------------------------------------------------------------------------


def test_fit_json_has_n_gpu_layers_and_the_host_side():
    r = CliRunner().invoke(cli, ["fit", "llama-3.1-8b", "--gpus", "RTX-4090", "--engine", "llamacpp", "-p", "Q4_K_M",
                                 "--engine-args", "-ngl 20 -c 8192", "--format", "json"])
    assert r.exit_code == 0, r.output
    option = json.loads(r.output)["options"][0]
    assert option["n_gpu_layers"] == 20
    host = option["host"]
    assert host["total"] == host["weights"] + host["kv_cache"] + host["compute"] + host["output"]
    assert host["weights"] > 0 and host["kv_cache"] > 0
    assert "-ngl 20" in option["launch"][0]["command"]


def test_mixed_gpus_split_by_each_devices_memory():
    from sizer.gpuspec import parse_gpus, usable_memory_bytes

    sel = parse_gpus("2xRTX-3090,RTX-3060")
    assert sel.count == 3 and [g.name for g in sel.devices].count(sel.devices[0].name) == 2
    assert sel.gpu == sel.devices[2]                          # the smallest bounds same-share engines
    # -ngl 999 set by the user: --fit leaves the layers alone (they do not fit: the split rule is tested)
    r = CliRunner().invoke(cli, ["fit", "llama-3.1-70b", "-p", "Q4_K_M", "--gpus", "RTX-3090,RTX-3060",
                                 "--engine", "llamacpp", "-c", "4096", "--format", "json", "--engine-args", "-ngl 999"])
    assert r.exit_code == 0, r.output
    stages = json.loads(r.output)["options"][0]["per_stage"]
    capacities = [usable_memory_bytes(g) for g in parse_gpus("RTX-3090,RTX-3060").devices]
    assert [s["usable_memory"] for s in stages] == capacities
    # 80 layers + the output head over 24 and 12 GiB: the first device takes the slots below 2/3
    first = sum(1 for il in range(81) if il / 81 < capacities[0] / sum(capacities))
    kv_per_layer = 4096 * 2 * 8 * 128 * 2
    assert stages[0]["kv_cache"] == first * kv_per_layer and stages[1]["kv_cache"] == (80 - first) * kv_per_layer


def test_mixed_gpu_lists_are_refused_when_malformed():
    from sizer.gpuspec import parse_gpus

    for text in ("RTX-3090,", "RTX-3090,local"):
        with pytest.raises(UsageError):
            parse_gpus(text)


def test_fit_margin_only_with_fit_on():
    from sizer.calc.overhead import CUDA_CONTEXT_BYTES

    def overhead(args: str) -> int:
        r = CliRunner().invoke(cli, ["fit", "llama-3.1-8b", "--gpus", "RTX-4090", "--engine", "llamacpp", "-p",
                                     "Q4_K_M", "--engine-args", args, "--format", "json"])
        assert r.exit_code == 0, r.output
        return json.loads(r.output)["options"][0]["per_gpu"]["overhead"]
    assert overhead("-c 4096") == CUDA_CONTEXT_BYTES
    assert overhead("-c 4096 --fit on") == CUDA_CONTEXT_BYTES + 1024 * MIB


def test_split_mode_row_cuts_the_weights_and_keeps_kv_on_the_main_gpu():
    from sizer.quant import resolve_precision

    spec = _spec()
    model = model_from_spec(spec, resolve_precision(spec, "Q8_0"))
    row = plan_llamacpp(model, LlamaCppSettings(n_seq_max=1, split_mode="row", tensor_split=(3.0, 1.0)), 2, 4096)
    layer = plan_llamacpp(model, LlamaCppSettings(n_seq_max=1), 1, 4096)
    total = layer.devices[0].weights
    assert row.devices[0].weights + row.devices[1].weights == total
    assert abs(row.devices[1].weights - total / 4) <= 1
    assert row.devices[0].kv_cache == layer.devices[0].kv_cache and row.devices[1].kv_cache == 0
    assert row.devices[1].compute == 0


def test_slots_split_n_ctx_unless_the_cache_is_unified():
    per_layer_cell = (2560 + 2560) * 2
    split = plan_llamacpp(_pythia_like(), LlamaCppSettings(n_seq_max=4), 1, 2048)
    unified = plan_llamacpp(_pythia_like(), LlamaCppSettings(n_seq_max=4, kv_unified=True), 1, 2048)
    assert split.n_ctx == 8192 and split.devices[0].kv_cache == 32 * 8192 * per_layer_cell
    assert unified.n_ctx == 2048 and unified.devices[0].kv_cache == 32 * 2048 * per_layer_cell


def test_partial_offload_needs_no_more_gpus_than_its_layers_take():
    r = CliRunner().invoke(cli, ["fit", "llama-3.1-70b", "-p", "Q4_K_M", "--gpus", "RTX-3060", "--engine", "llamacpp",
                                 "--engine-args", "-ngl 20", "--format", "json"])
    assert r.exit_code == 0, r.output
    option = json.loads(r.output)["options"][0]
    assert option["gpu_count"] == 1 and option["n_gpu_layers"] == 20
    on_gpu, on_host = option["per_gpu"]["weights"], option["host"]["weights"]
    assert 0.7 < on_host / (on_host + on_gpu) < 0.8              # 61 of 80 layers and the embedding on the host


def test_check_takes_what_the_log_does_not_print_from_the_launch_line():
    log = str(LOGS / "issue-ollama-9858-llama-70b-q8_0-3gpu-ctx128000.log")
    missing = CliRunner().invoke(cli, ["check", log, "--model", "llama-3.1-70b-instruct"])
    assert missing.exit_code != 0 and "--command" in missing.output
    r = CliRunner().invoke(cli, ["check", log, "--model", "llama-3.1-70b-instruct", "--command",
                                 "llama-server -m m.gguf -c 128000 -fa off", "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = {c["component"]: c for c in json.loads(r.output)["components"]}
    # no flash attention at n_ctx 128000: each GPU holds the 512 x 128000 x 64-head f32 scores
    for gpu in ("CUDA0", "CUDA1", "CUDA2"):
        assert abs(rows[f"compute_buffer {gpu}"]["error"]) < 0.01
    assert sum(rows[f"kv_buffer {g}"]["predicted"] for g in ("CUDA0", "CUDA1", "CUDA2")) == \
        sum(rows[f"kv_buffer {g}"]["measured"] for g in ("CUDA0", "CUDA1", "CUDA2"))
