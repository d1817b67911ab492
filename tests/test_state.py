"""State that is not a KV cache: recurrent layers' per-sequence state, windows, chunks and layers
without their own cache, in the calculator and in each engine's plan."""

from dataclasses import replace

from sizer import estimate, get_model
from sizer.calc.kv import kv_cache_bytes, kv_cache_bytes_per_token, state_bytes_per_sequence
from sizer.calc.report import ESTIMATE_CSV_COLUMNS, render_estimate
from sizer.plan.engines import LlamaCppEngine, TransformersEngine, VllmEngine, vllm_hybrid_pool
from sizer.plan.placement import Placement
from sizer.plan.stages import build_stages
from sizer.quant import get_precision
from sizer.spec import (CHUNKED_ATTENTION, FULL_ATTENTION, MAMBA, NO_CACHE, SHARED_KV, RecurrentState, Workload)
from sizer.units import GiB

# Llama 3 8B with 3 of every 4 layers turned into Mamba2 mixers (a Jamba-like 1:3 pattern)
MAMBA2 = RecurrentState("mamba2", conv_channels=8192 + 2 * 128, conv_kernel=4, state_values=128 * 64 * 128)


def hybrid_llama():
    base = get_model("llama-3-8b")
    kinds = tuple(FULL_ATTENTION if i % 4 == 3 else MAMBA for i in range(base.n_layers))
    return replace(base, layer_types=kinds, recurrent=MAMBA2, name="hybrid-llama", max_context_length=131072)


def test_attention_only_models_have_no_state():
    e = estimate("llama-3-8b", context_length=8192)
    assert e.memory["state"] == 0 and e.state_bytes == 0 and "state" not in e.breakdown
    assert e.details["cache_by_layer_type"] == {FULL_ATTENTION: {
        "layers": 32, "kv_cache_bytes_per_token": 131_072, "state_bytes_per_sequence": 0, "window": None}}


def test_state_is_per_sequence_and_kv_only_in_attention_layers():
    spec = hybrid_llama()
    per_layer_token = 2 * 8 * 128 * 2                  # K and V, 8 KV heads of 128, bf16
    assert kv_cache_bytes_per_token(spec) == 8 * per_layer_token
    # engines keep kernel - 1 conv columns; bf16 state
    per_layer_state = (3 * 8448 + 128 * 64 * 128) * 2
    assert state_bytes_per_sequence(spec) == 24 * per_layer_state
    a = estimate(spec, context_length=4096, batch_size=3)
    b = estimate(spec, context_length=16384, batch_size=3)
    assert a.memory["state"] == b.memory["state"] == 3 * 24 * per_layer_state
    assert b.memory["kv_cache"] == 4 * a.memory["kv_cache"] == 3 * 16384 * 8 * per_layer_token
    assert sum(b.breakdown.values()) == b.total_bytes and b.breakdown["state"] == b.memory["state"]
    by_type = b.details["cache_by_layer_type"]
    assert by_type[MAMBA] == {"layers": 24, "kv_cache_bytes_per_token": 0,
                              "state_bytes_per_sequence": 24 * per_layer_state, "window": None}
    assert by_type[FULL_ATTENTION]["kv_cache_bytes_per_token"] == 8 * per_layer_token


def test_renderings_show_kv_and_state_apart():
    e = estimate(hybrid_llama(), context_length=4096, batch_size=2)
    table = render_estimate(e, "table")
    assert "KV cache and state: 32,768 bytes/token (grows with the context) + " in table
    assert "mamba × 24: " in table and "full_attention × 8: 32,768 bytes/token" in table
    header, row = render_estimate(e, "csv").strip().splitlines()
    cells = dict(zip(header.split(","), row.split(",")))
    assert "memory/state" in ESTIMATE_CSV_COLUMNS and int(cells["memory/state"]) == e.memory["state"] > 0
    assert int(cells["state_bytes_per_sequence"]) * 2 == e.memory["state"]
    plain = render_estimate(estimate("llama-3-8b", context_length=4096), "table")
    assert "KV cache and state" not in plain


