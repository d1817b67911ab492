"""Per-GPU shares of a model under a placement: weights, KV bytes per token, sharded dimensions.

One `Stage` describes every GPU of a pipeline stage (tensor-parallel ranks hold equal shares).
Everything here is computed once per (model, precision, placement, engine layout) and then reused
for every context length and batch size the planner tries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from fractions import Fraction
from math import ceil

from sizer.calc.kv import (INDEXER_AT_KV_DTYPE, LLAMACPP_STATE_BYTES, kv_layer_bytes_per_token, state_bytes_per_layer,
                           transformers_state_bytes, window_of)
from sizer.plan.placement import Placement, kv_heads_per_rank, stage_layers
from sizer.spec import EMBEDDING, KV_KINDS, NORM, OTHER, STATE_KINDS, KVGeometry, ModelSpec, TensorSpec

# Components whose tensors tensor parallelism splits (column/row-parallel Linear, vocab-parallel
# embedding and lm_head). Norms, routers and other small tensors are replicated.
SHARDED_COMPONENTS = frozenset({"attention", "mlp", "experts", "shared_experts", "embeddings", "lm_head"})
# MLA's down-projections to the latent are replicated (vLLM: ReplicatedLinear).
_REPLICATED_MLA = ("q_a_proj", "kv_a_proj_with_mqa")
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|blk|block)\.(\d+)\.")


@dataclass(frozen=True)
class Stage:
    """The share of one GPU in pipeline stage `index`."""

    index: int
    layers: range
    first: bool
    last: bool
    weights_bytes: int
    kv_full_bytes_per_token: int                      # one sequence, full-attention layers here
    kv_window_bytes_per_token: tuple[tuple[int, int], ...]   # (window, bytes per token) of sliding layers
    rank_spec: ModelSpec                              # the model's dimensions as this GPU sees them
    host_bytes: int = 0                               # weights an engine keeps in host memory (llama.cpp)
    expert_bytes: int = 0                             # the routed experts among weights_bytes (MoE)
    int8_mlp: bool = False                            # the MLP runs on bitsandbytes int8 Linears
    state_layers: int = 0                             # layers here with a per-sequence recurrent state
    kv_layer_bytes_per_token: int = 0                 # one token in one KV layer here (vLLM's page sizing)
    state_layer_bytes: int = 0                        # one sequence's state in one recurrent layer, model dtype
    state_layer_bytes_llamacpp: int = 0               # the same in llama.cpp's float32 cells
    transformers_state_layer_bytes: int = 0           # the same in transformers' cache (conv: kernel columns, fp32 SSM)
    kv_layer_windows: tuple[int | None, ...] = ()     # the window of each KV layer here (None: full)

    def kv_bytes(self, context_length: int, sequences: int, window_extra: int = 0) -> int:
        """KV cache for `sequences` of `context_length` tokens; sliding layers keep `window + extra`."""
        windowed = sum(b * min(context_length, w + window_extra) for w, b in self.kv_window_bytes_per_token)
        return sequences * (self.kv_full_bytes_per_token * context_length + windowed)

    def state_bytes(self, sequences: int) -> int:
        """Recurrent state of `sequences` sequences (serving engines' layout, model dtype)."""
        return sequences * self.state_layers * self.state_layer_bytes

    @property
    def kv_bytes_per_token_all_layers(self) -> int:
        return self.kv_full_bytes_per_token + sum(b for _, b in self.kv_window_bytes_per_token)


def _share(t: TensorSpec, spec: ModelSpec, placement: Placement) -> tuple[int, int]:
    """(numerator, denominator) of the tensor's bytes one GPU holds: routed experts over the expert
    ranks, attention over the attention TP ranks, the rest over TP (Placement)."""
    if t.component == "experts" and t.kind not in (NORM, OTHER):
        return 1, placement.expert_ranks
    return _tp_share(t, spec, placement.attention_tp if t.component == "attention" else placement.tensor_parallel)


def _tp_share(t: TensorSpec, spec: ModelSpec, tp: int) -> tuple[int, int]:
    """(numerator, denominator) of the tensor's bytes one TP rank holds."""
    if tp == 1 or t.component not in SHARDED_COMPONENTS or t.kind in (NORM, OTHER):
        return 1, 1
    leaf = t.name.rsplit(".", 2)[-2] if "." in t.name else t.name
    if spec.is_mla and leaf in _REPLICATED_MLA:
        return 1, 1
    if leaf in ("k_proj", "v_proj") and spec.n_kv_heads < tp:
        return kv_heads_per_rank(spec, tp), spec.n_kv_heads
    return 1, tp


def _global_stage_is_first(t: TensorSpec) -> bool:
    """Global tensors: embeddings (and their norm) on the first stage, final norm and lm_head on the last."""
    return t.component in ("embeddings", "position_embeddings") or (t.kind == NORM and "embed" in t.name)


def _tensor_stage_bytes(t: TensorSpec, spec: ModelSpec, precision, stage_range: range, first: bool,
                        last: bool, vocab_everywhere: bool = False) -> int:
    if t.layers is None:
        on_stage = first if _global_stage_is_first(t) else last
        if vocab_everywhere and t.kind == EMBEDDING or vocab_everywhere and t.component == "lm_head":
            on_stage = True
        return precision.tensor_bytes(t, spec) if on_stage else 0
    start, stop = max(t.layers.start, stage_range.start), min(t.layers.stop, stage_range.stop)
    if start >= stop:
        return 0
    return precision.tensor_bytes(replace(t, layers=range(start, stop)), spec)


def _checkpoint_stage_bytes(spec: ModelSpec, stage_range: range, first: bool, last: bool,
                            placement: Placement) -> tuple[int, int]:
    """Exact stored bytes of the checkpoint tensors on one GPU of a stage (layer index from the name),
    and the routed experts' part of them."""
    total = experts = 0
    for ct in spec.checkpoint.tensors:
        m = _LAYER_RE.search(ct.name)
        if m:
            on_stage = int(m.group(1)) in stage_range
        else:
            on_stage = first if ct.component in ("embeddings", "position_embeddings") else last
        if on_stage:
            ranks = (placement.expert_ranks if ct.component == "experts" else placement.attention_tp
                     if ct.component == "attention" else placement.tensor_parallel)
            size = ceil(ct.n_bytes / (ranks if ct.component in SHARDED_COMPONENTS else 1))
            total += size
            experts += size if ct.component == "experts" else 0
    return total, experts


def _rank_spec(spec: ModelSpec, tp: int) -> ModelSpec:
    if tp == 1:
        return spec
    r = spec.recurrent
    # the recurrent mixers shard their heads / channels over the TP ranks (vLLM's
    # MambaStateShapeCalculator divides conv_dim and the heads by tp_world_size)
    shard = r and replace(r, conv_channels=ceil(r.conv_channels / tp), state_values=ceil(r.state_values / tp),
                          heads=ceil(r.heads / tp), key_heads=ceil(r.key_heads / tp))
    # layer kinds with KV heads of their own split them alike (at least one per GPU)
    kinds = tuple((kind, KVGeometry(max(1, g.n_kv_heads // tp), g.head_dim, g.v_head_dim))
                  for kind, g in spec.kv_geometry_by_kind)
    return replace(spec, n_heads=spec.n_heads // tp, n_kv_heads=kv_heads_per_rank(spec, tp),
                   d_ff=ceil(spec.d_ff / tp), d_ff_expert=ceil(spec.d_ff_expert / tp), recurrent=shard or None,
                   kv_geometry_by_kind=kinds)


def build_stages(spec: ModelSpec, precision, placement: Placement, kv_dtype: str, *,
                 embedding_on_host: bool = False, tied_copy_on_last: bool = False,
                 indexer: str = INDEXER_AT_KV_DTYPE, vocab_everywhere: bool = False) -> list[Stage]:
    """The stages of `placement` with weights in `precision`, a format object of sizer.quant (its
    CheckpointFormat sizes the checkpoint's own stored bytes from its headers).

    embedding_on_host: the input embedding stays in host memory (llama.cpp).
    tied_copy_on_last: with several stages, a tied embedding is copied to the last stage as the
    output matrix (vLLM, llama.cpp).
    indexer: how the engine stores sparse-attention indexer keys (sizer.calc.kv: in the KV dtype, or
    vLLM's fp8 with per-128 scales).
    vocab_everywhere: every stage builds the input embedding and the lm_head (vLLM's models of some
    families create both with no pipeline-rank guard), a tied one once.
    """
    tp, pp = placement.tensor_parallel, placement.pipeline_parallel
    rank = _rank_spec(spec, placement.attention_tp)
    if placement.attention_tp != tp:             # the MLP and experts still split over all TP ranks
        rank = replace(rank, d_ff=ceil(spec.d_ff / tp), d_ff_expert=ceil(spec.d_ff_expert / tp))
    layer_kv = [kv_layer_bytes_per_token(rank, i, kv_dtype, indexer) for i in range(spec.n_layers)]
    # one token in one KV layer, for vLLM's page sizing (the largest where the layers differ)
    kv_layer_bytes = max(layer_kv, default=Fraction(0))
    compute_bytes = getattr(precision, "compute_bytes", 2)
    stages = []
    for index, layers in enumerate(stage_layers(spec.n_layers, pp)):
        first, last = index == 0, index == pp - 1
        weights = host = experts = 0
        if precision.stored:
            weights, experts = _checkpoint_stage_bytes(spec, layers, first, last, placement)
        else:
            for t in spec.tensors:
                num, den = _share(t, spec, placement)
                size = ceil(_tensor_stage_bytes(t, spec, precision, layers, first, last, vocab_everywhere)
                            * num / den)
                if embedding_on_host and t.component == "embeddings" and t.kind == EMBEDDING:
                    host += size
                    size = 0
                weights += size
                experts += size if t.component == "experts" else 0
                if tied_copy_on_last and last and (pp > 1 or embedding_on_host) and spec.tied_embeddings \
                        and t.component == "embeddings" and t.kind == EMBEDDING and not vocab_everywhere:
                    weights += ceil(precision.tensor_bytes(replace(t, component="lm_head"), spec) * num / den)
        kinds = [spec.layer_types[i] for i in layers]
        kv_layers = [i for i in layers if spec.layer_types[i] in KV_KINDS]
        layer_windows = tuple(window_of(spec, spec.layer_types[i]) for i in kv_layers)
        full = sum(layer_kv[i] for i in kv_layers if window_of(spec, spec.layer_types[i]) is None)
        by_window: dict[int, Fraction] = {}
        for i, w in zip(kv_layers, layer_windows):
            if w is not None:
                by_window[w] = by_window.get(w, 0) + layer_kv[i]
        windows = tuple((w, ceil(b)) for w, b in by_window.items())
        n_state = sum(1 for k in kinds if k in STATE_KINDS) if spec.recurrent else 0
        stages.append(Stage(index, layers, first, last, weights, ceil(full), windows,
                            rank, host, experts,
                            precision.int8_mlp(spec), n_state, ceil(kv_layer_bytes),
                            state_bytes_per_layer(rank, compute_bytes),
                            state_bytes_per_layer(rank, LLAMACPP_STATE_BYTES),
                            transformers_state_bytes(rank, compute_bytes, 1) // max(1, rank.n_state_layers),
                            layer_windows))
    return stages
