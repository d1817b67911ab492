"""llama.cpp as configured: where its layers, KV cache and compute buffers go, per device.

What llama.cpp allocates at startup (docs/reference/llamacpp-memory.md has the source lines):
- weights: the token embedding always in host memory; with `-ngl N` the last layers go to the GPUs
  and the output head counts as one more layer (builds after ~b4600 give it to the GPU first);
  `--split-mode layer` cuts the offloaded layers over the GPUs by cumulative fractions of
  `--tensor-split` (default: each device's free memory); `--n-cpu-moe N` / `-cmoe` / `-ot exps=CPU`
  keep routed experts in host memory;
- KV cache: per layer, with its layer's device (host memory with `--no-kv-offload`), n_ctx cells
  (padded to 256), sliding-window layers min(n_ctx, n_swa x n_seq + n_ubatch) padded;
- compute buffers: the worst-case graph at n_ubatch tokens, allocated by ggml-alloc per device
  (sizer.plan.llamacpp_graph); the host's buffer holds the graph's inputs; with pipeline
  parallelism (several GPUs, all layers offloaded) the inputs of each device are kept n_copies times;
- output buffer: n_seq_max x n_vocab x 4 bytes of logits (+ n_embd x 4 for embeddings), in host memory.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field, replace
from functools import lru_cache
from math import ceil

from sizer.plan.llamacpp_graph import (F32, GraphSettings, GraphShape, compute_buffer_bytes, host_compute_bytes,
                                       KQ_MASK_PAD, I32)

KV_PAD_FLASH, KV_PAD = 256, 32      # llama_kv_cache get_padding: n_ctx rounded up to 256 with flash attention, else 32
DEFAULT_N_CTX = 4096                # llama-server / llama-cli -c default (0 = the model's trained context)
DEFAULT_N_BATCH = 2048
DEFAULT_N_UBATCH = 512
PIPELINE_COPIES = 4                 # LLAMA_SCHED_MAX_COPIES: input copies kept with pipeline parallelism
FIT_MARGIN_BYTES = 1024 * 2**20     # --fit: 1024 MiB kept free per device
ALL_LAYERS = 999                    # -ngl 999 / all / -1: every layer and the output head
# bytes per value of llama.cpp's KV cache types (-ctk / -ctv): ggml block size and bytes per block
KV_TYPE_BYTES = {"f32": (1, 4), "f16": (1, 2), "bf16": (1, 2), "q8_0": (32, 34), "q4_0": (32, 18),
                 "q4_1": (32, 20), "iq4_nl": (32, 18), "q5_0": (32, 22), "q5_1": (32, 24)}
HOST = "host"


@dataclass(frozen=True)
class LlamaCppSettings:
    """llama-server's memory settings (its flag names in comments)."""

    n_ctx: int | None = None            # -c: total cells (None: the plan's context x parallel)
    n_batch: int = DEFAULT_N_BATCH      # -b
    n_ubatch: int = DEFAULT_N_UBATCH    # -ub
    n_gpu_layers: int = ALL_LAYERS      # -ngl (999 / all: everything)
    flash_attn: str = "auto"            # -fa on|off|auto (auto: on where the backend supports it)
    n_seq_max: int | None = None        # -np / --parallel (None: the plan's batch size)
    kv_unified: bool = False            # -kvu
    type_k: str = "f16"                 # -ctk
    type_v: str = "f16"                 # -ctv
    n_cpu_moe: int = 0                  # --n-cpu-moe: the first N layers' experts in host memory
    cpu_moe: bool = False               # -cmoe: every layer's experts in host memory
    override_tensor: tuple[str, ...] = ()   # -ot pattern=buffer
    split_mode: str = "layer"           # -sm none|layer|row
    tensor_split: tuple[float, ...] = ()    # -ts 3,1
    main_gpu: int = 0                   # -mg
    kv_offload: bool = True             # -nkvo turns it off
    mmap: bool = True
    mlock: bool = False
    fit: bool = False                   # --fit on given: keep FIT_MARGIN_BYTES free per device
    fit_off: bool = False               # --fit off: llama.cpp keeps -ngl as given even where it does not fit
    n_gpu_layers_set: bool = False      # -ngl given as a number or all (auto: unset, --fit chooses)
    fit_target_bytes: int = FIT_MARGIN_BYTES   # -fitt / --fit-target MiB: what --fit keeps free per device
    output_first: bool = True           # -ngl counts the output head first (builds after ~b4600)
    pipeline_copies: int | None = None  # None: as llama.cpp decides

    def __post_init__(self):
        for t in (self.type_k, self.type_v):
            if t not in KV_TYPE_BYTES:
                raise ValueError(f"KV cache type {t!r}: llama.cpp takes {', '.join(KV_TYPE_BYTES)}")

    @property
    def flash_attention(self) -> bool:
        return self.flash_attn != "off"

    @property
    def auto_layers(self) -> bool:
        """Whether llama.cpp's --fit (on by default) may lower -ngl: common/fit.cpp aborts its layer search
        when -ngl, --tensor-split or tensor overrides (-ot, --n-cpu-moe, -cmoe) are set by the user, or
        with --split-mode row."""
        return not (self.fit_off or self.n_gpu_layers_set or any(self.tensor_split) or self.override_tensor
                    or self.cpu_moe or self.n_cpu_moe or self.split_mode == "row")


