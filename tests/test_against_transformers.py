"""sizer's family enumerations and KV layouts against the transformers implementation itself.

* Parameters: every catalog config (full size and scaled down) and hand-written small configs of the
  families the catalog lacks are built with `AutoModelForCausalLM.from_config` on the meta device
  (no memory, well under a second each); `spec.params` must equal the module's parameter count
  exactly, and `spec.params_by_component()` must equal the per-component sums obtained by mapping
  each transformers parameter name through `sizer.inputs.names.component_of`.
* Layer structure: sizer's per-layer attention kinds and window equal the transformers config's.
* KV cache: scaled-down models run one bf16 forward on CPU; the bytes held by the returned
  `DynamicCache` are compared with `kv_cache_bytes`. Where transformers stores something other than
  what serving engines store, the test states both layouts as formulas and checks each side against
  its own formula.
Where sizer and transformers disagree and it is not settled which is right, the case is a strict
xfail whose reason states both numbers' origin (PARAM_DISAGREEMENTS, LAYER_TYPE_DISAGREEMENTS).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sizer.calc.kv import (TRANSFORMERS_CACHE_LAYER_TYPE, kv_cache_bytes, kv_cache_bytes_per_token,  # noqa: E402
                           state_bytes_per_sequence, transformers_kv_cache_bytes, transformers_state_bytes)
from sizer.calc.transformers_releases import parse_release, spec_for_transformers  # noqa: E402
from sizer.families import FAMILIES, spec_from_config  # noqa: E402
from sizer.inputs.names import component_of  # noqa: E402

INSTALLED_RELEASE = parse_release(transformers.__version__)
MODELS_DIR = Path(__file__).resolve().parents[1] / "sizer" / "data" / "models"
CATALOG = {p.stem: json.loads(p.read_text()) for p in sorted(MODELS_DIR.glob("*.json"))}

# Multimodal wrappers whose language model is a text family of its own.
TEXT_MODEL_TYPE = {"gemma3": "gemma3_text", "gemma3n": "gemma3n_text", "gemma4": "gemma4_text", "mistral3": "mistral",
                   "llama4": "llama4_text", "kimi_k25": "deepseek_v3", "qwen3_5": "qwen3_5_text",
                   "qwen3_5_moe": "qwen3_5_moe_text"}


# ---------------------------------------------------------------------------------------------
# Scaling a config down


HIDDEN_KEYS = ("hidden_size", "n_embed", "n_embd", "d_model")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers")
HEAD_KEYS = ("num_attention_heads", "n_head", "n_heads")
KV_HEAD_KEYS = ("num_key_value_heads", "num_kv_heads", "n_head_kv")
D_FF_KEYS = ("intermediate_size", "ffn_hidden_size", "n_inner")
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")
TOP_K_KEYS = ("num_experts_per_tok", "experts_per_token", "num_experts_per_token", "top_k_experts")
WINDOW_KEYS = ("sliding_window", "sliding_window_size")
VOCAB = 512
WINDOW = 32


def _first(cfg: dict, keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if cfg.get(k) is not None), None)


def _kv_heads(cfg: dict, n_heads: int) -> int:
    """KV heads as the family reads them (falcon's old decoder and gpt_bigcode: the multi_query flag)."""
    family = cfg.get("model_type")
    if family == "gpt_bigcode" or (family == "falcon" and not cfg.get("new_decoder_architecture", False)):
        return 1 if cfg.get("multi_query", True) else n_heads
    key = _first(cfg, KV_HEAD_KEYS)
    return cfg[key] if key else n_heads


def _rotary_head_dim(fraction: float, preferred: int) -> int:
    """A head size whose rotary part (fraction x head_dim, truncated as transformers does: MiMo-V2-Flash's
    0.334 x 192 = 64) is an even number of at least 8 (4 frequencies, enough for Qwen3.5's 3 mrope
    sections): the preferred size, the next multiples of 8 below 64, then the usual sizes (MiMo-V2-Flash
    at 16: 24, whose rotary part is 8; Qwen3.5-397B at 16: 32)."""
    for head_dim in (preferred, *range(preferred + 8, 64, 8), 64, 80, 96, 128, 160, 192):
        rotary = int(fraction * head_dim)
        if rotary >= 8 and rotary % 2 == 0:
            return head_dim
    raise ValueError(f"no small head size for a rotary fraction of {fraction}")


# Keys that give one entry per decoder layer (a list, or a string of one character per layer): the scaled
# config keeps the same layers of each. no_rope_layers (Llama 4, SmolLM3) may be longer than the model.
PER_LAYER_KEYS = ("layer_types", "layers_block_type", "mlp_layer_types", "no_rope_layers", "attn_type_list",
                  "hybrid_override_pattern",                       # Nemotron-H: M / E / * / - per layer
                  "hybrid_layer_pattern", "moe_layer_freq",        # MiMo-V2-Flash's own lists (0 full, 1 sliding;
                  "indexer_types", "index_topk_pattern")           # 0 dense, 1 MoE); GLM-5's indexer per layer
# Keys listing the indices of the layers that have something (a dense MLP, a MoE block)
LAYER_INDEX_KEYS = ("mlp_only_layers", "moe_layers")
# Jamba: a layer has attention (a MoE block) when layer % period == offset
PERIODS = (("attn_layer_period", "attn_layer_offset"), ("expert_layer_period", "expert_layer_offset"))


def _per_layer(cfg: dict, old: int) -> dict[str, list | str]:
    """The config's per-layer lists and strings (DeepSeek's integer moe_layer_freq is not one)."""
    return {k: cfg[k] for k in PER_LAYER_KEYS if isinstance(cfg.get(k), (list, str)) and len(cfg[k]) >= old > 0}


def _cover(values) -> int:
    """Length of the shortest prefix that holds every distinct value."""
    values = list(values)
    return next(i for i in range(1, len(values) + 1) if set(values[:i]) == set(values))


def _period_mix(cfg: dict, n: int) -> set[tuple[bool, ...]]:
    """Jamba: the (attention?, MoE?) combinations the first n layers hold."""
    rules = [(cfg[p], cfg.get(o, 0)) for p, o in PERIODS if cfg.get(p)]
    return {tuple(i % period == offset for period, offset in rules) for i in range(n)}


def _n_layers(cfg: dict, old: int) -> int:
    """4 layers (3 for DeepSeek), more when needed: the shortest prefix of the original that holds every
    value of each per-layer key (attention kind, block kind, MoE or dense, indexer), each layer-index key's
    layers and the others, and Gemma 3's rule-made pattern."""
    n = 3 if cfg.get("first_k_dense_replace") else 4
    for values in _per_layer(cfg, old).values():
        n = max(n, _cover(values[:old]))
    for key in LAYER_INDEX_KEYS:
        if cfg.get(key):
            n = max(n, _cover(i in set(cfg[key]) for i in range(old)))
    if not cfg.get("layer_types") and cfg.get("model_type") in ("gemma3", "gemma3_text"):
        n = max(n, cfg.get("sliding_window_pattern", 6) + 1)       # 5 local : 1 global, then local again
    return min(n, old)


def _shrink_layers(cfg: dict, layers_key: str) -> int:
    """Keep the first layers (and a KV-shared tail) and every per-layer key's entries for them; returns
    the new layer count."""
    old = cfg[layers_key]
    per_layer = _per_layer(cfg, old)
    n = _n_layers(cfg, old)
    shared = min(cfg.get("num_kv_shared_layers") or 0, 2)  # Gemma 3n/4: a KV-shared tail after the layers
    if shared and n + shared > old:                        # that cache (which keep every attention kind)
        n = old - shared
    keep = [*range(n), *range(old - shared, old)]
    for key, values in per_layer.items():
        picked = [values[i] for i in keep]
        cfg[key] = "".join(picked) if isinstance(values, str) else picked
    for key in LAYER_INDEX_KEYS:
        if cfg.get(key):
            cfg[key] = [keep.index(i) for i in cfg[key] if i in keep]
    if shared:
        cfg["num_kv_shared_layers"] = shared
    n += shared
    cfg[layers_key] = n

    if any(cfg.get(p) for p, _ in PERIODS):                 # Jamba: one attention period within the new count,
        mix = _period_mix(cfg, old)                         # the offset where it falls in the shorter period
        for period, offset in PERIODS:
            if cfg.get(period) and cfg[period] > n:
                cfg[offset] = cfg.get(offset, 0) * n // cfg[period]
                cfg[period] = n
        assert _period_mix(cfg, n) == mix, (mix, _period_mix(cfg, n))
    if cfg.get("interleave_moe_layer_step") and cfg["interleave_moe_layer_step"] > n:   # Llama 4
        cfg["interleave_moe_layer_step"] = n
    for key in ("full_attention_interval", "no_rope_layer_interval"):     # Qwen3-Next / 3.5, Llama 4, SmolLM3
        if cfg.get(key) and cfg[key] > n:
            cfg[key] = n
    if cfg.get("max_window_layers") is not None:            # Qwen: layers from here on slide
        mwl = cfg["max_window_layers"]
        cfg["max_window_layers"] = n if mwl >= old else min(max(1, mwl * n // old), n - 1)
    if cfg.get("first_k_dense_replace"):                    # DeepSeek: dense layers first, then MoE
        cfg["first_k_dense_replace"] = 1
    return n


def _rope_fraction(cfg: dict) -> float | None:
    """The rotary fraction: partial_rotary_factor / rotary_pct at the top level or in rope_parameters,
    MiniMax-M2's rotary_dim / head_dim."""
    rope = cfg.get("rope_parameters") if isinstance(cfg.get("rope_parameters"), dict) else {}
    fraction = cfg.get("partial_rotary_factor") or cfg.get("rotary_pct") or rope.get("partial_rotary_factor")
    if not fraction and cfg.get("rotary_dim") and cfg.get("head_dim"):
        fraction = cfg["rotary_dim"] / cfg["head_dim"]
    return fraction


def _mrope_section(section: list[int], rotary_half: int) -> list[int]:
    """Qwen3.5's multimodal RoPE sections (temporal, height, width), which add up to rotary_dim / 2,
    rescaled to the new rotary half."""
    total = sum(section)
    new = [s * rotary_half // total for s in section]
    for i in range(rotary_half - sum(new)):
        new[i % len(new)] += 1
    return new


def scale_down(config: dict) -> dict:
    """A small config of the same structure: family, MoE, MLA, tying, biases, windows, GQA ratio,
    explicit head_dim, fused-QKV and falcon/bigcode flags, partial rotary, per-layer patterns all kept;
    sizes shrunk. Keys the config leaves out (sparse Gemma 3 text configs) stay out, so class defaults
    still apply."""
    cfg = copy.deepcopy(config)
    if isinstance(cfg.get("text_config"), dict):
        cfg["text_config"] = scale_down(cfg["text_config"])
        cfg.pop("vision_config", None)
        return cfg

    _shrink_layers(cfg, _first(cfg, LAYER_KEYS))

    # Heads: keep MHA / MQA / the GQA ratio; head size 64 where the head count allows.
    heads_key = _first(cfg, HEAD_KEYS)
    hidden_key = _first(cfg, HIDDEN_KEYS)
    old_hidden = cfg.get(hidden_key) if hidden_key else None
    old_head_dim = cfg.get("head_dim")
    head_dim = 64
    fraction = _rope_fraction(cfg)
    if heads_key:
        n_heads = cfg[heads_key]
        n_kv = _kv_heads(cfg, n_heads)
        assert n_heads % n_kv == 0, cfg
        if n_kv == n_heads:
            new_heads = new_kv = 4
        elif n_kv == 1:
            new_heads, new_kv = 4, 1
        else:
            new_kv = 2
            new_heads = 2 * (n_heads // n_kv)
        head_dim = 64 if new_heads <= 4 else 32 if new_heads <= 16 else 16
        if fraction and fraction != 1:
            head_dim = _rotary_head_dim(fraction, head_dim)
        hidden = new_heads * head_dim
        if cfg.get("head_dim") is not None and cfg["head_dim"] * n_heads != old_hidden:
            hidden = hidden * 3 // 4        # explicit head_dim that is not hidden / heads: keep it so
        cfg[heads_key] = new_heads
        kv_key = _first(cfg, KV_HEAD_KEYS)
        if kv_key:
            cfg[kv_key] = new_kv
        if cfg.get("num_global_key_value_heads"):           # Gemma 4 (attention_k_eq_v): the full layers' KV heads
            cfg["num_global_key_value_heads"] = max(1, cfg["num_global_key_value_heads"] * new_heads // n_heads)
        if cfg.get("swa_num_attention_heads"):              # MiMo-V2-Flash's sliding-layer heads (read by neither
            cfg["swa_num_attention_heads"] = new_heads      # library: twice the KV heads is the rule), kept in step
            cfg["swa_num_key_value_heads"] = new_kv * cfg["swa_num_key_value_heads"] // n_kv
    else:
        hidden = 256
    if cfg.get("head_dim") is not None:
        cfg["head_dim"] = head_dim
    if cfg.get("global_head_dim") and old_head_dim:         # Gemma 4's full layers: the same multiple of head_dim
        cfg["global_head_dim"] = head_dim * cfg["global_head_dim"] // old_head_dim
    if cfg.get("rotary_dim") and old_head_dim:              # MiniMax-M2: the same rotary fraction
        cfg["rotary_dim"] = int(fraction * head_dim)
    if cfg.get("query_pre_attn_scalar") is not None:
        cfg["query_pre_attn_scalar"] = head_dim
    if hidden_key:
        cfg[hidden_key] = hidden
    else:
        cfg["hidden_size"] = hidden

    for key in D_FF_KEYS:
        if cfg.get(key) is not None:
            cfg[key] = 3 * hidden
    if cfg.get("intermediate_size_mlp") is not None:        # Llama 4's dense layers: twice the experts' width
        cfg["intermediate_size_mlp"] = 6 * hidden
    if cfg.get("moe_intermediate_size") is not None:
        cfg["moe_intermediate_size"] = hidden // 2
    for key in ("shared_expert_intermediate_size", "moe_shared_expert_intermediate_size", "shared_intermediate_size"):
        if cfg.get(key):                                    # 0 (MiniMax-M2: no shared expert) stays 0
            cfg[key] = hidden
    for key in EXPERT_KEYS:
        if cfg.get(key) is not None:
            cfg[key] = min(cfg[key], 8)
    for key in TOP_K_KEYS:
        if cfg.get(key) is not None:
            cfg[key] = min(cfg[key], 2)
    if cfg.get("n_group") is not None:                      # DeepSeek group-limited routing
        cfg["n_group"], cfg["topk_group"] = 2, 1

    # MLA ranks (DeepSeek): q_lora_rank stays null when it is null.
    for key, value in (("q_lora_rank", 128), ("kv_lora_rank", 64), ("qk_rope_head_dim", 32),
                       ("qk_nope_head_dim", 64), ("v_head_dim", 64)):
        if cfg.get(key) is not None:
            cfg[key] = value
    if cfg.get("qk_head_dim") is not None:                  # GLM-5 states it; the config class recomputes it
        cfg["qk_head_dim"] = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    if cfg.get("swa_head_dim") is not None:                 # MiMo-V2-Flash (read by neither library)
        cfg["swa_head_dim"], cfg["swa_v_head_dim"] = head_dim, cfg["v_head_dim"]
    # DSA indexer (DeepSeek V3.2, GLM-5): a few heads, a key wider than the rotary part, a small top-k
    for key, value in (("index_n_heads", 4), ("index_head_dim", 64), ("index_topk", 16)):
        if cfg.get(key) is not None:
            cfg[key] = min(cfg[key], value)

    # Recurrent mixers: Gated DeltaNet (Qwen3-Next / 3.5) heads keep their key : value ratio; Mamba / Mamba2
    # (Jamba, Nemotron-H) a few heads and groups, a small state, a short conv kernel.
    if cfg.get("linear_num_key_heads"):
        ratio = cfg.get("linear_num_value_heads", cfg["linear_num_key_heads"]) // cfg["linear_num_key_heads"]
        cfg["linear_num_key_heads"], cfg["linear_num_value_heads"] = 2, 2 * ratio
    for key, value in (("linear_key_head_dim", 32), ("linear_value_head_dim", 32), ("mamba_num_heads", 8),
                       ("mamba_head_dim", 32), ("ssm_state_size", 16), ("mamba_d_state", 16), ("n_groups", 2),
                       ("mamba_n_groups", 2), ("linear_conv_kernel_dim", 4), ("conv_kernel", 4),
                       ("mamba_d_conv", 4), ("chunk_size", 32), ("mamba_chunk_size", 32)):
        if isinstance(cfg.get(key), int):
            cfg[key] = min(cfg[key], value)
    if isinstance(cfg.get("mamba_dt_rank"), int):           # Jamba: an explicit rank; "auto" is hidden / 16
        cfg["mamba_dt_rank"] = -(-hidden // 16)

    # Gemma 3n / 4 per-layer inputs: a small per-layer width and the small vocabulary
    if cfg.get("hidden_size_per_layer_input"):
        cfg["hidden_size_per_layer_input"] = 16
    if cfg.get("vocab_size_per_layer_input") is not None:
        cfg["vocab_size_per_layer_input"] = VOCAB

    for key in WINDOW_KEYS:
        if cfg.get(key) is not None:
            cfg[key] = WINDOW
    if cfg.get("attention_chunk_size") is not None:         # Llama 4: chunked attention, cached as a window
        cfg["attention_chunk_size"] = WINDOW
    if cfg.get("n_positions") is not None:                  # gpt_bigcode's learned positions
        cfg["n_positions"] = 256

    # longrope: one factor per rotary frequency; Qwen3.5's mrope sections add up to the rotary half
    rotary_half = int(head_dim * (fraction or 1.0)) // 2
    for rope in (cfg.get("rope_scaling"), cfg.get("rope_parameters")):
        if not isinstance(rope, dict):
            continue
        for key in ("long_factor", "short_factor"):
            if isinstance(rope.get(key), list):
                rope[key] = rope[key][:rotary_half]
        if isinstance(rope.get("mrope_section"), list):
            rope["mrope_section"] = _mrope_section(rope["mrope_section"], rotary_half)

    cfg["vocab_size"] = VOCAB                               # set even where a sparse config relies on the default
    for key, value in list(cfg.items()):                    # token ids must stay inside the vocabulary
        if key.endswith("_token_id") and isinstance(value, int) and value >= VOCAB:
            cfg[key] = VOCAB - 1
        elif key.endswith("_token_id") and isinstance(value, list):
            cfg[key] = [min(v, VOCAB - 1) for v in value]
    return cfg


# ---------------------------------------------------------------------------------------------
# Hand-written small configs: families the catalog lacks, and flags the catalog does not exercise.

HAND_WRITTEN: dict[str, dict] = {
    "qwen2_moe": {  # Qwen1.5-MoE layout: 4 shared-expert-gated MoE layers, q/k/v biases
        "model_type": "qwen2_moe", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 4, "intermediate_size": 768, "moe_intermediate_size": 128,
        "shared_expert_intermediate_size": 512, "num_experts": 8, "num_experts_per_tok": 2,
        "decoder_sparse_step": 1, "mlp_only_layers": [], "vocab_size": 512, "tie_word_embeddings": False,
        "use_sliding_window": False, "sliding_window": 32, "max_window_layers": 4},
    "qwen2_moe-sparse-step-and-dense-layer": {  # MoE on odd layers only, layer 3 forced dense
        "model_type": "qwen2_moe", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 768, "moe_intermediate_size": 128,
        "shared_expert_intermediate_size": 512, "num_experts": 8, "num_experts_per_tok": 2,
        "decoder_sparse_step": 2, "mlp_only_layers": [3], "vocab_size": 512},
    "qwen3_moe-mlp-only-layer": {
        "model_type": "qwen3_moe", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
        "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 768, "moe_intermediate_size": 128,
        "num_experts": 8, "num_experts_per_tok": 2, "decoder_sparse_step": 1, "mlp_only_layers": [0],
        "vocab_size": 512, "tie_word_embeddings": False},
    "deepseek_v2-q-lora": {  # DeepSeek-V2 layout: q_a/q_b low-rank query, 1 dense layer, 2 shared experts
        "model_type": "deepseek_v2", "hidden_size": 256, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 4, "q_lora_rank": 128, "kv_lora_rank": 64, "qk_rope_head_dim": 32,
        "qk_nope_head_dim": 64, "v_head_dim": 64, "intermediate_size": 768, "moe_intermediate_size": 128,
        "n_routed_experts": 8, "n_shared_experts": 2, "num_experts_per_tok": 2, "first_k_dense_replace": 1,
        "moe_layer_freq": 1, "n_group": 2, "topk_group": 1, "topk_method": "group_limited_greedy",
        "vocab_size": 512, "tie_word_embeddings": False},
    "deepseek_v2-lite": {  # DeepSeek-V2-Lite layout: q_lora_rank null, a plain q_proj
        "model_type": "deepseek_v2", "hidden_size": 256, "num_hidden_layers": 3, "num_attention_heads": 4,
        "num_key_value_heads": 4, "q_lora_rank": None, "kv_lora_rank": 64, "qk_rope_head_dim": 32,
        "qk_nope_head_dim": 64, "v_head_dim": 64, "intermediate_size": 768, "moe_intermediate_size": 128,
        "n_routed_experts": 8, "n_shared_experts": 2, "num_experts_per_tok": 2, "first_k_dense_replace": 1,
        "moe_layer_freq": 1, "n_group": 1, "topk_group": 1, "topk_method": "greedy", "vocab_size": 512},
    "gpt_bigcode-mqa": {  # StarCoder layout
        "model_type": "gpt_bigcode", "n_embd": 256, "n_layer": 4, "n_head": 4, "n_positions": 256,
        "multi_query": True, "vocab_size": 512, "bos_token_id": 0, "eos_token_id": 0},
    "gpt_bigcode-mha": {
        "model_type": "gpt_bigcode", "n_embd": 256, "n_layer": 4, "n_head": 4, "n_positions": 256,
        "n_inner": 768, "multi_query": False, "vocab_size": 512, "bos_token_id": 0, "eos_token_id": 0},
    "gpt_neox": {  # Pythia layout: partial rotary, parallel residual, untied embed_out
        "model_type": "gpt_neox", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
        "intermediate_size": 1024, "rotary_pct": 0.25, "use_parallel_residual": True,
        "max_position_embeddings": 256, "vocab_size": 512, "tie_word_embeddings": False},
    "gpt_neox-no-attention-bias": {
        "model_type": "gpt_neox", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
        "intermediate_size": 768, "attention_bias": False, "max_position_embeddings": 256, "vocab_size": 512},
    "phi-2-qk-layernorm": {**scale_down(CATALOG["phi-2"]["config"]), "qk_layernorm": True}
    if "phi-2" in CATALOG else {
        "model_type": "phi", "hidden_size": 320, "num_hidden_layers": 4, "num_attention_heads": 4,
        "intermediate_size": 960, "partial_rotary_factor": 0.4, "qk_layernorm": True, "vocab_size": 512},
    "falcon-rw-sequential": {  # falcon-rw-1b layout: MHA, ALiBi, biases, attention then MLP (2 LayerNorms)
        "model_type": "falcon", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
        "multi_query": False, "new_decoder_architecture": False, "parallel_attn": False, "alibi": True,
        "bias": True, "vocab_size": 512},
    "falcon-new-decoder-one-layernorm": {  # new decoder with num_ln_in_parallel_attn = 1
        "model_type": "falcon", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
        "num_kv_heads": 2, "new_decoder_architecture": True, "num_ln_in_parallel_attn": 1,
        "ffn_hidden_size": 768, "vocab_size": 512},
    "mistral-sliding-window": {
        "model_type": "mistral", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
        "num_key_value_heads": 2, "intermediate_size": 768, "sliding_window": WINDOW, "vocab_size": 512},
    "qwen2-use-sliding-window": {  # layers from max_window_layers on slide
        "model_type": "qwen2", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
        "num_key_value_heads": 2, "intermediate_size": 768, "use_sliding_window": True,
        "sliding_window": WINDOW, "max_window_layers": 2, "vocab_size": 512, "tie_word_embeddings": True},
    "llama-biases-tied": {
        "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
        "num_key_value_heads": 2, "intermediate_size": 768, "attention_bias": True, "mlp_bias": True,
        "vocab_size": 512, "tie_word_embeddings": True},
    "gemma3-multimodal-sparse-text-config": {  # Gemma3ForConditionalGeneration: a sparse text_config
        "model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
        "text_config": {"model_type": "gemma3_text", "hidden_size": 256, "intermediate_size": 768,
                        "num_hidden_layers": 7, "sliding_window": WINDOW},
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 64}},
    "gemma3_text-layer-types": {
        "model_type": "gemma3_text", "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 64, "sliding_window": WINDOW,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        "vocab_size": 512},
    "mpt-expansion-ratio-3": {
        "model_type": "mpt", "d_model": 256, "n_heads": 4, "n_layers": 4, "expansion_ratio": 3,
        "max_seq_len": 256, "vocab_size": 512},
    "mpt-no-bias-false": {
        "model_type": "mpt", "d_model": 256, "n_heads": 4, "n_layers": 4, "no_bias": False,
        "max_seq_len": 256, "vocab_size": 512},
}

# Layer-structure cases: use_sliding_window on the Qwen MoE families, and configs that leave out
# sliding_window where the transformers config class has a default window.
_SMALL = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
          "intermediate_size": 768, "vocab_size": 512}
_SMALL_MOE = {"num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 128}
HAND_WRITTEN.update({
    "qwen3-use-sliding-window": {**_SMALL, "model_type": "qwen3", "head_dim": 64, "use_sliding_window": True,
                                 "sliding_window": WINDOW, "max_window_layers": 2},
    "qwen2_moe-use-sliding-window": {**_SMALL, **_SMALL_MOE, "model_type": "qwen2_moe",
                                     "shared_expert_intermediate_size": 256, "use_sliding_window": True,
                                     "sliding_window": WINDOW, "max_window_layers": 2},
    "qwen3_moe-use-sliding-window": {**_SMALL, **_SMALL_MOE, "model_type": "qwen3_moe", "head_dim": 64,
                                     "use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 2},
    "mistral-no-sliding-window-key": {**_SMALL, "model_type": "mistral"},
    "gemma2-no-sliding-window-key": {**_SMALL, "model_type": "gemma2", "head_dim": 64},
    "gpt_oss-no-sliding-window-key": {**_SMALL, "model_type": "gpt_oss", "head_dim": 64, "num_local_experts": 8,
                                      "num_experts_per_tok": 2},
})

# Hybrid families: recurrent layers (Mamba, Gated DeltaNet) beside attention; small sizes, every layer kind kept.
HAND_WRITTEN.update({
    "qwen3_next": {  # 3 Gated DeltaNet layers, then gated full attention; MoE with a gated shared expert
        "model_type": "qwen3_next", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 512, "moe_intermediate_size": 128,
        "shared_expert_intermediate_size": 256, "num_experts": 8, "num_experts_per_tok": 2,
        "linear_key_head_dim": 32, "linear_value_head_dim": 32, "linear_num_key_heads": 2,
        "linear_num_value_heads": 4, "vocab_size": 512},
    "qwen3_next-dense-layer": {  # layer 0 a dense MLP (mlp_only_layers), explicit layer_types
        "model_type": "qwen3_next", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 512, "moe_intermediate_size": 128,
        "shared_expert_intermediate_size": 256, "num_experts": 8, "num_experts_per_tok": 2, "mlp_only_layers": [0],
        "layer_types": ["linear_attention", "full_attention", "linear_attention", "full_attention"],
        "linear_key_head_dim": 32, "linear_value_head_dim": 64, "linear_num_key_heads": 2,
        "linear_num_value_heads": 4, "linear_conv_kernel_dim": 3, "vocab_size": 512},
    "jamba": {  # Mamba on 3 of 4 layers, attention on layer 2, MoE on odd layers
        "model_type": "jamba", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 512, "num_experts": 8, "num_experts_per_tok": 2,
        "expert_layer_period": 2, "expert_layer_offset": 1, "attn_layer_period": 4, "attn_layer_offset": 2,
        "mamba_d_state": 16, "mamba_d_conv": 4, "mamba_expand": 2, "vocab_size": 512},
    "falcon_h1": {  # attention and Mamba2 side by side in every layer
        "model_type": "falcon_h1", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 512, "mamba_d_ssm": 512,
        "mamba_n_heads": 8, "mamba_d_state": 16, "mamba_n_groups": 2, "mamba_rms_norm": True, "vocab_size": 512},
})


# More hybrids (issue 16): Granite 4, Nemotron-H / Nemotron 3, Qwen3.5 dense and MoE.
_GRANITE4 = {"model_type": "granitemoehybrid", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
             "num_key_value_heads": 2, "intermediate_size": 128, "shared_intermediate_size": 384,
             "num_local_experts": 8, "num_experts_per_tok": 2, "mamba_n_heads": 8, "mamba_d_state": 16,
             "mamba_n_groups": 1, "mamba_d_conv": 4, "mamba_expand": 2, "vocab_size": 512,
             "layer_types": ["mamba", "mamba", "attention", "mamba"], "position_embedding_type": "nope",
             "tie_word_embeddings": True}
_NEMOTRON_H = {"model_type": "nemotron_h", "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
               "head_dim": 64, "intermediate_size": 512, "mamba_num_heads": 8, "mamba_head_dim": 32,
               "ssm_state_size": 16, "n_groups": 2, "conv_kernel": 4, "n_routed_experts": 8, "num_experts_per_tok": 2,
               "moe_intermediate_size": 128, "moe_shared_expert_intermediate_size": 192, "vocab_size": 512}
_QWEN3_5 = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 64, "intermediate_size": 512, "linear_key_head_dim": 32, "linear_value_head_dim": 32,
            "linear_num_key_heads": 2, "linear_num_value_heads": 4, "vocab_size": 512}
HAND_WRITTEN.update({
    # Granite 4.0-H: Mamba2 and attention (NoPE), MoE + shared MLP in every layer, legacy layer names, tied
    "granitemoehybrid-moe": _GRANITE4,
    # Granite 4.0-H dense (num_local_experts 0: the shared MLP alone), RoPE, biases, layers_block_type
    "granitemoehybrid-dense-rope": {**{k: v for k, v in _GRANITE4.items() if k != "layer_types"},
                                    "num_local_experts": 0, "position_embedding_type": "rope",
                                    "attention_bias": True, "mamba_proj_bias": True, "mamba_conv_bias": False,
                                    "layers_block_type": ["attention", "mamba", "mamba", "mamba"],
                                    "tie_word_embeddings": False},
    # Nemotron-H (8B/47B): Mamba2 (M), squared-ReLU MLP (-), attention (*) from hybrid_override_pattern
    "nemotron_h-dense-pattern": {**_NEMOTRON_H, "hybrid_override_pattern": "M-M*-", "num_hidden_layers": 5},
    # NVIDIA Nemotron 3 (Nano 30B-A3B layout): MoE blocks (E) with a shared expert; explicit block types
    "nemotron_h-nemotron3-moe": {**_NEMOTRON_H, "layers_block_type": ["linear_attention", "moe", "linear_attention",
                                                                      "full_attention", "moe"]},
    # Nemotron 3 Super layout: latent MoE projection (moe_latent_size), tied, conv bias off
    "nemotron_h-latent-moe": {**_NEMOTRON_H, "hybrid_override_pattern": "ME*E", "num_hidden_layers": 4,
                              "moe_latent_size": 64, "use_conv_bias": False, "mlp_bias": True,
                              "tie_word_embeddings": True},
    # Qwen3.5 (multimodal wrapper, text_config): Gated DeltaNet x 3 then gated attention, dense MLPs
    "qwen3_5-text-config": {"model_type": "qwen3_5", "tie_word_embeddings": True,
                            "text_config": {**_QWEN3_5, "model_type": "qwen3_5_text"},
                            "vision_config": {"model_type": "qwen3_5_vision"}},
    # Qwen3.5 MoE: every layer a sparse MoE block with a gated shared expert; explicit layer_types
    "qwen3_5_moe-text-config": {"model_type": "qwen3_5_moe", "tie_word_embeddings": False,
                                "text_config": {**_QWEN3_5, "model_type": "qwen3_5_moe_text", "num_experts": 8,
                                                "num_experts_per_tok": 2, "moe_intermediate_size": 128,
                                                "shared_expert_intermediate_size": 256, "linear_conv_kernel_dim": 3,
                                                "layer_types": ["linear_attention", "full_attention",
                                                                "linear_attention", "full_attention"]},
                                "vision_config": {"model_type": "qwen3_5_moe_vision", "depth": 2, "hidden_size": 64,
                                                  "intermediate_size": 160, "num_heads": 4, "patch_size": 8,
                                                  "temporal_patch_size": 1, "spatial_merge_size": 2,
                                                  "out_hidden_size": 256, "num_position_embeddings": 64}},
    # MiniMax-Text-01 layout: lightning attention on 3 of 4 layers (layer_types), softmax attention on the 4th
    "minimax-layer-types": {"model_type": "minimax", "hidden_size": 256, "num_hidden_layers": 4,
                            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
                            "intermediate_size": 128, "num_local_experts": 8, "num_experts_per_tok": 2,
                            "block_size": 32, "vocab_size": 512,
                            "layer_types": ["linear_attention", "linear_attention", "linear_attention",
                                            "full_attention"]},
    # the class default (alternating, softmax first), tied embeddings
    "minimax-default-alternating": {"model_type": "minimax", "hidden_size": 256, "num_hidden_layers": 4,
                                    "num_attention_heads": 8, "num_key_value_heads": 8, "intermediate_size": 128,
                                    "num_local_experts": 4, "num_experts_per_tok": 1, "vocab_size": 512,
                                    "tie_word_embeddings": True},
})


# 2025-2026 families (issue 16): small configs of each layout.
_LLAMA4_TEXT = {"model_type": "llama4_text", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
                "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 128, "intermediate_size_mlp": 512,
                "num_local_experts": 8, "num_experts_per_tok": 1, "attention_chunk_size": WINDOW,
                "vocab_size": 512, "tie_word_embeddings": False}
HAND_WRITTEN.update({
    # Scout: every layer MoE + shared expert; layers 0-2 RoPE + chunked attention, layer 3 NoPE + full
    "llama4_text-scout-layout": {**_LLAMA4_TEXT, "interleave_moe_layer_step": 1, "no_rope_layers": []},
    # Maverick: MoE on odd layers, dense MLPs of intermediate_size_mlp between; explicit no_rope_layers
    "llama4_text-maverick-layout": {**_LLAMA4_TEXT, "interleave_moe_layer_step": 2, "no_rope_layers": [1, 0, 1, 1],
                                    "attention_bias": True},
    "llama4_text-no-chunking": {**_LLAMA4_TEXT, "attention_chunk_size": None, "moe_layers": [1, 2]},
    "llama4-multimodal": {"model_type": "llama4", "text_config": {**_LLAMA4_TEXT},
                          "vision_config": {"model_type": "llama4_vision_model", "hidden_size": 64,
                                            "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
                                            "image_size": 56, "patch_size": 14, "vision_output_dim": 96,
                                            "projector_input_dim": 96, "projector_output_dim": 96}},
    "mistral3-multimodal": {"model_type": "mistral3", "spatial_merge_size": 2, "multimodal_projector_bias": False,
                            "vision_feature_layer": -1,
                            "text_config": {"model_type": "mistral", "hidden_size": 256, "num_hidden_layers": 4,
                                            "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 32,
                                            "intermediate_size": 768, "vocab_size": 512, "sliding_window": None},
                            "vision_config": {"model_type": "pixtral", "hidden_size": 64, "intermediate_size": 128,
                                              "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 64,
                                              "patch_size": 16}},
    "mistral3-multimodal-projector-bias-two-feature-layers": {
        "model_type": "mistral3", "spatial_merge_size": 2, "multimodal_projector_bias": True,
        "vision_feature_layer": [-1, -2],
        "text_config": {"model_type": "mistral", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
                        "num_key_value_heads": 2, "intermediate_size": 768, "vocab_size": 512},
        "vision_config": {"model_type": "pixtral", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "image_size": 64, "patch_size": [16, 16]}},
})

_DSV3_SMALL = {"hidden_size": 256, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4,
               "q_lora_rank": 128, "kv_lora_rank": 64, "qk_rope_head_dim": 32, "qk_nope_head_dim": 64,
               "v_head_dim": 64, "intermediate_size": 768, "moe_intermediate_size": 128, "n_routed_experts": 8,
               "n_shared_experts": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 1, "moe_layer_freq": 1,
               "n_group": 1, "topk_group": 1, "vocab_size": 512, "tie_word_embeddings": False}
_GLM4_MOE = {"model_type": "glm4_moe", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
             "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 768, "moe_intermediate_size": 128,
             "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 1,
             "n_group": 1, "topk_group": 1, "partial_rotary_factor": 0.5, "attention_bias": True,
             "use_qk_norm": False, "num_nextn_predict_layers": 1, "vocab_size": 512, "tie_word_embeddings": False}
_IDS = {"pad_token_id": 0, "bos_token_id": 0, "eos_token_id": 0}     # inside the small vocabulary
HAND_WRITTEN.update({
    # Kimi K2 (deepseek_v3, one dense layer, 1 shared expert, n_group 1) and Kimi K2.5's text_config
    "deepseek_v3-kimi-k2-layout": {**_DSV3_SMALL, "model_type": "deepseek_v3"},
    "kimi_k25-text-config": {"model_type": "kimi_k25", "text_config": {**_DSV3_SMALL, "model_type": "kimi_k2"},
                             "vision_config": {"model_type": "kimi_k25_vision"}},
    # GLM-4.5 (q/k/v biases, no q/k norm, head_dim 128 != hidden / heads), GLM-4.5-Air/4.6 flags
    "glm4_moe-glm45-layout": _GLM4_MOE,
    "glm4_moe-qk-norm-two-dense": {**_GLM4_MOE, "use_qk_norm": True, "first_k_dense_replace": 2,
                                   "n_shared_experts": 2, "attention_bias": False, "tie_word_embeddings": True},
    # GLM-4.7-Flash: MLA, MoE from mlp_layer_types (default dense first)
    "glm4_moe_lite-default-mlp-layer-types": {**_DSV3_SMALL, "model_type": "glm4_moe_lite", "num_hidden_layers": 4},
    "glm4_moe_lite-mlp-layer-types": {**_DSV3_SMALL, "model_type": "glm4_moe_lite", "num_hidden_layers": 4,
                                      "mlp_layer_types": ["dense", "sparse", "dense", "sparse"]},
    # ERNIE 4.5 dense (0.3B layout: head_dim 128 from the class default, tied) and with biases
    "ernie4_5-0.3b-layout": {"model_type": "ernie4_5", "hidden_size": 256, "num_hidden_layers": 4,
                             "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 768,
                             "vocab_size": 512, "tie_word_embeddings": True, "use_bias": False},
    "ernie4_5-bias-untied": {"model_type": "ernie4_5", "hidden_size": 256, "num_hidden_layers": 4,
                             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
                             "intermediate_size": 768, "vocab_size": 512, "tie_word_embeddings": False,
                             "use_bias": True},
    # ERNIE 4.5 MoE: 21B-A3B layout (shared experts, MoE from layer 1) and 300B-A47B layout (from layer 2, none shared)
    "ernie4_5_moe-21b-layout": {"model_type": "ernie4_5_moe", "hidden_size": 256, "num_hidden_layers": 4,
                                "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 768,
                                "moe_intermediate_size": 128, "moe_num_experts": 8, "moe_k": 2,
                                "moe_num_shared_experts": 2, "moe_layer_start_index": 1, "moe_layer_end_index": -1,
                                "moe_layer_interval": 1, "use_bias": False, "tie_word_embeddings": True,
                                "vocab_size": 512},
    "ernie4_5_moe-300b-layout-bias": {"model_type": "ernie4_5_moe", "hidden_size": 256, "num_hidden_layers": 5,
                                      "num_attention_heads": 8, "num_key_value_heads": 2, "intermediate_size": 768,
                                      "moe_intermediate_size": 128, "moe_num_experts": 8, "moe_k": 2,
                                      "moe_num_shared_experts": 0, "moe_layer_start_index": 2,
                                      "moe_layer_end_index": 3, "moe_layer_interval": 1, "use_bias": True,
                                      "tie_word_embeddings": False, "vocab_size": 512},
    # SmolLM3: NoPE every 4th layer, tied; with use_sliding_window the NoPE layers slide
    "smollm3": {**_IDS, "model_type": "smollm3", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
                "num_key_value_heads": 2, "intermediate_size": 768, "vocab_size": 512},
    "smollm3-use-sliding-window": {**_IDS, "model_type": "smollm3", "hidden_size": 256, "num_hidden_layers": 4,
                                   "num_attention_heads": 8, "num_key_value_heads": 2, "intermediate_size": 768,
                                   "vocab_size": 512, "use_sliding_window": True, "sliding_window": WINDOW,
                                   "no_rope_layers": [1, 0, 1, 0], "tie_word_embeddings": False},
    # OLMo 2 (q/k norms over all heads, post-norms) and OLMo 3 (3 sliding : 1 full, default window)
    "olmo2": {**_IDS, "model_type": "olmo2", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 4, "intermediate_size": 768, "vocab_size": 512},
    "olmo2-gqa-bias": {**_IDS, "model_type": "olmo2", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 8,
                       "num_key_value_heads": 2, "intermediate_size": 768, "vocab_size": 512,
                       "attention_bias": True, "tie_word_embeddings": True},
    "olmo3": {**_IDS, "model_type": "olmo3", "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 4, "intermediate_size": 768, "vocab_size": 512, "sliding_window": WINDOW},
    "olmo3-no-sliding-window-key": {**_IDS, "model_type": "olmo3", "hidden_size": 256, "num_hidden_layers": 4,
                                    "num_attention_heads": 8, "num_key_value_heads": 2, "intermediate_size": 768,
                                    "vocab_size": 512},
    # DeepSeek V3.2: MLA + the DSA indexer in every layer (first_k_dense_replace dense layers by default)
    "deepseek_v32-dsa": {**_DSV3_SMALL, "model_type": "deepseek_v32", "num_hidden_layers": 4,
                         "first_k_dense_replace": 1, "index_n_heads": 4, "index_head_dim": 128, "index_topk": 16},
    "deepseek_v32-mlp-layer-types": {**_DSV3_SMALL, "model_type": "deepseek_v32", "num_hidden_layers": 4,
                                     "mlp_layer_types": ["dense", "sparse", "dense", "sparse"], "index_n_heads": 2,
                                     "index_head_dim": 64, "index_topk": 16},
    # GLM-5: the same layer; index_topk_freq / index_skip_topk_offset make some layers reuse the top-k
    "glm_moe_dsa-glm5-layout": {**_DSV3_SMALL, "model_type": "glm_moe_dsa", "num_hidden_layers": 4,
                                "qk_nope_head_dim": 96, "v_head_dim": 128, "index_n_heads": 4,
                                "index_head_dim": 128, "index_topk": 16},
    "glm_moe_dsa-shared-indexers": {**_DSV3_SMALL, "model_type": "glm_moe_dsa", "num_hidden_layers": 6,
                                    "index_n_heads": 2, "index_head_dim": 64, "index_topk": 16,
                                    "index_topk_freq": 2, "index_skip_topk_offset": 1},
    # MiMo-V2-Flash: sliding layers with twice the KV heads (and sinks), K/V head sizes 192/128, layer 0 dense
    "mimo_v2_flash-layout": {**_IDS, "model_type": "mimo_v2_flash", "hidden_size": 256, "num_hidden_layers": 7,
                             "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 96, "v_head_dim": 64,
                             "intermediate_size": 768, "moe_intermediate_size": 128, "n_routed_experts": 8,
                             "num_experts_per_tok": 2, "sliding_window": WINDOW, "vocab_size": 512},
    "mimo_v2_flash-layer-types-bias": {**_IDS, "model_type": "mimo_v2_flash", "hidden_size": 256,
                                       "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 1,
                                       "head_dim": 64, "v_head_dim": 32, "intermediate_size": 768,
                                       "moe_intermediate_size": 128, "n_routed_experts": 4, "num_experts_per_tok": 2,
                                       "sliding_window_size": WINDOW - 1, "attention_bias": True,
                                       "layer_types": ["sliding_attention", "full_attention", "sliding_attention",
                                                       "sliding_attention"],
                                       "mlp_layer_types": ["dense", "sparse", "dense", "sparse"], "vocab_size": 512,
                                       "tie_word_embeddings": True},
    # Gemma 3n: per-layer inputs, AltUp, LAuReL, the last num_kv_shared_layers layers without KV of their own
    "gemma3n_text-e2b-layout": {**_IDS, "model_type": "gemma3n_text", "hidden_size": 256, "num_hidden_layers": 10,
                                "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
                                "intermediate_size": 512, "vocab_size": 512, "vocab_size_per_layer_input": 256,
                                "hidden_size_per_layer_input": 32, "num_kv_shared_layers": 3,
                                "sliding_window": WINDOW, "laurel_rank": 16},
    "gemma3n-wrapper-per-layer-widths": {
        "model_type": "gemma3n", "vision_config": {"model_type": "gemma3n_vision"},
        "audio_config": {"model_type": "gemma3n_audio"},
        "text_config": {**_IDS, "hidden_size": 128, "num_hidden_layers": 5, "num_attention_heads": 2,
                        "num_key_value_heads": 1, "head_dim": 64, "intermediate_size": [256, 256, 384, 384, 256],
                        "vocab_size": 512, "vocab_size_per_layer_input": 128, "hidden_size_per_layer_input": 16,
                        "num_kv_shared_layers": 0, "altup_num_inputs": 2, "laurel_rank": 8,
                        "sliding_window": WINDOW, "attention_bias": True, "tie_word_embeddings": True}},
    # Gemma 4: full layers with their own head size; per-layer inputs and KV sharing (small models);
    # attention_k_eq_v with global KV heads and the MoE block beside the MLP (large models)
    "gemma4_text-kv-shared-per-layer-inputs": {**_IDS, "model_type": "gemma4_text", "hidden_size": 256,
                                               "num_hidden_layers": 10, "num_attention_heads": 4,
                                               "num_key_value_heads": 2, "head_dim": 32, "global_head_dim": 64,
                                               "intermediate_size": 512, "vocab_size": 512,
                                               "vocab_size_per_layer_input": 512, "hidden_size_per_layer_input": 16,
                                               "num_kv_shared_layers": 3, "use_double_wide_mlp": True,
                                               "sliding_window": WINDOW},
    "gemma4_text-k-eq-v-moe": {**_IDS, "model_type": "gemma4_text", "hidden_size": 256, "num_hidden_layers": 6,
                               "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32,
                               "global_head_dim": 64, "attention_k_eq_v": True, "num_global_key_value_heads": 1,
                               "intermediate_size": 512, "vocab_size": 512, "hidden_size_per_layer_input": 0,
                               "enable_moe_block": True, "num_experts": 4, "top_k_experts": 2,
                               "moe_intermediate_size": 64, "sliding_window": WINDOW, "tie_word_embeddings": False},
    "gemma4-wrapper": {"model_type": "gemma4", "vision_config": {"model_type": "gemma4_vision"},
                       "text_config": {**_IDS, "hidden_size": 128, "num_hidden_layers": 6, "num_attention_heads": 2,
                                       "num_key_value_heads": 1, "head_dim": 64, "global_head_dim": 128,
                                       "intermediate_size": 256, "vocab_size": 512,
                                       "vocab_size_per_layer_input": 512, "hidden_size_per_layer_input": 8,
                                       "sliding_window": WINDOW}},
    # Phi-4-mini: phi3 with partial RoPE (0.75), tied embeddings
    "phi3-partial-rotary-tied": {**_IDS, "model_type": "phi3", "hidden_size": 256, "num_hidden_layers": 4,
                                 "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 768,
                                 "partial_rotary_factor": 0.75, "tie_word_embeddings": True, "vocab_size": 512,
                                 "sliding_window": None},
})

# Multimodal configs whose vision tower sizer counts (sizer.families.vision): the named parts equal
# the parameters under those module names of the transformers ...ForConditionalGeneration.
VISION_CASES = sorted(k for k, v in HAND_WRITTEN.items() if isinstance(v.get("vision_config"), dict)
                      and v["vision_config"].get("model_type") in ("llama4_vision_model", "pixtral", "qwen3_5_vision",
                                                                   "qwen3_5_moe_vision"))

# sizer and transformers disagree here; the lead decides which is right (see the reasons).
LAYER_TYPE_DISAGREEMENTS: dict[str, str] = {}

PARAM_DISAGREEMENTS = {
    "mpt-expansion-ratio-3": "transformers' MptMLP hard-codes 4 x d_model and ignores expansion_ratio; "
                             "sizer.families.mpt uses expansion_ratio x d_model, as MosaicML's own code does",
    "mpt-no-bias-false": "transformers' MptAttention/MptMLP build bias-free Linear layers whatever no_bias says; "
                         "sizer.families.mpt adds biases when no_bias is false, as MosaicML's own code does",
}

# Every family sizer supports has a catalog entry or a hand-written config.
CATALOG_FAMILIES = {entry["config"]["model_type"] for entry in CATALOG.values()}
FAMILY_NAMES = sorted(f for f in FAMILIES if f[0].islower())
HAND_FAMILIES = {c["model_type"] for c in HAND_WRITTEN.values()} | {
    TEXT_MODEL_TYPE.get(c["model_type"], c["model_type"]) for c in HAND_WRITTEN.values()}


def test_every_family_is_covered():
    covered = CATALOG_FAMILIES | HAND_FAMILIES
    assert set(FAMILY_NAMES) <= covered, sorted(set(FAMILY_NAMES) - covered)


# ---------------------------------------------------------------------------------------------
# Building the transformers model


def hf_config(config: dict):
    """The transformers config of the language model (a multimodal config's text part)."""
    cfg = {k: v for k, v in config.items() if k not in ("quantization_config", "auto_map")}
    if isinstance(cfg.get("text_config"), dict):
        text = dict(cfg["text_config"])
        text.setdefault("model_type", TEXT_MODEL_TYPE[cfg["model_type"]])
        if "tie_word_embeddings" in cfg:
            text.setdefault("tie_word_embeddings", cfg["tie_word_embeddings"])
        cfg = text
    if cfg.get("model_type") == "kimi_k2":              # Kimi K2's own config says kimi_k2: DeepSeek V3 layers
        cfg = {**cfg, "model_type": "deepseek_v3"}
    return transformers.AutoConfig.for_model(**cfg)


def meta_model(config: dict):
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(hf_config(config))


def count_by_component(model) -> tuple[int, dict[str, int]]:
    """Parameters of the module (shared tensors once) and their split by sizer's name rules."""
    by_component: dict[str, int] = {}
    for name, p in model.named_parameters():                 # deduplicates tied tensors
        by_component[component_of(name)] = by_component.get(component_of(name), 0) + p.numel()
    total = sum(p.numel() for p in model.parameters())
    assert total == sum(by_component.values())
    return total, by_component


def hf_layer_types(config) -> tuple[tuple[str, ...], int | None]:
    """Per-layer attention kind and window as transformers' DynamicCache lays them out."""
    from transformers.cache_utils import get_layer_types_and_kwargs

    types, kwargs = get_layer_types_and_kwargs(config)
    # a chunked-attention layer's cache is a DynamicSlidingWindowLayer of attention_chunk_size tokens
    # (cache_utils DYNAMIC_LAYER_TYPE_MAPPING); sizer models it as a sliding layer of that window
    types = ["sliding_attention" if t == "chunked_attention" else t for t in types]
    # DSA's DynamicIndexedLayer is a DynamicLayer (full attention) with the indexer's keys beside it
    types = ["full_attention" if t == "indexed_attention" else t for t in types]
    if isinstance(kwargs, dict):                    # transformers 5.17-5.18: one dict for every layer
        kwargs = [kwargs]
    windows = {kw["sliding_window"] for kw in kwargs if "sliding_window" in kw}
    assert len(windows) <= 1
    return tuple(types), (windows.pop() if windows else None)


SCALED = {f"{name}-scaled": scale_down(entry["config"]) for name, entry in CATALOG.items()}
SMALL_CASES = {**SCALED, **HAND_WRITTEN}


@pytest.mark.parametrize("case", [
    pytest.param(case, marks=pytest.mark.xfail(strict=True, reason=PARAM_DISAGREEMENTS[case]))
    if case in PARAM_DISAGREEMENTS else case for case in sorted(SMALL_CASES)])
def test_small_config_params_and_components(case):
    config = SMALL_CASES[case]
    spec = spec_from_config(copy.deepcopy(config), case, case)
    total, by_component = count_by_component(meta_model(config))
    assert spec.params == total
    assert spec.params_by_component() == by_component


@pytest.mark.parametrize("case", [
    pytest.param(case, marks=pytest.mark.xfail(strict=True, reason=LAYER_TYPE_DISAGREEMENTS[case]))
    if case in LAYER_TYPE_DISAGREEMENTS else case for case in sorted(SMALL_CASES)])
def test_small_config_layer_types(case):
    config = SMALL_CASES[case]
    spec = spec_from_config(copy.deepcopy(config), case, case)
    types, window = hf_layer_types(hf_config(config))
    assert tuple(TRANSFORMERS_CACHE_LAYER_TYPE.get(k, k) for k in spec.layer_types) == types
    assert spec.sliding_window == window


@pytest.mark.parametrize("case", VISION_CASES)
def test_vision_tower_counts(case):
    from sizer.config import ConfigView
    from sizer.families.vision import vision_parts

    config = HAND_WRITTEN[case]
    kind, parts = vision_parts(ConfigView(copy.deepcopy(config), case))
    assert kind == config["vision_config"]["model_type"]
    cfg = {k: v for k, v in config.items() if k not in ("quantization_config", "auto_map")}
    with torch.device("meta"):
        model = transformers.AutoModelForImageTextToText.from_config(transformers.AutoConfig.for_model(**cfg))
    measured = {part: 0 for part in parts}
    for name, p in model.named_parameters():
        for part in parts:
            if f"{part}." in f".{name}" and f".{part}." in f".{name}":
                measured[part] += p.numel()
    assert parts == measured
    spec = spec_from_config(copy.deepcopy(config), case, case)
    assert f"{sum(parts.values()):,} parameters more" in " ".join(spec.notes)


def test_scaled_configs_keep_the_structure():
    """The scaled-down configs keep what the families enumerate differently."""
    checks = 0
    for name, entry in CATALOG.items():
        big = spec_from_config(copy.deepcopy(entry["config"]), name, name)
        small = spec_from_config(copy.deepcopy(SCALED[f"{name}-scaled"]), name, name)
        assert small.family == big.family
        assert small.attention_kind == big.attention_kind
        assert small.n_heads // small.n_kv_heads == big.n_heads // big.n_kv_heads or big.n_kv_heads == 1
        assert small.tied_embeddings == big.tied_embeddings
        assert (small.head_dim * small.n_heads == small.hidden_size) == (big.head_dim * big.n_heads == big.hidden_size)
        assert set(small.layer_types) == set(big.layer_types)
        assert small.is_moe == big.is_moe and small.is_mla == big.is_mla
        assert (small.d_ff > 0) == (big.d_ff > 0)
        assert {t.name for t in small.tensors} == {t.name for t in big.tensors}
        assert small.hidden_size <= 1024 and small.n_layers <= 7 and small.vocab_size <= 1024
        checks += 1
    assert checks == len(CATALOG)


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_full_size_catalog_params(name):
    """The full-size catalog config: sizer, the meta-device module and the recorded count agree."""
    entry = CATALOG[name]
    spec = spec_from_config(copy.deepcopy(entry["config"]), name, name)
    total, by_component = count_by_component(meta_model(entry["config"]))
    assert spec.params == total == entry["params"]
    assert spec.params_by_component() == by_component


# ---------------------------------------------------------------------------------------------
# KV cache: a real bf16 forward on CPU

BATCH, SEQ = 2, 48            # SEQ > WINDOW: sliding layers are full
assert SEQ > WINDOW
BF16 = 2


def _catalog_scaled(name: str) -> dict | None:
    return SCALED.get(f"{name}-scaled")


def _first_of_family(family: str) -> dict | None:
    names = sorted(n for n, e in CATALOG.items() if e["config"]["model_type"] == family)
    return SCALED[f"{names[0]}-scaled"] if names else None


KV_CASES = {
    "llama-gqa": _catalog_scaled("llama-3-8b") or HAND_WRITTEN["llama-biases-tied"],
    "llama-tied-biases": HAND_WRITTEN["llama-biases-tied"],
    "mistral-window": _catalog_scaled("mistral-7b-v0.1") or HAND_WRITTEN["mistral-sliding-window"],
    "qwen2-use-sliding-window": HAND_WRITTEN["qwen2-use-sliding-window"],
    "qwen3": _first_of_family("qwen3"),
    "gemma2-mixed": _first_of_family("gemma2"),
    "gemma3-mixed": _catalog_scaled("gemma-3-1b-it") or HAND_WRITTEN["gemma3_text-layer-types"],
    "gpt_oss-mixed": _first_of_family("gpt_oss"),
    "phi3-window": _first_of_family("phi3"),
    "falcon-old-mqa": _catalog_scaled("falcon-7b"),
    "falcon-old-mha-sequential": HAND_WRITTEN["falcon-rw-sequential"],
    "falcon-new-gqa": _catalog_scaled("falcon-40b"),
    "bloom": _first_of_family("bloom"),
    "gpt_neox": HAND_WRITTEN["gpt_neox"],
    "deepseek_v3-mla": _first_of_family("deepseek_v3"),
    "deepseek_v2-lite-mla": HAND_WRITTEN["deepseek_v2-lite"],
    "gpt_bigcode-mqa": HAND_WRITTEN["gpt_bigcode-mqa"],
    "mpt": _first_of_family("mpt"),
    "phi-2": _catalog_scaled("phi-2"),
    "mixtral": _first_of_family("mixtral"),
    "qwen2_moe": HAND_WRITTEN["qwen2_moe"],
    "qwen3_moe": _first_of_family("qwen3_moe"),
    "phimoe-window": _first_of_family("phimoe"),
    "llama4-chunked-and-nope": HAND_WRITTEN["llama4_text-scout-layout"],
    "llama4-moe-interleaved-no-chunking": HAND_WRITTEN["llama4_text-no-chunking"],
    "kimi_k25-mla": HAND_WRITTEN["kimi_k25-text-config"],
    "glm4_moe": HAND_WRITTEN["glm4_moe-glm45-layout"],
    "glm4_moe_lite-mla": HAND_WRITTEN["glm4_moe_lite-mlp-layer-types"],
    "ernie4_5": HAND_WRITTEN["ernie4_5-0.3b-layout"],
    "ernie4_5_moe": HAND_WRITTEN["ernie4_5_moe-21b-layout"],
    "smollm3-nope": HAND_WRITTEN["smollm3"],
    "smollm3-window": HAND_WRITTEN["smollm3-use-sliding-window"],
    "olmo2": HAND_WRITTEN["olmo2-gqa-bias"],
    "olmo3-mixed": HAND_WRITTEN["olmo3"],
    "phi3-partial-rotary": HAND_WRITTEN["phi3-partial-rotary-tied"],
    "deepseek_v32-dsa": HAND_WRITTEN["deepseek_v32-dsa"],
    "glm_moe_dsa-mla-dsa": HAND_WRITTEN["glm_moe_dsa-glm5-layout"],
    "glm_moe_dsa-shared-indexers": HAND_WRITTEN["glm_moe_dsa-shared-indexers"],
    "mimo_v2_flash-kv-per-layer-kind": HAND_WRITTEN["mimo_v2_flash-layout"],
    "mimo_v2_flash-layer-types": HAND_WRITTEN["mimo_v2_flash-layer-types-bias"],
    "gemma3n-kv-shared": HAND_WRITTEN["gemma3n_text-e2b-layout"],
    "gemma3n-wrapper": HAND_WRITTEN["gemma3n-wrapper-per-layer-widths"],
    "gemma4-kv-shared": HAND_WRITTEN["gemma4_text-kv-shared-per-layer-inputs"],
    "gemma4-k-eq-v-moe": HAND_WRITTEN["gemma4_text-k-eq-v-moe"],
}
KV_CASES = {k: v for k, v in KV_CASES.items() if v is not None}


def cache_tensors(cache) -> list:
    """Every tensor the cache holds (transformers 5: cache.layers[i].keys / .values).

    Bytes are counted as numel x element_size. After a prefill longer than the window, a sliding
    layer's keys/values are views of the whole prefill's K/V, so their storage still holds SEQ tokens
    until the next update replaces them; the logical size is what the cache keeps from then on."""
    out = []
    for layer in cache.layers:
        for attr in ("keys", "values", "indexer_keys"):     # indexer_keys: DSA's DynamicIndexedLayer
            t = getattr(layer, attr, None)
            if isinstance(t, torch.Tensor):
                out.append(t)
    return out


def expected_kv_bytes(config, seq: int, batch: int) -> tuple[int, int]:
    """(engine layout, transformers DynamicCache layout) in bf16 bytes, from the transformers config.

    Engines (vLLM, SGLang, llama.cpp): per token and layer, K and V for each KV head, i.e.
    2 x n_kv_heads x head_dim values; MLA: one latent of kv_lora_rank + qk_rope_head_dim values; a
    sliding-window layer holds min(seq, window) tokens.
    transformers differs in two known ways:
      * up to transformers 5.24, Falcon's new decoder broadcast K/V to every query head before
        caching: 2 x n_heads x head_dim values per token and layer (modeling_falcon _split_heads);
        5.25 caches num_kv_heads heads and repeats them at attention time.
      * DynamicSlidingWindowLayer keeps the last sliding_window - 1 tokens after an update:
        min(seq, window - 1) tokens per sliding layer.
    DeepSeek V2/V3 in transformers 5 cache the latent as engines do (keys: the normalized
    kv_lora_rank latent, values: the roped qk_rope_head_dim key, one "head" each); older
    transformers cached the decompressed per-head K and V, n_heads x (qk_nope + qk_rope + v_head_dim).
    """
    types, window = hf_layer_types(config)
    family = config.model_type
    if family in ("deepseek_v2", "deepseek_v3", "glm4_moe_lite", "deepseek_v32", "glm_moe_dsa"):
        engine = hf = config.kv_lora_rank + config.qk_rope_head_dim
    elif family == "gemma4_text":          # per-layer head_dim / KV heads (per_layer_config), K and V cached apart
        engine = hf = 0
    else:
        n_heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        if family == "falcon":
            if config.new_decoder_architecture:
                n_kv = config.num_kv_heads
                n_kv_hf = n_heads if INSTALLED_RELEASE < (5, 25) else n_kv
            else:
                n_kv = n_kv_hf = 1 if config.multi_query else n_heads
        elif family == "gpt_bigcode":
            n_kv = n_kv_hf = 1 if config.multi_query else n_heads
        else:
            n_kv = n_kv_hf = getattr(config, "num_key_value_heads", None) or n_heads
        engine, hf = 2 * n_kv * head_dim, 2 * n_kv_hf * head_dim

    def tokens(layer_type: str, cap: int) -> int:
        return min(seq, cap) if layer_type == "sliding_attention" else seq

    def values(layer_type: str, per_layer: int) -> int:
        """MiMo-V2-Flash: keys of head_dim and values of v_head_dim, twice the KV heads in sliding layers;
        Gemma 4: each layer type's own head_dim and KV heads (the first layer of the type)."""
        if family == "gemma4_text":
            layer = config.per_layer_config[list(config.layer_types).index(layer_type)]
            return 2 * layer.num_key_value_heads * layer.head_dim
        if family != "mimo_v2_flash":
            return per_layer
        heads = config.num_key_value_heads * (2 if layer_type == "sliding_attention" else 1)
        return heads * (config.head_dim + config.v_head_dim)

    types = [t for t in types if t != "dummy"]          # KV-shared layers (Gemma 3n / 4): no cache of their own
    engine_bytes = sum(batch * tokens(t, window or 0) * values(t, engine) * BF16 for t in types)
    hf_bytes = sum(batch * tokens(t, (window or 0) - 1) * values(t, hf) * BF16 for t in types)
    # DSA: each layer with an indexer of its own also caches one index_head_dim key per token
    indexers = sum(1 for kind in getattr(config, "indexer_types", None) or ["full"] * len(types) if kind == "full") \
        if family in ("deepseek_v32", "glm_moe_dsa") else 0
    engine_bytes += batch * seq * indexers * (config.index_head_dim if indexers else 0) * BF16
    hf_bytes += batch * seq * indexers * (config.index_head_dim if indexers else 0) * BF16
    return engine_bytes, hf_bytes


# Cases where transformers' cache legitimately differs from sizer's (engine) number, and why.
KNOWN_DIFFERENCES = {
    "mistral-window": "sliding window - 1",
    "qwen2-use-sliding-window": "sliding window - 1",
    "gemma2-mixed": "sliding window - 1",
    "gemma3-mixed": "sliding window - 1",
    "gpt_oss-mixed": "sliding window - 1",
    "phi3-window": "sliding window - 1",
    "phimoe-window": "sliding window - 1",
    "llama4-chunked-and-nope": "sliding window - 1 (chunked layers: a window of attention_chunk_size)",
    "smollm3-window": "sliding window - 1",
    "olmo3-mixed": "sliding window - 1",
    "mimo_v2_flash-kv-per-layer-kind": "sliding window - 1",
    "mimo_v2_flash-layer-types": "sliding window - 1",
    "gemma3n-kv-shared": "sliding window - 1",
    "gemma3n-wrapper": "sliding window - 1",
    "gemma4-kv-shared": "sliding window - 1",
    "gemma4-k-eq-v-moe": "sliding window - 1",
}


@pytest.mark.parametrize("case", sorted(KV_CASES))
def test_kv_cache_against_a_forward(case):
    config = KV_CASES[case]
    spec = spec_from_config(copy.deepcopy(config), case, case)
    hf = hf_config(config)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf, dtype=torch.bfloat16)
    model.eval()
    input_ids = torch.randint(0, hf.vocab_size, (BATCH, SEQ))
    with torch.no_grad():
        out = model(input_ids, use_cache=True)
    cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    tensors = cache_tensors(cache)
    indexers = sum(1 for i in range(spec.n_layers) if spec.has_indexer(i))
    assert len(tensors) == 2 * spec.n_kv_layers + indexers and all(t.dtype == torch.bfloat16 for t in tensors)
    measured = sum(t.numel() * t.element_size() for t in tensors)

    engine, transformers_layout = expected_kv_bytes(hf, SEQ, BATCH)
    sizer = kv_cache_bytes(spec, "bf16", SEQ, BATCH)
    assert measured == transformers_layout
    assert sizer == engine
    assert kv_cache_bytes_per_token(spec, "bf16") == expected_kv_bytes(hf, 1, 1)[0]
    # sizer's model of transformers' cache, for the installed release
    assert transformers_kv_cache_bytes(spec_for_transformers(spec, transformers.__version__), "bf16", SEQ, BATCH) == measured
    # the two numbers differ exactly where a known reason says they should
    known = case in KNOWN_DIFFERENCES or (case == "falcon-new-gqa" and INSTALLED_RELEASE < (5, 25))
    assert (measured != sizer) == known, (measured, sizer)


def test_eager_only_families_are_those_without_an_sdpa_path():
    """sizer predicts eager attention for exactly the families whose transformers model class has no
    SDPA path (`_supports_sdpa = False`): transformers then runs eager whatever was asked."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from sizer.calc.activations import EAGER_ONLY_FAMILIES

    without_sdpa = set()
    for family in FAMILIES:
        class_name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(family)
        if class_name and not getattr(transformers, class_name)._supports_sdpa:
            without_sdpa.add(family)
    assert without_sdpa == EAGER_ONLY_FAMILIES


# ---------------------------------------------------------------------------------------------
# Recurrent state: what transformers' cache holds after a forward of the hybrid families

STATE_CASES = ("qwen3_next", "qwen3_next-dense-layer", "jamba", "falcon_h1", "granitemoehybrid-moe",
               "granitemoehybrid-dense-rope", "nemotron_h-dense-pattern", "nemotron_h-nemotron3-moe",
               "nemotron_h-latent-moe", "qwen3_5-text-config", "qwen3_5_moe-text-config", "minimax-layer-types",
               "minimax-default-alternating")


def expected_state(config) -> tuple[int, int, int]:
    """(layers with a state, conv values an engine keeps, recurrent values) per sequence and layer,
    from the transformers config: conv channels x (kernel - 1) (vLLM's MambaStateShapeCalculator,
    llama.cpp's n_embd_r) and the SSM / delta-rule state shape of each mixer."""
    types, _ = hf_layer_types(config)
    n = sum(1 for t in types if t in ("linear_attention", "hybrid"))
    if config.model_type in ("qwen3_next", "qwen3_5_text", "qwen3_5_moe_text"):
        key, value = config.linear_num_key_heads * config.linear_key_head_dim, \
            config.linear_num_value_heads * config.linear_value_head_dim
        channels, kernel = 2 * key + value, config.linear_conv_kernel_dim
        state = config.linear_num_value_heads * config.linear_key_head_dim * config.linear_value_head_dim
    elif config.model_type == "jamba":
        d_inner = config.mamba_expand * config.hidden_size
        channels, kernel, state = d_inner, config.mamba_d_conv, d_inner * config.mamba_d_state
    elif config.model_type == "granitemoehybrid":
        d_inner = config.mamba_expand * config.hidden_size
        channels = d_inner + 2 * config.mamba_n_groups * config.mamba_d_state
        kernel, state = config.mamba_d_conv, config.mamba_n_heads * config.mamba_d_head * config.mamba_d_state
    elif config.model_type == "nemotron_h":
        d_inner = config.mamba_num_heads * config.mamba_head_dim
        channels = d_inner + 2 * config.n_groups * config.ssm_state_size
        kernel, state = config.conv_kernel, d_inner * config.ssm_state_size
    elif config.model_type == "minimax":     # lightning attention: no conv, [heads, head_dim, head_dim]
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        channels, kernel, state = 0, 1, config.num_attention_heads * head_dim * head_dim
    else:   # falcon_h1
        channels = config.mamba_d_ssm + 2 * config.mamba_n_groups * config.mamba_d_state
        kernel, state = config.mamba_d_conv, config.mamba_d_ssm * config.mamba_d_state
    return n, channels * (kernel - 1), state


@pytest.mark.parametrize("case", STATE_CASES)
def test_state_against_a_forward(case):
    """KV and state bytes of a hybrid model's cache after one bf16 forward on CPU: keys/values only in
    the attention layers; conv_states (batch, channels, kernel) in bf16 and recurrent_states in fp32 (MiniMax's
    lightning states in bf16, in MiniMaxCache.linear_cache)
    in the recurrent layers, the same whatever the prompt length."""
    config = HAND_WRITTEN[case]
    spec = spec_from_config(copy.deepcopy(config), case, case)
    hf = hf_config(config)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf, dtype=torch.bfloat16).eval()
    measured = {}
    for seq in (SEQ, SEQ // 2):
        with torch.no_grad():
            out = model(torch.randint(0, hf.vocab_size, (BATCH, seq)), use_cache=True)
        cache = out.past_key_values
        kv = sum(t.numel() * t.element_size() for t in cache_tensors(cache))
        state = 0
        for layer in cache.layers:
            for attr in ("conv_states", "recurrent_states"):
                for t in (getattr(layer, attr, None) or {}).values():
                    if isinstance(t, torch.Tensor):
                        state += t.numel() * t.element_size()
        for t in getattr(cache, "linear_cache", []):        # MiniMaxCache keeps the lightning states apart
            if isinstance(t, torch.Tensor):
                state += t.numel() * t.element_size()
        assert kv == transformers_kv_cache_bytes(spec, "bf16", seq, BATCH)
        assert kv == kv_cache_bytes(spec, "bf16", seq, BATCH)           # no windows: both layouts agree
        measured[seq] = state
    assert measured[SEQ] == measured[SEQ // 2] == transformers_state_bytes(spec, BF16, BATCH) > 0
    n, conv, recurrent = expected_state(hf)
    assert state_bytes_per_sequence(spec, BF16) == n * (conv + recurrent) * BF16
    assert spec.n_kv_layers == sum(1 for t in hf_layer_types(hf)[0] if t in ("full_attention", "hybrid"))


# ---------------------------------------------------------------------------------------------
# Recurrent layers' working set: one mixer's prefill on CPU, read with sizer's allocation meter

MIXER_CASES = {   # case -> the decoder layer's attribute holding its recurrent mixer
    "qwen3_next": "linear_attn", "qwen3_next-dense-layer": "linear_attn", "qwen3_5-text-config": "linear_attn",
    "qwen3_5_moe-text-config": "linear_attn", "jamba": "mamba", "granitemoehybrid-moe": "mamba",
    "nemotron_h-latent-moe": "mixer", "falcon_h1": "mamba", "minimax-layer-types": "self_attn"}


@pytest.mark.parametrize("case", sorted(MIXER_CASES))
@pytest.mark.parametrize("batch, seq", [(1, 64), (2, 100)])
def test_recurrent_working_set_against_the_meter(case, batch, seq):
    """The peak bytes one recurrent mixer allocates over a bf16 prefill through transformers' torch path
    (its input allocated before; its output, the cache's state and every temporary counted) equal
    `recurrent_bytes` plus the block output it counts against the residual part, to the byte."""
    from torch.profiler import ProfilerActivity, profile

    from sizer.calc.activations import recurrent_bytes
    from sizer.measure.meter import profiler_peak

    config = HAND_WRITTEN[case]
    spec = spec_from_config(copy.deepcopy(config), case, case)
    hf = hf_config(config)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(hf, dtype=torch.bfloat16).eval()
    layer = next(x for x in model.model.layers if getattr(x, MIXER_CASES[case], None) is not None
                 and getattr(x, "block_type", "linear_attention") == "linear_attention")
    mixer = getattr(layer, MIXER_CASES[case])
    x = torch.randn(batch, seq, hf.hidden_size, dtype=torch.bfloat16)
    if hf.model_type == "minimax":          # MiniMaxLightningAttention(hidden, position_embeddings, mask, cache)
        from transformers.models.minimax.modeling_minimax import MiniMaxCache

        def run(cache):
            mixer(x, None, None, cache=cache)
        new_cache = MiniMaxCache
    else:
        def run(cache):
            mixer(x, cache=cache)

        def new_cache():
            return transformers.DynamicCache(config=hf)
    with torch.no_grad():
        run(new_cache())                                                 # lazy initializations out of the way
        cache = new_cache()
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            run(cache)
    measured = profiler_peak(prof)
    assert measured == recurrent_bytes(spec, batch, seq, BF16) + batch * seq * spec.hidden_size * BF16
