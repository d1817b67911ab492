"""Vision towers of multimodal checkpoints: counted and named, not sized.

sizer sizes a multimodal config from its language model (text_config); the vision encoder and the
projector into the language model are loaded with it by transformers' ...ForConditionalGeneration and
by the engines, so their parameter counts are stated in the spec's notes, by part, with the module
names of the transformers implementation (tests/test_against_transformers.py counts the same parts
on the meta device). Only the towers listed in TOWERS are counted; others are named as not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sizer.config import ConfigView


def _pair(value) -> tuple[int, int]:
    return (value[0], value[1]) if isinstance(value, (list, tuple)) else (value, value)


def _llama4_vision(c: ConfigView, v: dict) -> dict[str, int]:
    """Llama4VisionModel (vision_model) and Llama4MultiModalProjector (multi_modal_projector)."""
    get = lambda key, default: v.get(key, default) if v.get(key) is not None else default   # noqa: E731
    hidden = get("hidden_size", 768)
    layers = get("num_hidden_layers", 34)
    d_ff = get("intermediate_size", 5632)
    channels = get("num_channels", 3)
    image, patch = get("image_size", 448), get("patch_size", 14)
    proj_in, proj_out = get("projector_input_dim", 4096), get("projector_output_dim", 4096)
    n_patches = (image // patch) ** 2 + 1
    per_layer = (4 * (hidden * hidden + hidden)                    # self_attn q/k/v/o_proj with biases
                 + 2 * hidden * d_ff + d_ff + hidden               # mlp.fc1, mlp.fc2 with biases
                 + 2 * 2 * hidden)                                 # input_/post_attention_layernorm (LayerNorm)
    vision = (channels * patch * patch * hidden                    # patch_embedding.linear (no bias)
              + hidden + n_patches * hidden                        # class_embedding, positional_embedding_vlm
              + 2 * 2 * hidden                                     # layernorm_pre, layernorm_post
              + layers * per_layer
              + d_ff * proj_in + proj_out * proj_out)              # vision_adapter.mlp.fc1, fc2 (no bias)
    projector = get("vision_output_dim", 7680) * c.int("hidden_size")   # multi_modal_projector.linear_1
    return {"vision_model": vision, "multi_modal_projector": projector}


def _pixtral(c: ConfigView, v: dict) -> dict[str, int]:
    """PixtralVisionModel (vision_tower) and Mistral3MultiModalProjector (multi_modal_projector)."""
    get = lambda key, default: v.get(key, default) if v.get(key) is not None else default   # noqa: E731
    hidden = get("hidden_size", 1024)
    layers = get("num_hidden_layers", 24)
    d_ff = get("intermediate_size", 4096)
    channels = get("num_channels", 3)
    ph, pw = _pair(get("patch_size", 16))
    per_layer = 4 * hidden * hidden + 3 * hidden * d_ff + 2 * hidden   # attention q/k/v/o, feed_forward, 2 RMSNorms
    vision = channels * ph * pw * hidden + hidden + layers * per_layer   # patch_conv (no bias), ln_pre
    text_hidden = c.int("hidden_size")
    merge = c.int("spatial_merge_size", default=2)
    feature_layer = c.raw.get("vision_feature_layer", -1)
    n_features = len(feature_layer) if isinstance(feature_layer, list) else 1
    bias = c.bool("multimodal_projector_bias", default=False)
    projector = (hidden                                          # norm
                 + hidden * merge * merge * hidden               # patch_merger.merging_layer
                 + hidden * n_features * text_hidden + (text_hidden if bias else 0)   # linear_1
                 + text_hidden * text_hidden + (text_hidden if bias else 0))          # linear_2
    return {"vision_tower": vision, "multi_modal_projector": projector}


def _qwen3_5_vision(c: ConfigView, v: dict) -> dict[str, int]:
    """Qwen3_5VisionModel / Qwen3_5MoeVisionModel (visual): a Conv3d patch embedding, learned positions,
    `depth` ViT blocks (LayerNorms, fused qkv and proj with biases, a biased GELU MLP) and the patch
    merger (a LayerNorm, then two biased Linears over spatial_merge_size^2 patches into the text model)."""
    get = lambda key, default: v.get(key, default) if v.get(key) is not None else default   # noqa: E731
    hidden = get("hidden_size", 1152)
    depth = get("depth", get("num_hidden_layers", 27))
    d_ff = get("intermediate_size", 4304)
    channels = get("in_channels", 3)
    patch, temporal = get("patch_size", 16), get("temporal_patch_size", 2)
    merged = hidden * get("spatial_merge_size", 2) ** 2
    out = get("out_hidden_size", 3584)
    per_block = (2 * 2 * hidden                                   # norm1, norm2 (LayerNorm)
                 + 3 * hidden * hidden + 3 * hidden               # attn.qkv with bias
                 + hidden * hidden + hidden                       # attn.proj with bias
                 + 2 * hidden * d_ff + d_ff + hidden)             # mlp.linear_fc1, linear_fc2 with biases
    visual = (channels * temporal * patch * patch * hidden + hidden          # patch_embed.proj (Conv3d, bias)
              + get("num_position_embeddings", 2304) * hidden                # pos_embed
              + depth * per_block
              + 2 * hidden + merged * merged + merged + out * merged + out)  # merger: norm, linear_fc1, linear_fc2
    return {"visual": visual}


def _qwen2_5_vl_vision(c: ConfigView, v: dict) -> dict[str, int]:
    """Qwen2_5_VisionTransformerPretrainedModel (visual): a bias-free Conv3d patch embedding, `depth`
    blocks (RMSNorms, fused qkv and proj with biases, a gated SiLU MLP with biases) and the patch merger
    (an RMSNorm over the ViT width, then two biased Linears over spatial_merge_size^2 patches)."""
    return {"visual": sum(n for _, n, _ in qwen_vision_modules(VisionTower.of("qwen2_5_vl", v)))}


def _qwen3_vl_vision(c: ConfigView, v: dict) -> dict[str, int]:
    """Qwen3VLVisionModel / Qwen3VLMoeVisionModel (visual): Qwen3.5's tower plus one patch merger per
    deepstack_visual_indexes entry (LayerNorm after the spatial shuffle, over spatial_merge_size^2 x width)."""
    return {"visual": sum(n for _, n, _ in qwen_vision_modules(VisionTower.of("qwen3_vl", v)))}


@dataclass(frozen=True)
class VisionTower:
    """The shapes of a Qwen-VL style vision encoder (patches -> ViT blocks -> patch merger), as
    config.json's vision_config gives them (transformers' class defaults where a key is left out)."""

    kind: str                    # "qwen2_5_vl" or "qwen3_vl" (Qwen3-VL and Qwen3-VL-MoE share the tower)
    hidden: int                  # ViT width
    depth: int
    heads: int
    d_ff: int                    # MLP width (gated SiLU in Qwen2.5-VL, GELU in Qwen3-VL)
    patch: int
    temporal_patch: int
    merge: int                   # spatial_merge_size: merge x merge patches -> one token
    in_channels: int
    out_hidden: int              # the language model's width (the merger's output)
    position_embeddings: int = 0     # Qwen3-VL's learned positions (num_position_embeddings)
    deepstack: int = 0               # Qwen3-VL: extra mergers (deepstack_visual_indexes)

    @property
    def gated(self) -> bool:
        return self.kind == "qwen2_5_vl"

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def patch_values(self) -> int:
        """Values per patch of the pixel input: channels x temporal_patch x patch^2."""
        return self.in_channels * self.temporal_patch * self.patch * self.patch

    @property
    def output_width(self) -> int:
        """Values per output token: the merger's plus Qwen3-VL's deepstack mergers' (concatenated)."""
        return self.out_hidden * (1 + self.deepstack)

    @classmethod
    def of(cls, kind: str, v: dict) -> "VisionTower":
        get = lambda key, default: v.get(key) if v.get(key) is not None else default   # noqa: E731
        if kind == "qwen2_5_vl":      # Qwen2_5_VLVisionConfig defaults
            return cls(kind, get("hidden_size", 3584), get("depth", 32), get("num_heads", 16),
                       get("intermediate_size", 3420), get("patch_size", 14), get("temporal_patch_size", 2),
                       get("spatial_merge_size", 2), get("in_channels", get("in_chans", 3)),
                       get("out_hidden_size", 3584))
        return cls(kind, get("hidden_size", 1152), get("depth", 27), get("num_heads", 16),   # Qwen3VLVisionConfig
                   get("intermediate_size", 4304), get("patch_size", 16), get("temporal_patch_size", 2),
                   get("spatial_merge_size", 2), get("in_channels", 3), get("out_hidden_size", 3584),
                   get("num_position_embeddings", 2304), len(get("deepstack_visual_indexes", [8, 16, 24])))


