"""Throughput and cost, from rooflines with documented efficiency factors.

Decode is memory-bound: each step reads every GPU's share of the weights (for MoE only the experts
the batch's tokens are routed to) and each sequence's KV cache, at `memory_bandwidth x efficiency`;
the step also cannot beat the compute roofline. Prefill is compute-bound: `2 x active parameters`
FLOPs per token plus attention, at the GPU's dense tensor throughput for the precision x efficiency.
Pipeline stages run one after another for a given token, so their step times add up.

Communication: tensor parallelism all-reduces each layer's attention and MLP outputs (two per layer:
`batch x hidden x 2 bytes` per decode step, `tokens x hidden x 2 bytes` per prefill), a ring taking
`latency + 2 (TP - 1) / TP x bytes / bandwidth`; pipeline parallelism hands the hidden states to the
next stage once per step. Both are charged to the link they cross: the node's (NVLink, PCIe, Infinity
Fabric; the catalog's bandwidth per GPU) or, between nodes, the fabric (the catalog's or
--fabric-gbps, per node, shared by its GPUs). Latencies and the share of link bandwidth collectives
reach are assumptions in line with published NCCL measurements (small all-reduces take about 10 us on
NVLink and tens of us over PCIe or a network; large ones reach 70-80 % of the link), to be calibrated.

llama.cpp runs on the machines people own with a model of its own (sizer.plan.local_speed): per
backend (CUDA, ROCm, Metal, Vulkan, SYCL, CPU) a bandwidth efficiency and a per-layer overhead for
decode and the rate of the kernel its weights' type runs for prompt processing, fitted on published
llama-bench rows; the layers split over devices (GPUs in a row, the host's layers in a partial
offload) add their times.
"""

from __future__ import annotations

from dataclasses import dataclass

from sizer.catalog import GpuSpec
from sizer.plan import local_speed
from sizer.plan.placement import Placement
from sizer.plan.stages import Stage
from sizer.spec import ModelSpec, Workload

# Fraction of peak memory bandwidth reached by decode, and of peak dense tensor throughput reached
# by prefill, per engine. Assumptions in line with published measurements (vLLM decode kernels
# reach 70-85 % of HBM bandwidth; transformers' eager generate loop much less); to be calibrated by
# `sizer measure` and `sizer calibrate`. The transformers profile's values live in
# sizer/data/calibration.json (sizer.calc.calibration); llama.cpp's, per backend, in
# sizer/data/llamacpp_speed.json (sizer.plan.local_speed).
EFFICIENCY = {
    "vllm": {"decode_bandwidth": 0.80, "prefill_compute": 0.60},
    "sglang": {"decode_bandwidth": 0.80, "prefill_compute": 0.60},     # kernels of the same families as vLLM's
}


ALLREDUCE_LATENCY_S = {"nvlink": 10e-6, "infinity-fabric": 10e-6, "pcie": 25e-6, "fabric": 30e-6}
LINK_EFFICIENCY = 0.75
ACTIVATION_BYTES = 2         # hidden states cross the links in 16-bit


@dataclass(frozen=True)
class Links:
    """The links a layout's collectives cross: inside a node and between nodes."""

    node_size: int = 8
    node_link: str = "pcie"
    node_link_gbps: float | None = None      # GB/s per GPU, each way
    fabric_gbits: float | None = None        # Gb/s per node

    @classmethod
    def of(cls, gpu: GpuSpec, node_size: int | None = None, fabric_gbits: float | None = None) -> "Links":
        return cls(node_size or gpu.node_gpus, gpu.node_link or "pcie", gpu.node_link_gbps,
                   fabric_gbits or gpu.fabric_gbits)

    def _bytes_per_s(self, across_nodes: bool) -> float | None:
        if not across_nodes:
            return self.node_link_gbps * 1e9 * LINK_EFFICIENCY if self.node_link_gbps else None
        return self.fabric_gbits / 8 * 1e9 / self.node_size * LINK_EFFICIENCY if self.fabric_gbits else None

    def allreduce_s(self, tensor_parallel: int, nbytes: float) -> float:
        """One ring all-reduce of `nbytes` over `tensor_parallel` GPUs (0 without TP)."""
        if tensor_parallel <= 1:
            return 0.0
        across = tensor_parallel > self.node_size
        rate = self._bytes_per_s(across)
        latency = ALLREDUCE_LATENCY_S["fabric" if across else self.node_link]
        return latency + (2 * (tensor_parallel - 1) / tensor_parallel * nbytes / rate if rate else 0.0)

    def hop_s(self, across_nodes: bool, nbytes: float) -> float:
        """Hidden states handed from one pipeline stage to the next."""
        rate = self._bytes_per_s(across_nodes)
        latency = ALLREDUCE_LATENCY_S["fabric" if across_nodes else self.node_link]
        return latency + (nbytes / rate if rate else 0.0)

    def hops_across_nodes(self, placement: Placement) -> list[bool]:
        """For each stage boundary, whether it crosses nodes (stages fill nodes in order)."""
        tp = placement.tensor_parallel
        return [(i * tp) // self.node_size != ((i + 1) * tp) // self.node_size
                for i in range(placement.pipeline_parallel - 1)]