def parse_n_gpu_layers(value) -> int:
    """-ngl N, 999, -1, all or auto (auto and all: every layer; --fit then lowers it where memory is short)."""
    text = str(value).strip().lower()
    if text in ("all", "auto", "-1"):
        return ALL_LAYERS
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"-ngl {value!r}: expected a number of layers, all or auto") from None
    if n < 0:
        raise ValueError(f"-ngl {value!r}: expected a number of layers, all or auto")
    return n


def parse_tensor_split(value) -> tuple[float, ...]:
    """--tensor-split 3,1 (llama.cpp also takes 3/1): proportions per device."""
    parts = [p for p in str(value).replace("/", ",").split(",") if p.strip()]
    try:
        split = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"--tensor-split {value!r}: expected proportions such as 3,1") from None
    if not split or any(x < 0 for x in split):
        raise ValueError(f"--tensor-split {value!r}: expected proportions such as 3,1")
    return split


SPLIT_MODES = ("none", "layer", "row")


def settings_from_flags(flags: dict) -> LlamaCppSettings:
    """LlamaCppSettings from llama-server's flags as sizer.plan.engine_args reads them (setting -> value)."""
    out: dict = {}
    simple = {"batch_size": "n_batch", "ubatch_size": "n_ubatch", "parallel": "n_seq_max", "n_cpu_moe": "n_cpu_moe",
              "main_gpu": "main_gpu", "max_model_len": "n_ctx"}
    for flag, name in simple.items():
        if flags.get(flag) is not None:
            out[name] = int(flags[flag])
    for flag, name in (("cache_type_k", "type_k"), ("cache_type_v", "type_v")):
        if flags.get(flag) is not None:
            out[name] = str(flags[flag]).lower()
    if flags.get("n_gpu_layers") is not None:
        out["n_gpu_layers"] = parse_n_gpu_layers(flags["n_gpu_layers"])
        out["n_gpu_layers_set"] = str(flags["n_gpu_layers"]).strip().lower() != "auto"
    if flags.get("flash_attn") is not None:
        out["flash_attn"] = str(flags["flash_attn"])
    if flags.get("split_mode") is not None:
        mode = str(flags["split_mode"]).lower()
        if mode not in SPLIT_MODES:
            raise ValueError(f"--split-mode {flags['split_mode']!r}: expected none, layer or row")
        out["split_mode"] = mode
    if flags.get("tensor_split") is not None:
        out["tensor_split"] = parse_tensor_split(flags["tensor_split"])
    if flags.get("override_tensor"):
        out["override_tensor"] = tuple(p for p in str(flags["override_tensor"]).split(",") if p)
    for flag, name in (("cpu_moe", "cpu_moe"), ("kv_unified", "kv_unified"), ("mlock", "mlock")):
        if flags.get(flag) is not None:
            out[name] = bool(flags[flag])
    if flags.get("no_kv_offload"):
        out["kv_offload"] = False
    if flags.get("no_mmap"):
        out["mmap"] = False
    if flags.get("mmap") is not None:
        out["mmap"] = bool(flags["mmap"])
    if flags.get("fit") is not None:
        out["fit"] = str(flags["fit"]) != "off"
        out["fit_off"] = str(flags["fit"]) == "off"
    if flags.get("fit_target") is not None:
        first = str(flags["fit_target"]).split(",")[0].strip()
        try:
            out["fit_target_bytes"] = int(first) * 2**20
        except ValueError:
            raise ValueError(f"--fit-target {flags['fit_target']!r}: expected MiB per device, e.g. 1024") from None
    return LlamaCppSettings(**out)


