"""vLLM's fused MoE in the profiling run (docs/reference/vllm-versions-v1.md, "Fused MoE"): the
experts' caches per release family, from the shapes in each release's source, and what the layer holds
beside them."""

import json

import pytest

from conftest import ROOT
from sizer.calc.activations import fp8_quantized_bytes, vllm_fused_moe_bytes, vllm_moe_workspace_bytes
from sizer.check.compare import check_log
from sizer.check.logs import read_engine_log_file, with_settings
from sizer.plan.engines import VllmEngine, fp8_activation_group
from sizer.plan.vllm_releases import release_for
from sizer.quant import Fp8Format
from sizer.spec import ModelSpec
from sizer.units import GiB

# one TP4 rank of Qwen3-235B-A22B: hidden 4096, moe_intermediate_size 1536 / 4 = 384 (N = 768), top-8 of 128
RANK = ModelSpec(name="qwen3-235b-rank", family="qwen3_moe", hidden_size=4096, n_layers=94, n_heads=16,
                 n_kv_heads=1, head_dim=128, v_head_dim=128, vocab_size=151936, d_ff=0, tied_embeddings=False,
                 layer_types=("full_attention",) * 94, sliding_window=None, max_context_length=None, tensors=(),
                 n_experts=128, n_experts_active=8, d_ff_expert=384)
ROWS = 8192 * 8


@pytest.mark.parametrize("release, tokens, expected", [
    # V0 fused_moe.py@0.6.3.post1: cache1 (M, k, N), cache2 (M k, N/2), cache3 (M, k, K), bf16
    ("0.6.3", 8192, ROWS * (768 + 384 + 4096) * 2),
    ("0.7.3", 40000, 32768 * 8 * (768 + 384 + 4096) * 2),      # M = min(tokens, CHUNK_SIZE 32768)
    # fused_experts_impl@0.8.5/0.10.2: cache13 (M k max(N, K)) and cache2 (M k, N/2)
    ("0.8.5", 8192, ROWS * (4096 + 384) * 2),
    ("0.10.2", 8192, ROWS * (4096 + 384) * 2),
    # TritonExperts.workspace_shapes@0.15.1/0.27.1: (M, k, max(N/2, K)) holding the (M, K) output too,
    # and (M, k, max(N, K)); 0.11-0.20.1 chunk at 16384 tokens, then the output is a third piece
    ("0.15.1", 8192, 2 * ROWS * 4096 * 2),
    ("0.15.1", 20000, 2 * 16384 * 8 * 4096 * 2 + 20000 * 4096 * 2),
    ("0.27.1", 20000, 2 * 20000 * 8 * 4096 * 2),                # no chunking from 0.20.2
    ("0.34.0", 8192, 2 * ROWS * 4096 * 2),
])
def test_workspace_bytes_per_release_family(release, tokens, expected):
    r = release_for(release)
    assert vllm_moe_workspace_bytes(RANK, tokens, 2, r.moe_layout, r.moe_chunk_tokens) == expected


