"""How a model is laid out over GPUs: tensor parallelism inside a stage, pipeline stages of layers.

Memory is never pooled: each GPU holds its own share and must fit it. Tensor parallelism of degree
TP splits attention heads, MLP and expert intermediates, the embedding and lm_head over TP GPUs;
KV heads are split too, or replicated when there are fewer KV heads than TP (each GPU keeps one).
Pipeline parallelism of degree PP gives each stage a contiguous run of layers, the embedding to the
first stage and the final norm and lm_head to the last.
"""

from __future__ import annotations

from dataclasses import dataclass

from sizer.errors import UsageError
from sizer.spec import ModelSpec


@dataclass(frozen=True)
class Placement:
    """TP x PP, and for MoE serving the data-parallel layouts the engines offer.

    data_parallel (vLLM `--data-parallel-size`): replicas of the TP x PP layout, each with its own KV
    pool; with expert_parallel (`--enable-expert-parallel`) the routed experts are spread over all
    TP x DP GPUs instead of being split inside each replica. dp_attention (SGLang `--dp N
    --enable-dp-attention`): the DP ranks sit inside the TP group, attention runs with TP / DP ranks
    and the rest with all TP ranks, no GPU is added.
    """

    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    data_parallel: int = 1
    expert_parallel: bool = False
    dp_attention: bool = False

    @property
    def gpu_count(self) -> int:
        replicas = 1 if self.dp_attention else self.data_parallel
        return self.tensor_parallel * self.pipeline_parallel * replicas

    @property
    def attention_tp(self) -> int:
        """The ranks one layer's attention is split over."""
        return self.tensor_parallel // self.data_parallel if self.dp_attention else self.tensor_parallel

    @property
    def expert_ranks(self) -> int:
        """The ranks one MoE layer's routed experts are spread over."""
        if self.expert_parallel and not self.dp_attention:
            return self.tensor_parallel * self.data_parallel
        return self.tensor_parallel

    @property
    def label(self) -> str:
        extra = f" x DP{self.data_parallel}" if self.data_parallel > 1 else ""
        extra += " (attention DP)" if self.dp_attention else " + EP" if self.expert_parallel else ""
        return f"TP{self.tensor_parallel} x PP{self.pipeline_parallel}{extra}"

    @property
    def short(self) -> str:
        """"TP4xPP2", "TP4xPP1xDP2+EP": the layout column of fit's table."""
        text = f"TP{self.tensor_parallel}xPP{self.pipeline_parallel}"
        if self.data_parallel > 1:
            text += f"xDP{self.data_parallel}" + ("(attn)" if self.dp_attention else "+EP" if self.expert_parallel else "")
        return text


def stage_layers(n_layers: int, pipeline_parallel: int) -> list[range]:
    """Layers per stage, as even as possible; the remainder goes to the stages before the last,
    counting back from the second-to-last (vLLM's get_pp_indices), since the last holds lm_head."""
    sizes = [n_layers // pipeline_parallel] * pipeline_parallel
    for i in range(2, n_layers % pipeline_parallel + 2):
        sizes[-i] += 1
    ranges, start = [], 0
    for size in sizes:
        ranges.append(range(start, start + size))
        start += size
    return ranges


def kv_heads_per_rank(spec: ModelSpec, tensor_parallel: int) -> int:
    """KV heads one GPU stores: split over TP, at least one (replicated when fewer than TP).
    MLA keeps its single latent on every GPU."""
    if spec.is_mla:
        return spec.n_kv_heads
    return max(1, spec.n_kv_heads // tensor_parallel)


def tp_problem(spec: ModelSpec, tp: int) -> str | None:
    """Why tensor parallelism of degree `tp` cannot split this model, or None if it can."""
    if spec.n_heads % tp:
        return f"{spec.n_heads} attention heads are not divisible by tensor parallel {tp}"
    if not spec.is_mla and spec.n_kv_heads % tp and tp % spec.n_kv_heads:
        return f"{spec.n_kv_heads} KV heads can be neither split over nor replicated across tensor parallel {tp}"
    return None


def valid_layouts(spec: ModelSpec, gpu_count: int, node_size: int | None = None) -> list[Placement]:
    """Every TP x PP = gpu_count that splits the model, largest TP first. Over several nodes (more
    GPUs than `node_size`), tensor parallelism stays inside a node (TP divides the node size) and
    pipeline stages span the nodes, as vLLM and SGLang recommend."""
    layouts = []
    for tp in range(gpu_count, 0, -1):
        pp = gpu_count // tp
        if node_size and gpu_count > node_size and node_size % tp:
            continue
        if tp * pp == gpu_count and tp_problem(spec, tp) is None and pp <= spec.n_layers:
            layouts.append(Placement(tp, pp))
    return layouts


def choose_placement(spec: ModelSpec, gpu_count: int, tensor_parallel: int | None,
                     pipeline_parallel: int | None, prefer_tensor_parallel: bool,
                     node_size: int | None = None) -> Placement:
    """The layout for `gpu_count` GPUs: the one asked for (validated), else the engine's default:
    the largest valid TP (vLLM; inside a node when there are several) or one stage of layers per GPU
    (transformers device_map, llama.cpp)."""
    if tensor_parallel or pipeline_parallel:
        tp = tensor_parallel or gpu_count // (pipeline_parallel or 1)
        pp = pipeline_parallel or gpu_count // tp
        return validate(spec, Placement(tp, pp), gpu_count)
    if not prefer_tensor_parallel:
        return validate(spec, Placement(1, gpu_count), gpu_count)
    layouts = valid_layouts(spec, gpu_count, node_size)
    if not layouts:
        raise UsageError(f"{spec.name} cannot be split over {gpu_count} GPUs "
                         f"(at most {spec.n_layers} pipeline stages, and {tp_problem(spec, gpu_count)})")
    return layouts[0]


def validate(spec: ModelSpec, placement: Placement, gpu_count: int) -> Placement:
    tp, pp = placement.tensor_parallel, placement.pipeline_parallel
    if tp < 1 or pp < 1:
        raise UsageError(f"tensor and pipeline parallel degrees must be positive, got TP {tp} x PP {pp}")
    if tp * pp != gpu_count:
        raise UsageError(f"tensor parallel {tp} x pipeline parallel {pp} = {tp * pp} GPUs, but {gpu_count} "
                         f"GPU(s) are planned; make TP x PP equal the GPU count")
    problem = tp_problem(spec, tp)
    if pp > spec.n_layers:
        problem = f"{pp} pipeline stages exceed the model's {spec.n_layers} layers"
    if problem:
        alternatives = [p.label for p in valid_layouts(spec, gpu_count)[:3]]
        hint = f"; valid layouts for {gpu_count} GPUs: {', '.join(alternatives)}" if alternatives else ""
        raise UsageError(f"{spec.name}: {problem}{hint}")
    return placement
