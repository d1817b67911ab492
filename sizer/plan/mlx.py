"""mlx-lm on Apple Silicon (`mlx_lm.server`, LM Studio's MLX runtime): weights and KV cache as mlx-lm stores them.

Sources (docs/reference/mlx.md): mlx_lm/utils.py quantize_model, mlx_lm/convert.py, mlx_lm/models/cache.py and
mlx_lm/generate.py at mlx-lm 0.32.2. Memory only: mlx runs on Apple's unified memory, limited by the Metal
working set (the catalog's `gpu_memory_limit_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sizer.errors import UsageError
from sizer.spec import SLIDING_ATTENTION, ModelSpec, TensorSpec

KV_STEP_TOKENS = 256            # KVCache.step / RotatingKVCache.step: the cache grows in steps of 256 tokens
MLX_LM_VERSION = "0.32.2"          # the release read
PREFILL_STEP_TOKENS = 2048      # generate.py: prefill_step_size default
MODEL_DTYPE_BYTES = 2           # bf16 / fp16: convert.py casts the unquantized parameters to config's torch_dtype
QUANTIZED_KINDS = ("linear", "embedding")   # modules with to_quantized: nn.Linear, nn.Embedding (SwitchLinear per expert)
ROUTER_8BIT_FAMILIES = ("qwen3_moe", "qwen3_next")   # their quant_predicate: "mlp.gate" at 8 bits, groups of 64
ROUTER_TENSOR = "layers.mlp.gate.weight"


@dataclass(frozen=True)
class MlxPrecision:
    """An mlx-lm affine quantization (`mlx_lm.convert -q --q-bits B --q-group-size G`), or none (bf16)."""

    name: str
    bits: int | None            # None: the model dtype, unquantized
    group_size: int = 64


PRECISIONS = {p.name: p for p in (
    MlxPrecision("mlx-bf16", None),
    *(MlxPrecision(f"mlx-{b}bit", b) for b in (2, 3, 4, 5, 6, 8)),
    *(MlxPrecision(f"mlx-{b}bit-g{g}", b, g) for b in (4, 8) for g in (32, 128)),
)}


def get_mlx_precision(name: str) -> MlxPrecision:
    try:
        return PRECISIONS[name]
    except KeyError:
        raise UsageError(f"--engine mlx needs an MLX precision: {', '.join(PRECISIONS)} (got {name!r})") from None


def is_quantized(tensor: TensorSpec, group_size: int) -> bool:
    """quantize_model's predicate: a Linear / Embedding weight whose last dimension divides by the group size."""
    return tensor.kind in QUANTIZED_KINDS and len(tensor.shape) == 2 and tensor.in_features % group_size == 0


