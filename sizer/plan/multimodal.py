"""vLLM's vision encoder: its weights, and what its profiling run adds to the activation peak.

A Qwen-VL model (sizer.families.vision.VisionTower) loads its vision tower beside the language model
(TP-sharded Linears, replicated norms and embeddings), and vLLM V1's profile_run runs the encoder on
dummy images or videos of the largest size the model's processor allows before the language model's
dummy batch, keeping the encoder outputs (its "encoder cache") alive through that batch. The torch
peak it measures is therefore max(encoder forward, encoder cache + language-model step).

Facts and citations: docs/reference/vllm-multimodal.md (gpu_model_runner.py profile_run,
v1/core/encoder_cache_manager.py compute_encoder_budget, models/qwen2_vl.py / qwen2_5_vl.py /
qwen3_vl.py at vLLM 0.9.0.1, 0.10.2 and 0.11.0).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import isqrt

from sizer.families.vision import LlavaNextTower, VisionTower, llava_next_modules, qwen_vision_modules

FP32_BYTES = 4
# The processors' largest inputs (preprocessor_config.json / video_preprocessor_config.json of the
# checkpoints, which sizer does not read): Qwen2.5-VL max_pixels 12845056 (= 16384 x 28 x 28);
# Qwen3-VL image size.longest_edge 16777216 (= 16384 x 32 x 32), video size.longest_edge 25165824
# (= 24576 x 32 x 32, over all frames).
MAX_IMAGE_PIXELS = {"qwen2_5_vl": 12845056, "qwen3_vl": 16777216}
MAX_VIDEO_PIXELS = {"qwen3_vl": 25165824}
# qwen2_vl.py: _MAX_FRAMES_PER_VIDEO (0.9.0.1-0.10.2: 16; 0.11.0: 14)
QWEN2_MAX_FRAMES = {(0, 9): 16, (0, 10): 16}
QWEN2_MAX_FRAMES_SINCE_0_11 = 14
# MultiModalConfig.get_limit_per_prompt: V1's default items of a modality per prompt (no --limit-mm-per-prompt)
V1_LIMIT_PER_PROMPT = 999
# qwen3_vl.py get_max_video_tokens: each video token counts 12.5 prompt tokens (its timestamp text)
QWEN3_VIDEO_TOKEN_FACTOR = 12.5


@dataclass(frozen=True)
class EncoderProfile:
    """The dummy multimodal batch of vLLM's profile_run."""

    modality: str                # "image" or "video": the modality with the most tokens per item
    budget_tokens: int           # the encoder cache budget the log prints
    items: int                   # items of the maximum size in the dummy batch
    item_tokens: int             # tokens per item as the budget counts them
    item_patches: int            # ViT patches per item (the encoder's sequence)
    item_outputs: int            # encoder output rows per item (patches / merge^2)


Tower = VisionTower | LlavaNextTower