@dataclass(frozen=True)
class LayerWeights:
    """A model's weights as llama.cpp places them: per layer, the output head and the input embedding."""

    layers: tuple[int, ...]             # bytes per repeating layer
    experts: tuple[int, ...]            # of which routed experts
    output: int                         # final norm and lm_head (a tied embedding's copy)
    input: int                          # the token embedding (always host memory)


def layer_weights(spec, precision) -> LayerWeights:
    """Per-layer bytes of `spec` in `precision` (sizer.quant format; GGUF mixes at their per-tensor types)."""
    n = spec.n_layers
    layers, experts = [0] * n, [0] * n
    output = inp = 0
    for t in spec.tensors:
        if t.layers is None:
            size = precision.tensor_bytes(t, spec)
            if t.component in ("embeddings", "position_embeddings") and t.kind == "embedding":
                inp += size
                if spec.tied_embeddings and t.component == "embeddings":
                    output += precision.tensor_bytes(replace(t, component="lm_head"), spec)
            else:
                output += size
            continue
        for il in t.layers:
            size = precision.tensor_bytes(replace(t, layers=range(il, il + 1)), spec)
            layers[il] += size
            if t.component == "experts":
                experts[il] += size
    return LayerWeights(tuple(layers), tuple(experts), output, inp)


# ---------------------------------------------------------------------------------------------
# where each layer goes


def split_points(n_devices: int, tensor_split: tuple[float, ...] = (), free_bytes: tuple[int, ...] = ()) -> list[float]:
    """llama_model::load_tensors: cumulative fractions of --tensor-split (all zero: each device's free memory)."""
    weights = list(tensor_split[:n_devices]) + [0.0] * (n_devices - len(tensor_split[:n_devices]))
    if not any(weights):
        weights = list(free_bytes) if free_bytes else [1.0] * n_devices
    total, points = 0.0, []
    for w in weights:
        total += w
        points.append(total)
    return [p / total for p in points]


def layer_devices(n_layer: int, n_gpu_layers: int, n_devices: int, tensor_split: tuple[float, ...] = (),
                  free_bytes: tuple[int, ...] = (), output_first: bool = True, split_mode: str = "layer",
                  main_gpu: int = 0) -> list[int | str]:
    """Device index (or HOST) of layers 0..n_layer-1 and, last, of the output head (index n_layer).

    The last n_gpu_layers "layers" go to the GPUs, the output head counting as one; newer builds count
    it first (i_gpu_start = n_layer + 1 - ngl), older ones last (i_gpu_start = n_layer - ngl)."""
    if n_devices == 0:
        return [HOST] * (n_layer + 1)
    start = max(n_layer + 1 - n_gpu_layers, 0) if output_first else max(n_layer - n_gpu_layers, 0)
    active = min(n_gpu_layers, n_layer + 1)
    if split_mode in ("none", "row"):          # row: the matrices are split, every layer's place is main_gpu
        n_devices, points = 1, [1.0]
    else:
        points = split_points(n_devices, tensor_split, free_bytes)
    out: list[int | str] = []
    for il in range(n_layer + 1):
        if il < start or il - start >= active:
            out.append(HOST)
        else:
            device = min(bisect_right(points, (il - start) / active), n_devices - 1)
            out.append(main_gpu if split_mode in ("none", "row") else device)
    return out


