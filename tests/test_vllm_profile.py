"""vLLM's profiling run and non-torch memory as sizer models them per release (docs/reference/
vllm-versions-v0.md, "The profile sampler's peak" and "Non-torch memory by architecture"), the
engine arguments Unsloth passes to vLLM read from its log lines, and the check on the published logs."""

import json

import pytest

from sizer.inputs.resolve import get_model
from sizer.check.compare import check_log
from sizer.check.logs import read_engine_log, read_engine_log_file
from sizer.plan.engines import (VLLM_NON_TORCH_BYTES_TP1, VllmEngine, bnb4_double_quant, sampler_sort_peak_bytes,
                                torch_sort_temp_bytes, vllm_bnb4_linear_bytes, vllm_bnb4_mlp_bytes,
                                vllm_non_torch_tp1_bytes)
from sizer.plan.placement import Placement
from sizer.plan.stages import build_stages
from sizer.plan.vllm_releases import release_for
from sizer.quant import get_precision
from sizer.units import GiB, MiB

from conftest import ROOT

LOGS = ROOT / "tests" / "data" / "engine_logs" / "vllm"


@pytest.mark.parametrize("rows, vocab, expected", [
    (256, 32000, 256 * 32000 * (8 + 4 + 8)),        # segmented sort: reverse indices, cub's alternate keys/values
    (128, 100352, 128 * 100352 * 20),
    (127, 100352, 127 * 100352 * (8 + 8 + 4 + 4 + 8)),  # full sort: two int2 arrays, keys out, alternates
    (2, 1000, 2 * 1000 * 32),
    (1, 151936, 151936 * 20),                        # one row sorts alone
    (4, 1_000_000, 1_000_000 * 20),                  # so does a row of a million
])
def test_torch_sort_buffers_by_path(rows, vocab, expected):
    assert torch_sort_temp_bytes(rows, vocab) == expected


def test_v0_sampler_peak_is_the_sort_over_the_held_logits():
    # fp16 logits held by the runner (2) + float32 copy (4) + sorted values (4) + int64 indices (8) + 20
    assert sampler_sort_peak_bytes(128, 100352, 2) == 128 * 100352 * 38
    assert sampler_sort_peak_bytes(128, 100352, 4) == 128 * 100352 * 40        # a float32 model's logits


def _phi4_stage():
    spec = get_model("phi-4")
    return build_stages(spec, get_precision("bf16"), Placement(1, 1), "bf16")[0]


@pytest.mark.parametrize("seqs", [128, 320])
def test_v0_profile_peak_is_the_sampler_step(seqs):
    """Phi-4 (hidden 5120, vocab 100352) with Unsloth's 512 tokens: the forward has ended when the sampler
    runs; its hidden states stay with the runner."""
    stage = _phi4_stage()
    assert (stage.rank_spec.hidden_size, stage.rank_spec.vocab_size) == (5120, 100352)
    engine = VllmEngine(release=release_for("0.7.3"), max_num_batched_tokens=512, max_num_seqs=seqs)
    assert engine.profile_peak(stage, 80 * GiB, 2, 512) == 512 * 5120 * 2 + seqs * 100352 * 38


def test_the_sampler_step_grows_with_max_num_seqs_not_with_the_gpu():
    stage = _phi4_stage()
    t4 = VllmEngine(release=release_for("0.7.1"), max_num_batched_tokens=512, max_num_seqs=128)
    # 0.8.2 fell back to its V0 engine for bitsandbytes: modelled as 0.6.5-0.7.3 (sizer.check.compare)
    a100 = VllmEngine(release=release_for("0.7.3"), max_num_batched_tokens=512, max_num_seqs=320)
    assert a100.profile_peak(stage, 80 * GiB, 2, 512) - t4.profile_peak(stage, 15 * GiB, 2, 512) == \
        (320 - 128) * 100352 * 38


def test_which_releases_run_the_sampler_after_the_forward():
    assert [release_for(v).sampler_after_forward for v in ("0.5.5", "0.6.3.post1", "0.6.4", "0.7.3", "0.8.5",
                                                           "0.10.2", "0.33.0", "0.34.0")] == \
        [False, False, True, True, True, True, True, False]


