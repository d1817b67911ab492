"""What vLLM and SGLang allocate while they load a model besides the checkpoint's tensors, and that
their logged "weights" therefore holds (docs/reference/vllm-versions-v0.md, -v1.md and
sglang-memory.md, section "Load-time buffers", quote the lines):

* the rotary embedding's cos/sin table: vLLM's and SGLang's `RotaryEmbedding.__init__` computes
  `_compute_cos_sin_cache()`, `max_position_embeddings` rows of `rotary_dim` columns (cos and sin
  halves), and registers it as a buffer on the GPU while the model is built. `get_rope` caches its
  instances by their arguments, so the layers of a model share one table. vLLM casts it to the model
  dtype (`cache = cache.to(dtype)`); SGLang from 0.4.2 keeps it in float32 on CUDA ("cache needs to
  be in FP32 for numerical stability"), and before that its models used vLLM's `get_rope`.
* LoRA slot buffers (vLLM 0.8+, whose V0 and V1 model runners create the LoRA manager inside the
  `DeviceMemoryProfiler` block around the model load; 0.7 creates it after): every LinearBase layer
  (a MoE router included; FusedMoE experts are none) preallocates `max_loras` stacked A and B matrices of `max_lora_rank` in the model dtype
  (`lora_dtype` "auto"), the vocabulary-parallel embedding and the logits processor of the families
  that list `embedding_modules` (Llama and its subclasses) an A/B pair over the vocabulary and
  `lora_extra_vocab_size` extra embedding rows, and the model's own embedding and lm_head grow by
  those extra rows.

vLLM's multimodal RoPE (`MRotaryEmbedding`, chosen by `get_rope` when rope_scaling names an
mrope_section) builds its table over four times max_position_embeddings ("We enlarge
max_position_embeddings to 4 times", `model_executor/layers/rotary_embedding.py@0.9.0.1:1000`,
`rotary_embedding/mrope.py@0.11.0:241` `self.cache_max_position_num = max_position_embeddings * 4`):
`vllm_rope_cache_bytes`.

Not modelled: models with two RoPE tables (Gemma 3's local and global bases, LongRoPE's short and
long factors), SGLang's M-RoPE table, models that mix dense and MoE layers (every layer is given the
dense MLP's slots when the config has a dense width), and the LoRA shapes after 0.10.2.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

from sizer.spec import ModelSpec

# vLLM's LoRAConfig defaults (vllm/config.py@v0.8.5.post1 `max_lora_rank: int = 16`, `max_loras: int = 1`,
# `lora_extra_vocab_size: int = 256`, `lora_vocab_padding_size: ClassVar[int] = 256`)
LORA_DEFAULT_RANK = 16
LORA_DEFAULT_MAX_LORAS = 1
LORA_EXTRA_VOCAB_ROWS = 256
LORA_VOCAB_PADDING = 256
# Families whose vLLM model lists `embedding_modules` (embed_tokens, lm_head): LlamaForCausalLM and
# the classes built on it (Mistral runs as Llama; Phi3ForCausalLM subclasses it). Qwen2/Qwen3 list none.
LORA_EMBEDDING_FAMILIES = frozenset({"llama", "mistral", "phi3"})
# Families whose fused projections are single modules on disk (vLLM Phi3ForCausalLM's
# packed_modules_mapping {"qkv_proj": ["qkv_proj"], "gate_up_proj": ["gate_up_proj"]}): one A matrix each.
LORA_UNSPLIT_FAMILIES = frozenset({"phi3"})
# vLLM's MRotaryEmbedding: table rows per max_position_embeddings (mrope.py@0.11.0:241)
VLLM_MROPE_POSITIONS_FACTOR = 4


@dataclass(frozen=True)
class LoraSlots:
    """vLLM's LoRA settings that size its slot buffers (--enable-lora --max-lora-rank --max-loras)."""

    rank: int = LORA_DEFAULT_RANK
    max_loras: int = LORA_DEFAULT_MAX_LORAS
    extra_vocab: int = LORA_EXTRA_VOCAB_ROWS


def lora_slots(settings: dict) -> LoraSlots:
    """LoRA slots from vLLM's settings (max_lora_rank, max_loras; vLLM's defaults where unset)."""
    return LoraSlots(int(settings.get("max_lora_rank") or LORA_DEFAULT_RANK),
                     int(settings.get("max_loras") or LORA_DEFAULT_MAX_LORAS))


