"""llama.cpp speed on one machine: decode and prompt-processing tokens/s from rooflines, per device.

Decode reads, for every token, the active weights and the KV cache at the current depth. With the
layers split over devices (partial offload: GPU layers and host layers), the devices run one after
another, so a token's time is the sum over devices of

    bytes on the device / (its memory bandwidth x the backend's bandwidth efficiency)
    + the backend's per-layer overhead x the layers on the device

(the overhead is the kernel launches and synchronisation of each layer's graph, which a small model
cannot hide behind its reads: about 0.1 ms per layer on CUDA, 0.2 ms on Metal). Prompt
processing is compute-bound: `2 x active parameters` FLOPs per token plus attention
(`4 x layers x query width x depth`), at the device's rate for the kernel that runs the weights'
type x the backend's compute efficiency; the device times add up as for decode.

Kernel rates (llama.cpp's own dispatch, docs/reference/llamacpp-speed.md): on CUDA and ROCm the
quantized types run as MMQ (activations quantized to q8_1, int8 dot products: the int8 rate), F16 and
BF16 through cuBLAS/hipBLAS with FP16 accumulation (CUBLAS_COMPUTE_16F: the FP16-accumulate tensor
rate, twice the FP32-accumulate rate the catalog lists for GeForce cards); Vulkan and Metal run FP16
shaders (Apple GPUs: FP16 = FP32 rate), on GPUs without matrix units (GCN, RDNA1/2) at the FP32
vector rate; the CPU runs int8 dot products (q8_0/q8_K activations).

The efficiencies are fitted on published llama-bench rows (tests/data/llamacpp/llama_bench.json,
`python benchmarks/llama_bench.py --fit`) and stored with their provenance in
sizer/data/llamacpp_speed.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from sizer.catalog import GpuSpec, data_dir

BACKENDS = ("CUDA", "ROCm", "Vulkan", "Metal", "SYCL", "CPU")
FLOAT_TYPES = frozenset({"F32", "F16", "BF16"})
# GPUs without matrix units: Vulkan's matmul shaders run on their FP32 vector ALUs
VECTOR_ONLY_ARCHITECTURES = frozenset({"gcn", "rdna1", "rdna2"})
KERNEL_MMQ, KERNEL_BLAS, KERNEL_SHADER, KERNEL_CPU = "mmq", "blas", "shader", "cpu"


@dataclass(frozen=True)
class BackendSpeed:
    """One backend's fitted constants."""

    decode_bandwidth_efficiency: float     # share of peak memory bandwidth decode reaches
    decode_overhead_s: float               # seconds per token per layer beyond the bytes (GPU kernel launches, syncs)
    prefill_efficiency: dict[str, float]   # per kernel family (mmq, blas, shader): share of its peak rate

    def prefill(self, kernel: str) -> float:
        return self.prefill_efficiency.get(kernel) or next(iter(self.prefill_efficiency.values()))


@lru_cache(maxsize=1)
def backend_speeds() -> dict[str, BackendSpeed]:
    """The fitted constants of sizer/data/llamacpp_speed.json, by backend."""
    raw = json.loads((data_dir() / "llamacpp_speed.json").read_text())
    out = {}
    for name, entry in raw["backends"].items():
        source = raw["backends"][entry["same_as"]] if "same_as" in entry else entry
        out[name] = BackendSpeed(source["decode_bandwidth_efficiency"], source["decode_overhead_s"],
                                 dict(source["prefill_efficiency"]))
    return out


@dataclass(frozen=True)
class DeviceRates:
    """What the speed model needs of one device: peak memory bandwidth and peak rates (TFLOP/s,
    TOP/s for int8) where the device has them."""

    bandwidth_gbps: float
    fp32_tflops: float | None = None
    fp16_tflops: float | None = None              # FP16 with FP32 accumulation (GeForce: half the FP16-accumulate rate)
    fp16_accumulate_tflops: float | None = None   # FP16 with FP16 accumulation
    int8_tops: float | None = None
    matrix_cores: bool = True                     # tensor/matrix units Vulkan's cooperative-matrix shaders use

    @classmethod
    def of_gpu(cls, gpu: GpuSpec) -> "DeviceRates":
        rates = gpu.dense_tflops or {}
        fp16 = rates.get("fp16") or rates.get("bf16")
        # gpus.json note (2): GeForce fp16 figures are the FP32-accumulate tensor rates, half the FP16-accumulate ones
        geforce = gpu.vendor == "nvidia" and gpu.market == "consumer"
        acc16 = 2 * fp16 if fp16 and geforce else fp16
        return cls(gpu.memory_bandwidth_gbps, rates.get("fp32"), fp16, acc16, rates.get("int8"),
                   gpu.architecture not in VECTOR_ONLY_ARCHITECTURES)


