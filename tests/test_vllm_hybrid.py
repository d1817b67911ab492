"""vLLM's hybrid KV pool (sizer.plan.engines.vllm_hybrid_layout) against published startup logs.

Each log's KV budget ("Available KV cache memory", or the block count where a log prints that instead)
goes straight to the pool function, so these tests check the pool arithmetic alone, not the profiling
estimate before it. The logs and their sources: tests/data/vllm_hybrid/logs.json; the vLLM source
lines the arithmetic follows: docs/reference/vllm-hybrid.md.
"""

from __future__ import annotations

import json
from dataclasses import replace
from math import ceil
from pathlib import Path

import pytest

from sizer.calc.kv import state_bytes_per_layer, vllm_state_bytes_per_layer
from sizer.families import spec_from_config
from sizer.plan.engines import VllmHybridPool, vllm_hybrid_layout
from sizer.plan.placement import Placement
from sizer.plan.stages import build_stages
from sizer.quant import get_precision
from sizer.spec import FULL_ATTENTION, LINEAR_ATTENTION, RecurrentState
from sizer.units import GiB

DATA = Path(__file__).parent / "data" / "vllm_hybrid"
LOGS = {log["id"]: log for log in json.loads((DATA / "logs.json").read_text())["logs"]}


def qwen3_next_stage(tp: int):
    config = json.loads((DATA / "Qwen3-Next-80B-A3B-Instruct.config.json").read_text())
    spec = spec_from_config(config, "Qwen3-Next-80B-A3B-Instruct", "tests/data/vllm_hybrid")
    return build_stages(spec, get_precision("bf16"), Placement(tp, 1), "bf16")[0]


def qwen3_5_27b_stage():
    """Qwen3.5-27B / Qwen3.8-27B geometry (no sizer family yet): 64 layers, every 4th full attention
    with 4 KV heads of 256; Gated DeltaNet with 16 key and 48 value heads of 128, conv kernel 4, its
    SSM state in float32 (the checkpoint's mamba_ssm_dtype), the conv state in bf16."""
    kinds = tuple(FULL_ATTENTION if i % 4 == 3 else LINEAR_ATTENTION for i in range(64))
    gdn = RecurrentState("gated_deltanet", conv_channels=2 * 16 * 128 + 48 * 128, conv_kernel=4,
                         state_values=48 * 128 * 128)
    s = qwen3_next_stage(1)
    spec = replace(s.rank_spec, n_layers=64, layer_types=kinds, n_kv_heads=4, head_dim=256, v_head_dim=256,
                   recurrent=gdn)
    return replace(s, layers=range(64), rank_spec=spec, state_layers=48, kv_layer_bytes_per_token=2 * 4 * 256 * 2,
                   state_layer_bytes=state_bytes_per_layer(spec, 2, ssm_dtype_bytes=4),
                   kv_layer_windows=(None,) * 16)


def rounded_gib_interval(gib: float) -> tuple[int, int]:
    """The bytes a "%.2f GiB" figure stands for: [x - 0.005, x + 0.005) GiB."""
    return ceil((gib - 0.005) * GiB), ceil((gib + 0.005) * GiB)


def test_qwen3_next_tp2_page_geometry_matches_the_log():
    log = LOGS["qwen3-next-80b-tp2-h200-v0.10.2"]
    s = qwen3_next_stage(log["tensor_parallel_size"])
    # per TP rank: 1 KV head x 256 x (K, V) x bf16; Gated DeltaNet conv (4 - 1) x 8192 / 2 + state 32 / 2 x 128 x 128
    assert s.kv_layer_bytes_per_token == 1024
    assert s.state_layer_bytes == (3 * 4096 + 16 * 128 * 128) * 2 == 548_864
    p = vllm_hybrid_layout(s, int(log["available_kv_cache_gib"] * GiB), log["max_model_len"],
                           log["max_num_batched_tokens"])
    assert p.block_size == log["attention_block_size"] == 544
    assert round(100 * (p.page_bytes - s.state_layer_bytes) / s.state_layer_bytes, 2) == log["mamba_padding_percent"]
    # 12 attention and 36 Gated DeltaNet layers: groups of 12, one attention and three Mamba groups
    assert (p.group_size, p.n_groups, p.state_groups) == (12, 4, 3)
    assert p.blocks_per_request == ceil(262_144 / 544) + 3 == 485


def test_qwen3_next_tp2_tokens_and_concurrency_equal_the_log():
    log = LOGS["qwen3-next-80b-tp2-h200-v0.10.2"]
    s = qwen3_next_stage(log["tensor_parallel_size"])

    def pool(available: int) -> VllmHybridPool:
        return vllm_hybrid_layout(s, available, log["max_model_len"], log["max_num_batched_tokens"])

    # the logged budget itself (44.59 GiB): both logged figures exactly
    p = pool(int(log["available_kv_cache_gib"] * GiB))
    assert p.tokens_before_0_20 == log["gpu_kv_cache_tokens"] == 973_760
    assert f"{p.max_concurrency:.2f}" == f"{log['max_concurrency']:.2f}" == "14.77"
    assert p.num_blocks == 7162
    # every budget the rounded "44.59 GiB" can stand for gives 7161-7163 blocks: the same token count;
    # the logged 14.77x (not 14.76x) says vLLM had 7162 or 7163 of them
    low, high = rounded_gib_interval(log["available_kv_cache_gib"])
    blocks = {pool(b).num_blocks for b in (low, high - 1)}
    assert blocks == {7161, 7163}
    assert {pool(b).tokens_before_0_20 for b in (low, high - 1)} == {973_760}
    assert [f"{n / 485:.2f}" for n in (7161, 7162, 7163)] == ["14.76", "14.77", "14.77"]
    # vLLM 0.32 prints the same pool as int(14.767 x 262,144) tokens
    assert p.tokens == int(7162 / 485 * 262_144) == 3_871_083