def rope_cache_bytes(spec: ModelSpec, element_bytes: int, positions_factor: int = 1) -> int:
    """The one cos/sin table of a model: max_position_embeddings (x positions_factor) rows x the rotary
    dimensions (MLA: the decoupled qk_rope_head_dim), at `element_bytes` per value; 0 without RoPE."""
    rotary = spec.qk_rope_head_dim if spec.is_mla else spec.rope_dim
    return (spec.max_context_length or 0) * positions_factor * rotary * element_bytes


def vllm_rope_cache_bytes(spec: ModelSpec, element_bytes: int) -> int:
    """vLLM's table: four times the positions for M-RoPE models (MRotaryEmbedding), else rope_cache_bytes."""
    return rope_cache_bytes(spec, element_bytes, VLLM_MROPE_POSITIONS_FACTOR if spec.mrope else 1)


def lora_layer_elements(rank_spec: ModelSpec, rank: int) -> int:
    """A and B values of one LoRA slot in one decoder layer on one TP rank (rank_spec: the heads and
    MLP width this rank holds). Column-parallel layers (qkv, gate_up) take A [rank, hidden] per packed
    slice and B [slice / tp, rank]; row-parallel ones (o, down) A [rank, input / tp] and B [hidden, rank]."""
    hidden, head = rank_spec.hidden_size, rank_spec.head_dim
    q, kv = rank_spec.n_heads * head, rank_spec.n_kv_heads * head
    unsplit = rank_spec.family in LORA_UNSPLIT_FAMILIES
    qkv = (1 if unsplit else 3) * rank * hidden + rank * (q + 2 * kv)
    out = rank * q + hidden * rank
    router = rank * hidden + rank_spec.n_experts * rank if rank_spec.n_experts else 0   # ReplicatedLinear gate
    if not rank_spec.d_ff:            # routed experts (FusedMoE) are no LinearBase: no slots
        return qkv + out + router
    up_slices = 2 if rank_spec.gated_mlp else 1
    up = (1 if unsplit else up_slices) * rank * hidden + up_slices * rank_spec.d_ff * rank
    down = rank * rank_spec.d_ff + hidden * rank
    return qkv + out + router + up + down


def lora_vocab_elements(rank_spec: ModelSpec, lora: LoraSlots, first: bool, last: bool, tp: int = 1) -> int:
    """Values the embedding (first stage) and the logits processor (last stage) add on one GPU with
    LoRA, for the families with embedding_modules: their A/B slots (whole vocabulary on every rank),
    the extra rows the slots hold, and the extra rows the model's own vocabulary-parallel embedding
    and lm_head grow by (split over the TP ranks; lm_head's vocabulary padded to 256)."""
    if rank_spec.family not in LORA_EMBEDDING_FAMILIES:
        return 0
    hidden, vocab, r, n, extra = rank_spec.hidden_size, rank_spec.vocab_size, lora.rank, lora.max_loras, lora.extra_vocab
    total = 0
    if first:   # embeddings_tensors [n, extra, H], lora_a [n, vocab + extra, r], lora_b [n, 1, H, r]; embed_tokens + extra x n
        total += n * extra * hidden + n * (vocab + extra) * r + n * hidden * r + ceil(extra * n / tp) * hidden
    if last:    # lora_a [n, 1, r, H], lora_b [n, 1, pad256(vocab + extra), r], embeddings_tensors [n, extra, H]
        padded = ceil((vocab + extra) / LORA_VOCAB_PADDING) * LORA_VOCAB_PADDING
        total += n * r * hidden + n * padded * r + n * extra * hidden
        if not rank_spec.tied_embeddings:   # ParallelLMHead over vocab + extra, org vocab padded to 256
            total += ceil((ceil(vocab / LORA_VOCAB_PADDING) * LORA_VOCAB_PADDING - vocab + extra) / tp) * hidden
    return total


def lora_slot_bytes(rank_spec: ModelSpec, layers: int, first: bool, last: bool, lora: LoraSlots,
                    element_bytes: int, tp: int = 1) -> int:
    """The LoRA buffers on one GPU of a stage holding `layers` decoder layers (model dtype)."""
    per_layer = lora.max_loras * lora_layer_elements(rank_spec, lora.rank)
    return (layers * per_layer + lora_vocab_elements(rank_spec, lora, first, last, tp)) * element_bytes
