"""Frozen specs every calculation starts from: a model as a list of tensors, and a workload.

A `ModelSpec` is the one normalized description of an architecture, whatever it came from (catalog,
config.json, safetensors headers, GGUF header). Its `tensors` enumerate every parameter tensor by
shape, with how many decoder layers (and experts) repeat it, so parameter counts, weight bytes per
precision and per-component breakdowns all come from the same list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from math import prod

# Component names: the second part of the `weights/...` breakdown keys.
COMPONENTS = (
    "embeddings",           # input token embedding
    "position_embeddings",  # learned absolute positions (gpt_bigcode)
    "attention",            # q/k/v/o projections (MLA: the low-rank projections), their biases, sinks
    "mlp",                  # dense feed-forward
    "router",               # MoE gate
    "experts",              # routed MoE experts
    "shared_experts",       # always-active MoE experts (DeepSeek)
    "norms",                # every norm weight and bias, including q/k norms
    "lm_head",              # output projection (absent when tied to the embedding)
)

# Tensor kinds decide how a quantization format stores a tensor.
LINEAR, EMBEDDING, NORM, BIAS, OTHER = "linear", "embedding", "norm", "bias", "other"

# Per-layer cache kinds (`ModelSpec.layer_types`). The attention kinds keep keys and values per token;
# the recurrent kinds keep one state per sequence whatever the context (`ModelSpec.recurrent`).
FULL_ATTENTION, SLIDING_ATTENTION = "full_attention", "sliding_attention"
CHUNKED_ATTENTION = "chunked_attention"   # local attention within chunks: at most a chunk of tokens (window = chunk)
MAMBA = "mamba"                           # a Mamba / Mamba2 SSM mixer: conv state + SSM state per sequence
LINEAR_ATTENTION = "linear_attention"     # Gated DeltaNet / lightning attention: conv (if any) + recurrent state
HYBRID = "hybrid"                         # attention and an SSM side by side in one layer (Falcon-H1): both
SHARED_KV = "shared_kv"                   # attends to an earlier layer's keys and values: no cache of its own
NO_CACHE = "no_cache"                     # no token mixer at all (Nemotron-H's MLP / MoE blocks)
LAYER_KINDS = (FULL_ATTENTION, SLIDING_ATTENTION, CHUNKED_ATTENTION, MAMBA, LINEAR_ATTENTION, HYBRID, SHARED_KV,
               NO_CACHE)
KV_KINDS = frozenset({FULL_ATTENTION, SLIDING_ATTENTION, CHUNKED_ATTENTION, HYBRID})   # own per-token KV cache
STATE_KINDS = frozenset({MAMBA, LINEAR_ATTENTION, HYBRID})                            # own per-sequence state


@dataclass(frozen=True)
class RecurrentState:
    """The per-sequence state of one recurrent layer (every recurrent layer of a model has the same).

    A depthwise causal conv1d of `conv_kernel` taps over `conv_channels` channels needs the last inputs:
    serving engines keep `conv_kernel - 1` of them (vLLM's MambaStateShapeCalculator, llama.cpp's
    n_embd_r), transformers' LinearAttentionLayer keeps `conv_kernel`. `state_values` is the
    recurrent state: Mamba1 d_inner x d_state, Mamba2 heads x head_dim x d_state, Gated DeltaNet
    value heads x key head dim x value head dim, lightning attention heads x head_dim x head_dim.
    """

    kind: str                   # "mamba", "mamba2", "gated_deltanet", "lightning"
    conv_channels: int
    conv_kernel: int
    state_values: int
    # the mixer's geometry, for its working set (sizer.calc.activations.recurrent_bytes); 0: not given
    heads: int = 0              # Gated DeltaNet value heads; Mamba2 heads
    key_heads: int = 0          # Gated DeltaNet key heads; Mamba2 groups (of B and C)
    head_dim: int = 0           # Gated DeltaNet key head size; Mamba2 head size
    value_head_dim: int = 0     # Gated DeltaNet value head size
    d_state: int = 0            # Mamba / Mamba2 SSM state size
    chunk_size: int = 0         # the torch scan's chunk (Mamba2 chunk_size)

    @property
    def conv_values(self) -> int:
        """Conv-state values a serving engine keeps (kernel - 1 columns)."""
        return self.conv_channels * max(0, self.conv_kernel - 1)


@dataclass(frozen=True)
class KVGeometry:
    """The keys and values one attention layer caches per token: `n_kv_heads` heads of `head_dim` key
    and `v_head_dim` value values (a model whose layer kinds differ here lists them per kind)."""

    n_kv_heads: int
    head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class TensorSpec:
    """One parameter tensor, repeated over `layers` (None: a single global tensor) and experts.

    Linear weights have shape (out_features, in_features), as in torch.nn.Linear; a fused expert
    tensor is described per expert, with `experts` copies per layer.
    """

    name: str                   # generic dotted name, e.g. "layers.self_attn.q_proj.weight"
    component: str              # one of COMPONENTS
    shape: tuple[int, ...]
    kind: str                   # LINEAR, EMBEDDING, NORM, BIAS or OTHER
    layers: range | None = None  # decoder layers holding this tensor
    experts: int = 1            # copies per layer (routed experts)
    active_experts: int | None = None  # copies used per token; None means all
    fp32: bool = False          # kept in float32 whatever the precision (transformers' _keep_in_fp32_modules)

    @property
    def n_elements(self) -> int:
        """Elements of one copy."""
        return prod(self.shape)

    @property
    def copies(self) -> int:
        """Copies in the whole model: layers x experts."""
        return (len(self.layers) if self.layers is not None else 1) * self.experts

    @property
    def active_copies(self) -> int:
        """Copies a single token passes through."""
        per_layer = self.experts if self.active_experts is None else self.active_experts
        return (len(self.layers) if self.layers is not None else 1) * per_layer

    @property
    def params(self) -> int:
        return self.n_elements * self.copies

    @property
    def active_params(self) -> int:
        return self.n_elements * self.active_copies

    @property
    def out_features(self) -> int:
        return self.shape[0]

    @property
    def in_features(self) -> int:
        return self.shape[-1]


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only language model, normalized from any of the inputs sizer reads.

    Names follow the maths (`n_layers`, `n_kv_heads`, `head_dim`, `d_ff`); derived values are
    properties. KV-relevant numbers: MHA/GQA/MQA store `2 x n_kv_heads x head_dim` values per token
    and layer; MLA (`kv_lora_rank > 0`) stores one latent of `kv_lora_rank + qk_rope_head_dim`.
    """

    name: str
    family: str                 # Hugging Face model_type
    hidden_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int               # query/key head size
    v_head_dim: int             # value head size (differs from head_dim only in MLA)
    vocab_size: int
    d_ff: int                   # dense MLP intermediate size (0 if every layer is MoE)
    tied_embeddings: bool
    layer_types: tuple[str, ...]   # per layer: one of LAYER_KINDS (FULL_ATTENTION or SLIDING_ATTENTION for most)
    sliding_window: int | None
    max_context_length: int | None
    tensors: tuple[TensorSpec, ...]
    gated_mlp: bool = True      # gate/up/down (SwiGLU, GeGLU) rather than fc1/fc2
    n_experts: int = 0
    n_experts_active: int = 0
    d_ff_expert: int = 0
    n_shared_experts: int = 0
    kv_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    rotary_dim: int | None = None   # rotary dimensions per head: None, all of head_dim; 0, no RoPE (ALiBi, learned)
    source: str = ""
    notes: tuple[str, ...] = ()
    native_precision: str | None = None   # the checkpoint's own format when its config says (quantization_config)
    transformers_release: tuple[int, int] | None = None   # the transformers release it runs on; None: the newest modelled
    checkpoint: "Checkpoint | None" = field(default=None, compare=False)
    max_context_key: str | None = None    # the config key max_context_length comes from
    recurrent: RecurrentState | None = None   # the state of the MAMBA / LINEAR_ATTENTION / HYBRID layers
    attention_chunk: int | None = None    # tokens per chunk of the CHUNKED_ATTENTION layers
    indexer_values_per_token: int = 0     # sparse-attention indexer keys cached per token and KV layer (DeepSeek V3.2)
    indexer_layers: tuple[int, ...] | None = None   # the layers with an indexer of their own; None: every KV layer
    kv_geometry_by_kind: tuple[tuple[str, KVGeometry], ...] = ()   # per layer kind, where it differs from
    #                                          (n_kv_heads, head_dim, v_head_dim): MiMo-V2-Flash's sliding layers
    model_ref: str | None = None          # what an engine is told to load: Hub id (ORG/NAME[@REVISION]), folder, .gguf
    mrope: bool = False                   # multimodal RoPE (rope_scaling names mrope_section: Qwen2-VL and later)
    vision: object = field(default=None, compare=False)   # a Qwen-VL tower (sizer.families.vision.VisionTower):
    #                                          what vLLM loads and profiles beside the language model
    ollama_tag: str | None = None         # the Ollama library tag the user named (llama3.1:8b); native_precision its quant
    official_checkpoints: tuple[tuple[str, str, str], ...] = ()   # (precision asked, as stored, hub id): `-p fp8`
    #                                          means what the model's official FP8 checkpoint stores

    @cached_property
    def tensor_names(self) -> frozenset[str]:
        """Names of the parameter tensors (computed once: the planner asks per evaluated point)."""
        return frozenset(t.name for t in self.tensors)

    @property
    def params(self) -> int:
        """Total parameters, tied tensors once."""
        return sum(t.params for t in self.tensors)

    @property
    def active_params(self) -> int:
        """Parameters one token passes through (differs from `params` only for MoE)."""
        return sum(t.active_params for t in self.tensors)

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def attention_kind(self) -> str:
        """MLA, MHA (one KV head per query head), MQA (one KV head) or GQA."""
        if self.is_mla:
            return "MLA"
        if self.n_kv_heads == self.n_heads:
            return "MHA"
        return "MQA" if self.n_kv_heads == 1 else "GQA"

    @property
    def rope_dim(self) -> int:
        """Dimensions per head that RoPE rotates (0 without RoPE)."""
        return self.head_dim if self.rotary_dim is None else self.rotary_dim

    def kv_geometry(self, layer_type: str) -> KVGeometry:
        """K/V heads and head sizes cached by the layers of one kind (not MLA's latent)."""
        for kind, geometry in self.kv_geometry_by_kind:
            if kind == layer_type:
                return geometry
        return KVGeometry(self.n_kv_heads, self.head_dim, self.v_head_dim)

    def has_indexer(self, layer: int) -> bool:
        """Whether layer `layer` caches sparse-attention indexer keys of its own."""
        return bool(self.indexer_values_per_token) and self.layer_types[layer] in KV_KINDS and (
            self.indexer_layers is None or layer in self.indexer_layers)

    @property
    def n_sliding_layers(self) -> int:
        return sum(1 for t in self.layer_types if t == SLIDING_ATTENTION)

    @property
    def n_kv_layers(self) -> int:
        """Layers with a per-token KV cache of their own."""
        return sum(1 for t in self.layer_types if t in KV_KINDS)

    @property
    def n_state_layers(self) -> int:
        """Layers with a per-sequence recurrent state."""
        return sum(1 for t in self.layer_types if t in STATE_KINDS) if self.recurrent else 0

    def layer_kind_counts(self) -> dict[str, int]:
        """Layers per kind, in LAYER_KINDS order (kinds the model lacks left out)."""
        return {k: n for k in LAYER_KINDS if (n := sum(1 for t in self.layer_types if t == k))}

    def params_by_component(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.component] = out.get(t.component, 0) + t.params
        return out


