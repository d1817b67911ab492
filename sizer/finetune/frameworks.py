"""What each framework does that changes memory: the dtype it gives adapters and the parts it does
not train, how it computes the loss, where checkpointed activations live, which optimizer
implementation runs. `transformers` is Trainer + PEFT + TRL as their defaults set them; the others
are profiles where their documented behaviour differs."""

from __future__ import annotations

from dataclasses import dataclass

from sizer.errors import UsageError


@dataclass(frozen=True)
class Framework:
    name: str
    adapter_bytes: int               # LoRA A/B (and DoRA magnitude) as created: PEFT casts them to float32
    kbit_upcast_fp32: bool           # QLoRA: the unquantized base parameters (embeddings, norms, head) cast to fp32
    loss_chunks: int                 # cross-entropy over the logits in this many chunks (1: whole logits at once)
    checkpoint_offload: bool         # checkpointed layer inputs kept in host memory, not on the GPU
    fused_optimizer: bool            # the optimizer step without foreach's full-size temporaries
    source: str


FRAMEWORKS = {
    "transformers": Framework(
        "transformers", adapter_bytes=4, kbit_upcast_fp32=True, loss_chunks=1, checkpoint_offload=False,
        fused_optimizer=True,
        source="transformers 5.25 training_args.py: optim defaults to adamw_torch_fused with torch >= 2.8 "
               "(AdamW(fused=True)); "
               "peft get_peft_model(autocast_adapter_dtype=True) casts adapters to float32; "
               "peft.utils.other.prepare_model_for_kbit_training casts non-quantized parameters to float32"),
    "torchtune": Framework(
        "torchtune", adapter_bytes=2, kbit_upcast_fp32=False, loss_chunks=8, checkpoint_offload=False,
        fused_optimizer=True,
        source="torchtune recipes: dtype bf16 throughout, CEWithChunkedOutputLoss (8 chunks)"),
    "unsloth": Framework(
        "unsloth", adapter_bytes=4, kbit_upcast_fp32=False, loss_chunks=0, checkpoint_offload=True,
        fused_optimizer=False,
        source="unsloth: fused cross-entropy kernel (no float32 logits), use_gradient_checkpointing='unsloth' "
               "offloads layer inputs to host memory"),
}


def get_framework(name: str) -> Framework:
    try:
        return FRAMEWORKS[name]
    except KeyError:
        raise UsageError(f"--framework {name}: expected one of {', '.join(FRAMEWORKS)}") from None