def qwen_vision_modules(t: VisionTower) -> list[tuple[str, int, int]]:
    """(module, parameters, TP-sharded parameters) of the tower: `sharded` is the part vLLM's
    Column/Row/QKV-parallel Linears split over the TP ranks (weights, and the biases of
    column-parallel layers); norms, the patch embedding, positions and row-parallel biases are replicated."""
    h, d, merged = t.hidden, t.d_ff, t.hidden * t.merge * t.merge
    norm = h if t.gated else 2 * h                 # RMSNorm (Qwen2.5-VL) or LayerNorm (weight and bias)
    conv_bias = 0 if t.gated else h                # Qwen2.5-VL's Conv3d has no bias
    mlp = ((2 * h * d + 2 * d, 2 * h * d + 2 * d) if t.gated else (h * d + d, h * d + d))   # gate+up / fc1
    block = [("norm1, norm2", 2 * norm, 0),
             ("attn.qkv", 3 * h * h + 3 * h, 3 * h * h + 3 * h),
             ("attn.proj", h * h + h, h * h),
             ("mlp in", *mlp),
             ("mlp out", d * h + h, d * h)]
    mods = [("patch_embed", t.patch_values * h + conv_bias, 0)]
    if t.position_embeddings:
        mods.append(("pos_embed", t.position_embeddings * h, 0))
    mods += [(f"blocks.{name}", t.depth * n, t.depth * s) for name, n, s in block]
    merger_fc = [("fc1", merged * merged + merged, merged * merged + merged),
                 ("fc2", merged * t.out_hidden + t.out_hidden, merged * t.out_hidden)]
    mods.append(("merger.norm", norm, 0))
    mods += [(f"merger.{name}", n, s) for name, n, s in merger_fc]
    if t.deepstack:                                # LayerNorm over the shuffled width
        mods.append(("deepstack_merger_list.norm", t.deepstack * 2 * merged, 0))
        mods += [(f"deepstack_merger_list.{name}", t.deepstack * n, t.deepstack * s) for name, n, s in merger_fc]
    return mods


