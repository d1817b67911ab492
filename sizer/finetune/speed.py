"""Time of a training step: the FLOPs the method's kernels perform at the GPU's dense rate times a
fitted model FLOPs utilization (MFU), plus the memory-bound work that is not FLOPs (QLoRA's
dequantization, DoRA's weight norm, the optimizer step) at the GPU's memory bandwidth, plus the
data-parallel communication the backward cannot hide.

FLOPs per token (docs/reference/finetune.md, "Step time"):
- forward: 2 per weight a token multiplies by (decoder Linears of the active experts, and the output
  head, tied or not), the attention's QK^T and PV over the keys each query attends (causal masking
  as flash / SDPA kernels skip the masked blocks; eager attention computes the whole square), and the
  adapters' A and B;
- backward: for trained weights input and weight gradients, twice the forward's matmuls; a frozen
  base only its input gradients, once; the adapters' own products twice; attention 2.5x its forward
  (flash backward recomputes QK^T: five matmuls to the forward's two), 2x for eager;
- gradient checkpointing: each decoder layer's forward once more (the head is not checkpointed).
"""

from __future__ import annotations

from dataclasses import dataclass

from sizer.catalog import GpuSpec
from sizer.finetune.frameworks import Framework, get_framework
from sizer.finetune.params import adapted
from sizer.finetune.setup import FinetuneSetup
from sizer.plan.throughput import ALLREDUCE_LATENCY_S, LINK_EFFICIENCY, Links
from sizer.quant import get_precision
from sizer.spec import (CHUNKED_ATTENTION, EMBEDDING, FULL_ATTENTION, HYBRID, LINEAR, SHARED_KV, SLIDING_ATTENTION,
                        ModelSpec)

# Model FLOPs utilization per framework profile: the share of the GPU's dense peak the step's FLOPs
# (as counted here) run at, fitted as the median over the published measurements of that framework
# (tests/data/finetune/published_speed.json, benchmarks/finetune_speed.py re-derives them; the test
# checks that it still does). transformers: LLaMA-Factory's HF rows; torchtune: its README tables
# (torch.compile on); unsloth: LLaMA-Factory's Unsloth rows.
MFU = {"transformers": 0.32, "torchtune": 0.64, "unsloth": 0.51}
# Profiles without fitted speed rows take the MFU of the closest fitted one: litgpt runs eager
# PyTorch modules, uncompiled, like the transformers profile (no litgpt speed row is fitted).
MFU_AS = {"litgpt": "transformers"}
# The share of that MFU a GPU architecture reaches: Hopper's dense peak is 3.2x the A100's for 1.6x
# its bandwidth, and the flash-attention-2 / cuBLAS kernels of these stacks reach a smaller share of
# it. Fitted as the median H100 / A100 ratio of implied MFU over LLM Foundry's paired runs (same
# models, settings and code on both GPUs); other architectures 1 (no paired measurements).
ARCHITECTURE_EFFICIENCY = {"hopper": 0.69}
BANDWIDTH_EFFICIENCY = 0.80      # share of peak memory bandwidth streaming kernels reach (dequantize, optimizer)
FLASH_BACKWARD_FACTOR = 2.5      # FlashAttention-2 backward: 5 matmuls (QK^T again, dV, dP, dQ, dK) to the forward's 2
EAGER_BACKWARD_FACTOR = 2.0      # eager attention keeps the probabilities: dV, dP, dQ, dK
ATTENTION_KINDS = frozenset({FULL_ATTENTION, SLIDING_ATTENTION, CHUNKED_ATTENTION, HYBRID, SHARED_KV})
# Tensor passes of one optimizer step over every trained value: a fused kernel reads the parameter,
# gradient and two states and writes the parameter and states (7); torch's foreach AdamW
# (torch/optim/adam.py _multi_tensor_adam) runs ~10 separate ops reading 12 and writing 8 tensors.
OPTIMIZER_PASSES = {"fused": 7, "foreach": 20, "adafactor": 20, "sgd": 3}
DORA_WEIGHT_PASSES = 6           # per forward, over an out x in weight: B@A, cast, W + s*BA, norm (peft dora.py)
HOST_OPTIMIZER_GBPS = 20.0       # assumption: DeepSpeed CPU Adam's effective host memory rate
HOST_LINK_GBPS = 25.0            # assumption: PCIe 4.0 x16 as reached by pinned copies


