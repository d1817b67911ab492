"""What every family normalizer shares: the tensor list, the config keys read alike across families
(head size, partial rotary, per-layer attention types, MoE numbers), and the ModelSpec they build.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from sizer.config import ConfigView
from sizer.errors import UnsupportedModelError
from sizer.families.vision import vision_note
from sizer.spec import BIAS, EMBEDDING, FULL_ATTENTION, LINEAR, NORM, OTHER, SLIDING_ATTENTION, ModelSpec, TensorSpec


class TensorList:
    """Collects the tensors of a model; `layers` defaults to every decoder layer."""

    def __init__(self, n_layers: int) -> None:
        self.all_layers = range(n_layers)
        self.items: list[TensorSpec] = []

    def linear(self, name: str, component: str, out_features: int, in_features: int, bias: bool = False,
               layers: range | None | str = "all", experts: int = 1, active: int | None = None) -> None:
        where = self.all_layers if layers == "all" else layers
        self.items.append(TensorSpec(f"{name}.weight", component, (out_features, in_features), LINEAR,
                                     where, experts, active))
        if bias:
            self.items.append(TensorSpec(f"{name}.bias", component, (out_features,), BIAS, where, experts, active))

    def attention(self, hidden: int, n_heads: int, n_kv_heads: int, head_dim: int, qkv_bias: bool = False,
                  o_bias: bool | None = None, prefix: str = "layers.self_attn") -> None:
        """q/k/v/o projections of standard multi-head attention (GQA/MQA by n_kv_heads): q_proj
        hidden -> heads x head_dim, k_proj and v_proj hidden -> kv heads x head_dim, o_proj back;
        o_proj's bias follows qkv_bias unless given."""
        self.linear(f"{prefix}.q_proj", "attention", n_heads * head_dim, hidden, qkv_bias)
        self.linear(f"{prefix}.k_proj", "attention", n_kv_heads * head_dim, hidden, qkv_bias)
        self.linear(f"{prefix}.v_proj", "attention", n_kv_heads * head_dim, hidden, qkv_bias)
        self.linear(f"{prefix}.o_proj", "attention", hidden, n_heads * head_dim, qkv_bias if o_bias is None else o_bias)

    def norm(self, name: str, size: int, bias: bool = False, layers: range | None | str = "all") -> None:
        where = self.all_layers if layers == "all" else layers
        self.items.append(TensorSpec(f"{name}.weight", "norms", (size,), NORM, where))
        if bias:
            self.items.append(TensorSpec(f"{name}.bias", "norms", (size,), NORM, where))

    def embedding(self, name: str, component: str, rows: int, cols: int) -> None:
        self.items.append(TensorSpec(f"{name}.weight", component, (rows, cols), EMBEDDING, None))

    def other(self, name: str, component: str, shape: tuple[int, ...], layers: range | None | str = "all") -> None:
        where = self.all_layers if layers == "all" else layers
        self.items.append(TensorSpec(name, component, shape, OTHER, where))

    def lm_head(self, vocab: int, hidden: int, tied: bool, bias: bool = False) -> None:
        """The output projection; a tied head shares the embedding matrix and adds nothing."""
        if not tied:
            self.items.append(TensorSpec("lm_head.weight", "lm_head", (vocab, hidden), LINEAR, None))
        if bias:
            self.items.append(TensorSpec("lm_head.bias", "lm_head", (vocab,), BIAS, None))


def decoder_shape(c: ConfigView) -> tuple[int, int, int, int, int, int]:
    """(hidden size, layers, attention heads, KV heads, head size, vocabulary) from the standard keys:
    KV heads default to the attention heads (MHA), the head size to head_dim_of."""
    hidden, n_layers = c.int("hidden_size"), c.int("num_hidden_layers")
    n_heads = c.int("num_attention_heads")
    n_kv = c.int("num_key_value_heads", default=n_heads)
    return hidden, n_layers, n_heads, n_kv, head_dim_of(c, hidden, n_heads), c.int("vocab_size")


def mtp_notes(c: ConfigView) -> list[str]:
    """The note for a checkpoint's multi-token-prediction layers (num_nextn_predict_layers,
    mtp_num_hidden_layers), which transformers does not load and sizer therefore does not count."""
    n = c.int("mtp_num_hidden_layers", "num_nextn_predict_layers", default=0, minimum=0)
    if not n:
        return []
    return [f"the checkpoint's {n} multi-token-prediction layer{'s' if n > 1 else ''} "
            "{} not counted (transformers does not load {})".format(*(("are", "them") if n > 1 else ("is", "it")))]


def head_dim_of(c: ConfigView, hidden: int, n_heads: int) -> int:
    """Explicit `head_dim` when the config has one (Gemma, Qwen3, Mistral Nemo), else hidden / heads."""
    return c.int("head_dim", default=None) or hidden // n_heads


def rotary_dim_of(c: ConfigView, head_dim: int, default: float = 1.0, keys: tuple[str, ...] = ("partial_rotary_factor",)
                ) -> int | None:
    """RoPE dimensions per head when only a fraction rotates (`partial_rotary_factor`, `rotary_pct`, at
    the top level or in transformers 5's `rope_parameters`; `default`, the config class's default);
    None when all of head_dim does."""
    nested = c.raw.get("rope_parameters")
    factor = default
    for source in (nested if isinstance(nested, dict) else {}, c.raw):
        found = [source[k] for k in keys if isinstance(source.get(k), (int, float)) and not isinstance(source[k], bool)]
        if found:
            factor = found[0]
    return None if factor == 1 else int(head_dim * factor)


