"""vLLM releases whose memory accounting differs, each read from that release's own source.

The facts, with file paths and quoted lines per release, are in docs/reference/vllm-versions-v0.md
(0.5.5, 0.6.3, 0.6.6.post1, 0.7.3; the V0 engine) and docs/reference/vllm-versions-v1.md (0.8.5,
0.10.2, 0.11.2, 0.34.0; the V1 engine), read from the released wheels. `--engine vllm==0.6.4` picks
the range holding that release; `--engine vllm` the newest modelled. What a range fixes:

* the default `gpu_memory_utilization` (0.9; 0.92 from 0.20.2; 1.0 with 0.34's extensible KV cache);
* the scheduler defaults that size the profiling run: V0 256 sequences and `max(max_model_len, 2048)`
  tokens (chunked prefill, switched on by itself above 32,768 tokens of context: 512 tokens up to
  0.6.4, 2048 from 0.6.5); V1's `vllm serve` defaults by GPU memory (>= 70 GiB, and from 0.9 not an
  A100: 8192 tokens and 1024 sequences; else 2048 and 256; from 0.28 16384 tokens at >= 160 GiB);
* the dummy sampler's rows: V0 `max_num_seqs`, V1 `min(max_num_seqs, max_num_batched_tokens)`;
* what the budget charges besides weights and the activation peak: the whole device's non-torch memory
  with the CUDA context (0.6.4, 0.8.x-0.9.0), NCCL's buffers at TP > 1 (V0; V1 up to 0.10, whose
  baseline is taken before NCCL starts), CUDA-graph memory (estimated and subtracted from 0.20.2;
  before that graphs are captured after the KV cache, in the 1 - utilization headroom);
* how "GPU KV cache size" is logged: blocks x block size, or from 0.20.2 int(concurrency x max_model_len);
* the KV block size: 16 (64 from 0.34; 64 for MLA on V1's FlashMLA);
* whether the LoRA slot buffers are among the logged weights (0.8-0.10: the model runner creates the
  LoRA manager inside the weights' profiler, also in the V0 engine 0.8-0.10 still ship), and which
  bitsandbytes format the loader leaves on the GPU (`bitsandbytes_format`); sizer.plan.load_buffers
  sizes those buffers and the RoPE table.
* the fused MoE's caches in the profiling run (sizer.calc.activations.vllm_fused_moe_bytes): three
  separate caches (V0), cache1/cache3 shared (0.8-0.10), the modular kernel's two workspaces (0.11+),
  chunked at VLLM_FUSED_MOE_CHUNK_SIZE tokens (32768 up to 0.10, 16384 in 0.11-0.20.1, none after).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sizer.plan.releases import range_for
from sizer.units import GiB, fmt_gib

LARGE_GPU_BYTES = 70 * GiB        # vLLM's `device_memory >= 70 * GiB_bytes` in its batch defaults
HUGE_GPU_BYTES = 160 * GiB        # 0.28+: a third tier
V0_MIN_BATCHED_TOKENS = 2048      # `max(max_model_len, 2048)` without chunked prefill (SchedulerConfig)
V0_AUTO_CHUNKED_PREFILL_LEN = 32768   # V0 switches chunked prefill on above this max_model_len (CUDA)
EXTENSIBLE_MARGIN_FLOOR_BYTES = 1 * GiB   # 0.34 KV_CACHE_MARGIN_FLOOR_BYTES (CUDA)
FUSED_MOE_CHUNK_TOKENS_V0 = 32768  # envs.py VLLM_FUSED_MOE_CHUNK_SIZE default "32768" (0.6.3.post1 - 0.10.2)
FUSED_MOE_CHUNK_TOKENS_0_11 = 16 * 1024   # envs.py@0.15.1 str(16 * 1024); 0.20.2's modular kernel no longer chunks


@dataclass(frozen=True)
class VllmRelease:
    """One range of vLLM releases with the same memory accounting (module docstring)."""

    first: tuple[int, ...]            # the first release of the range
    last: str                         # the last release read for it, as text
    engine: str                       # "V0" or "V1"
    gpu_memory_utilization: float
    v0_chunked_tokens: int = 0        # V0: max_num_batched_tokens with chunked prefill
    a100_is_small: bool = False       # 0.9+: an A100 takes the small-GPU defaults
    huge_gpu_tokens: int | None = None    # 0.28+: max_num_batched_tokens at >= 160 GiB
    charges_cuda_context: bool = False    # the whole device's non-torch memory is charged (CUDA context)
    charges_nccl: bool = True         # NCCL's buffers (TP > 1) are charged to the budget
    charges_cuda_graphs: bool = False     # CUDA-graph memory is estimated and subtracted
    tokens_from_concurrency: bool = False  # "GPU KV cache size" = int(max concurrency x max_model_len)
    block_size: int = 16
    mla_block_size: int = 16
    extensible_kv_cache: bool = False     # 0.34: KV measured after warm-up, within a margin
    lora_in_weights: bool = False     # the LoRA slot buffers are made inside the weights' profiler (0.8-0.10 read)
    moe_layout: str = "workspaces"        # the fused MoE's caches (sizer.calc.activations.VLLM_MOE_LAYOUTS)
    moe_chunk_tokens: int | None = None   # VLLM_FUSED_MOE_CHUNK_SIZE where the experts chunk the tokens
    transient_activation: bool = False    # 0.27+: the activation figure is the transient headroom (below)

    @property
    def name(self) -> str:
        first = ".".join(map(str, self.first))
        return first if first == self.last else f"{first}-{self.last}"

    def scheduler_defaults(self, capacity: int, gpu_name: str, max_model_len: int) -> tuple[int, int]:
        """(max_num_batched_tokens, max_num_seqs) `vllm serve` uses when the user sets neither."""
        if self.engine == "V0":
            chunked = max_model_len > V0_AUTO_CHUNKED_PREFILL_LEN
            return (self.v0_chunked_tokens if chunked else max(max_model_len, V0_MIN_BATCHED_TOKENS)), 256
        if self.huge_gpu_tokens and capacity >= HUGE_GPU_BYTES:
            return self.huge_gpu_tokens, 1024
        large = capacity >= LARGE_GPU_BYTES and not (self.a100_is_small and "a100" in gpu_name.lower())
        return (8192, 1024) if large else (2048, 256)

    @property
    def sampler_after_forward(self) -> bool:
        """The activation figure is torch's allocated peak and the dummy sampler runs once, after the
        forward (V0 from 0.6.4, V1 up to 0.33): the peak is the larger of the two, not their sum. Up to
        0.6.3 the figure is the free-memory drop (what the caching allocator keeps reserved); 0.34 runs a
        second sampler pass with the float32 logprobs pipeline (vllm-versions-v1.md, section 2)."""
        if self.engine == "V0":
            return self.first >= (0, 6, 4)
        return not self.extensible_kv_cache

    @property
    def persistent_workspace(self) -> bool:
        """From 0.27 the profile's activation figure is its transient headroom, torch's peak less what
        is still allocated after the run (mem_utils.py@0.27.0 transient_peak_headroom): the workspace
        manager's buffer (the fused MoE's caches), kept for later steps, counts in total_consumed
        ("consumed memory (weights + non-torch)") instead, and the logged "peak activation" adds the
        CUDA-graph estimate (gpu_worker.py@0.27.0). Before, the figure was the peak increase over the
        run (torch_peak_increase), the workspace in it."""
        return self.transient_activation

    def sampler_rows(self, max_num_seqs: int, max_num_batched_tokens: int) -> int:
        return max_num_seqs if self.engine == "V0" else min(max_num_seqs, max_num_batched_tokens)


RELEASES = (
    VllmRelease((0, 5, 0), "0.6.3.post1", "V0", 0.9, v0_chunked_tokens=512,
                moe_layout="separate", moe_chunk_tokens=FUSED_MOE_CHUNK_TOKENS_V0),
    VllmRelease((0, 6, 4), "0.6.4.post1", "V0", 0.9, v0_chunked_tokens=512, charges_cuda_context=True,
                moe_layout="separate", moe_chunk_tokens=FUSED_MOE_CHUNK_TOKENS_V0),
    VllmRelease((0, 6, 5), "0.7.3", "V0", 0.9, v0_chunked_tokens=2048,
                moe_layout="separate", moe_chunk_tokens=FUSED_MOE_CHUNK_TOKENS_V0),
    VllmRelease((0, 8, 0), "0.9.0", "V1", 0.9, charges_cuda_context=True, mla_block_size=64, lora_in_weights=True,
                moe_layout="shared13", moe_chunk_tokens=FUSED_MOE_CHUNK_TOKENS_V0),
    VllmRelease((0, 9, 1), "0.10.2", "V1", 0.9, a100_is_small=True, mla_block_size=64, lora_in_weights=True,
                moe_layout="shared13", moe_chunk_tokens=FUSED_MOE_CHUNK_TOKENS_V0),
    VllmRelease((0, 11, 0), "0.20.1", "V1", 0.9, a100_is_small=True, charges_nccl=False, mla_block_size=64,
                moe_chunk_tokens=FUSED_MOE_CHUNK_TOKENS_0_11),
    VllmRelease((0, 20, 2), "0.26.0", "V1", 0.92, a100_is_small=True, charges_nccl=False, charges_cuda_graphs=True,
                tokens_from_concurrency=True, mla_block_size=64),
    VllmRelease((0, 27, 0), "0.27.x", "V1", 0.92, a100_is_small=True, charges_nccl=False, charges_cuda_graphs=True,
                tokens_from_concurrency=True, mla_block_size=64, transient_activation=True),
    VllmRelease((0, 28, 0), "0.33.x", "V1", 0.92, a100_is_small=True, huge_gpu_tokens=16384, charges_nccl=False,
                charges_cuda_graphs=True, tokens_from_concurrency=True, mla_block_size=64, transient_activation=True),
    VllmRelease((0, 34, 0), "0.34.0", "V1", 1.0, a100_is_small=True, huge_gpu_tokens=16384, charges_nccl=False,
                charges_cuda_graphs=True, tokens_from_concurrency=True, block_size=64, mla_block_size=64,
                extensible_kv_cache=True, transient_activation=True),
)
NEWEST = RELEASES[-1]
# 0.8-0.10 still ship the V0 engine (VLLM_USE_V1=0; the fallback for LoRA, bitsandbytes or GPUs below
# compute capability 8.0): 0.7.3's accounting, except that its model runner now creates the LoRA
# manager inside the weights' DeviceMemoryProfiler (worker/model_runner.py@v0.8.2 load_model)
V0_ENGINE_OF_V1_RELEASES = replace(RELEASES[2], first=(0, 8, 0), last="0.10.x V0 engine", lora_in_weights=True)


def release_for(version: str | None) -> VllmRelease:
    """The modelled range that holds `version` (None: the newest)."""
    return range_for("vllm", "vLLM", version, RELEASES, "0.6.4, 0.10.2 or 0.11.0")


# vLLM's bitsandbytes loader (model_loader/loader.py@v0.8.2, bitsandbytes_loader.py@v0.10.0):
# a checkpoint without a quantization_config is quantized while loading with
# `quantize_4bit(loaded_weight, compress_statistics=True, quant_type="nf4")`, whatever the
# BitsAndBytesConfig says; from 0.10.0 `_dequantize_dq` turns every nested absmax back into float32
# at load ("This comes at the cost of increased memory usage"); 0.28 no longer has the loader.
BNB_LOAD_TIME_FORMAT = ("nf4", True)
BNB_DEQUANTIZES_NESTED = ((0, 10, 0), (0, 28, 0))


def bitsandbytes_format(version: tuple[int, int, int] | None, stored: tuple[str, bool] | None) -> str:
    """The 4-bit format vLLM's bitsandbytes loader leaves on the GPU: a checkpoint quantized ahead
    (stored: its quant type and double quantization) as stored, else NF4 with double quantization
    (quantized while loading); from 0.10 to 0.27 the absmax of either in float32."""
    quant_type, double_quant = stored or BNB_LOAD_TIME_FORMAT
    first, past = BNB_DEQUANTIZES_NESTED
    if version is not None and first <= version < past:
        double_quant = False
    return quant_type + ("-dq" if double_quant else "")


def extensible_margin(activation_peak: int) -> int:
    """0.34's margin below the free memory: max(1 GiB, 0.75 x the warm-up's transient peak)."""
    return max(EXTENSIBLE_MARGIN_FLOOR_BYTES, int(0.75 * activation_peak))



@dataclass(frozen=True)
class VllmLogValues:
    """What one vLLM worker prints at startup, as sizer predicts it (bytes; tokens; concurrency)."""

    total_gpu_memory: int
    gpu_memory_utilization: float
    weights: int
    non_torch: int
    activation_peak: int
    cuda_graphs: int
    available_kv_cache: int
    num_gpu_blocks: int
    gpu_kv_cache_tokens: int
    max_model_len: int
    max_concurrency: float
    load_buffers: int = 0        # of `weights`: made while loading (RoPE table, LoRA slots; sizer.plan.load_buffers)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _g(n: int, digits: int = 2) -> str:
    return fmt_gib(n, digits)


def load_buffers_note(weights: int, load_buffers: int) -> str:
    """What sizer adds to an engine's weights line: the tensors and the buffers made while loading."""
    if not load_buffers:
        return ""
    return (f"  [sizer: {_g(weights - load_buffers, 4)} GiB of weights + {_g(load_buffers, 4)} GiB made while "
            "loading: the RoPE table, LoRA slots if enabled]")