def quantized_tensor_bytes(rows: int, cols: int, bits: int, group_size: int) -> int:
    """One quantized weight: uint32-packed values plus one scale and one bias per group, in the model dtype."""
    packed_bytes = rows * (cols * bits // 32) * 4
    scales_and_biases_bytes = 2 * rows * (cols // group_size) * MODEL_DTYPE_BYTES
    return packed_bytes + scales_and_biases_bytes


def tensor_precision(spec: ModelSpec, tensor: TensorSpec, precision: MlxPrecision) -> MlxPrecision:
    """The model's own quant_predicate where mlx-lm has one: Qwen3 MoE routers stay at 8 bits."""
    if precision.bits is not None and spec.family in ROUTER_8BIT_FAMILIES and tensor.name == ROUTER_TENSOR:
        return MlxPrecision("mlx-8bit", 8, 64)
    return precision


def tensor_bytes(tensor: TensorSpec, precision: MlxPrecision) -> int:
    """All copies of one tensor as mlx-lm saves and loads it."""
    if precision.bits is not None and is_quantized(tensor, precision.group_size):
        rows, cols = tensor.shape
        return tensor.copies * quantized_tensor_bytes(rows, cols, precision.bits, precision.group_size)
    return tensor.params * MODEL_DTYPE_BYTES


def weights_bytes(spec: ModelSpec, precision: MlxPrecision) -> int:
    """The model's weights in mlx-lm's format (tied embeddings are one tensor in the spec: stored once)."""
    return sum(tensor_bytes(t, tensor_precision(spec, t, precision)) for t in spec.tensors)


def kv_capacity_tokens(context_tokens: int, window_tokens: int | None = None, max_kv_size: int | None = None) -> int:
    """Tokens one layer's cache holds: KVCache rounds up to 256-token steps; a RotatingKVCache stops at its size."""
    steps = -(-context_tokens // KV_STEP_TOKENS)
    capacity = steps * KV_STEP_TOKENS
    limit = min((x for x in (window_tokens, max_kv_size) if x), default=None)
    return capacity if limit is None else min(capacity, limit)


def kv_cache_bytes(spec: ModelSpec, context_tokens: int, batch: int = 1, max_kv_size: int | None = None) -> int:
    """Keys and values, [B, n_kv_heads, capacity, head_dim] per attention layer, in the model dtype."""
    if spec.is_mla or spec.recurrent is not None:
        raise UsageError(f"--engine mlx models standard attention caches only; {spec.name} is not one")
    per_token_bytes = spec.n_kv_heads * (spec.head_dim + spec.v_head_dim) * MODEL_DTYPE_BYTES
    total_bytes = 0
    for kind in spec.layer_types:
        window = spec.sliding_window if kind == SLIDING_ATTENTION else None
        total_bytes += batch * per_token_bytes * kv_capacity_tokens(context_tokens, window, max_kv_size)
    return total_bytes


def require_apple(gpu_vendor: str, gpu_name: str) -> None:
    """mlx's Metal backend only: refuse any other GPU in one line (mlx-lm's `cuda13` extra, mlx's CUDA
    backend, is not modelled)."""
    if gpu_vendor != "apple":
        raise UsageError(f"--engine mlx is modelled on Apple Silicon (Metal) only; {gpu_name} is not an Apple GPU "
                         "(mlx's CUDA backend is not modelled): use --engine llamacpp, vllm or sglang")


def prefill_step_bytes(spec: ModelSpec, context_tokens: int) -> int:
    """One prefill step's largest intermediates: the MLP's gate, up and their product for up to 2048 tokens
    (generate.py feeds the prompt in steps of prefill_step_size; attention is mx.fast.scaled_dot_product_attention,
    which does not keep the scores). An estimate, not validated against a measured peak."""
    step_tokens = min(context_tokens, PREFILL_STEP_TOKENS)
    d_ff = spec.d_ff or spec.d_ff_expert * max(spec.n_experts_active, 1)
    return step_tokens * 3 * d_ff * MODEL_DTYPE_BYTES


@dataclass(frozen=True)
class MlxPlan:
    """One model on one Mac under mlx-lm: what it holds against the Metal working-set limit."""

    model: str
    gpu: str
    precision: str
    context_tokens: int
    batch: int
    weights_bytes: int
    kv_cache_bytes: int
    prefill_bytes: int
    limit_bytes: int            # the GPU wired limit (the catalog's gpu_memory_limit_bytes)
    launch: str

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.prefill_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.limit_bytes


def mlx_repo(spec: ModelSpec, precision: MlxPrecision) -> str:
    """The mlx-community repository name pattern: <model>-4bit, -8bit, -bf16 (group size 64 only)."""
    suffix = precision.name.removeprefix("mlx-")
    return f"mlx-community/<{spec.name}>-{suffix}"


def plan_mlx(spec: ModelSpec, gpu, limit_bytes: int, precision_name: str, context_tokens: int, batch: int = 1,
             max_kv_size: int | None = None, lmstudio: bool = False) -> MlxPlan:
    """Weights, KV cache and one prefill step against the Mac's GPU wired limit."""
    require_apple(gpu.vendor, gpu.name)
    precision = get_mlx_precision(precision_name)
    repo = mlx_repo(spec, precision)
    launch = (f"lms load {repo} --context-length {context_tokens}" if lmstudio
              else f"mlx_lm.server --model {repo}" + (f" --max-kv-size {max_kv_size}" if max_kv_size else ""))
    return MlxPlan(spec.name, gpu.name, precision.name, context_tokens, batch, weights_bytes(spec, precision),
                   kv_cache_bytes(spec, context_tokens, batch, max_kv_size), prefill_step_bytes(spec, context_tokens),
                   limit_bytes, launch)


def parse_mlx_args(text: str | None) -> int | None:
    """--engine-args for mlx: "--max-kv-size N" (mlx_lm.server's flag; others change no memory sizer models)."""
    words = (text or "").split()
    for i, word in enumerate(words):
        if word.startswith("--max-kv-size"):
            value = word.partition("=")[2] or (words[i + 1] if i + 1 < len(words) else "")
            if not value.isdigit() or int(value) <= 0:
                raise UsageError(f"--max-kv-size needs a positive number of tokens (got {value!r})")
            return int(value)
    return None


MLX_COLUMNS = ("model", "gpu", "precision", "context_tokens", "batch", "weights_bytes", "kv_cache_bytes",
               "prefill_bytes", "total_bytes", "limit_bytes", "fits", "launch")


def plan_row(plan: MlxPlan) -> dict:
    return {c: getattr(plan, c) for c in MLX_COLUMNS}


def render_mlx(plans: list[MlxPlan], fmt: str) -> str:
    """The plans as a table (or json / csv / markdown)."""
    import json

    from sizer.render import to_csv
    from sizer.units import UNITS_NOTE, fmt_gib

    rows = [plan_row(p) for p in plans]
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "csv":
        return to_csv(rows, MLX_COLUMNS)
    from tabulate import tabulate

    table = tabulate([[p.precision, "fits" if p.fits else "does-not-fit", fmt_gib(p.weights_bytes),
                       fmt_gib(p.kv_cache_bytes), fmt_gib(p.prefill_bytes), fmt_gib(p.total_bytes),
                       fmt_gib(p.limit_bytes)] for p in plans],
                     headers=["precision", "verdict", "weights GiB", "KV GiB", "prefill GiB", "total GiB", "GPU limit GiB"],
                     disable_numparse=True, tablefmt="github" if fmt == "markdown" else "simple")
    lines = [f"{p.model} on {p.gpu} under mlx-lm {MLX_LM_VERSION}, {p.context_tokens} tokens x {p.batch}: "
             f"launch: {p.launch}" for p in plans]
    return table + "\n" + "\n".join(lines) + f"\n{UNITS_NOTE}\n"