# ---------------------------------------------------------------------------------------------
# KV cache


def kv_type_bytes(n_values: int, kv_type: str) -> int:
    block, size = KV_TYPE_BYTES[kv_type]
    return ceil(n_values / block) * size


def padded_cells(n: int, pad: int = KV_PAD_FLASH) -> int:
    return ceil(n / pad) * pad


def kv_cells(n_ctx: int, window: int | None, n_seq: int, n_ubatch: int, pad: int = KV_PAD_FLASH) -> int:
    """Cells of one layer's cache: n_ctx (padded); a sliding-window layer keeps n_swa per sequence plus a
    micro-batch (llama_kv_cache_iswa), never more than n_ctx."""
    full = padded_cells(n_ctx, pad)
    if window is None:
        return full
    return min(full, padded_cells(window * n_seq + n_ubatch, pad))


def kv_layer_bytes(cells: int, n_embd_k: int, n_embd_v: int, type_k: str, type_v: str) -> int:
    return cells * (kv_type_bytes(n_embd_k, type_k) + kv_type_bytes(n_embd_v, type_v))


# ---------------------------------------------------------------------------------------------
# the plan


@dataclass
class DeviceMemory:
    """What llama.cpp allocates on one device (or, for HOST, in system memory)."""

    device: int | str
    weights: int = 0
    kv_cache: int = 0
    compute: int = 0
    output: int = 0
    layers: list[int] = field(default_factory=list)
    output_head: bool = False

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.output


@dataclass(frozen=True)
class LlamaCppPlan:
    devices: tuple[DeviceMemory, ...]       # the GPUs, in order
    host: DeviceMemory
    n_gpu_layers: int                       # layers offloaded, the output head counted (as llama.cpp prints)
    n_ctx: int
    flash_attn: bool
    pipeline_copies: int
    input_bytes: int = 0                    # the token embedding in host memory (looked up, not read per token)


def graph_shape(spec) -> GraphShape:
    """The graph dimensions of a sizer ModelSpec."""
    family = (spec.family or "").lower()
    arch = "gptneox" if family in ("gpt_neox", "gptneox") else "bert" if family in ("bert", "nomic_bert") else "llama"
    swa = tuple(i for i, k in enumerate(spec.layer_types) if k == "sliding_attention")
    return GraphShape(arch, spec.n_layers, spec.hidden_size, spec.n_heads, spec.n_kv_heads, spec.head_dim,
                      spec.v_head_dim or spec.head_dim, spec.vocab_size, spec.d_ff or spec.d_ff_expert,
                      spec.n_experts, spec.n_experts_active, spec.d_ff_expert, arch != "bert", arch != "bert", swa)


@dataclass(frozen=True)
class LlamaModel:
    """What the plan needs of a model: its graph shape, each layer's K and V values per cell (0, 0 for a
    layer without a cache) and window (None: full attention), and its weights when known."""

    shape: GraphShape
    kv_values: tuple[tuple[int, int], ...]
    windows: tuple[int | None, ...]
    weights: LayerWeights | None = None
    largest_matrix_fraction: float = 0.0     # the largest weight matrix's share of a layer's bytes


def model_from_spec(spec, precision) -> LlamaModel:
    """The model as the plan needs it; cached, as the searches for the longest context and the most
    sequences plan one model many times (a spec or format that cannot be hashed is built afresh)."""
    try:
        hash((spec, precision))
    except TypeError:
        return _model_from_spec(spec, precision)
    return _cached_model(spec, precision)


@lru_cache(maxsize=32)
def _cached_model(spec, precision) -> LlamaModel:
    return _model_from_spec(spec, precision)


