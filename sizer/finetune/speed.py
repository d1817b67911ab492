"""Time of a training step from the FLOPs the method performs and the GPU's dense throughput.

Per token, the forward costs 2 FLOPs per weight it multiplies by plus the attention's products
(causal: half of 4 x layers x seq_len x query width); the backward twice the forward when every
weight is trained (input and weight gradients), once when the base is frozen (input gradients
only; the adapters' own products are small); gradient checkpointing runs the forward once more.
"""

from __future__ import annotations

from dataclasses import dataclass

from sizer.finetune.setup import FinetuneSetup
from sizer.spec import EMBEDDING, ModelSpec

# Fraction of the GPU's dense bf16 peak a training step sustains (model FLOPs utilization);
# placeholders until fitted on published step times (benchmarks/finetune_published.py).
MFU = {"full": 0.40, "lora": 0.35, "dora": 0.25, "qlora": 0.25}


@dataclass(frozen=True)
class StepTime:
    flops_per_token: float
    tokens_per_step: int         # per GPU
    step_time_s: float | None
    tokens_per_s: float | None   # all GPUs together


def forward_flops_per_token(spec: ModelSpec, seq_len: int) -> float:
    matmul_params = sum(t.active_params for t in spec.tensors if t.kind != EMBEDDING or t.component == "lm_head")
    attention = 2 * spec.n_kv_layers * seq_len * spec.n_heads * spec.head_dim
    return 2 * matmul_params + attention


def training_flops_per_token(spec: ModelSpec, setup: FinetuneSetup) -> float:
    passes = 3 if setup.method == "full" else 2
    if setup.gradient_checkpointing:
        passes += 1
    return passes * forward_flops_per_token(spec, setup.seq_len)


def step_time(spec: ModelSpec, setup: FinetuneSetup, tflops: float | None, gpus: int) -> StepTime:
    flops = training_flops_per_token(spec, setup)
    tokens = setup.tokens_per_micro_batch * setup.gradient_accumulation_steps
    if not tflops:
        return StepTime(flops, tokens, None, None)
    seconds = tokens * flops / (tflops * 1e12 * MFU[setup.method])
    return StepTime(flops, tokens, seconds, tokens * gpus / seconds)
