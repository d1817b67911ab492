"""Activations of a training step: what the forward keeps for the backward, the logits and loss,
and the backward's own temporaries, per micro-batch of `batch` sequences of `seq_len` tokens.

First-order model (to be replaced by the measured one): per decoder layer, the tensors autograd
saves in the compute dtype; with gradient checkpointing only each layer's input, plus one layer
recomputed during the backward; the logits in the compute dtype, their float32 copy and the
float32 log-softmax the cross-entropy keeps; the backward holds one layer's gradients at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

from sizer.finetune.frameworks import Framework, checkpoint_input_bytes, loss_bytes
from sizer.finetune.setup import FinetuneSetup
from sizer.spec import ModelSpec

FP32_BYTES = 4
NORM_SAVED_FP32 = 2              # an RMSNorm saves its float32 input and the normalized float32 value


@dataclass(frozen=True)
class ActivationParts:
    saved: int                   # tensors kept for the backward, every layer (checkpointed: layer inputs)
    layer: int                   # one layer's saved tensors (what a checkpointed layer recomputes)
    logits: int                  # logits, their float32 copy, the loss's saved log-probabilities and gradient
    backward: int                # the backward's temporaries: one layer's gradients
    host: int = 0                # checkpointed inputs offloaded to host memory

    @property
    def peak(self) -> int:
        """Device bytes at the step's peak: everything saved, plus the larger of the logits moment
        and a layer's backward (with its recomputation under checkpointing)."""
        return self.saved + max(self.logits, self.layer + self.backward)


def _layer_saved_bytes(spec: ModelSpec, tokens: int, cb: int, trains_base: bool) -> int:
    h = spec.hidden_size
    q = spec.n_heads * spec.head_dim
    kv = spec.n_kv_heads * (spec.head_dim + spec.v_head_dim)
    ff = spec.d_ff_expert * spec.n_experts_active if spec.is_moe else spec.d_ff
    norms = 2 * h * (NORM_SAVED_FP32 * FP32_BYTES + cb)
    attention = cb * (h + 3 * q + 2 * kv) + FP32_BYTES * spec.n_heads
    mlp = cb * ((4 if spec.gated_mlp else 2) * ff + h)
    frozen_saving = 0 if trains_base else cb * h         # a frozen Linear keeps no input for a weight gradient
    return tokens * (norms + attention + mlp - frozen_saving)


def logits_bytes(spec: ModelSpec, tokens: int, cb: int, fw: Framework, head_trainable: bool = False) -> int:
    """The output head's logits [tokens, vocab] in the compute dtype, the loss's float32 copy, its
    log-softmax and the float32 gradient; a chunked loss holds a chunk's float32 tensors at a time,
    a fused kernel none. Kernels that never build float32 logits (TRL's tiled log-probs, torchtune's
    chunked output, unsloth's fused CE) take their own bytes from frameworks.loss_bytes."""
    own = loss_bytes(fw, tokens, spec.vocab_size, spec.hidden_size, cb, head_trainable)
    if own is not None:
        return own
    per_token = spec.vocab_size
    if fw.loss_chunks == 0:
        return tokens * per_token * cb
    return tokens * per_token * cb + tokens * per_token * 3 * FP32_BYTES // fw.loss_chunks


def activation_parts(spec: ModelSpec, setup: FinetuneSetup, fw: Framework, batch: int, seq_len: int) -> ActivationParts:
    cb = 4 if setup.precision == "fp32" else 2
    tokens = batch * seq_len
    layer = _layer_saved_bytes(spec, tokens, cb, setup.method == "full")
    backward = 3 * tokens * spec.hidden_size * cb
    logits = logits_bytes(spec, tokens, cb, fw, setup.method == "full")
    if setup.gradient_checkpointing:
        saved, host = checkpoint_input_bytes(fw, spec.n_layers, tokens * spec.hidden_size * cb, seq_len)
        return ActivationParts(saved, layer, logits, backward, host)
    return ActivationParts(spec.n_layers * layer, 0, logits, backward)