def test_qwen3_5_27b_align_mode_matches_the_v0_28_log():
    log = LOGS["qwen3.8-27b-fp8-tp1-gb10-v0.28.0-align"]
    s = qwen3_5_27b_stage()
    assert s.state_layer_bytes == 3 * 10240 * 2 + 48 * 128 * 128 * 4 == 3_207_168
    # the log prints the block count, not the budget: give the pool exactly that many blocks
    page = log["mamba_page_size_padded"]
    p = vllm_hybrid_layout(s, log["num_gpu_blocks"] * page * 16, log["max_model_len"], 8192, mamba_cache_mode="align")
    assert (p.block_size, p.page_bytes) == (log["attention_block_size"], page)
    assert round(100 * (page - s.state_layer_bytes) / s.state_layer_bytes, 2) == log["mamba_padding_percent"]
    assert (p.n_groups, p.state_groups, p.num_blocks) == (4, 3, 469)
    # align mode: two pages per Mamba group and request, plus cdiv(4096, 784) attention pages
    assert p.blocks_per_request == 3 * 2 + 6 == 12
    assert f"{p.max_concurrency:.2f}" == f"{log['max_concurrency']:.2f}"
    assert p.tokens == log["gpu_kv_cache_tokens"] == 160_085


def test_qwen3_5_27b_v0_19_lines_agree_with_one_block_count():
    log = LOGS["qwen3.5-27b-h20-v0.19.0"]
    s = qwen3_5_27b_stage()
    page = 784 * 4096
    agree = []
    for n in range(1, 3000):
        p = vllm_hybrid_layout(s, n * page * 16, log["max_model_len"], log["max_num_batched_tokens"])
        if p.tokens_before_0_20 == log["gpu_kv_cache_tokens"] and f"{p.max_concurrency:.2f}" == "33.04":
            agree.append(n)
    # 1487 blocks / (42 attention + 3 Mamba pages): the default mamba_cache_mode "none" of hybrid models
    assert agree == [1487]


def test_user_block_size_is_the_alignment_grain():
    """Arms 1 and 3 of the v0.28 report: a drafter of 7 speculative tokens adds 7 conv-state columns
    (mamba_utils: conv_kernel - 1 + num_spec); then vLLM logs 832-token blocks padded by 1.71 %, and
    with --block-size 816 it takes 816 as the grain: 816 x cdiv(mamba page, 816 x 4096) = 1632, 99.51 %."""
    s = qwen3_5_27b_stage()
    assert vllm_state_bytes_per_layer(s.rank_spec, 2, ssm_dtype_bytes=4) == s.state_layer_bytes
    s = replace(s, state_layer_bytes=vllm_state_bytes_per_layer(s.rank_spec, 2, ssm_dtype_bytes=4,
                                                                  num_speculative_tokens=7))
    assert s.state_layer_bytes == 10 * 10240 * 2 + 48 * 128 * 128 * 4 == 3_350_528
    arm1 = vllm_hybrid_layout(s, 10 * GiB, 4096, 8192, mamba_cache_mode="align")
    assert arm1.block_size == 832 and f"{100 * (arm1.page_bytes / s.state_layer_bytes - 1):.2f}" == "1.71"
    arm3 = vllm_hybrid_layout(s, 10 * GiB, 4096, 8192, mamba_cache_mode="align", block_size=816)
    assert arm3.block_size == 1632 and arm3.page_bytes == 6_684_672
    assert f"{100 * (arm3.page_bytes / s.state_layer_bytes - 1):.2f}" == "99.51"


def test_falcon_h1_layers_hold_attention_and_mamba_groups():
    """A HYBRID layer registers an attention and a Mamba layer: n of each, two groups of n."""
    config = {"model_type": "falcon_h1", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 512, "mamba_d_ssm": 512,
              "mamba_n_heads": 8, "mamba_d_state": 16, "mamba_n_groups": 2, "mamba_rms_norm": True,
              "vocab_size": 512}
    s = build_stages(spec_from_config(config, "falcon-h1-small", "test"), get_precision("bf16"), Placement(1, 1),
                     "bf16")[0]
    p = vllm_hybrid_layout(s, 1 * GiB, 8192, 2048)
    assert (p.group_size, p.n_groups, p.state_groups) == (4, 2, 1)
    assert p.blocks_per_request == ceil(8192 / p.block_size) + 1


def test_unknown_mamba_cache_mode_is_refused():
    with pytest.raises(ValueError):
        vllm_hybrid_layout(qwen3_next_stage(1), GiB, 4096, 8192, mamba_cache_mode="all")
