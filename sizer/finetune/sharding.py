"""What one GPU of a data-parallel run holds when DeepSpeed ZeRO or PyTorch FSDP shards the model
states, and what offloading moves to host memory, as DeepSpeed 0.19.8 and torch 2.13's FSDP (driven by
accelerate 1.16 and transformers 5.25's Trainer) allocate them. Stage numbers follow ZeRO: 1
optimizer states and fp32 master weights, 2 + gradients, 3 + parameters. Sources and the choices
made are in docs/reference/finetune.md, "Sharding and offload".

DeepSpeed (the engine casts the model to bf16/fp16, its optimizer keeps fp32 partitions):
- ZeRO-1/2: every GPU keeps all 16-bit parameters; its partition of the 16-bit gradients, of the fp32
  master weights and of the optimizer states; at the step an fp32 copy of its gradient partition;
  one reduce bucket of reduce_bucket_size values (two with overlap_comm, off by default). With contiguous gradients
  (the default) ZeRO-1 keeps only its gradient partition too, so 1 and 2 hold the same.
- ZeRO-3: the 16-bit parameters are partitioned too; each module's are gathered for its forward and
  backward, the next prefetch_bucket_size values ahead (at most stage3_max_live_parameters live), and
  parameters of at most stage3_param_persistence_threshold values stay gathered; the fp32 gradient
  copy is made per sub-group of sub_group_size values.
- Offload: the optimizer states, fp32 masters and fp32 gradients live in host memory (ZeRO-3 also
  the 16-bit gradient partitions; with offload_param the 16-bit parameter partitions).
FSDP (accelerate upcasts trainable parameters to fp32 under bf16/fp16 mixed precision; compute in the
low precision): parameters, gradients and optimizer states sharded; the root unit (what is outside
the decoder layers: embeddings, final norm, head) stays gathered from forward to backward; one
decoder layer (transformer_auto_wrap_policy's unit) computes gathered with the next one in flight;
SHARD_GRAD_OP keeps every unit gathered from forward to backward; HYBRID_SHARD shards within a node.
CPU offload moves parameters, gradients and optimizer states to the host.
DDP (no sharding, several GPUs): the reducer's buckets hold a second copy of the gradients
(accelerate's DistributedDataParallelKwargs gradient_as_bucket_view=False).
"""

from __future__ import annotations

from dataclasses import dataclass

from sizer.finetune.deepspeed import module_key, node_layout
from sizer.finetune.frameworks import Framework
from sizer.finetune.params import DTYPE_BYTES, TrainedParams, adapted, frozen_tensor_bytes
from sizer.finetune.setup import FinetuneSetup
from sizer.spec import ModelSpec, TensorSpec

FP32_BYTES = 4
# DeepSpeed 0.19.8 ZeRO defaults (deepspeed/runtime/zero/config.py).
DS_REDUCE_BUCKET = 500_000_000
DS_PREFETCH_BUCKET = 50_000_000
DS_MAX_LIVE_PARAMETERS = 1_000_000_000
DS_PERSISTENCE_THRESHOLD = 100_000
DS_SUB_GROUP_SIZE = 1_000_000_000
# transformers' "auto" values (integrations/deepspeed.py HfTrainerDeepSpeedConfig.trainer_config_finalize).
HF_PREFETCH_FRACTION = 0.9
HF_PERSISTENCE_PER_HIDDEN = 10
FSDP_UNITS_IN_FLIGHT = 2         # the unit computing and the next one being gathered (limit_all_gathers / prefetch)


@dataclass(frozen=True)
class ModelStates:
    """Whole-model bytes before sharding, and what the sharding needs to know of the model's layout."""

    weights: int                 # frozen base weights (adapter runs) or the trained parameters (full)
    adapters: int                # adapter parameters
    gradients: int
    optimizer_states: int        # optimizer states and fp32 master weights
    gathered: int = 0            # ZeRO-3 / FSDP: the largest unit gathered whole for its forward and backward
    masters: int = 0             # of optimizer_states: the fp32 master weights
    trainable: int = 0           # trained parameters (values)
    unit_gradient: int = 0       # the gathered unit's gradient before its reduce-scatter
    resident: int = 0            # gathered for the whole step: FSDP's root unit, ZeRO-3's persistent parameters
    all_units: int = 0           # every decoder layer gathered (FSDP SHARD_GRAD_OP)
    largest_trained: int = 0     # values of the largest trained tensor (ZeRO-Offload's gradient staging)
    compute_bytes: int = 2       # bytes per value of the compute dtype (communication buckets)
    hidden_size: int = 0