@dataclass(frozen=True)
class FlopsPerToken:
    forward: float               # decoder layers, head, attention, adapters
    backward: float
    recompute: float             # gradient checkpointing's second forward of the decoder layers

    @property
    def total(self) -> float:
        return self.forward + self.backward + self.recompute


@dataclass(frozen=True)
class StepTime:
    flops_per_token: float
    tokens_per_step: int         # per GPU: micro-batch tokens x gradient accumulation
    step_time_s: float | None
    tokens_per_s: float | None   # all GPUs together
    compute_s: float = 0.0       # FLOPs at the fitted MFU
    memory_s: float = 0.0        # dequantization, DoRA norms, optimizer step
    communication_s: float = 0.0  # collectives the compute does not hide
    mfu: float | None = None

    @property
    def seconds_per_million_tokens(self) -> float | None:
        return None if not self.tokens_per_s else 1e6 / self.tokens_per_s

    def epoch_s(self, dataset_tokens: int) -> float | None:
        """Seconds to train once over `dataset_tokens` tokens (all GPUs together)."""
        return None if not self.tokens_per_s else dataset_tokens / self.tokens_per_s


def head_params(spec: ModelSpec) -> int:
    """Weights of the output head's matmul: lm_head, or the embedding matrix when tied."""
    heads = [t for t in spec.tensors if t.component == "lm_head" and t.kind == LINEAR]
    if heads:
        return sum(t.active_params for t in heads)
    if spec.tied_embeddings:
        return sum(t.n_elements for t in spec.tensors if t.kind == EMBEDDING)
    return 0


def layer_matmul_params(spec: ModelSpec) -> int:
    """Weights one token multiplies by in the decoder layers (routed experts: the active ones)."""
    return sum(t.active_params for t in spec.tensors if t.kind == LINEAR and t.layers is not None)


def keys_per_query(seq_len: int, window: int | None) -> float:
    """Mean keys a query attends under causal masking, within `window` keys if given."""
    if window is None or window >= seq_len:
        return (seq_len + 1) / 2
    return (window * (window + 1) / 2 + (seq_len - window) * window) / seq_len


def _layer_keys(spec: ModelSpec, kind: str, seq_len: int, eager: bool) -> float:
    if eager:
        return float(seq_len)
    if kind == SLIDING_ATTENTION:
        return keys_per_query(seq_len, spec.sliding_window)
    if kind == CHUNKED_ATTENTION and spec.attention_chunk:
        return keys_per_query(min(seq_len, spec.attention_chunk), None)
    return keys_per_query(seq_len, None)


def attention_forward_flops(spec: ModelSpec, seq_len: int, attention: str = "sdpa") -> float:
    """Per token: QK^T and PV, 2 FLOPs per multiply-add, over every attention layer."""
    total = 0.0
    for kind in spec.layer_types:
        if kind not in ATTENTION_KINDS:
            continue
        g = spec.kv_geometry(kind)
        keys = _layer_keys(spec, kind, seq_len, attention == "eager")
        total += 2 * spec.n_heads * (g.head_dim + g.v_head_dim) * keys
    return total


def adapter_forward_flops(spec: ModelSpec, setup: FinetuneSetup) -> float:
    """Per token: x A^T then (x A^T) B^T on every adapted Linear the token passes through."""
    if not setup.adapters:
        return 0.0
    r = setup.lora_rank
    return sum(2 * r * (t.in_features + t.out_features) * t.active_copies
               for t in spec.tensors if adapted(t, setup))


def flops_per_token(spec: ModelSpec, setup: FinetuneSetup) -> FlopsPerToken:
    layers = 2 * layer_matmul_params(spec)
    head = 2 * head_params(spec)
    attention = attention_forward_flops(spec, setup.seq_len, setup.attention)
    adapters = adapter_forward_flops(spec, setup)
    weight_grads = 2 if setup.method == "full" else 1          # frozen base: input gradients only
    back_factor = EAGER_BACKWARD_FACTOR if setup.attention == "eager" else FLASH_BACKWARD_FACTOR
    backward = weight_grads * (layers + head) + back_factor * attention + 2 * adapters
    recompute = layers + attention + adapters if setup.gradient_checkpointing else 0.0
    return FlopsPerToken(layers + head + attention + adapters, backward, recompute)