def kernel_for(backend: str, weight_type: str) -> str:
    """The kernel family that multiplies a batch of tokens by weights of `weight_type` (GGUF type name)."""
    if backend in ("CUDA", "ROCm"):
        return KERNEL_BLAS if weight_type.upper() in FLOAT_TYPES else KERNEL_MMQ
    return KERNEL_CPU if backend == "CPU" else KERNEL_SHADER


def kernel_tflops(rates: DeviceRates, backend: str, weight_type: str) -> float | None:
    """Peak rate of the kernel llama.cpp runs for prompt processing on this device."""
    kernel = kernel_for(backend, weight_type)
    if kernel == KERNEL_CPU:
        return rates.int8_tops or rates.fp32_tflops
    if kernel == KERNEL_MMQ:
        return rates.int8_tops or rates.fp16_tflops or rates.fp32_tflops
    if kernel == KERNEL_BLAS:
        return rates.fp16_accumulate_tflops or rates.fp16_tflops or rates.fp32_tflops
    if backend == "Vulkan" and not rates.matrix_cores:
        return rates.fp32_tflops or rates.fp16_tflops
    return rates.fp16_tflops or rates.fp32_tflops


@dataclass(frozen=True)
class DeviceShare:
    """One device's part of the model: the bytes a token reads there, the parameters it multiplies
    there, and its share of the layers."""

    rates: DeviceRates
    backend: str
    weights_bytes: float          # active weights read per token on this device
    kv_bytes_per_token: float     # KV cache bytes per cached token on this device (f16 K+V of its layers)
    params: float                 # active parameters multiplied on this device
    n_layers: int                 # layers on this device
    attention_flops_per_depth: float = 0.0   # 4 x its layers x query width: attention FLOPs per token per cached token


def decode_seconds(share: DeviceShare, depth_tokens: float, speed: BackendSpeed) -> float:
    """One token's time on one device at `depth_tokens` already cached."""
    read = share.weights_bytes + share.kv_bytes_per_token * depth_tokens
    return (read / (share.rates.bandwidth_gbps * 1e9 * speed.decode_bandwidth_efficiency)
            + speed.decode_overhead_s * share.n_layers)


def decode_tokens_per_s(shares: list[DeviceShare], depth_tokens: float = 0.0,
                        speeds: dict[str, BackendSpeed] | None = None) -> float:
    """Tokens/s of one sequence, the devices running one after another."""
    speeds = speeds or backend_speeds()
    return 1 / sum(decode_seconds(s, depth_tokens, speeds[s.backend]) for s in shares)


def prefill_seconds_per_token(share: DeviceShare, weight_type: str, depth_tokens: float,
                              speed: BackendSpeed) -> float | None:
    tflops = kernel_tflops(share.rates, share.backend, weight_type)
    if not tflops:
        return None
    flops = 2 * share.params + share.attention_flops_per_depth * depth_tokens
    return flops / (tflops * 1e12 * speed.prefill(kernel_for(share.backend, weight_type)))


def prefill_tokens_per_s(shares: list[DeviceShare], weight_type: str, prompt_tokens: int, depth_tokens: float = 0.0,
                         speeds: dict[str, BackendSpeed] | None = None) -> float | None:
    """Tokens/s over a prompt of `prompt_tokens` after `depth_tokens` cached (mean depth of a token in
    it: depth + prompt / 2)."""
    speeds = speeds or backend_speeds()
    mean_depth = depth_tokens + prompt_tokens / 2
    times = [prefill_seconds_per_token(s, weight_type, mean_depth, speeds[s.backend]) for s in shares]
    if any(t is None for t in times):
        return None
    return 1 / sum(times)


def backend_of(gpu: GpuSpec) -> str:
    """The backend llama.cpp builds for a GPU vendor by default: CUDA, ROCm (HIP), Metal, SYCL."""
    return {"nvidia": "CUDA", "amd": "ROCm", "apple": "Metal", "intel": "SYCL", "cpu": "CPU"}.get(gpu.vendor, "Vulkan")