@dataclass(frozen=True)
class LlavaNextTower:
    """LLaVA-NeXT's CLIP vision tower and projector (llava_next with a clip_vision_model), the shapes
    of config.json (CLIPVisionConfig / LlavaNextConfig defaults where a key is left out)."""

    hidden: int
    layers: int                  # the CLIP layers in the checkpoint
    feature_layer: int           # vision_feature_layer (negative: from the end)
    heads: int
    d_ff: int
    patch: int
    image_size: int              # one tile's side
    in_channels: int
    text_hidden: int
    pinpoints: tuple[tuple[int, int], ...]    # image_grid_pinpoints (height, width)
    projector_bias: bool = True
    keep_cls: bool = False       # vision_feature_select_strategy "full" keeps the CLS token

    kind = "llava_next"
    gated = False
    deepstack = 0

    @property
    def loaded_layers(self) -> int:
        """vLLM builds the encoder up to the feature layer (llava.py _get_layer_index)."""
        return self.layers + self.feature_layer + 1 if self.feature_layer < 0 else self.feature_layer

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def output_width(self) -> int:
        return self.text_hidden

    @classmethod
    def of(cls, raw: dict, v: dict) -> "LlavaNextTower":
        get = lambda d, key, default: d.get(key) if d.get(key) is not None else default   # noqa: E731
        text = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else {}
        layer = get(raw, "vision_feature_layer", -2)
        return cls(get(v, "hidden_size", 768), get(v, "num_hidden_layers", 12),
                   max(layer) if isinstance(layer, list) else layer, get(v, "num_attention_heads", 12),
                   get(v, "intermediate_size", 3072), get(v, "patch_size", 32), get(v, "image_size", 224),
                   get(v, "num_channels", 3), get(text, "hidden_size", 4096),
                   tuple(tuple(p) for p in get(raw, "image_grid_pinpoints", [[336, 672], [672, 336], [672, 672],
                                                                              [1008, 336], [336, 1008]])),
                   get(raw, "multimodal_projector_bias", True),
                   get(raw, "vision_feature_select_strategy", "default") == "full")