@dataclass(frozen=True)
class CheckpointTensor:
    """A tensor as stored in a file: its exact bytes and storage type."""

    name: str
    component: str
    dtype: str                  # safetensors dtype ("BF16", "I32") or GGML type ("Q4_K")
    shape: tuple[int, ...]
    n_bytes: int


@dataclass(frozen=True)
class Checkpoint:
    """What a safetensors folder or GGUF file holds, read from headers only."""

    path: str
    format: str                 # "safetensors" or "gguf"
    tensors: tuple[CheckpointTensor, ...]
    quantization: str | None    # "gptq-4bit-g128", "nf4", "Q4_K_M", ... or None for plain dtypes
    dtypes: tuple[str, ...]     # storage types present, most bytes first

    @property
    def n_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    def bytes_by_component(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            out[t.component] = out.get(t.component, 0) + t.n_bytes
        return out


@dataclass(frozen=True)
class Workload:
    """What the model is asked to do: sequences of `context_length` tokens, `batch_size` at once."""

    context_length: int
    batch_size: int = 1
    attention: str = "sdpa"     # "sdpa" (no score matrix) or "eager" (materialises scores)
    logits: str = "last"        # "last" (generate) or "all" (a plain forward over every position)

    def __post_init__(self) -> None:
        from sizer.errors import UsageError

        if self.context_length < 1:
            raise UsageError(f"context length must be a positive number of tokens, got {self.context_length}")
        if self.batch_size < 1:
            raise UsageError(f"batch size must be a positive number of sequences, got {self.batch_size}")
        if self.attention not in ("sdpa", "eager"):
            raise UsageError(f"attention must be 'sdpa' or 'eager', got {self.attention!r}")
        if self.logits not in ("last", "all"):
            raise UsageError(f"logits must be 'last' or 'all', got {self.logits!r}")


def check_context_length(spec: ModelSpec, context_length: int, allow_long: bool = False) -> str | None:
    """The one rule of estimate and fit for a context beyond the model's maximum: refuse it (a
    UsageError naming the asked context, the maximum, the config key and how to proceed), as vLLM
    does (vllm/config `ModelConfig._get_and_verify_max_len` raises when max_model_len exceeds the
    length derived from max_position_embeddings & co., unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1). With
    `allow_long` it is planned anyway and the returned note says so; None when within the maximum
    or when the model states none."""
    limit = spec.max_context_length
    if not limit or context_length <= limit:
        return None
    key = spec.max_context_key or "max_position_embeddings"
    if not allow_long:
        from sizer.errors import UsageError

        raise UsageError(f"context length {context_length:,} exceeds {spec.name}'s maximum of {limit:,} tokens "
                         f"({key} in its config; vLLM refuses it too): use --context-length {limit} or less, or "
                         f"--allow-long-context to plan it anyway")
    return (f"the context of {context_length:,} tokens exceeds the model's maximum of {limit:,} ({key}), planned "
            "anyway (--allow-long-context): vLLM starts only with VLLM_ALLOW_LONG_MAX_MODEL_LEN=1, and the "
            "model may degrade beyond its trained length")