def test_windows_chunks_and_cacheless_layers():
    base = get_model("llama-3-8b")
    kinds = (CHUNKED_ATTENTION, SHARED_KV, NO_CACHE, FULL_ATTENTION) * 8
    spec = replace(base, layer_types=kinds, attention_chunk=1024)
    per_layer = 2 * 8 * 128 * 2
    assert kv_cache_bytes_per_token(spec) == 16 * per_layer
    assert kv_cache_bytes(spec, "bf16", 8192, 1) == 8 * 1024 * per_layer + 8 * 8192 * per_layer
    assert kv_cache_bytes(spec, "bf16", 512, 1) == 16 * 512 * per_layer
    assert state_bytes_per_sequence(spec) == 0


def _stage(spec, tp=1):
    return build_stages(spec, get_precision("bf16"), Placement(tp, 1), "bf16")[0]


def test_stages_split_kv_and_state_per_rank():
    spec = hybrid_llama()
    s1, s2 = _stage(spec), _stage(spec, 2)
    assert s1.state_layers == 24 and s1.state_bytes(5) == 5 * state_bytes_per_sequence(spec)
    assert s1.kv_full_bytes_per_token == 8 * 2 * 8 * 128 * 2
    assert s2.state_layer_bytes * 2 == s1.state_layer_bytes         # heads and channels split over 2 ranks
    assert s1.state_layer_bytes_llamacpp == 2 * s1.state_layer_bytes   # float32 cells
    # transformers: kernel columns of conv state in bf16, recurrent state in float32
    assert s1.transformers_state_layer_bytes == 4 * 8448 * 2 + 128 * 64 * 128 * 4