def encoder_weight_bytes(t: Tower, tensor_parallel: int, dtype_bytes: int) -> int:
    """Bytes of the vision tower on one GPU: TP-sharded Linears split, the rest replicated (vLLM's
    mm_encoder_tp_mode "weights", the default)."""
    modules = llava_next_modules(t) if isinstance(t, LlavaNextTower) else qwen_vision_modules(t)
    params = sum(-(-sharded // tensor_parallel) + (n - sharded) for _, n, sharded in modules)
    return params * dtype_bytes


def deepstack_buffer_bytes(t: Tower, max_num_batched_tokens: int, dtype_bytes: int) -> int:
    """Qwen3-VL's deepstack input buffers, allocated with the model (counted in "Model loading took"):
    one (max_num_batched_tokens x text hidden) tensor per deepstack level."""
    return t.deepstack * max_num_batched_tokens * t.out_hidden * dtype_bytes if t.deepstack else 0


def llava_next_image_tokens(t: LlavaNextTower, height: int, width: int) -> tuple[int, int]:
    """(tokens, tiles) of an image of a pinpoint's size (llava_next.py get_num_image_tokens): the base
    tile's features, the anyres grid's unpadded features and one newline per row."""
    base = t.grid * t.grid + (1 if t.keep_cls else 0)
    rows, cols = height // t.image_size, width // t.image_size
    current_h, current_w = t.grid * rows, t.grid * cols
    if width / height > current_w / current_h:
        new_h = int(round(height * (current_w / width), 7))
        current_h -= 2 * ((current_h - new_h) // 2)
    else:
        new_w = int(round(width * (current_h / height), 7))
        current_w -= 2 * ((current_w - new_w) // 2)
    return current_h * current_w + current_h + base, 1 + rows * cols


def _image_tokens(t: VisionTower) -> int:
    """Tokens of the largest image: smart_resize of a huge square image to max_pixels, in steps of
    patch x merge pixels."""
    factor = t.patch * t.merge
    side = isqrt(MAX_IMAGE_PIXELS[t.kind]) // factor
    return side * side


def _qwen2_video_tokens(t: VisionTower, seq_len: int, release_first: tuple[int, ...]) -> int:
    """Qwen2.5-VL: frames of the largest image, as many as fit seq_len (at least one), capped."""
    per_pair = _image_tokens(t)              # one temporal patch (two frames) of the largest image
    cap = QWEN2_MAX_FRAMES.get(tuple(release_first[:2]), QWEN2_MAX_FRAMES_SINCE_0_11)
    tokens = lambda frames: max((frames + frames % 2) // 2, 1) * per_pair   # noqa: E731
    frames = 1
    while frames < cap and tokens(frames + 1) <= seq_len:
        frames += 1
    return tokens(frames)


def _items_by_modality(t: Tower, max_model_len: int, release_first: tuple[int, ...]) -> dict[str, tuple[int, int, int]]:
    """Per modality: (tokens an item counts in the budget, its encoder output rows, its encoder positions)."""
    if isinstance(t, LlavaNextTower):        # the pinpoint with the most features (the first on ties)
        tokens, tiles = max((llava_next_image_tokens(t, h, w) for h, w in t.pinpoints), key=lambda x: x[0])
        return {"image": (tokens, tokens, tiles * (t.grid * t.grid + 1))}   # CLIP: class token + patches per tile
    unit = t.merge * t.merge
    image = _image_tokens(t)
    if t.kind == "qwen3_vl":
        video = MAX_VIDEO_PIXELS[t.kind] // (t.temporal_patch * (t.patch * t.merge) ** 2)
        return {"image": (image, image, image * unit),
                "video": (int(video * QWEN3_VIDEO_TOKEN_FACTOR), video, video * unit)}
    video = _qwen2_video_tokens(t, max_model_len, release_first)
    return {"image": (image, image, image * unit), "video": (video, video, video * unit)}


def encoder_profile(t: Tower, max_num_batched_tokens: int, max_num_seqs: int, max_model_len: int,
                    release_first: tuple[int, ...]) -> EncoderProfile:
    """The modality, budget and dummy items vLLM profiles the encoder with."""
    by_modality = _items_by_modality(t, max_model_len, release_first)
    modality = max(by_modality, key=lambda m: by_modality[m][0])     # the first on ties (image)
    item_tokens, outputs, patches = by_modality[modality]
    budget = max(max_num_batched_tokens, item_tokens)
    if tuple(release_first) < (0, 10):       # 0.9: cdiv(budget, item) items, up to the limit per request
        items = min(-(-budget // item_tokens), max_num_seqs * V1_LIMIT_PER_PROMPT)
    else:                                    # 0.10+: MultiModalBudget.get_max_items
        per_prompt = max(1, min(V1_LIMIT_PER_PROMPT, max_model_len // item_tokens))
        items = max(1, min(budget // item_tokens, max_num_seqs * per_prompt))
    return EncoderProfile(modality, budget, items, item_tokens, patches, outputs)


def clip_forward_bytes(t: LlavaNextTower, positions: int, tensor_parallel: int, dtype_bytes: int) -> int:
    """Peak bytes of LLaVA-NeXT's CLIP forward and projector over `positions` (tiles x (patches + 1)):
    the pixels stay alive; a layer holds the residual and its normed copy beside qkv and the attention
    output, or fc1 and its activation; the projector holds the features, linear_1 and its activation
    (column-parallel) and linear_2's output."""
    h, tp = t.hidden, tensor_parallel
    shard, d, T = -(-h // tp), -(-t.d_ff // tp), t.text_hidden
    pixels = positions * t.in_channels * t.patch * t.patch * dtype_bytes
    layer = max(2 * h + 3 * shard + shard, 2 * h + 2 * d) * dtype_bytes
    projector = (h + 2 * -(-T // tp) + T) * dtype_bytes
    return pixels + positions * max(layer, projector)


def encoder_forward_bytes(t: VisionTower, patches: int, tensor_parallel: int, dtype_bytes: int,
                          rotary_qk_together: bool) -> int:
    """Peak bytes of one encoder forward over `patches` patches on one GPU: the pixel input, the fp32
    rotary table and the collected deepstack features stay alive while each block holds the residual
    and its normed copy beside either the attention's tensors (qkv, contiguous q/k/v, fp32 rotary
    copies of q, or of q and k concatenated from 0.11; with TP > 1 the all-gathered qkv) or the MLP's (gate-activated, up and their
    product for Qwen2.5-VL's gated MLP; fc1 and its activation for Qwen3-VL)."""
    h, tp = t.hidden, tensor_parallel
    shard = -(-h // tp)
    d = -(-t.d_ff // tp)
    rotated = 2 * shard if rotary_qk_together else shard
    rotary = (2 * h + 3 * shard + 3 * shard) * dtype_bytes + (rotated * dtype_bytes * rotary_qk_together
                                                               + 2 * rotated * FP32_BYTES)
    # TP > 1: split_qkv all-gathers qkv (all_gather_interleave: the tp gathered pieces and their
    # concatenation, 3h each) beside the local shard
    gather = (2 * h + 3 * shard + 6 * h) * dtype_bytes if tp > 1 else 0
    attention = max(rotary, gather)
    mlp = (2 * h + (3 * d if t.gated else 2 * d)) * dtype_bytes
    held = (t.patch_values * dtype_bytes + (t.head_dim // 2) * FP32_BYTES) * patches
    deepstack = t.deepstack * (patches // (t.merge * t.merge)) * t.out_hidden * dtype_bytes
    return held + deepstack + patches * max(attention, mlp)


def dummy_pixel_bytes(t: VisionTower, patches: int, dtype_bytes: int, since_0_11: bool) -> int:
    """The dummy batch's pixel input on the GPU, held by profile_run (a local) until it returns, so
    through the language model's dummy step too: cast to the model dtype before the copy up to 0.10
    (`MultiModalKwargs.as_kwargs(..., dtype=...)`), moved as the processor made it (float32) from 0.11."""
    return patches * t.patch_values * (FP32_BYTES if since_0_11 else dtype_bytes)


def encoder_cache_bytes(t: Tower, p: EncoderProfile, dtype_bytes: int, expanded: bool) -> int:
    """The encoder outputs kept through the language model's dummy batch; from 0.11 each item's output
    is copied into a (budget x width) tensor when it has fewer rows than the budget."""
    rows = max(p.budget_tokens, p.item_outputs) if expanded else p.item_outputs
    return p.items * rows * t.output_width * dtype_bytes


def encoder_profile_bytes(t: Tower, p: EncoderProfile, tensor_parallel: int, dtype_bytes: int,
                          release_first: tuple[int, ...]) -> tuple[int, int]:
    """(the encoder forward's peak, the encoder cache and the dummy pixels held during the language-model
    step), bytes on one GPU."""
    since_0_11 = tuple(release_first) >= (0, 11)
    if isinstance(t, LlavaNextTower):
        forward = clip_forward_bytes(t, p.items * p.item_patches, tensor_parallel, dtype_bytes)
        return forward, encoder_cache_bytes(t, p, dtype_bytes, since_0_11)
    patches = p.items * p.item_patches
    forward = encoder_forward_bytes(t, patches, tensor_parallel, dtype_bytes, since_0_11)
    dummy = dummy_pixel_bytes(t, patches, dtype_bytes, since_0_11)
    # from 0.11 the float32 input stays beside the model-dtype copy the encoder runs on (counted in forward)
    return forward + (dummy if since_0_11 else 0), encoder_cache_bytes(t, p, dtype_bytes, since_0_11) + dummy


def vllm_profile_peak_bytes(language_peak: int, t: Tower | None, *, tensor_parallel: int, dtype_bytes: int,
                            max_num_batched_tokens: int, max_num_seqs: int, max_model_len: int,
                            release_first: tuple[int, ...], first_stage: bool = True) -> int:
    """vLLM's torch peak of profile_run with the encoder profiled first (the encoder runs on the first
    pipeline stage): max(encoder forward, encoder cache + the language model's own peak)."""
    if t is None or not first_stage:
        return language_peak
    p = encoder_profile(t, max_num_batched_tokens, max_num_seqs, max_model_len, release_first)
    forward, cache = encoder_profile_bytes(t, p, tensor_parallel, dtype_bytes, release_first)
    return max(forward, cache + language_peak)


def vllm_encoder_weight_bytes(t: Tower | None, *, tensor_parallel: int, dtype_bytes: int,
                              max_num_batched_tokens: int, first_stage: bool = True) -> int:
    """What the tower adds to "Model loading took" on one GPU of the first stage."""
    if t is None or not first_stage:
        return 0
    return (encoder_weight_bytes(t, tensor_parallel, dtype_bytes)
            + deepstack_buffer_bytes(t, max_num_batched_tokens, dtype_bytes))
