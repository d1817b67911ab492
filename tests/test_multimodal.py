"""vLLM's vision encoder (sizer.plan.multimodal): the Qwen-VL towers' parameters against transformers
on the meta device, their TP shares against vLLM's parallel layers, and the profiled encoder budget
against the published startup logs."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from sizer.families import spec_from_config
from sizer.families.vision import VisionTower, llava_next_modules, qwen_vision_modules, vision_parts, vision_tower
from sizer.plan.multimodal import (dummy_pixel_bytes, encoder_forward_bytes, encoder_profile, encoder_profile_bytes,
                                   encoder_weight_bytes)

LOGS = Path(__file__).parent / "data" / "engine_logs"
_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 256,
         "rope_scaling": {"rope_type": "default", "mrope_section": [2, 3, 3]}}
SMALL = {
    "qwen2_5_vl": {"model_type": "qwen2_5_vl", "tie_word_embeddings": False,
                   "text_config": {**_TEXT, "model_type": "qwen2_5_vl_text"},
                   "vision_config": {"model_type": "qwen2_5_vl", "depth": 3, "hidden_size": 48, "intermediate_size": 88,
                                     "num_heads": 4, "out_hidden_size": 64, "patch_size": 14, "spatial_merge_size": 2,
                                     "temporal_patch_size": 2, "in_channels": 3, "window_size": 112,
                                     "fullatt_block_indexes": [1]}},
    "qwen3_vl_moe": {"model_type": "qwen3_vl_moe", "tie_word_embeddings": False,
                     "text_config": {**_TEXT, "model_type": "qwen3_vl_moe_text", "head_dim": 16, "num_experts": 4,
                                     "num_experts_per_tok": 2, "moe_intermediate_size": 32, "decoder_sparse_step": 1,
                                     "rope_scaling": {"rope_type": "default", "mrope_section": [2, 3, 3],
                                                      "mrope_interleaved": True}},
                     "vision_config": {"model_type": "qwen3_vl_moe", "depth": 4, "hidden_size": 48,
                                       "intermediate_size": 88, "num_heads": 4, "out_hidden_size": 64,
                                       "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
                                       "num_position_embeddings": 16, "deepstack_visual_indexes": [1, 2]}},
}
LLAVA_NEXT = {"model_type": "llava_next", "image_grid_pinpoints": [[32, 64], [64, 64]], "vision_feature_layer": -2,
              "text_config": {**_TEXT, "model_type": "mistral", "head_dim": 16},
              "vision_config": {"model_type": "clip_vision_model", "hidden_size": 48, "intermediate_size": 88,
                                "num_attention_heads": 4, "num_hidden_layers": 3, "image_size": 32, "patch_size": 8,
                                "projection_dim": 32}}
# vLLM's Linears of these towers (qwen2_5_vl.py / qwen3_vl.py at 0.9.0.1-0.11.0)
COLUMN = ("attn.qkv", "gate_proj", "up_proj", "linear_fc1", "mlp.0")
ROW = ("attn.proj", "down_proj", "linear_fc2", "mlp.2")


def _meta_visual(config: dict) -> dict[str, tuple[int, ...]]:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        model = transformers.AutoModelForImageTextToText.from_config(
            transformers.AutoConfig.for_model(**copy.deepcopy(config)))
    return {name: tuple(p.shape) for name, p in model.named_parameters() if ".visual." in f".{name}"}


@pytest.mark.parametrize("case", sorted(SMALL))
def test_tower_params_match_transformers(case):
    config = SMALL[case]
    shapes = _meta_visual(config)
    total = sum(_numel(s) for s in shapes.values())
    tower = vision_tower(config)
    assert sum(n for _, n, _ in qwen_vision_modules(tower)) == total
    spec = spec_from_config(copy.deepcopy(config), case, case)
    assert spec.vision == tower
    from sizer.config import ConfigView
    assert vision_parts(ConfigView(copy.deepcopy(config), case))[1] == {"visual": total}


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


@pytest.mark.parametrize("tp", [2, 4])
@pytest.mark.parametrize("case", sorted(SMALL))
def test_tp_share_follows_vllms_parallel_linears(case, tp):
    """Column-parallel weights and biases and row-parallel weights split over the ranks; everything
    else (norms, patch embedding, positions, row-parallel biases) is replicated."""
    per_rank = 0
    for name, shape in _meta_visual(SMALL[case]).items():
        n = _numel(shape)
        if any(f".{c}." in name for c in COLUMN) or (any(f".{r}." in name for r in ROW) and name.endswith("weight")):
            per_rank += -(-n // tp)
        else:
            per_rank += n
    assert encoder_weight_bytes(vision_tower(SMALL[case]), tp, 2) == 2 * per_rank


def test_llava_next_loads_clip_up_to_the_feature_layer():
    """vLLM builds CLIP up to vision_feature_layer (-2: all but the last layer) without post_layernorm,
    plus the projector and image_newline: transformers' count less those modules."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        model = transformers.AutoModelForImageTextToText.from_config(
            transformers.AutoConfig.for_model(**copy.deepcopy(LLAVA_NEXT)))
    last = LLAVA_NEXT["vision_config"]["num_hidden_layers"] - 1
    loaded = sum(p.numel() for name, p in model.named_parameters()
                 if any(part in name for part in ("vision_tower", "multi_modal_projector", "image_newline"))
                 and f"encoder.layers.{last}." not in name and "post_layernorm" not in name)
    tower = vision_tower(LLAVA_NEXT)
    assert sum(n for _, n, _ in llava_next_modules(tower)) == loaded
    assert spec_from_config(copy.deepcopy(LLAVA_NEXT), "llava", "llava").vision == tower