def vllm_log_lines(release: VllmRelease, v: VllmLogValues) -> tuple[str, ...]:
    """The startup lines this release prints about memory, with sizer's numbers, in its own format
    (docs/reference/vllm-versions-v0.md and -v1.md, section "Log lines")."""
    tokens, length = f"{v.gpu_kv_cache_tokens:,}", f"{v.max_model_len:,}"
    concurrency = f"Maximum concurrency for {length} tokens per request: {v.max_concurrency:.2f}x"
    note = load_buffers_note(v.weights, v.load_buffers)
    if release.engine == "V0":
        lines = [f"Loading model weights took {_g(v.weights, 4)} GB{note}"]
        if release.charges_cuda_context:
            lines.append(f"Memory profiling results: total_gpu_memory={_g(v.total_gpu_memory)}GiB "
                         f"peak_torch_memory={_g(v.weights + v.activation_peak)}GiB non_torch_memory="
                         f"{_g(v.non_torch)}GiB kv_cache_size={_g(v.available_kv_cache)}GiB "
                         f"gpu_memory_utilization={v.gpu_memory_utilization:.2f}")
        elif release.first >= (0, 6, 5):
            lines.append(f"model weights take {_g(v.weights)}GiB; non_torch_memory takes {_g(v.non_torch)}GiB; "
                         f"PyTorch activation peak memory takes {_g(v.activation_peak)}GiB; the rest of the memory "
                         f"reserved for KV Cache is {_g(v.available_kv_cache)}GiB.")
        return (*lines, f"# GPU blocks: {v.num_gpu_blocks}", concurrency)      # 0.7.x spells it "# cuda blocks"
    lines = [f"Model loading took {_g(v.weights, 4)} GiB{note}", f"Available KV cache memory: {_g(v.available_kv_cache)} GiB"]
    if release.huge_gpu_tokens:                  # 0.28+: one line
        lines.append(f"GPU KV cache size: {tokens} tokens, {concurrency}")
    else:
        lines += [f"GPU KV cache size: {tokens} tokens", concurrency]
    if v.cuda_graphs:
        lines.append(f"Graph capturing finished, took {_g(v.cuda_graphs)} GiB")
    return tuple(lines)