@dataclass(frozen=True)
class ShardedStates:
    """Bytes on one GPU, by part, and in its host's memory for that GPU."""

    params: int                  # frozen (adapter runs) or trained (full) parameters held: whole or a shard
    adapters: int
    gathered: int                # unsharded units, prefetched ones and those kept whole
    gradients: int               # gradients held: whole or a shard
    grad_buffers: int            # reduce buckets, fp32 gradients at the step, a unit's unsharded gradient
    optimizer_states: int
    masters: int
    host: int                    # this GPU's share of host memory (offload)
    shards: int                  # the sharding degree (1: replicated)

    @property
    def total(self) -> int:
        return (self.params + self.adapters + self.gathered + self.gradients + self.grad_buffers
                + self.optimizer_states + self.masters)


@dataclass(frozen=True)
class ZeroBuffers:
    """DeepSpeed's communication and gathering sizes, in values."""

    reduce_bucket: int
    prefetch_bucket: int
    max_live_parameters: int
    persistence_threshold: int
    sub_group_size: int
    overlap_comm: bool           # DeepSpeed's default: on for ZeRO-3 only

    def reduce_buffers(self, stage: int) -> int:
        """Reduce buckets allocated: ZeRO-1/2 double-buffer under overlap_comm (setup_buckets);
        ZeRO-3 allocates one per communication dtype whatever overlap_comm says."""
        return 2 if self.overlap_comm and stage < 3 else 1


def zero_buffers(stage: int, hidden_size: int) -> ZeroBuffers:
    """The sizes as transformers fills a config's "auto" values from the model's hidden size
    (reduce bucket h*h; ZeRO-3 prefetch int(0.9*h*h), persistence threshold 10*h); DeepSpeed's
    defaults without a hidden size and for the keys transformers leaves alone."""
    if not hidden_size:
        return ZeroBuffers(DS_REDUCE_BUCKET, DS_PREFETCH_BUCKET, DS_MAX_LIVE_PARAMETERS, DS_PERSISTENCE_THRESHOLD,
                           DS_SUB_GROUP_SIZE, stage == 3)
    return ZeroBuffers(hidden_size * hidden_size, int(HF_PREFETCH_FRACTION * hidden_size * hidden_size),
                       DS_MAX_LIVE_PARAMETERS, HF_PERSISTENCE_PER_HIDDEN * hidden_size, DS_SUB_GROUP_SIZE, stage == 3)