def test_v1_profile_peak_keeps_the_sampled_rows_too():
    """V1 0.10.2 on Phi-4, 2048 tokens, 256 sequences: the sampler has min(256, 2048) rows; profile_run
    holds the 2048 hidden states and the 256 indexed out of them."""
    stage = _phi4_stage()
    engine = VllmEngine(release=release_for("0.10.2"), max_num_batched_tokens=2048, max_num_seqs=256)
    assert engine.profile_peak(stage, 48 * GiB, 2, 4096) == (2048 + 256) * 5120 * 2 + 256 * 100352 * 38


def test_up_to_0_6_3_the_sampler_adds_to_the_forward():
    """0.6.3 charges the forward plus 32 bytes per logit; 0.7.3 with one sequence is the forward alone
    (its one-row sampler step is smaller than the forward over 512 tokens)."""
    stage = _phi4_stage()
    forward = VllmEngine(release=release_for("0.7.3"), max_num_batched_tokens=512, max_num_seqs=1)
    assert forward.profile_peak(stage, 15 * GiB, 2, 512) > 512 * 5120 * 2 + sampler_sort_peak_bytes(1, 100352, 2)
    old = VllmEngine(release=release_for("0.6.3"), max_num_batched_tokens=512, max_num_seqs=128)
    assert old.profile_peak(stage, 15 * GiB, 2, 512) == \
        forward.profile_peak(stage, 15 * GiB, 2, 512) + 128 * 100352 * 32


def test_bnb4_linear_dequantizes_one_shard_at_a_time():
    # 10 rows, 128 inputs, shards of 64 and 32: bf16 input (10 x 128) and output (10 x 96), then the
    # 64-row shard: its weight (64 x 128 x 2), float32 absmax per 64 weights (128 x 4), its product (10 x 64)
    assert vllm_bnb4_linear_bytes(10, 128, (64, 32), True) == 10 * 224 * 2 + 64 * 128 * 2 + 128 * 4 + 10 * 64 * 2
    assert vllm_bnb4_linear_bytes(10, 128, (64, 32), False) == 10 * 224 * 2 + 64 * 128 * 2 + 10 * 64 * 2


def test_bnb4_precisions():
    assert (bnb4_double_quant(get_precision("nf4")), bnb4_double_quant(get_precision("nf4-dq"))) == (False, True)
    assert bnb4_double_quant(get_precision("bf16")) is None and bnb4_double_quant(get_precision("int8")) is None


def test_bnb4_forward_can_be_the_profile_peak():
    """Phi-4 in nf4 (double-quantized) over 512 tokens with one sequence: the down projection's moment
    (the gate/up output and its activation held, the 5120 x 17920 weight dequantized) is the peak."""
    stage = _phi4_stage()
    spec = stage.rank_spec
    assert (spec.hidden_size, spec.d_ff) == (5120, 17920)
    down = (512 * (2 * 17920 + 17920) * 2 + 512 * (17920 + 5120) * 2 + 5120 * 17920 * 2 + 5120 * 17920 // 64 * 4
            + 512 * 5120 * 2)
    assert vllm_bnb4_mlp_bytes(spec, 512, 2, True) == down
    engine = VllmEngine(release=release_for("0.7.3"), max_num_batched_tokens=512, max_num_seqs=1)
    residual = 2 * 512 * 5120 * 2
    assert engine.profile_peak(stage, 15 * GiB, 2, 512, bnb4_nested=True) == residual + down
    assert engine.profile_peak(stage, 15 * GiB, 2, 512) < residual + down        # 16-bit weights: no dequantization


@pytest.mark.parametrize("capability, expected", [
    ((7, 5), 51 * MiB), ((6, 1), 51 * MiB), ((8, 0), 88 * MiB), ((8, 9), 88 * MiB), ((9, 0), VLLM_NON_TORCH_BYTES_TP1),
    ((10, 0), VLLM_NON_TORCH_BYTES_TP1), (None, VLLM_NON_TORCH_BYTES_TP1),
])
def test_non_torch_by_architecture(capability, expected):
    assert vllm_non_torch_tp1_bytes(capability) == expected
    engine = VllmEngine(release=release_for("0.7.3"), gpu_capability=capability)
    assert engine.non_torch_bytes(1) == expected