ENCODER_LINE = re.compile(r"budget of (\d+) tokens, and profiled with (\d+) (\w+) items")


@pytest.mark.parametrize("slug, tower", [
    ("qwen3-vl-30b-a3b-rtx3090-tp4-v0.11.0", None),
    # the Qwen2.5-VL processor's sizes: patch 14, merge 2, temporal 2 (Qwen2_5_VLVisionConfig defaults)
    ("qwen2.5-vl-7b-l4-tp1-v0.9.0.1", None),
    ("llava-v1.6-mistral-7b-80gb-tp1-v0.10.2", None),
    # the processor's sizes only (patch 14, merge 2, temporal 2: Qwen2_5_VLVisionConfig defaults)
    ("qwen2.5-vl-7b-l4-tp1-v0.9.0.1", VisionTower.of("qwen2_5_vl", {})),
])
def test_encoder_budget_matches_the_logs(slug, tower):
    case = json.loads((LOGS / "vllm" / f"{slug}.json").read_text())
    log = (LOGS / "vllm" / f"{slug}.log").read_text()
    budget, items, modality = ENCODER_LINE.search(log).groups()
    if tower is None:
        index = json.loads((LOGS / "configs" / "INDEX.json").read_text())
        tower = vision_tower(json.loads((LOGS / "configs" / index[case["hf_id"]]["config"]).read_text()))
    version = tuple(int(x) for x in case["version"].split(".")[:3])
    s = case["settings"]
    p = encoder_profile(tower, s["max_num_batched_tokens"], 256, s["max_model_len"], version)
    assert (p.budget_tokens, p.items, p.modality) == (int(budget), int(items), modality)


@pytest.mark.parametrize("slug", ["llava-v1.6-mistral-7b-80gb-tp1-v0.10.2", "qwen2.5-vl-7b-l4-tp2-v0.9.0.1",
                                  "qwen2.5-vl-7b-l4-tp1-v0.9.0.1", "qwen3-vl-30b-a3b-rtx3090-tp4-v0.11.0"])
def test_vl_logs_are_planned_with_the_tower(slug):
    """`sizer check` on the published vision-language logs: the tower is in the planned weights (the
    language model alone is short of the logged weights by more than the tower's share) and the
    encoder's profiling peak is charged, so the KV cache is no larger than without it."""
    from dataclasses import replace

    from sizer.check.compare import check_log
    from sizer.check.logs import read_engine_log_file
    from sizer.inputs.resolve import get_model

    case = json.loads((LOGS / "vllm" / f"{slug}.json").read_text())
    index = json.loads((LOGS / "configs" / "INDEX.json").read_text())
    spec = get_model(str(LOGS / "configs" / index[case["hf_id"]]["config"]))
    log = read_engine_log_file(LOGS / "vllm" / f"{slug}.log")
    # the GPU kinds benchmarks/engine_logs.py maps these cases to (an unnamed 80 GB card: A100-80GB)
    gpus = "L4" if "L4" in case["gpu"] else "RTX-3090" if "3090" in case["gpu"] else "A100-80GB"
    engine = None if log.version else f"vllm=={case['version']}"
    rows = {r.component: r for r in check_log(log, spec, gpus, engine).rows}
    bare = {r.component: r for r in check_log(log, replace(spec, vision=None), gpus, engine).rows}
    assert rows["gpu_kv_cache_tokens"].predicted < bare["gpu_kv_cache_tokens"].predicted
    assert abs(rows["gpu_kv_cache_tokens"].error) < abs(bare["gpu_kv_cache_tokens"].error)
    assert abs(rows["gpu_kv_cache_tokens"].error) < 0.15     # the validation's worst-case target
    if "weights" in rows:
        assert abs(rows["weights"].error) < 0.005 < abs(bare["weights"].error)


def test_dummy_pixels_are_held_through_the_language_step():
    """profile_run keeps its dummy batch (a local) until it returns: the pixels are charged beside the
    encoder cache during the language model's step. 0.9.0.1 casts them to the model dtype before the
    copy; 0.11.0 moves them as the processor made them (float32), and the encoder runs on a bf16 copy."""
    tower = vision_tower(SMALL["qwen3_vl_moe"])
    patches = 64
    values = 3 * 2 * 16 * 16   # channels x temporal patch x patch^2
    assert dummy_pixel_bytes(tower, patches, 2, since_0_11=False) == patches * values * 2
    assert dummy_pixel_bytes(tower, patches, 2, since_0_11=True) == patches * values * 4
    p = encoder_profile(tower, 2048, 256, 4096, (0, 11, 0))
    forward, held = encoder_profile_bytes(tower, p, 1, 2, (0, 11, 0))
    all_patches = p.items * p.item_patches
    assert forward == encoder_forward_bytes(tower, all_patches, 1, 2, True) + all_patches * values * 4
    old_forward, old_held = encoder_profile_bytes(tower, p, 1, 2, (0, 10, 2))
    assert old_forward == encoder_forward_bytes(tower, all_patches, 1, 2, False)
    assert held - old_held > 0


def test_uses_mrope_reads_rope_scaling():
    from sizer.families import uses_mrope

    assert uses_mrope(SMALL["qwen3_vl_moe"]) and uses_mrope(SMALL["qwen2_5_vl"])
    assert uses_mrope({"rope_parameters": {"mrope_section": [1, 1, 2]}})
    assert not uses_mrope({"text_config": {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}})
    assert not uses_mrope({"rope_scaling": None, "max_position_embeddings": 4096})