def communication_s(spec: ModelSpec, placement: Placement, links: Links, tokens: int) -> float:
    """Time one forward over `tokens` tokens spends in TP all-reduces and PP hand-offs."""
    nbytes = tokens * spec.hidden_size * ACTIVATION_BYTES
    allreduces = 2 * spec.n_layers * links.allreduce_s(placement.tensor_parallel, nbytes)
    hops = sum(links.hop_s(across, nbytes) for across in links.hops_across_nodes(placement))
    return allreduces + hops


@dataclass(frozen=True)
class Throughput:
    decode_tokens_per_s: float | None            # one sequence
    decode_tokens_per_s_total: float | None      # all sequences of the batch together
    prefill_tokens_per_s: float | None
    time_to_first_token_s: float | None


def compute_dtype(precision, gpu: GpuSpec) -> str:
    """The tensor-core rate a precision (a sizer.quant format object) runs at: fp8 weights on fp8
    hardware, fp32 weights at tf32 where the GPU has it, else 16-bit."""
    rates = gpu.dense_tflops or {}
    if precision.is_fp8 and rates.get("fp8"):
        return "fp8"
    if precision.compute_bytes == 4:
        return "tf32" if rates.get("tf32") else "fp32"
    return "bf16" if rates.get("bf16") else "fp16"


def expert_fraction_read(spec: ModelSpec, batch: int) -> float:
    """Expected share of a MoE layer's experts that `batch` tokens touch: 1 - (1 - k/E)^batch."""
    if not spec.is_moe:
        return 1.0
    return 1 - (1 - spec.n_experts_active / spec.n_experts) ** batch


def efficiency(engine) -> dict[str, float]:
    """The engine's efficiencies; the transformers profile's come from its calibration."""
    if engine.name == "transformers":
        from sizer.calc.calibration import default_calibration

        cal = engine.calibration or default_calibration()
        return {"decode_bandwidth": cal.decode_bandwidth_efficiency, "prefill_compute": cal.prefill_compute_efficiency}
    return EFFICIENCY[engine.name]


@dataclass(frozen=True)
class HostPart:
    """The layers a partial offload keeps in host memory (llama.cpp -ngl below the layer count): they
    run on the CPU backend at the host's memory bandwidth."""

    n_layers: int
    weights_bytes: int                # active weights of those layers read per token
    kv_bytes_per_token: int           # per cached token of one sequence, those layers (0 with the KV on the GPU)
    bandwidth_gbps: float             # the host memory's peak (gpus.json host_memory)
    int8_tops: float | None = None    # the CPU's int8 dot-product rate, where known (prompt processing)


def gguf_weight_type(precision) -> str:
    """The GGUF type most weights of a precision are stored in: a llama.cpp ftype's base block type
    (Q4_K_M -> Q4_K), else F16 (float checkpoints run through cuBLAS/hipBLAS)."""
    return getattr(precision, "base", None) or "F16"


def llamacpp_shares(spec: ModelSpec, stages: list[Stage], gpu: GpuSpec, batch_size: int, context_length: int,
                    host: HostPart | None = None) -> list[local_speed.DeviceShare]:
    """One DeviceShare per GPU stage (its layers, weights and KV at the context) and one for the
    host's layers of a partial offload."""
    touched = expert_fraction_read(spec, batch_size)
    rates, backend = local_speed.DeviceRates.of_gpu(gpu), local_speed.backend_of(gpu)
    attention_per_layer = 4 * spec.n_heads * spec.head_dim
    shares = []
    for stage in stages:
        layers = len(stage.layers)
        weights = stage.weights_bytes - stage.expert_bytes + stage.expert_bytes * touched
        kv_per_token = stage.kv_bytes(context_length, batch_size) / max(1, context_length)
        shares.append(local_speed.DeviceShare(rates, backend, weights, kv_per_token,
                                              spec.active_params * layers / spec.n_layers, layers,
                                              attention_per_layer * layers))
    if host and host.n_layers:
        shares.append(local_speed.DeviceShare(
            local_speed.DeviceRates(host.bandwidth_gbps, int8_tops=host.int8_tops), "CPU", host.weights_bytes,
            host.kv_bytes_per_token * batch_size, spec.active_params * host.n_layers / spec.n_layers,
            host.n_layers, attention_per_layer * host.n_layers))
    return shares