UNSLOTH = """\
Unsloth: vLLM loading unsloth/phi-4-bnb-4bit with actual GPU utilization = 69.52%
Unsloth: Your GPU has CUDA compute capability 7.5 with VRAM = 14.74 GB.
Unsloth: Using conservativeness = 1.0. Chunked prefill tokens = 512. Num Sequences = 128.
INFO 02-06 14:09:35 llm_engine.py:232] Initializing a V0 LLM engine (v0.7.1) with config: \
model='unsloth/phi-4-bnb-4bit', max_seq_len=512, tensor_parallel_size=1
INFO 02-06 14:11:19 model_runner.py:1116] Loading model weights took 8.4920 GB
INFO 02-06 14:11:24 worker.py:266] the current vLLM instance can use total_gpu_memory (14.74GiB) x \
gpu_memory_utilization (0.70) = 10.25GiB
INFO 02-06 14:11:25 executor_base.py:108] # CUDA blocks: 406, # CPU blocks: 655
"""


def test_unsloth_engine_arguments_are_read():
    log = read_engine_log(UNSLOTH, "unsloth.log")
    assert (log.settings["max_num_batched_tokens"], log.settings["max_num_seqs"]) == (512, 128)
    assert log.settings["gpu_memory_utilization"] == 0.6952       # Unsloth's percentage beats vLLM's "(0.70)"


def test_unsloth_retry_lowers_max_num_seqs():
    retried = UNSLOTH + "Unsloth: Retrying vLLM to process 96 sequences and 512 tokens in tandem.\n"
    assert read_engine_log(retried, "unsloth.log").settings["max_num_seqs"] == 96


V0_CASES = [("phi-4-bnb4bit-t4-tp1-v0.7.1-lora", "phi-4", "T4"),
            ("phi-4-bnb4bit-a100-80gb-tp1-v0.8.2-lora", "phi-4", "A100-80GB"),
            ("llama-3.2-3b-instruct-t4-tp1-v0.8.2", "llama-3.2-3b", "T4")]


@pytest.mark.parametrize("case, model, gpu", V0_CASES)
def test_published_v0_profiles_within_five_percent(case, model, gpu):
    """Unsloth-wrapped V0 runs: the activation peak within 5 % of the log's (printed to 0.01 GiB), the
    non-torch memory within the log's rounding plus 10 %."""
    result = check_log(read_engine_log_file(LOGS / f"{case}.log"), model, gpu)
    rows = {r.component: r for r in result.rows}
    assert abs(rows["activation_peak"].error) < 0.05
    measured = json.loads((LOGS / f"{case}.json").read_text())["measured"]
    assert abs(rows["non_torch"].predicted / GiB - measured["non_torch_gib"]) < 0.005 + 0.1 * measured["non_torch_gib"]


@pytest.mark.parametrize("case, model", [
    ("llama-3.2-1b-gtx1080-tp1-v0.6.4.post1-chunked", "meta-llama/Llama-3.2-1B"),
    ("phi-1_5-gtx1080-tp1-v0.6.4.post1", str(LOGS.parent / "configs" / "microsoft--phi-1_5.json")),
])
def test_0_6_4_activation_is_the_torch_peak_less_the_weights(case, model):
    """0.6.4 prints torch's allocated peak with the weights ("peak_torch_memory"): check compares the
    rest with sizer's activation peak (256 sequences: the sampler's sort)."""
    log = read_engine_log_file(LOGS / f"{case}.log")
    rows = {r.component: r for r in check_log(log, model, "8GB").rows}
    assert rows["activation_peak"].measured == log.measured["peak_torch_memory_bytes"] - log.measured["weights_bytes"]
    assert abs(rows["activation_peak"].error) < 0.03