def layer_types_of(c: ConfigView, n_layers: int, default_sliding: Callable[[int], bool]) -> tuple[tuple[str, ...], int | None]:
    """Per-layer attention type and the window: the config's `layer_types` when given, else the family rule."""
    window = c.int("sliding_window", default=None)
    given = c.str_list("layer_types", default=None)
    if given is not None:
        if len(given) != n_layers:
            raise UnsupportedModelError(f"{c.origin}: layer_types has {len(given)} entries for {n_layers} layers")
        types = tuple(SLIDING_ATTENTION if t == SLIDING_ATTENTION else FULL_ATTENTION for t in given)
    else:
        types = tuple(SLIDING_ATTENTION if window and default_sliding(i) else FULL_ATTENTION for i in range(n_layers))
    if SLIDING_ATTENTION not in types:
        window = None
    elif window is None:
        raise UnsupportedModelError(f"{c.origin}: sliding-attention layers but no sliding_window")
    return types, window


def gated_mlp(t: TensorList, prefix: str, component: str, hidden: int, d_ff: int, bias: bool = False,
               layers: range | None | str = "all", experts: int = 1, active: int | None = None) -> None:
    """gate_proj/up_proj: hidden -> d_ff; down_proj: d_ff -> hidden (SwiGLU / GeGLU)."""
    t.linear(f"{prefix}.gate_proj", component, d_ff, hidden, bias, layers, experts, active)
    t.linear(f"{prefix}.up_proj", component, d_ff, hidden, bias, layers, experts, active)
    t.linear(f"{prefix}.down_proj", component, hidden, d_ff, bias, layers, experts, active)


# Tensors transformers keeps in float32 whatever the load dtype (_keep_in_fp32_modules_strict; the
# non-strict list, e.g. gpt-oss's norms, applies to float16 loads only and is not modelled).
KEEP_FP32 = {
    "deepseek_v2": lambda t: t.component == "router",                       # gate.weight
    "deepseek_v3": lambda t: t.component == "router",
    "glm4_moe": lambda t: t.component == "router",                          # gate.weight
    "glm4_moe_lite": lambda t: t.component == "router",
    "deepseek_v32": lambda t: t.component == "router",                      # gate.weight (indexer.weights_proj:
    "glm_moe_dsa": lambda t: t.component == "router",                       # non-strict, float16 loads only)
    "mimo_v2_flash": lambda t: t.component == "router",                     # mlp.gate.weight
    "ernie4_5_moe": lambda t: t.component == "router",                      # gate.weight, e_score_correction_bias
    "nemotron_h": lambda t: t.component == "router",                        # mixer.gate.weight (created float32)
}


# The transformers release that started keeping them: DeepSeek V2/V3 list gate.weight in
# _keep_in_fp32_modules_strict from 5.24; 5.17-5.23 load the router in the load dtype (V3 kept only
# e_score_correction_bias, a buffer). Read from the modeling files of those releases' wheels.
KEEP_FP32_SINCE = {"deepseek_v2": (5, 24), "deepseek_v3": (5, 24)}


# Config keys of the model's maximum context, the first set wins (vLLM's _get_and_verify_max_len reads
# the same keys among its possible_keys).
MAX_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length")


def make_spec(c: ConfigView, family: str, name: str, t: TensorList, **numbers) -> ModelSpec:
    """The ModelSpec of tensors `t`; by default every layer has full attention and v_head_dim = head_dim."""
    keep = KEEP_FP32.get(family)
    if keep:
        t.items = [replace(x, fp32=True) if keep(x) else x for x in t.items]
    numbers.setdefault("layer_types", (FULL_ATTENTION,) * numbers["n_layers"])
    numbers.setdefault("sliding_window", None)
    numbers.setdefault("v_head_dim", numbers["head_dim"])
    notes = list(numbers.pop("notes", ()))
    if c.has_text_config:
        notes.append(vision_note(c))
    return ModelSpec(name=name, family=family, tensors=tuple(t.items), notes=tuple(notes),
                     max_context_length=c.int(*MAX_CONTEXT_KEYS, default=None),
                     max_context_key=c.key_of(*MAX_CONTEXT_KEYS),
                     **numbers)


def moe_numbers(c: ConfigView, family: str) -> tuple[int, int, int]:
    """(experts, experts per token, expert intermediate size); zeros for dense models."""
    n_experts = c.int("num_local_experts", "num_experts", "n_routed_experts", default=0, minimum=0)
    if not n_experts:
        return 0, 0, 0
    top_k = c.int("num_experts_per_tok", "experts_per_token", "num_experts_per_token")
    d_ff_expert = c.int("moe_intermediate_size", default=None) or c.int("intermediate_size")
    return n_experts, top_k, d_ff_expert


def moe_layer_indices(c: ConfigView, family: str, n_layers: int, n_experts: int) -> range | list[int]:
    """Decoder layers whose MLP is a mixture of experts."""
    if not n_experts:
        return []
    if family in ("qwen2_moe", "qwen3_moe"):
        step = c.int("decoder_sparse_step", default=1)
        dense = set(c.int_list("mlp_only_layers", default=[]))
        return [i for i in range(n_layers) if i not in dense and (i + 1) % step == 0]
    return range(n_layers)


def as_ranges(indices) -> list[range]:
    """Consecutive runs of layer indices as ranges (a TensorSpec repeats over one range)."""
    runs: list[range] = []
    for i in indices:
        if runs and runs[-1].stop == i:
            runs[-1] = range(runs[-1].start, i + 1)
        else:
            runs.append(range(i, i + 1))
    return runs