def llava_next_modules(t: LlavaNextTower) -> list[tuple[str, int, int]]:
    """(module, parameters, TP-sharded parameters) of what vLLM loads for LLaVA-NeXT (clip.py,
    llava.py, llava_next.py): the CLIP layers up to the feature layer, no post_layernorm, the
    projector (column- then row-parallel) and image_newline."""
    h, d, n, T = t.hidden, t.d_ff, t.loaded_layers, t.text_hidden
    layer = [("layer_norm1, layer_norm2", 4 * h, 0),
             ("self_attn.qkv_proj", 3 * h * h + 3 * h, 3 * h * h + 3 * h),
             ("self_attn.out_proj", h * h + h, h * h),
             ("mlp.fc1", h * d + d, h * d + d),
             ("mlp.fc2", d * h + h, d * h)]
    bias = 1 if t.projector_bias else 0
    return ([("embeddings", t.in_channels * t.patch * t.patch * h + h + (t.grid * t.grid + 1) * h, 0),
             ("pre_layrnorm", 2 * h, 0)]
            + [(f"encoder.layers.{name}", n * p, n * s) for name, p, s in layer]
            + [("multi_modal_projector.linear_1", h * T + bias * T, h * T + bias * T),
               ("multi_modal_projector.linear_2", T * T + bias * T, T * T),
               ("image_newline", T, 0)])


def vision_tower(raw: dict) -> VisionTower | LlavaNextTower | None:
    """The vision tower sizer models for vLLM (Qwen-VL, LLaVA-NeXT with CLIP) of a config.json (the
    file as read, with its own model_type), or None."""
    v = raw.get("vision_config")
    if not isinstance(v, dict):
        return None
    if raw.get("model_type") == "llava_next" and v.get("model_type") == "clip_vision_model":
        return LlavaNextTower.of(raw, v)
    kind = QWEN_TOWERS.get(v.get("model_type") or raw.get("model_type"))
    return VisionTower.of(kind, v) if kind else None


# vision_config model_type (or the wrapper's) -> the tower's kind
QWEN_TOWERS = {"qwen2_5_vl": "qwen2_5_vl", "qwen2_5_vl_vision": "qwen2_5_vl", "qwen3_vl": "qwen3_vl",
               "qwen3_vl_vision": "qwen3_vl", "qwen3_vl_moe": "qwen3_vl", "qwen3_vl_moe_vision": "qwen3_vl"}

# vision_config model_type (or the wrapper's) -> its counter
TOWERS: dict[str, Callable[[ConfigView, dict], dict[str, int]]] = {
    "llama4_vision_model": _llama4_vision,
    "pixtral": _pixtral,
    "qwen3_5_vision": _qwen3_5_vision,
    "qwen3_5_moe_vision": _qwen3_5_vision,
    **{kind: (_qwen2_5_vl_vision if tower == "qwen2_5_vl" else _qwen3_vl_vision) for kind, tower in
       QWEN_TOWERS.items()},
}


def vision_parts(c: ConfigView) -> tuple[str, dict[str, int]] | None:
    """(the vision model_type, parameters per named part) of a multimodal config whose tower sizer
    counts; None when the config has no vision_config or an uncounted tower."""
    v = c.raw.get("vision_config")
    if not isinstance(v, dict):
        return None
    kind = v.get("model_type") or c.raw.get("model_type")
    count = TOWERS.get(kind) if isinstance(kind, str) else None
    return (kind, count(c, v)) if count else None


def vision_note(c: ConfigView) -> str:
    """The note of a config sized from its text_config: what of the checkpoint it leaves out."""
    parts = vision_parts(c)
    if parts is None:
        return "sized from the language model's text_config; vision/audio towers are not counted"
    kind, counts = parts
    named = ", ".join(f"{name} {n:,}" for name, n in counts.items())
    return (f"sized from the language model's text_config; the vision tower ({kind}) is not in the weights: "
            f"{sum(counts.values()):,} parameters more ({named})")
