"""DeepSpeed's own ZeRO model-state estimators, for the same inputs, as DeepSpeed 0.19.8 computes them.

DeepSpeed prints these from estimate_zero2_model_states_mem_needs_all_cold (ZeRO-2, and the figure
people quote for ZeRO-1: DeepSpeed has no stage-1 estimator) and estimate_zero3_model_states_mem_needs
_all_cold (deepspeed/runtime/zero/stage_1_and_2.py and stage3.py @ 0.19.8). They count model states
only (16-bit parameters, gradients, fp32 master weights, Adam's two fp32 states) for training every
parameter, scaled on the host by `additional_buffer_factor`. The arithmetic below keeps DeepSpeed's
operand order: its figures come from float products truncated with int(), and a reordered product
can land one byte away. tests/data/finetune/deepspeed_estimates.json records the real functions'
answers (tools/deepspeed_anchors.py); the tests hold these to them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from sizer.finetune.setup import FinetuneSetup
from sizer.spec import ModelSpec

DEEPSPEED_VERSION = "0.19.8"
ADDITIONAL_BUFFER_FACTOR = 1.5           # the estimators' default
GPUS_PER_NODE = 8                        # sizer's default node when the user gives a GPU count only
# Bytes per parameter the estimators count on the GPU: 2 for the 16-bit parameters; 18 sharded:
# 16-bit gradients 2, fp32 gradients 4, fp32 master weights 4, Adam's momentum and variance 8.
PARAM16_BYTES = 2
SHARDED_STATE_BYTES = 18
OPTIMIZER_HOST_BYTES = 16                # ZeRO-3 with the optimizer offloaded: host bytes per parameter
OPTIMIZER_AND_PARAMS_HOST_BYTES = 18     # ... and the parameters offloaded too
HOST_PARAM_COPY_BYTES = 4                # a host copy of each parameter per GPU process (model loading)
LAYER_GATHER_BYTES = 4                   # ZeRO-3: the largest layer's 16-bit parameters and gradients


def zero2_model_states_bytes(total_params: int, gpus_per_node: int = 1, nodes: int = 1, cpu_offload: bool = True,
                             additional_buffer_factor: float = ADDITIONAL_BUFFER_FACTOR) -> tuple[int, int]:
    """(host bytes per node, bytes per GPU): estimate_zero2_model_states_mem_needs."""
    gpus = nodes * gpus_per_node
    if not cpu_offload:
        host = total_params * HOST_PARAM_COPY_BYTES * gpus_per_node * additional_buffer_factor
        return int(host), PARAM16_BYTES * total_params + int(SHARDED_STATE_BYTES * total_params / gpus)
    host = total_params * max(HOST_PARAM_COPY_BYTES * gpus, OPTIMIZER_HOST_BYTES) * additional_buffer_factor
    return int(host), int(PARAM16_BYTES * total_params)


def zero3_model_states_bytes(total_params: int, largest_layer_params: int, gpus_per_node: int = 1, nodes: int = 1,
                             cpu_offload: bool = True, cpu_offload_params: bool = True, zero_init: bool = True,
                             additional_buffer_factor: float = ADDITIONAL_BUFFER_FACTOR) -> tuple[int, int, int]:
    """(host bytes per node, bytes per GPU, largest layer's bytes): estimate_zero3_model_states_mem_needs.
    The GPU figure always holds one gathered layer; the host one, without zero.Init, a full copy of
    the parameters per GPU process while the model loads."""
    gpus = nodes * gpus_per_node
    node_share = 1 / nodes
    layer = LAYER_GATHER_BYTES * largest_layer_params
    if not cpu_offload:
        per_node = largest_layer_params if zero_init else total_params
        host = per_node * HOST_PARAM_COPY_BYTES * gpus_per_node * additional_buffer_factor
        return int(host), layer + int(SHARDED_STATE_BYTES * total_params / gpus), layer
    per_param = OPTIMIZER_AND_PARAMS_HOST_BYTES if cpu_offload_params else OPTIMIZER_HOST_BYTES
    gpu = layer if cpu_offload_params else layer + int(PARAM16_BYTES * total_params / gpus)
    if zero_init:
        host = total_params * per_param * node_share * additional_buffer_factor
    else:
        host = total_params * max(HOST_PARAM_COPY_BYTES * gpus_per_node, per_param * node_share) \
            * additional_buffer_factor
    return int(host), int(gpu), layer


def module_key(name: str, experts: int) -> str:
    """The module owning a parameter: its name less the parameter's own; a routed expert tensor
    belongs to the layer's fused experts module (transformers 5 keeps all experts in one module)."""
    if experts > 1 and ".experts." in name:
        return name.split(".experts.")[0] + ".experts"
    return name.rsplit(".", 1)[0] if "." in name else name


def largest_layer_params(spec: ModelSpec) -> int:
    """DeepSpeed's largest_layer_params (stage3.model_to_params): the most parameters one module
    holds directly (recurse=False), e.g. a Linear's weight and bias, or the embedding."""
    per_module: dict[str, int] = {}
    for t in spec.tensors:
        key = module_key(t.name, t.experts)
        per_module[key] = per_module.get(key, 0) + t.n_elements * t.experts
    return max(per_module.values())


@dataclass(frozen=True)
class DeepSpeedEstimate:
    """What DeepSpeed's estimator prints for one configuration."""

    stage: int                   # 2 (also quoted for ZeRO-1) or 3
    host_bytes_per_node: int
    gpu_bytes: int
    options: str                 # DeepSpeed's own option line, e.g. "offload_param=none, offload_optimizer=cpu , zero_init=1"
    total_params: int
    largest_layer_params: int


def node_layout(gpus: int, gpus_per_node: int | None = None) -> tuple[int, int]:
    """(GPUs per node, nodes): up to GPUS_PER_NODE per node unless the user says."""
    per_node = gpus_per_node or min(gpus, GPUS_PER_NODE)
    return per_node, -(-gpus // per_node)


def deepspeed_estimate(spec: ModelSpec, setup: FinetuneSetup, gpus: int, gpus_per_node: int | None = None,
                       zero_init: bool = True) -> DeepSpeedEstimate | None:
    """DeepSpeed's estimator figure for full fine-tuning of `spec` under the setup's ZeRO stage and
    offload; None where DeepSpeed has none (no ZeRO, FSDP, or adapters: it assumes every parameter
    trained). transformers loads ZeRO-3 models under deepspeed.zero.Init, hence zero_init."""
    if setup.zero == 0 or setup.method != "full":
        return None
    per_node, nodes = node_layout(gpus, gpus_per_node)
    total = spec.params
    offload = "cpu " if setup.offload_optimizer else "none"
    if setup.zero < 3:
        host, gpu = zero2_model_states_bytes(total, per_node, nodes, setup.offload_optimizer)
        return DeepSpeedEstimate(2, host, gpu, f"offload_optimizer={offload}", total, 0)
    largest = largest_layer_params(spec)
    host, gpu, _ = zero3_model_states_bytes(total, largest, per_node, nodes, setup.offload_optimizer,
                                            setup.offload_params, zero_init)
    params = "cpu " if setup.offload_params else "none"
    options = f"offload_param={params}, offload_optimizer={offload}, zero_init={int(zero_init)}"
    return DeepSpeedEstimate(3, host, gpu, options, total, largest)
