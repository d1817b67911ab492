"""Throughput and cost, from rooflines with documented efficiency factors.

Decode is memory-bound: each step reads every GPU's share of the weights (for MoE only the experts
the batch's tokens are routed to) and each sequence's KV cache, at `memory_bandwidth x efficiency`;
the step also cannot beat the compute roofline. Prefill is compute-bound: `2 x active parameters`
FLOPs per token plus attention, at the GPU's dense tensor throughput for the precision x efficiency.
Pipeline stages run one after another for a given token, so their step times add up.
"""

from __future__ import annotations

from dataclasses import dataclass

from sizer.catalog import GpuSpec
from sizer.plan.placement import Placement
from sizer.plan.stages import Stage
from sizer.spec import ModelSpec, Workload

# Fraction of peak memory bandwidth reached by decode, and of peak dense tensor throughput reached
# by prefill, per engine. Assumptions in line with published measurements (vLLM decode kernels
# reach 70-85 % of HBM bandwidth; transformers' eager generate loop much less; llama.cpp CUDA
# around 70 %); to be calibrated by `sizer measure` and `sizer calibrate`.
# The transformers profile's values live in sizer/data/calibration.json (sizer.calc.calibration).
EFFICIENCY = {
    "vllm": {"decode_bandwidth": 0.80, "prefill_compute": 0.60},
    "llamacpp": {"decode_bandwidth": 0.70, "prefill_compute": 0.35},
}


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


def estimate_throughput(spec: ModelSpec, stages: list[Stage], placement: Placement, gpu: GpuSpec,
                        precision, engine, workload: Workload) -> Throughput:
    """Rooflines for the workload's sequences on `placement` of `gpu` with `engine`.
    precision: a sizer.quant format object."""
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
    prefill_rate = placement.tensor_parallel * tflops * 1e12 * eff["prefill_compute"] / flops_per_token
    return Throughput(decode_tokens_per_s=1 / step_s, decode_tokens_per_s_total=batch_size / step_s,
                      prefill_tokens_per_s=prefill_rate,
                      time_to_first_token_s=batch_size * context_length / prefill_rate)


def cost_per_million_tokens(price_per_hour: float | None, tokens_per_s: float | None) -> float | None:
    if not price_per_hour or not tokens_per_s:
        return None
    return price_per_hour / (tokens_per_s * 3600) * 1e6