def llamacpp_throughput(spec: ModelSpec, stages: list[Stage], gpu: GpuSpec, precision, workload: Workload,
                        host: HostPart | None = None) -> Throughput:
    """llama.cpp's speeds (sizer.plan.local_speed) with the layers split over the GPU stages and,
    in a partial offload, the host. A decode step carries one token of each sequence: the weights are
    read once, each sequence's KV cache at the full context (the step's time is the slowest of that
    and the batch's compute)."""
    context_length, batch_size = workload.context_length, workload.batch_size
    speeds = local_speed.backend_speeds()
    shares = llamacpp_shares(spec, stages, gpu, batch_size, context_length, host)
    weight_type = gguf_weight_type(precision)
    memory_s = 1 / local_speed.decode_tokens_per_s(shares, context_length, speeds)
    prefill_rate = local_speed.prefill_tokens_per_s(shares, weight_type, context_length, 0, speeds)
    if prefill_rate is None:
        return Throughput(1 / memory_s, batch_size / memory_s, None, None)
    # the batch's decode compute at a depth of the full context, against the prompt-processing rate
    compute_s = batch_size / local_speed.prefill_tokens_per_s(shares, weight_type, 1, context_length, speeds)
    step_s = max(memory_s, compute_s)
    prefill_s = batch_size * context_length / prefill_rate
    return Throughput(decode_tokens_per_s=1 / step_s, decode_tokens_per_s_total=batch_size / step_s,
                      prefill_tokens_per_s=prefill_rate, time_to_first_token_s=prefill_s)


def estimate_throughput(spec: ModelSpec, stages: list[Stage], placement: Placement, gpu: GpuSpec,
                        precision, engine, workload: Workload, links: Links | None = None) -> Throughput:
    """Rooflines for the workload's sequences on `placement` of `gpu` with `engine`, plus the time
    tensor and pipeline parallelism spend on `links` (default: the GPU's own, one node of its size).
    precision: a sizer.quant format object. llama.cpp: llamacpp_throughput."""
    if engine.name == "llamacpp":
        if not gpu.memory_bandwidth_gbps:
            return Throughput(None, None, None, None)
        return llamacpp_throughput(spec, stages, gpu, precision, workload)
    links = links or Links.of(gpu)
    context_length, batch_size = workload.context_length, workload.batch_size
    eff = efficiency(engine)
    bandwidth = gpu.memory_bandwidth_gbps
    tflops = (gpu.dense_tflops or {}).get(compute_dtype(precision, gpu))
    if not bandwidth or not tflops:
        return Throughput(None, None, None, None)
    touched = expert_fraction_read(spec, batch_size)
    flops_per_token = 2 * spec.active_params + 4 * spec.n_layers * spec.n_heads * spec.head_dim * context_length // 2
    step_s = 0.0
    for stage in stages:
        experts = stage.expert_bytes
        read = stage.weights_bytes - experts + experts * touched + stage.kv_bytes(context_length, batch_size)
        memory_s = read / (bandwidth * 1e9 * eff["decode_bandwidth"])
        share = len(stage.layers) / spec.n_layers / placement.tensor_parallel
        compute_s = batch_size * flops_per_token * share / (tflops * 1e12 * eff["prefill_compute"])
        step_s += max(memory_s, compute_s)
    step_s += communication_s(spec, placement, links, batch_size)
    prompt_tokens = batch_size * context_length
    compute_rate = placement.tensor_parallel * tflops * 1e12 * eff["prefill_compute"] / flops_per_token
    prefill_s = prompt_tokens / compute_rate + communication_s(spec, placement, links, prompt_tokens)
    return Throughput(decode_tokens_per_s=1 / step_s, decode_tokens_per_s_total=batch_size / step_s,
                      prefill_tokens_per_s=prompt_tokens / prefill_s, time_to_first_token_s=prefill_s)


# accelerate's CPU / disk offload copies each offloaded layer's weights to the GPU for every forward
# (AlignDevicesHook.pre_forward: set_module_tensor_to_device from the CPU copy or the disk memmap), so a
# decode step and a prefill each move them once: at PCIe's peak, an upper bound on the speed (the copies
# come from pageable memory, slower in practice). PCIe 4.0 x16: 16 GT/s x 16 lanes x 128/130 / 8 bits
# = 31.5 GB/s each way; disk: an NVMe SSD's sequential read, 3.5 GB/s (PCIe 3.0 x4 drives; sizer's assumption).
PCIE4_X16_GBPS = 31.5
NVME_READ_GBPS = 3.5


def offloaded_throughput(base: Throughput, host_bytes: int, disk_bytes: int, gpu: GpuSpec,
                         batch_size: int) -> Throughput:
    """`base` (every layer on the GPUs) plus, per forward, the offloaded weights' copy to the GPU."""
    if base.decode_tokens_per_s is None:
        return base
    link = gpu.node_link_gbps if gpu.node_link == "pcie" and gpu.node_link_gbps else PCIE4_X16_GBPS
    copy_s = host_bytes / (link * 1e9) + disk_bytes / (NVME_READ_GBPS * 1e9)
    step_s = 1 / base.decode_tokens_per_s + copy_s
    ttft = None if base.time_to_first_token_s is None else base.time_to_first_token_s + copy_s
    prefill = None if ttft is None else base.prefill_tokens_per_s * base.time_to_first_token_s / ttft
    return Throughput(1 / step_s, batch_size / step_s, prefill, ttft)


def cost_per_million_tokens(price_per_hour: float | None, tokens_per_s: float | None) -> float | None:
    if not price_per_hour or not tokens_per_s:
        return None
    return price_per_hour / (tokens_per_s * 3600) * 1e6