def training_flops_per_token(spec: ModelSpec, setup: FinetuneSetup) -> float:
    return flops_per_token(spec, setup).total


def forward_flops_per_token(spec: ModelSpec, seq_len: int) -> float:
    """Forward of the whole model per token (matmuls, head and causal attention), no adapters."""
    return 2 * (layer_matmul_params(spec) + head_params(spec)) + attention_forward_flops(spec, seq_len)


def effective_mfu(framework: str, gpu: GpuSpec) -> float:
    """The framework profile's MFU on this GPU's architecture."""
    return MFU[MFU_AS.get(framework, framework)] * ARCHITECTURE_EFFICIENCY.get(gpu.architecture, 1.0)


def peak_flops(gpu: GpuSpec, precision: str) -> float | None:
    """Dense tensor FLOP/s of the compute dtype (fp32 without TF32: torch leaves it off for matmuls)."""
    tflops = (gpu.dense_tflops or {}).get(precision)
    return tflops * 1e12 if tflops else None


def _bytes_per_s(gpu: GpuSpec) -> float | None:
    return gpu.memory_bandwidth_gbps * 1e9 * BANDWIDTH_EFFICIENCY if gpu.memory_bandwidth_gbps else None


def dequantize_bytes(spec: ModelSpec, setup: FinetuneSetup) -> int:
    """QLoRA, one pass over the base: every 4-bit weight read (with its absmax) and written back as a
    16-bit weight for the matmul (bitsandbytes 0.50.2 backends/cuda/ops.py _dequant_linear_fallback:
    dequantize_4bit then F.linear, for micro-batches over 1536 tokens; MatMul4Bit.backward
    dequantizes again for the input gradient)."""
    if setup.method != "qlora":
        return 0
    fmt = get_precision(setup.quant)
    total = 0
    for t in spec.tensors:
        stored = fmt.tensor_bytes(t, spec)
        if stored < t.params * 2:                           # a quantized tensor
            total += stored + 2 * t.params
    return total


def base_passes(setup: FinetuneSetup) -> int:
    """Passes over the frozen base weights per micro-batch: forward, backward, checkpointing's recompute."""
    return 3 if setup.gradient_checkpointing else 2


def dora_per_forward(spec: ModelSpec, setup: FinetuneSetup) -> tuple[float, int]:
    """DoRA's weight norm, recomputed by every forward of an adapted Linear (peft 0.22
    tuners/lora/dora.py DoraLinearLayer.forward): (FLOPs of B@A through an identity, bytes of the
    passes over the out x in weight); independent of the tokens."""
    if setup.method != "dora":
        return 0.0, 0
    r, flops, nbytes = setup.lora_rank, 0.0, 0
    for t in spec.tensors:
        if adapted(t, setup):
            flops += 2 * t.in_features * r * (t.in_features + t.out_features) * t.copies
            nbytes += DORA_WEIGHT_PASSES * 2 * t.n_elements * t.copies
    return flops, nbytes


def optimizer_bytes(trainable: int, param_bytes: int, state_bytes: int, setup: FinetuneSetup, fw: Framework) -> float:
    """Bytes one optimizer step moves over `trainable` values (memory-bound: a few FLOPs per byte)."""
    if setup.optimizer in ("adamw-8bit", "paged-adamw-8bit"):
        return trainable * (3 * param_bytes + 4)             # bitsandbytes' fused kernel: uint8 states in and out
    if setup.optimizer == "sgd":
        return trainable * OPTIMIZER_PASSES["sgd"] * param_bytes
    if setup.optimizer == "adafactor":
        return trainable * OPTIMIZER_PASSES["adafactor"] * param_bytes
    fused = trainable * (3 * param_bytes + 4 * state_bytes)
    return fused if fw.fused_optimizer else fused * OPTIMIZER_PASSES["foreach"] / OPTIMIZER_PASSES["fused"]


def _states(spec: ModelSpec, setup: FinetuneSetup, fw: Framework):
    from sizer.finetune.params import trained_params
    from sizer.finetune.states import master_weights_default

    masters = master_weights_default(setup)
    p = trained_params(spec, setup, fw, masters and setup.zero == 0)
    return p, (4 if masters else p.param_bytes)