def _model_from_spec(spec, precision) -> LlamaModel:
    from sizer.calc.kv import kv_layer_bytes_per_token, window_of

    shape = graph_shape(spec)
    kv = []
    for i, kind in enumerate(spec.layer_types):
        values = int(kv_layer_bytes_per_token(spec, i, "fp16")) // 2
        k = values * spec.head_dim // (spec.head_dim + (spec.v_head_dim or spec.head_dim))
        kv.append((k, values - k))
    linear = [t.n_elements // max(1, len(t.layers)) for t in spec.tensors if t.layers is not None and t.kind == "linear"]
    fraction = max(linear) / sum(linear) if linear else 0.0
    return LlamaModel(shape, tuple(kv), tuple(window_of(spec, k) for k in spec.layer_types),
                      layer_weights(spec, precision) if precision is not None else None, fraction)


def plan_llamacpp(model: LlamaModel, settings: LlamaCppSettings, n_devices: int, context_length: int,
                  free_bytes: tuple[int, ...] = ()) -> LlamaCppPlan:
    """Memory per device as llama.cpp allocates it for `model` with `settings` on `n_devices` GPUs
    (0: CPU only). context_length: tokens per sequence when settings.n_ctx is None (with -kvu the slots
    share one cache of context_length cells; without, each slot has its own share of n_ctx)."""
    s = settings if settings.n_seq_max is not None else replace(settings, n_seq_max=1)
    n_ctx = s.n_ctx if s.n_ctx else context_length * (1 if s.kv_unified else s.n_seq_max)
    flash = s.flash_attention and n_devices > 0
    where = layer_devices(model.shape.n_layer, s.n_gpu_layers, n_devices, s.tensor_split, free_bytes,
                          s.output_first, s.split_mode, s.main_gpu)
    gpus = tuple(DeviceMemory(d) for d in range(n_devices))
    host = DeviceMemory(HOST)
    devices = {HOST: host, **{g.device: g for g in gpus}}
    _place_weights(model, s, where, devices)
    if s.split_mode == "row" and n_devices > 1:
        _split_rows(gpus, s.main_gpu, split_points(n_devices, s.tensor_split, free_bytes))
    _place_kv(model, s, where, devices, n_ctx, KV_PAD_FLASH if flash else KV_PAD)
    copies = _place_compute(model, s, where, gpus, host, n_ctx, flash)
    host.output = output_buffer_bytes(model.shape, s.n_seq_max)
    offloaded = sum(1 for d in where if d != HOST)
    return LlamaCppPlan(gpus, host, offloaded, n_ctx, flash, copies, model.weights.input if model.weights else 0)


def _place_weights(model: LlamaModel, s: LlamaCppSettings, where: list, devices: dict) -> None:
    """Each layer's weights with its device, routed experts on the host where the flags say, the output
    head with its slot, the token embedding on the host."""
    w, host = model.weights, devices[HOST]
    for il, d in enumerate(where[:-1]):
        devices[d].layers.append(il)
        if w:
            on_host = s.cpu_moe or il < s.n_cpu_moe or any(_overrides_experts(p) for p in s.override_tensor)
            moved = w.experts[il] if on_host and d != HOST else 0
            devices[d].weights += w.layers[il] - moved
            host.weights += moved
    devices[where[-1]].output_head = True
    if w:
        devices[where[-1]].weights += w.output
        host.weights += w.input


def _place_kv(model: LlamaModel, s: LlamaCppSettings, where: list, devices: dict, n_ctx: int, pad: int) -> None:
    """Each layer's K and V cache with its layer's device (on the host with --no-kv-offload)."""
    for il, d in enumerate(where[:-1]):
        k_values, v_values = model.kv_values[il]
        if k_values or v_values:
            cells = kv_cells(n_ctx, model.windows[il], s.n_seq_max, s.n_ubatch, pad)
            target = devices[d if s.kv_offload else HOST]
            target.kv_cache += kv_layer_bytes(cells, k_values, v_values, s.type_k, s.type_v)


def _place_compute(model: LlamaModel, s: LlamaCppSettings, where: list, gpus: tuple[DeviceMemory, ...],
                   host: DeviceMemory, n_ctx: int, flash: bool) -> int:
    """Each device's compute buffer (sizer.plan.llamacpp_graph); returns the pipeline copies."""
    shape, w = model.shape, model.weights
    pad = KV_PAD_FLASH if flash else KV_PAD
    all_offloaded = all(d != HOST for d in where)
    copies = s.pipeline_copies or (PIPELINE_COPIES if len(gpus) > 1 and all_offloaded and s.split_mode == "layer"
                                   and s.kv_offload else 1)
    n_kv = padded_cells(n_ctx, pad)
    widest = max((x for x in model.windows if x), default=0)
    n_kv_swa = min(n_kv, padded_cells(widest * s.n_seq_max + s.n_ubatch, pad)) if widest else None
    n_tokens = min(n_ctx, s.n_ubatch)
    graph = GraphSettings(n_tokens, n_kv, n_kv_swa, n_tokens, flash)
    extra_inputs = (copies - 1) * _graph_input_bytes(shape, graph)
    for g in gpus:
        if g.layers or g.output_head:
            layers = range(g.layers[0], g.layers[-1] + 1) if g.layers else range(0)
            g.compute = compute_buffer_bytes(shape, graph, layers, output=g.output_head) + extra_inputs
    if not gpus or len(host.layers) == shape.n_layer:
        host.compute = compute_buffer_bytes(shape, graph) + (host_compute_bytes(shape, graph) if gpus else 0)
        return copies
    host.compute = host_compute_bytes(shape, graph) + extra_inputs
    if host.layers:
        # the CPU layers' matrix products run on the GPU (ggml_backend_sched offloads ops whose weights sit
        # in host memory when the batch is large): it copies in one weight matrix and the K and V views
        k_values, v_values = model.kv_values[host.layers[0]]
        views = kv_layer_bytes(n_kv, k_values, v_values, s.type_k, s.type_v)
        matrix = int(w.layers[host.layers[0]] * model.largest_matrix_fraction) if w else 0
        next(g for g in gpus if g.layers or g.output_head).compute += views + matrix
    return copies


def _split_rows(gpus: tuple[DeviceMemory, ...], main_gpu: int, points: list[float]) -> None:
    """--split-mode row: each offloaded weight matrix is cut by rows over the GPUs at the --tensor-split
    fractions (the split buffer type); the KV cache and the compute buffer stay on the main GPU.
    Norms and biases are a negligible part of a layer and are split alike here."""
    total = gpus[main_gpu].weights
    shares = [b - a for a, b in zip([0.0] + points[:-1], points)]
    for g, share in zip(gpus, shares):
        g.weights = int(total * share)
    gpus[main_gpu].weights += total - sum(g.weights for g in gpus)


def _overrides_experts(pattern: str) -> bool:
    """-ot 'exps=CPU' style overrides: routed experts kept in host memory."""
    regex, _, buffer = pattern.partition("=")
    return buffer.upper().startswith("CPU") and "exps" in regex


def _graph_input_bytes(shape: GraphShape, g: GraphSettings) -> int:
    """A device split's inputs: the residual stream from the previous device, positions and the mask."""
    rows = -(-g.n_tokens // KQ_MASK_PAD) * KQ_MASK_PAD
    return g.n_tokens * shape.n_embd * F32 + g.n_tokens * I32 + g.n_kv * rows * F32


def output_buffer_bytes(shape: GraphShape, n_outputs_max: int, embeddings: bool = False) -> int:
    """llama_context's output buffer at startup: output_reserve(n_seq_max) rows of n_vocab float logits
    (and n_embd floats each when embeddings are asked for; an embedding model keeps only those).
    It grows later if a batch asks for more outputs (llama-perplexity); llama-server asks for one per sequence."""
    per_row = (shape.n_vocab if shape.has_output else 0) + (shape.n_embd if embeddings or not shape.has_output else 0)
    return n_outputs_max * per_row * F32
