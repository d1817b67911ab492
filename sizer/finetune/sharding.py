"""What one GPU of a data-parallel run holds when ZeRO or FSDP shards the model states, and what
offloading moves to host memory. Stage numbers follow ZeRO: 1 optimizer states (and fp32 master
weights), 2 + gradients, 3 + parameters."""

from __future__ import annotations

from dataclasses import dataclass

from sizer.finetune.setup import FinetuneSetup


@dataclass(frozen=True)
class ModelStates:
    """Whole-model bytes before sharding."""

    weights: int                 # frozen base weights (adapter runs) or the trained parameters (full)
    adapters: int                # adapter parameters
    gradients: int
    optimizer_states: int        # optimizer states and fp32 master weights
    gathered: int = 0            # ZeRO-3 / FSDP: the largest unit gathered whole for its forward and backward


def shard(states: ModelStates, setup: FinetuneSetup, gpus: int) -> tuple[ModelStates, int]:
    """(bytes per GPU, bytes moved to host memory per GPU) under the run's sharding and offload."""
    stage = setup.shard_stage if gpus > 1 or setup.offload_optimizer or setup.offload_params else 0

    def part(n: int, from_stage: int) -> int:
        return -(-n // gpus) if stage >= from_stage else n

    optimizer = part(states.optimizer_states, 1)
    gradients = part(states.gradients, 2)
    weights, adapters = part(states.weights, 3), part(states.adapters, 3)
    host = 0
    if setup.offload_optimizer:
        host += optimizer
        optimizer = 0
    if setup.offload_params:
        host += weights + adapters
        weights, adapters = 0, 0
    gathered = states.gathered if stage >= 3 else 0
    return ModelStates(weights + gathered, adapters, gradients, optimizer), host
