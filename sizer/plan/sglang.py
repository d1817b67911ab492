"""SGLang (`--engine sglang`, `--engine sglang==0.4.6`): how its releases size the KV pool.

Read from each release's source (the wheels of 0.4.0, 0.4.6, 0.4.9 and 0.5.23); the lines are
quoted in docs/reference/sglang-memory.md, with a check against nine published startup logs (the
formula reproduces every logged pool within 0.12 %):

    pre_load = free memory after torch.distributed starts, before the weights (MIN over ranks)
    rest     = (pre_load - weights) - pre_load x (1 - mem_fraction_static)
    tokens   = floor(rest / cell) // page_size x page_size          (cell: KV bytes per token per GPU)
    max_running_requests = min(tokens // 2, clamp(int(tokens / context_len x 512), 2048, 4096))

`mem_fraction_static`, when not given, follows the release: by TP only up to 0.4.5 (0.88 at TP 1,
0.87 at 2, 0.85 at 4, 0.81 at 8, 0.79 at 16); 0.4.6-0.4.7 the same up to 80 GiB, larger cards
keeping 13 GiB free; 0.4.8-0.4.x a reserve by GPU size and TP x PP; 0.5 a reserve from the chunked
prefill size, TP x PP and the CUDA-graph batch (at least 10 GiB above 60 GiB). What stays outside
the pool (pre_load x (1 - mem_fraction_static)) holds the activations of one chunked-prefill step
and the CUDA graphs; sizer says `marginal` when its estimate of those exceeds it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sizer.calc.activations import peak_of, step_peak
from sizer.calc.overhead import CUDA_CONTEXT_BYTES
from sizer.plan.releases import range_for
from sizer.plan.stages import Stage
from sizer.units import MiB

MAX_PREFILL_TOKENS = 16384
# CUDA graphs SGLang captures: 0.11 GB for batch sizes up to 8 on a 24 GB card, about 0.9 GB for a
# 160-entry capture at TP 4/8 (docs/reference/sglang-memory.md, from the published logs)
GRAPH_BYTES_SMALL, GRAPH_BYTES = 120 * MiB, 900 * MiB
# NCCL's buffers at TP > 1: about 0.5 GiB of non-torch memory at TP 2 against 0.15 at TP 1 in published
# H100 runs (docs/reference/engines.md); SGLang takes them before its pre-load reading, vLLM's releases
# charge them or not (sizer.plan.vllm_releases)
NCCL_BYTES = 362 * MiB


@dataclass(frozen=True)
class SglangRelease:
    first: tuple[int, ...]
    last: str
    rule: str                 # how mem_fraction_static is chosen: "tp", "tp-13g", "reserve-0.4.8", "reserve-0.5"
    page_rounding: bool = True
    rope_cache_fp32: bool = True    # SGLang's own get_rope keeps the cos/sin table in float32 on CUDA (0.4.2+)

    @property
    def name(self) -> str:
        return self.last if ".".join(map(str, self.first)) == self.last else f"{'.'.join(map(str, self.first))}-{self.last}"

    def mem_fraction_static(self, gpu_mib: float, tp: int, pp: int = 1) -> float:
        if self.rule == "tp" or (self.rule == "tp-13g" and gpu_mib <= 81920):
            return 0.79 if tp >= 16 else 0.81 if tp >= 8 else 0.85 if tp >= 4 else 0.87 if tp >= 2 else 0.88
        if self.rule == "tp-13g":
            return (gpu_mib - 13 * 1024) / gpu_mib
        if self.rule == "reserve-0.4.8":
            n = tp * pp
            reserve = ((2.8 + n / 10) if gpu_mib < 35 * 1024 else (9.5 + n / 2) if gpu_mib < 90 * 1024
                       else (12 + n / 2) if gpu_mib < 160 * 1024 else 32) * 1024
            return round((gpu_mib - reserve) / gpu_mib, 3)
        chunked, max_bs = self.chunked_prefill_size(gpu_mib), self.cuda_graph_max_bs(gpu_mib, tp)
        reserve = 512 + max(chunked, 2048) * 1.5 + tp * pp / 8 * 1024 + max_bs * 2
        if gpu_mib > 60 * 1024:
            reserve = max(reserve, 10 * 1024)
        return round((gpu_mib - reserve) / gpu_mib, 3)

    def chunked_prefill_size(self, gpu_mib: float) -> int:
        if self.rule in ("tp", "tp-13g"):
            return 2048 if gpu_mib < 25000 else 8192
        if self.rule == "reserve-0.4.8":
            return 2048 if gpu_mib < 35 * 1024 else 8192 if gpu_mib < 160 * 1024 else 16384
        return (2048 if gpu_mib < 20 * 1024 else 4096 if gpu_mib < 60 * 1024 else 8192 if gpu_mib < 160 * 1024
                else 16384)

    def cuda_graph_max_bs(self, gpu_mib: float, tp: int) -> int:
        if self.rule != "reserve-0.5":
            return 8 if gpu_mib < 25000 else 160
        if gpu_mib < 20 * 1024:
            return 8
        if gpu_mib < 60 * 1024:
            return (48 if gpu_mib < 35 * 1024 else 32) if tp < 4 else 160
        return (256 if tp < 4 else 512) if gpu_mib < 160 * 1024 else 512


RELEASES = (
    SglangRelease((0, 3, 0), "0.4.1.post5", "tp", page_rounding=False, rope_cache_fp32=False),   # vLLM's get_rope
    SglangRelease((0, 4, 2), "0.4.3.post4", "tp", page_rounding=False),
    SglangRelease((0, 4, 4), "0.4.5", "tp"),
    SglangRelease((0, 4, 6), "0.4.7", "tp-13g"),
    SglangRelease((0, 4, 8), "0.4.10", "reserve-0.4.8"),
    SglangRelease((0, 5, 0), "0.5.23", "reserve-0.5"),
)
NEWEST = RELEASES[-1]


def sglang_release(version: str | None) -> SglangRelease:
    """The modelled range that holds `version` (None: the newest)."""
    return range_for("sglang", "SGLang", version, RELEASES, "0.4.6 or 0.5.2")


@dataclass(frozen=True)
class SglangPool:
    """One GPU's KV pool as SGLang sizes it."""

    mem_fraction_static: float
    pre_load: int             # free memory before the weights
    rest: int                 # bytes for the KV pool
    tokens: int               # max_total_num_tokens
    max_running_requests: int
    slack: int                # pre_load x (1 - mem_fraction_static): activations, CUDA graphs