def test_workspaces_are_rounded_to_256_bytes():
    # 3 tokens x 8 rows x 4096 x 2 bytes is a multiple of 256 already; an odd hidden size is not
    odd = ModelSpec(**{**RANK.__dict__, "hidden_size": 4095})
    first = 3 * 8 * 4095 * 2
    assert first % 256 and vllm_moe_workspace_bytes(odd, 3, 2, "workspaces", None) == 2 * (-(-first // 256) * 256)


def test_fp8_block_activations_and_scales():
    assert fp8_quantized_bytes(8192, 4096, 128) == 8192 * 4096 + 8192 * 32 * 4
    assert fp8_quantized_bytes(10, 384, 128) == 3840 + 10 * 3 * 4
    assert fp8_quantized_bytes(10, 384, 0) == 3840 + 4               # one per-tensor scale


def test_fused_moe_moment_for_fp8_block_experts_on_the_modular_kernel():
    tokens = 8192
    routing = tokens * 128 * 2 + tokens * 8 * (4 + 4) + ROWS * 4      # logits, top-k weights/ids, sorted ids
    quantized = (tokens * 4096 + tokens * 32 * 4) + (ROWS * 384 + ROWS * 3 * 4)   # a1q, a2q and scales
    output = tokens * 4096 * 2
    expected = routing + quantized + output + 2 * ROWS * 4096 * 2
    assert vllm_fused_moe_bytes(RANK, tokens, 2, "workspaces", None, 128) == expected


def test_fused_moe_moment_in_place_before_the_modular_kernel():
    # fused_experts(inplace=True): no output of its own; bf16: no quantized copies
    tokens = 2048
    routing = tokens * 128 * 2 + tokens * 8 * 8 + tokens * 8 * 4
    assert vllm_fused_moe_bytes(RANK, tokens, 2, "shared13", 32768) == routing + tokens * 8 * (4096 + 384) * 2


def test_fp8_activation_group():
    assert fp8_activation_group(Fp8Format(block=128), (12, 0)) == 128
    assert fp8_activation_group(Fp8Format(block=0), (9, 0)) == 0
    assert fp8_activation_group(Fp8Format(block=128), (8, 6)) is None    # Marlin below sm_89


def test_published_fp8_moe_log():
    """Qwen3-235B-A22B FP8 on TP4 under 0.27.1 (tests/data/engine_logs): transformers' routed rows
    predicted 2.29 GiB for the log's 0.76 GiB (+180 %). With the fused MoE, its workspace (1 GiB at 8192
    tokens) persisting outside the transient headroom and the logged figure adding the CUDA-graph
    estimate, the activation peak is within 25 % and the KV tokens within 5 %. (Of the logged 0.76 GiB,
    0.32 GiB is the graph estimate, for which sizer has its 0.5 GiB constant: the transient part
    predicted, 0.29 GiB, is under the log's 0.44.)"""
    logs = ROOT / "tests" / "data" / "engine_logs"
    case = "qwen3-235b-a22b-fp8-rtxpro6000-tp4-v0.27.1"
    settings = json.loads((logs / "vllm" / f"{case}.json").read_text())["settings"]
    log = with_settings(read_engine_log_file(logs / "vllm" / f"{case}.log"), settings, "the case's settings")
    config = logs / "configs" / "Qwen--Qwen3-235B-A22B-Instruct-2507.json"
    assert log.version is None                    # the post gives the release in its prose
    rows = {r.component: r for r in check_log(log, str(config), None, "vllm==0.27.1").rows}
    assert abs(rows["activation_peak"].error) < 0.25
    assert abs(rows["gpu_kv_cache_tokens"].error) < 0.05


def _moe_stage():
    """A first pipeline stage (no dummy sampler: the forward is the peak)."""
    from sizer.plan.stages import Stage
    return Stage(index=0, layers=range(94), first=True, last=False, weights_bytes=0, kv_full_bytes_per_token=0,
                 kv_window_bytes_per_token=(), rank_spec=RANK)


@pytest.mark.parametrize("version, persistent", [("0.26.0", False), ("0.27.0", True), ("0.34.0", True)])
def test_workspace_persists_outside_the_activation_from_0_27(version, persistent):
    """mem_utils.py@0.27.0: the activation figure is torch's peak less what stays allocated, so the
    workspace manager's buffer moves from the activation peak to the persistent charge."""
    engine = VllmEngine(release=release_for(version), max_num_batched_tokens=8192, max_num_seqs=32)
    stage = _moe_stage()
    workspace = 2 * ROWS * 4096 * 2
    assert engine.persistent_bytes(stage, 95 * GiB, 2) == (workspace if persistent else 0)
    held = VllmEngine(release=release_for("0.26.0"), max_num_batched_tokens=8192, max_num_seqs=32)
    # fp8 block experts: the MoE's transient tensors (the output, a1q, a2q) outweigh the attention's
    assert held.profile_peak(stage, 95 * GiB, 2, fp8_group=128) - engine.profile_peak(stage, 95 * GiB, 2, fp8_group=128) \
        == (workspace if persistent else 0)