def optimizer_s(spec: ModelSpec, setup: FinetuneSetup, fw: Framework, gpu: GpuSpec, gpus: int) -> float:
    """One optimizer step per GPU: on the GPU at its bandwidth (its shard under ZeRO/FSDP), or on the
    host with --offload-optimizer (gradients down and parameters up over PCIe, CPU Adam)."""
    p, state_bytes = _states(spec, setup, fw)
    share = -(-p.trainable // gpus) if setup.shard_stage and gpus > 1 else p.trainable
    if setup.offload_optimizer:
        moved = share * (2 * p.param_bytes)
        return moved / (HOST_LINK_GBPS * 1e9) + share * 4 * 4 / (HOST_OPTIMIZER_GBPS * 1e9)
    rate = _bytes_per_s(gpu)
    return optimizer_bytes(share, p.param_bytes, state_bytes, setup, fw) / rate if rate else 0.0


def _fabric_allreduce_s(links: Links, nodes: int, nbytes: float) -> float:
    """A ring all-reduce between `nodes` nodes, each GPU over its share of the node's network."""
    if nodes <= 1:
        return 0.0
    if not links.fabric_gbits:
        return ALLREDUCE_LATENCY_S["fabric"]
    rate = links.fabric_gbits / 8 * 1e9 / links.node_size * LINK_EFFICIENCY
    return ALLREDUCE_LATENCY_S["fabric"] + 2 * (nodes - 1) / nodes * nbytes / rate


def communication_s(spec: ModelSpec, setup: FinetuneSetup, fw: Framework, gpu: GpuSpec, gpus: int) -> tuple[float, float]:
    """(per optimizer step, per micro-batch) seconds of data-parallel collectives, before overlap.
    DDP / ZeRO-1/2: one all-reduce of the gradients per step (reduce-scatter + all-gather moves the
    same bytes); ZeRO-3 / FSDP full-shard: per micro-batch the 16-bit weights gathered for the forward
    and again for the backward (one all-reduce's volume) and the gradients reduce-scattered; FSDP
    hybrid shards within a node that way and all-reduces each GPU's gradient shard between nodes."""
    if gpus <= 1:
        return 0.0, 0.0
    links = Links.of(gpu)
    p, _ = _states(spec, setup, fw)
    grads = p.trainable * p.param_bytes
    if setup.shard_stage < 3:
        return links.allreduce_s(gpus, grads), 0.0
    weights = p.frozen_bytes + p.trainable * 2
    shard = min(gpus, links.node_size) if setup.fsdp == "hybrid" else gpus
    per_micro = links.allreduce_s(shard, weights) + links.allreduce_s(shard, grads / 2)
    return _fabric_allreduce_s(links, -(-gpus // shard), grads / shard), per_micro


def step_time(spec: ModelSpec, setup: FinetuneSetup, gpu: GpuSpec, gpus: int = 1, mfu: float | None = None) -> StepTime:
    """One optimizer step on each of `gpus` data-parallel GPUs: `gradient_accumulation_steps`
    micro-batches of `micro_batch_size` x `seq_len` tokens, then the optimizer. `mfu` overrides the
    framework's MFU on this GPU (effective_mfu)."""
    fw = get_framework(setup.framework)
    flops = flops_per_token(spec, setup)
    micro_tokens, steps = setup.tokens_per_micro_batch, setup.gradient_accumulation_steps
    tokens = micro_tokens * steps
    peak, rate = peak_flops(gpu, setup.precision), _bytes_per_s(gpu)
    if not peak or not rate:
        return StepTime(flops.total, tokens, None, None)
    mfu = mfu or effective_mfu(fw.name, gpu)
    dora_flops, dora_bytes = dora_per_forward(spec, setup)
    forwards = 2 if setup.gradient_checkpointing else 1
    micro_compute = (micro_tokens * flops.total + forwards * dora_flops) / (peak * mfu)
    micro_memory = (base_passes(setup) * dequantize_bytes(spec, setup) + forwards * dora_bytes) / rate
    per_step_comm, per_micro_comm = communication_s(spec, setup, fw, gpu, gpus)
    backward_s = micro_compute * flops.backward / flops.total
    exposed = steps * max(0.0, per_micro_comm - micro_compute) + max(0.0, per_step_comm - backward_s)
    compute, memory = steps * micro_compute, steps * micro_memory + optimizer_s(spec, setup, fw, gpu, gpus)
    seconds = compute + memory + exposed
    return StepTime(flops.total, tokens, seconds, tokens * gpus / seconds, compute, memory, exposed, mfu)