def test_vllm_hybrid_pool_pages_and_concurrency():
    s = _stage(hybrid_llama())
    state_layer = s.state_layer_bytes
    attn_token = 2 * 8 * 128 * 2
    block = 16 * -(-state_layer // (16 * attn_token))          # attention pages grow to hold a state
    page = block * attn_token
    assert page >= state_layer and (block - 16) * attn_token < state_layer
    # 8 attention vs 24 mamba layers: groups of 8 -> 1 attention group + 3 mamba groups
    available = 40 * GiB
    pool, state, layout = vllm_hybrid_pool(s, available, 32768, 8192, 4)
    tokens, fits = layout.tokens, layout.requests
    blocks = available // (8 * page)
    per_request = 3 + -(-32768 // block)
    assert pool == blocks * 8 * page and fits == blocks // per_request
    # vLLM 0.32 logs int(max_concurrency x max_model_len); 0.10-0.19 logged blocks // groups x block
    assert tokens == int(blocks / per_request * 32768) and state == 4 * 3 * 8 * page
    assert layout.tokens_before_0_20 == blocks // 4 * block and layout.num_blocks == blocks


def test_engines_count_state_once_per_sequence():
    spec = hybrid_llama()
    stages = build_stages(spec, get_precision("bf16"), Placement(1, 1), "bf16")
    w1, w2 = Workload(8192, 1), Workload(8192, 4)
    tr = TransformersEngine()
    g1, g2 = (tr.evaluate(stages, Placement(1, 1), 80 * GiB, w, get_precision("bf16")).per_gpu[0] for w in (w1, w2))
    assert g2.state == 4 * g1.state == 4 * 24 * stages[0].transformers_state_layer_bytes
    ll = LlamaCppEngine()
    g = ll.evaluate(stages, Placement(1, 1), 80 * GiB, w2, get_precision("bf16")).per_gpu[0]
    assert g.state == 4 * 24 * stages[0].state_layer_bytes_llamacpp
    assert g.kv_cache == 4 * 8192 * stages[0].kv_full_bytes_per_token
    ev = VllmEngine().evaluate(stages, Placement(1, 1), 80 * GiB, w2, get_precision("bf16"))
    assert ev.max_concurrency >= 4 and ev.per_gpu[0].state > 0


# DeepSeek-V3.2's config.json (deepseek-ai/DeepSeek-V3.2): the sizing keys
DEEPSEEK_V32 = {"model_type": "deepseek_v32", "hidden_size": 7168, "num_hidden_layers": 61, "num_attention_heads": 128,
                "num_key_value_heads": 128, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_rope_head_dim": 64,
                "qk_nope_head_dim": 128, "v_head_dim": 128, "intermediate_size": 18432, "moe_intermediate_size": 2048,
                "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
                "vocab_size": 129280, "index_n_heads": 64, "index_head_dim": 128, "index_topk": 2048,
                "max_position_embeddings": 163840, "tie_word_embeddings": False}


def test_sparse_attention_indexer_keys_per_engine():
    """The DSA indexer's keys: index_head_dim values per token in each layer beside the MLA latent, in
    the KV dtype for the calculator and transformers; vLLM stores them as fp8 plus a float32 scale per
    128 values whatever --kv-cache-dtype (deepseek_v2.py Indexer: DeepseekV32IndexerCache of
    index_head_dim + index_head_dim // 128 * 4 uint8), 132 bytes per token and layer."""
    from sizer.calc.kv import INDEXER_VLLM_FP8
    from sizer.families import spec_from_config

    spec = spec_from_config(dict(DEEPSEEK_V32), "deepseek-v3.2", "config.json")
    assert spec.indexer_values_per_token == 128 and spec.indexer_layers is None and spec.is_mla
    latent = 512 + 64
    assert kv_cache_bytes_per_token(spec, "bf16") == 61 * (latent + 128) * 2
    assert kv_cache_bytes_per_token(spec, "fp8") == 61 * (latent + 128)
    assert kv_cache_bytes_per_token(spec, "bf16", INDEXER_VLLM_FP8) == 61 * (latent * 2 + 132)
    assert kv_cache_bytes_per_token(spec, "fp8", INDEXER_VLLM_FP8) == 61 * (latent + 132)
    assert VllmEngine().indexer_cache == INDEXER_VLLM_FP8
    # each engine's stages: vLLM's page of one token in one layer, split over pipeline stages
    for indexer, per_layer in (("kv_dtype", (latent + 128) * 2), (INDEXER_VLLM_FP8, latent * 2 + 132)):
        stages = build_stages(spec, get_precision("bf16"), Placement(8, 2), "bf16", indexer=indexer)
        assert [s.kv_full_bytes_per_token for s in stages] == [31 * per_layer, 30 * per_layer]
        assert stages[0].kv_layer_bytes_per_token == per_layer       # MLA: the latent is not split over TP
    e = estimate(spec, context_length=4096)
    assert e.memory["kv_cache"] == 4096 * 61 * (latent + 128) * 2
    # GLM-5 with shared indexers: only the layers with an indexer of their own cache its keys
    glm = spec_from_config({**DEEPSEEK_V32, "model_type": "glm_moe_dsa", "num_hidden_layers": 8, "index_topk_freq": 4,
                            "index_skip_topk_offset": 3}, "glm-5-like", "config.json")
    assert glm.indexer_layers == (0, 1, 2, 6)
    assert kv_cache_bytes_per_token(glm, "bf16") == 8 * latent * 2 + 4 * 128 * 2
    assert kv_cache_bytes(glm, "bf16", 100, 2) == 2 * 100 * kv_cache_bytes_per_token(glm, "bf16")


# MiMo-V2-Flash's sizing keys (MiMoV2FlashConfig defaults: 48 layers, 4 KV heads, K/V head sizes 192/128)
MIMO_V2_FLASH = {"model_type": "mimo_v2_flash", "hidden_size": 4096, "num_hidden_layers": 48, "num_attention_heads": 64,
                 "num_key_value_heads": 4, "head_dim": 192, "v_head_dim": 128, "intermediate_size": 16384,
                 "moe_intermediate_size": 2048, "n_routed_experts": 256, "num_experts_per_tok": 8,
                 "sliding_window": 129, "vocab_size": 152576, "max_position_embeddings": 262144}


def test_kv_geometry_per_layer_kind():
    """MiMo-V2-Flash: 9 full-attention layers of 4 KV heads and 39 sliding layers of 8, keys of 192
    and values of 128 values; the calculator, estimate's per-kind table and each TP rank's stages
    use each kind's own geometry."""
    from sizer.families import spec_from_config
    from sizer.spec import SLIDING_ATTENTION

    spec = spec_from_config(dict(MIMO_V2_FLASH), "mimo-v2-flash", "config.json")
    assert spec.layer_kind_counts() == {FULL_ATTENTION: 9, SLIDING_ATTENTION: 39} and spec.sliding_window == 129
    full, sliding = 4 * (192 + 128) * 2, 8 * (192 + 128) * 2          # bf16 bytes per token and layer
    assert kv_cache_bytes_per_token(spec, "bf16") == 9 * full + 39 * sliding
    assert kv_cache_bytes(spec, "bf16", 4096, 2) == 2 * (4096 * 9 * full + 129 * 39 * sliding)
    e = estimate(spec, context_length=4096)
    assert e.details["cache_by_layer_type"][SLIDING_ATTENTION]["kv_cache_bytes_per_token"] == 39 * sliding
    assert e.details["cache_by_layer_type"][FULL_ATTENTION]["kv_cache_bytes_per_token"] == 9 * full
    s = build_stages(spec, get_precision("bf16"), Placement(4, 1), "bf16")[0]
    assert s.kv_full_bytes_per_token == 9 * full // 4 and s.kv_window_bytes_per_token == ((129, 39 * sliding // 4),)
    assert s.kv_bytes(4096, 1) == 4096 * 9 * full // 4 + 129 * 39 * sliding // 4
    s8 = build_stages(spec, get_precision("bf16"), Placement(8, 1), "bf16")[0]   # 4 KV heads replicated past TP 4
    assert s8.kv_full_bytes_per_token == 9 * (192 + 128) * 2 and s8.kv_window_bytes_per_token == ((129, 39 * sliding // 8),)


QWEN3_NEXT_SMALL = {
    "model_type": "qwen3_next", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 512, "moe_intermediate_size": 128,
    "shared_expert_intermediate_size": 256, "num_experts": 8, "num_experts_per_tok": 2, "linear_key_head_dim": 32,
    "linear_value_head_dim": 32, "linear_num_key_heads": 2, "linear_num_value_heads": 4, "vocab_size": 512}


def test_recurrent_layers_working_set_in_the_activations():
    """A prefill's token-mixer moment is the larger of the attention layers' and the recurrent layers'
    (transformers' torch scan, exact against the allocation meter in test_against_transformers.py);
    a decode step and vLLM's own kernels keep the attention moment; a mixer without geometry counts
    as attention and says so."""
    from sizer.calc.activations import attention_bytes, recurrent_bytes, step_peak
    from sizer.families import spec_from_config

    spec = spec_from_config(dict(QWEN3_NEXT_SMALL), "q3n-small", "q3n-small")
    assert spec.recurrent.heads == 4 and spec.recurrent.key_heads == 2 and spec.recurrent.value_head_dim == 32
    prefill = step_peak(spec, 2, 4096, 4096, False, 1, 2)
    scan = recurrent_bytes(spec, 2, 4096, 2)
    assert prefill["attention"] == scan > attention_bytes(spec, 2, 4096, 4096, False, 2)
    # within one chunk of 64 the float32 scan keeps its padded size: only the per-token projections grow
    # (in_proj_qkvz 384, in_proj_ba 8, the re-ordered v, z, b, a 136, the conv output 256; beta and g; less the
    # block output), two sequences of 63 tokens more
    assert scan - recurrent_bytes(spec, 2, 4096 - 63, 2) == 2 * 63 * ((384 + 8 + 136 + 256) * 2 + 4 * (2 + 4) - 256 * 2)
    decode = step_peak(spec, 2, 1, 4096, False, 1, 2)
    assert decode["attention"] == attention_bytes(spec, 2, 1, 4096, False, 2)
    vllm = step_peak(spec, 1, 8192, 8192, False, 1, 2, torch_sdpa=False)
    assert vllm["attention"] == attention_bytes(spec, 1, 8192, 8192, False, 2, torch_sdpa=False)
    notes = estimate(spec, context_length=4096, batch_size=2).details["notes"]
    assert any("PyTorch path" in n and "flash-linear-attention" in n and "upper bound" in n for n in notes)
    # a recurrent state without the mixer's geometry: its layers count as attention layers, said in a note
    bare = hybrid_llama()
    assert recurrent_bytes(bare, 1, 4096, 2) == 0
    assert step_peak(bare, 1, 4096, 4096, False, 1, 2)["attention"] == attention_bytes(bare, 1, 4096, 4096, False, 2)
    assert any("not modelled" in n for n in estimate(bare, context_length=4096).details["notes"])


def test_tensor_parallel_ranks_split_the_mixer_heads():
    from sizer.families import spec_from_config

    spec = spec_from_config(dict(QWEN3_NEXT_SMALL), "q3n-small", "q3n-small")
    r1, r2 = _stage(spec).rank_spec.recurrent, _stage(spec, 2).rank_spec.recurrent
    assert (r2.heads, r2.key_heads, r2.head_dim, r2.value_head_dim) == (2, 1, 32, 32)
    assert r2.conv_channels * 2 == r1.conv_channels and r2.state_values * 2 == r1.state_values