def sglang_pool(release: SglangRelease, gpu_bytes: int, capacity: int, weights: int, cell_bytes: int, tp: int,
                pp: int, context_length: int, mem_fraction_static: float | None = None,
                page_size: int = 1, max_running_requests: int | None = None) -> SglangPool:
    """The pool of one GPU holding `weights`, KV `cell_bytes` per token (this GPU's share). gpu_bytes:
    the driver's total (SGLang reads nvidia-smi's for its defaults); capacity: what CUDA reports."""
    mfs = mem_fraction_static or release.mem_fraction_static(gpu_bytes / MiB, tp, pp)
    pre_load = capacity - CUDA_CONTEXT_BYTES - (NCCL_BYTES if tp * pp > 1 else 0)
    return pool_from_free(release, pre_load, weights, cell_bytes, mfs, context_length, page_size, max_running_requests)


def pool_from_free(release: SglangRelease, pre_load: int, weights: int, cell_bytes: int, mfs: float,
                   context_length: int, page_size: int = 1, max_running_requests: int | None = None) -> SglangPool:
    """The pool from the free memory before the weights (a log's "Load weight begin. avail mem").
    max_running_requests: the user's --max-running-requests (per DP worker already), else tokens // 2;
    either is capped by the request-slot pool (docs/reference/sglang-memory.md)."""
    slack = int(pre_load * (1 - mfs))
    rest = max(0, pre_load - weights - slack)
    tokens = rest // cell_bytes if cell_bytes else 0
    if release.page_rounding and page_size > 1:
        tokens = tokens // page_size * page_size
    slots = min(max(int(tokens / max(1, context_length) * 512), 2048), 4096)
    slots += 1 if release.first < (0, 4, 8) else 0          # `size=max_num_reqs + 1` until 0.4.8
    running = tokens // 2 if max_running_requests is None else min(max_running_requests, tokens // 2)
    return SglangPool(mfs, pre_load, rest, tokens, min(running, slots), slack)


def prefill_activation_bytes(stage: Stage, chunk_tokens: int, compute_bytes: int) -> int:
    """The forward of one chunked-prefill step on this GPU (logits of the last positions only)."""
    parts = step_peak(stage.rank_spec, 1, chunk_tokens, chunk_tokens, False, 1, compute_bytes, 2, torch_sdpa=False)
    return peak_of({**parts, "positions": 0, "masks": 0, "logits": 0}, stage.last)


def graph_bytes(release: SglangRelease, capacity: int, tp: int) -> int:
    return GRAPH_BYTES_SMALL if release.cuda_graph_max_bs(capacity / MiB, tp) <= 8 else GRAPH_BYTES