def _ceil_div(n: int, d: int) -> int:
    return -(-n // d)


def shard_degree(setup: FinetuneSetup, gpus: int) -> int:
    """Over how many GPUs the states are split: all of them, or one node's for HYBRID_SHARD."""
    if setup.fsdp == "hybrid":
        return node_layout(gpus, setup.gpus_per_node)[0]
    return gpus


def shard_parts(states: ModelStates, setup: FinetuneSetup, gpus: int) -> ShardedStates:
    """One GPU's model states, by part, under the run's sharding and offload."""
    if setup.fsdp is not None:
        return _fsdp(states, setup, shard_degree(setup, gpus))
    if setup.zero:
        return _zero(states, setup, gpus)
    ddp = states.gradients if gpus > 1 else 0
    return ShardedStates(states.weights, states.adapters, 0, states.gradients, ddp,
                         states.optimizer_states - states.masters, states.masters, 0, 1)


def shard(states: ModelStates, setup: FinetuneSetup, gpus: int) -> tuple[ModelStates, int]:
    """(bytes per GPU, bytes moved to host memory per GPU): gathered units counted with the
    weights, gradient buffers with the gradients, master weights with the optimizer states."""
    s = shard_parts(states, setup, gpus)
    return ModelStates(s.params + s.gathered, s.adapters, s.gradients + s.grad_buffers,
                       s.optimizer_states + s.masters, s.gathered), s.host


def _split(states: ModelStates, setup: FinetuneSetup) -> tuple[int, int]:
    """(frozen bytes, trained bytes) of the whole model."""
    if setup.adapters:
        return states.weights, states.adapters
    return 0, states.weights


def _zero(states: ModelStates, setup: FinetuneSetup, d: int) -> ShardedStates:
    buf = zero_buffers(setup.zero, states.hidden_size)
    bucket = buf.reduce_bucket * states.compute_bytes * buf.reduce_buffers(setup.zero)
    optimizer = _ceil_div(states.optimizer_states - states.masters, d)
    masters = _ceil_div(states.masters, d)
    grads = _ceil_div(states.gradients, d)
    fp32_grads = FP32_BYTES * _ceil_div(states.trainable, d)
    if setup.zero == 3:
        fp32_grads = FP32_BYTES * min(_ceil_div(states.trainable, d), buf.sub_group_size)
        return _zero3(states, setup, d, buf, bucket, optimizer, masters, grads, fp32_grads)
    frozen, trained = _split(states, setup)
    if setup.offload_optimizer:
        staging = states.largest_trained * states.compute_bytes
        host = optimizer + masters + fp32_grads + _ceil_div(trained, d) + staging
        return _parts(states, setup, frozen + trained, 0, 0, bucket + staging, 0, 0, host, d)
    return _parts(states, setup, frozen + trained, 0, grads, bucket + fp32_grads, optimizer, masters, 0, d)


def _zero3(states: ModelStates, setup: FinetuneSetup, d: int, buf: ZeroBuffers, bucket: int, optimizer: int,
           masters: int, grads: int, fp32_grads: int) -> ShardedStates:
    frozen, trained = _split(states, setup)
    params = _ceil_div(frozen + trained, d)
    prefetch = states.compute_bytes * min(buf.prefetch_bucket, buf.max_live_parameters)
    gathered = min(states.gathered + prefetch, frozen + trained) + states.resident
    buffers = bucket + states.unit_gradient
    if not setup.offload_optimizer:
        return _parts(states, setup, params, gathered, grads, buffers + fp32_grads, optimizer, masters, 0, d)
    host = optimizer + masters + grads + fp32_grads + (params if setup.offload_params else 0)
    return _parts(states, setup, 0 if setup.offload_params else params, gathered, 0, buffers, 0, 0, host, d)


def _fsdp(states: ModelStates, setup: FinetuneSetup, d: int) -> ShardedStates:
    frozen, trained = _split(states, setup)
    units = states.all_units if setup.fsdp == "shard-grad-op" else FSDP_UNITS_IN_FLIGHT * states.gathered
    gathered = states.resident + units
    params = _ceil_div(frozen + trained, d)
    grads = _ceil_div(states.gradients, d)
    optimizer = _ceil_div(states.optimizer_states, d)
    if setup.offload_optimizer or setup.offload_params:
        return _parts(states, setup, 0, gathered, 0, states.unit_gradient, 0, 0, params + grads + optimizer, d)
    return _parts(states, setup, params, gathered, grads, states.unit_gradient, optimizer, 0, 0, d)


def _parts(states: ModelStates, setup: FinetuneSetup, params: int, gathered: int, gradients: int, buffers: int,
           optimizer: int, masters: int, host: int, d: int) -> ShardedStates:
    """Splits the held parameters back into frozen base and adapters, in their whole-model proportion."""
    frozen, trained = _split(states, setup)
    if not setup.adapters or not params:
        return ShardedStates(params, 0, gathered, gradients, buffers, optimizer, masters, host, d)
    adapters = params * trained // (frozen + trained)
    return ShardedStates(params - adapters, adapters, gathered, gradients, buffers, optimizer, masters, host, d)


def host_bytes_per_node(host_per_gpu: int, gpus: int, gpus_per_node: int | None = None) -> int:
    """Host memory one node needs for its GPUs' offloaded states."""
    return host_per_gpu * node_layout(gpus, gpus_per_node)[0]


# --- the model's layout, as the sharding sees it ------------------------------------------------


def _compute_bytes(setup: FinetuneSetup) -> int:
    return DTYPE_BYTES[setup.precision]


def _gathered_bytes(t: TensorSpec, spec: ModelSpec, setup: FinetuneSetup, fw: Framework, copies: int) -> int:
    """`copies` copies of a tensor as gathered for compute: in the compute dtype, or as stored when
    smaller (QLoRA's packed 4-bit weights, stored as bf16 values under FSDP and ZeRO-3)."""
    compute = t.n_elements * copies * _compute_bytes(setup)
    if setup.method == "full":
        return compute
    stored = frozen_tensor_bytes(t, spec, setup, fw) * copies // t.copies
    return min(stored, compute)


def _adapter_values(t: TensorSpec, setup: FinetuneSetup) -> int:
    """Adapter values one copy of an adapted tensor gets (LoRA A and B; DoRA's magnitude)."""
    if not setup.adapters or not adapted(t, setup):
        return 0
    extra = t.out_features if setup.method == "dora" else 0
    return setup.lora_rank * (t.in_features + t.out_features) + extra


def _layer_parts(spec: ModelSpec, setup: FinetuneSetup, fw: Framework, layer: int) -> tuple[int, int]:
    """(bytes gathered, trained values) of one decoder layer: FSDP's wrap unit."""
    gathered = trained = 0
    for t in spec.tensors:
        if t.layers is None or layer not in t.layers:
            continue
        gathered += _gathered_bytes(t, spec, setup, fw, t.experts)
        lora = _adapter_values(t, setup) * t.experts
        gathered += lora * _compute_bytes(setup)
        trained += lora if setup.adapters else t.n_elements * t.experts
    return gathered, trained


def _root_parts(spec: ModelSpec, setup: FinetuneSetup, fw: Framework) -> tuple[int, int]:
    """(bytes gathered, trained values) of what lies outside the decoder layers: FSDP's root unit."""
    outside = [t for t in spec.tensors if t.layers is None]
    gathered = sum(_gathered_bytes(t, spec, setup, fw, 1) for t in outside)
    trained = 0 if setup.adapters else sum(t.n_elements for t in outside)
    return gathered, trained


def _modules(spec: ModelSpec, setup: FinetuneSetup, fw: Framework) -> dict[str, tuple[int, int]]:
    """Per module (one copy): (bytes gathered, trained values), DeepSpeed ZeRO-3's gathering unit."""
    out: dict[str, tuple[int, int]] = {}
    for t in spec.tensors:
        key = module_key(t.name, t.experts)
        g, n = out.get(key, (0, 0))
        trained = 0 if setup.adapters else t.n_elements * t.experts
        out[key] = (g + _gathered_bytes(t, spec, setup, fw, t.experts), n + trained)
    return out


def _persistent_bytes(spec: ModelSpec, setup: FinetuneSetup, p: TrainedParams) -> int:
    """ZeRO-3 parameters of at most the persistence threshold's values: never released once gathered."""
    threshold = zero_buffers(3, spec.hidden_size).persistence_threshold
    base = sum(t.n_elements * t.copies for t in spec.tensors if t.n_elements <= threshold)
    adapters = sum(n for s in p.trainable_shapes if (n := _values(s)) <= threshold) if setup.adapters else 0
    return (base + adapters) * _compute_bytes(setup)


def _values(shape: tuple[int, ...]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


def layout_states(states: ModelStates, spec: ModelSpec, setup: FinetuneSetup, fw: Framework, p: TrainedParams,
                  masters: int) -> ModelStates:
    """`states` with what the sharding needs of the model's layout filled in for the setup's stage."""
    common = dict(weights=states.weights, adapters=states.adapters, gradients=states.gradients,
                  optimizer_states=states.optimizer_states, masters=masters, trainable=p.trainable,
                  largest_trained=max((_values(s) for s in p.trainable_shapes), default=0),
                  compute_bytes=_compute_bytes(setup), hidden_size=spec.hidden_size)
    if setup.fsdp is not None:
        layers = [_layer_parts(spec, setup, fw, i) for i in range(spec.n_layers)]
        unit, unit_trained = max(layers)
        root, root_trained = _root_parts(spec, setup, fw)
        grad = max(unit_trained, root_trained) * _compute_bytes(setup)
        return ModelStates(**common, gathered=unit, unit_gradient=grad, resident=root,
                           all_units=sum(g for g, _ in layers))
    if setup.zero == 3:
        unit, unit_trained = max(_modules(spec, setup, fw).values())
        return ModelStates(**common, gathered=unit, unit_gradient=unit_trained * _compute_bytes(setup),
                           resident=_persistent_bytes(spec, setup, p))
    return ModelStates(**common)
