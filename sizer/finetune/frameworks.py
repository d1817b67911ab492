"""What each framework does that changes memory: the dtype it gives adapters and the parts it does
not train, how it computes the loss, where checkpointed activations live, which optimizer
implementation runs, how it stores 4-bit base weights. Each value is read from the framework's own
source at the version modelled (docs/reference/finetune.md, "Frameworks", cites file@version):

- `transformers`: TRL 1.16's SFTTrainer on transformers 5.25 and PEFT 0.22 (what `trl sft` runs);
- `trainer`: transformers' Trainer and PEFT without TRL: the model's own loss over full logits (what
  `sizer measure --finetune` runs);
- `torchtune`: torchtune 0.6.1's recipes (lora/full_finetune_single_device and _distributed);
- `unsloth`: unsloth / unsloth_zoo 2026.10.9 (FastLanguageModel + its patched SFTTrainer);
- `litgpt`: litgpt's finetune_lora / finetune (litgpt@00af8b0d, 2024-09: lightning 2.4, bitsandbytes 0.42).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sizer.errors import UsageError
from sizer.finetune.setup import FinetuneSetup

FP32_BYTES = 4
BF16_BYTES = 2

# How the loss meets the vocabulary (Framework.loss_kernel)
LOSS_LOGITS = "logits"                # the model's forward builds [tokens, vocab] logits; CE over their fp32 copy
LOSS_CHUNKED_OUTPUT = "chunked-output"  # torchtune: logits in chunks of tokens, each upcast to fp32 by itself
LOSS_TILED_LOGPROB = "tiled-logprob"  # TRL: log-probs from [token tile x vocab tile] GEMM tiles, no logits
LOSS_FUSED_CE = "fused-ce"            # unsloth: CE and its gradient in the forward, chunk of rows at a time
LOSS_CHUNKED_HEAD = "chunked-head"    # litgpt: the head per chunk of tokens, CE over the 16-bit chunk logits
LOSS_KERNELS = (LOSS_LOGITS, LOSS_CHUNKED_OUTPUT, LOSS_TILED_LOGPROB, LOSS_FUSED_CE, LOSS_CHUNKED_HEAD)

# litgpt@00af8b0d litgpt/finetune/lora.py fit(): model(input_ids, lm_head_chunk_size=128)
LITGPT_HEAD_CHUNK_TOKENS = 128
# lightning 2.4 fabric/plugins/precision/bitsandbytes.py _Linear4bit.quantize casts the weight to float16
# before bnb.functional.quantize_4bit: bitsandbytes 0.42 MatMul4Bit dequantizes to float16, then
# `.to(A.dtype)` makes the bf16 copy the matmul reads (two full copies of the weight at once)
LITGPT_DEQUANT_COPIES = 2

# 4-bit base weights (Framework.quant_backend)
QUANT_BITSANDBYTES = "bitsandbytes"
QUANT_TORCHAO_NF4 = "torchao-nf4"

# TRL 1.16 trl/kernels/chunked_logprob.py TOKEN_CHUNK_SIZE; trl/trainer/utils.py _CHUNKED_LOGPROB_CHUNK_SIZE
TRL_TOKEN_TILE = 4096
TRL_VOCAB_TILE = 32768
TRL_ROW_FP32_VECTORS = 7              # running max, sums, target logit ... one float32 per token each (forward)
TRL_SAVED_ROW_FP32 = 2                # log_z and entropy, saved for the backward

# unsloth_zoo 2026.10.9 fused_losses/fused_linear.py
UNSLOTH_MAX_ROWS = 4096               # _MAX_ROWS
UNSLOTH_MIN_LOGITS = 512 * 151936     # _MIN_LOGITS: fewer rows starve the GEMM
UNSLOTH_MIN_ROWS_FLOOR = 512
UNSLOTH_CHUNK_BUDGET_BYTES = 2 * 1024**3   # _CHUNK_GB = 2.0 (min with half the free memory)
UNSLOTH_ROW_PAD = 8                   # _Buffers pads the vocabulary to a multiple of 8

# unsloth_zoo 2026.10.9 gradient_checkpointing.py
UNSLOTH_OFFLOAD_MIN_BYTES = 2 * 1024 * 1024   # MINIMUM_SIZE: smaller layer inputs stay on the GPU
UNSLOTH_OFFLOAD_MIN_SEQ = 512         # unsloth models/_utils.py apply_unsloth_gradient_checkpointing

# torchao NF4 (torchtune's QLoRA): to_nf4(block_size=64, scaler_block_size=256)
TORCHAO_NF4_BLOCK = 64
TORCHAO_NF4_SCALER_BLOCK = 256
TORCHAO_NF4_TABLE = 16                # the 16 NF4 code values, kept per tensor in its dtype


@dataclass(frozen=True)
class Framework:
    name: str
    adapter_bytes: int               # LoRA A/B (and DoRA magnitude) of a 16-bit base as created
    kbit_upcast_fp32: bool           # QLoRA: the unquantized base parameters (embeddings, norms, head) cast to fp32
    loss_chunks: int                 # cross-entropy over the logits in this many chunks (1: whole logits at once)
    checkpoint_offload: bool         # checkpointed layer inputs kept in host memory, not on the GPU
    fused_optimizer: bool            # the optimizer step without foreach's full-size temporaries
    source: str
    qlora_adapter_bytes: int | None = None   # LoRA A/B over a 4-bit base when not adapter_bytes (TRL: bf16)
    dora_magnitude_bytes: int | None = None  # DoRA's magnitude vector when not the A/B width (TRL keeps it fp32)
    zero3_adapter_bytes: int | None = None   # adapters under ZeRO-3 when not adapter_bytes (TRL: base dtype)
    loss_kernel: str = LOSS_LOGITS
    checkpoint_offload_min_seq: int = 0      # offload only from this sequence length (unsloth: 512)
    checkpoint_offload_min_bytes: int = 0    # offload only layer inputs larger than this
    checkpoint_staging_buffers: int = 0      # GPU buffers a reloaded layer input lands in
    checkpoint_keeps_last: bool = False      # the last checkpointed layer's input stays on the GPU
    quant_backend: str = QUANT_BITSANDBYTES
    optimizer_in_backward: bool = False      # full fine-tuning steps each parameter in its backward hook
    compile: bool = False                    # torch.compile by default
    # unsloth's layer kernels (docs "unsloth's layer kernels"); off: transformers' modules as written
    norm_kernel: bool = False                # RMSNorm in one kernel: keeps its input as is and a float32 1/rms per row
    norm_grad_in_place: bool = False         # the final norm's input gradient overwrites its output gradient
    rope_in_place: bool = False              # rotary embedding rotates q and k where they are
    fused_lora: bool = False                 # LoRA_QKV / LoRA_W / LoRA_MLP autograd Functions where they apply
    fused_lora_grad_in_place: bool = False   # their backward writes dX into the saved input (eager only)
    checkpoint_reentrant: bool = False       # a checkpointed layer recomputes whole, its output held through its backward
    lora_input_cast: bool = True             # LoRA reads a float32 copy of its input (PEFT); False: as is
    fused_qkv: bool = False                  # one q/k/v Linear, LoRA on its fused output (litgpt LoRAQKVLinear)
    expand_kv: bool = False                  # GQA key/value heads copied out to the query heads before SDPA
    kbit_saves_input: bool = False           # bitsandbytes 0.42 MatMul4Bit keeps its input for the backward
    kbit_head: bool = False                  # QLoRA quantizes the output head too
    untied_head: bool = False                # the output head is a tensor of its own, tied checkpoint or not
    head_chunk_tokens: int = 0               # LOSS_CHUNKED_HEAD: tokens of each sequence per head chunk
    kbit_dequant_copies: int = 0             # bf16-wide copies of a 4-bit weight each matmul holds (0: not modelled)


FRAMEWORKS = {
    "transformers": Framework(
        "transformers", adapter_bytes=4, kbit_upcast_fp32=False, loss_chunks=0, checkpoint_offload=False,
        fused_optimizer=True, qlora_adapter_bytes=2, dora_magnitude_bytes=4, zero3_adapter_bytes=2,
        loss_kernel=LOSS_TILED_LOGPROB,
        source="TRL 1.16 SFTTrainer: PEFT autocast_adapter_dtype=True makes adapters float32, bf16 under ZeRO-3 "
               "and over a 4-bit base (the DoRA magnitude stays float32); no prepare_model_for_kbit_training; "
               "add_fused_lm_head: log-probs in 4096 x 32768 tiles, no logits; transformers 5.25 optim "
               "adamw_torch_fused"),
    "trainer": Framework(
        "trainer", adapter_bytes=4, kbit_upcast_fp32=True, loss_chunks=1, checkpoint_offload=False,
        fused_optimizer=True, loss_kernel=LOSS_LOGITS,
        source="transformers 5.25 Trainer + PEFT 0.22 as PEFT's quantization guide runs them: "
               "prepare_model_for_kbit_training for a 4-bit base (its unquantized parameters cast to float32), "
               "get_peft_model (float32 adapters), the model's own ForCausalLMLoss over float32 logits, "
               "optim adamw_torch_fused"),
    "torchtune": Framework(
        "torchtune", adapter_bytes=2, kbit_upcast_fp32=False, loss_chunks=8, checkpoint_offload=False,
        fused_optimizer=True, loss_kernel=LOSS_CHUNKED_OUTPUT, quant_backend=QUANT_TORCHAO_NF4,
        optimizer_in_backward=True,
        source="torchtune 0.6.1 recipes: dtype bf16 for every parameter and adapter, CEWithChunkedOutputLoss "
               "(8 chunks), torchao NF4 (blocks of 64, scalers in blocks of 256), optimizer_in_bwd for full"),
    "unsloth": Framework(
        "unsloth", adapter_bytes=4, kbit_upcast_fp32=False, loss_chunks=0, checkpoint_offload=True,
        fused_optimizer=True, loss_kernel=LOSS_FUSED_CE, checkpoint_offload_min_seq=UNSLOTH_OFFLOAD_MIN_SEQ,
        checkpoint_offload_min_bytes=UNSLOTH_OFFLOAD_MIN_BYTES, checkpoint_staging_buffers=2,
        checkpoint_keeps_last=True, compile=True, norm_kernel=True, norm_grad_in_place=True, rope_in_place=True,
        fused_lora=True, fused_lora_grad_in_place=True, checkpoint_reentrant=True,
        source="unsloth 2026.10.9: float32 adapters (prepare_model_for_training), fused linear cross-entropy "
               "(gradient in the forward, no float32 logits), use_gradient_checkpointing='unsloth' offloads "
               "layer inputs to pinned host memory (reentrant: the whole layer recomputed); Triton RMSNorm "
               "and in-place RoPE; fused LoRA QKV / O / MLP Functions; each decoder layer torch.compile'd"),
    "litgpt": Framework(
        "litgpt", adapter_bytes=2, kbit_upcast_fp32=False, loss_chunks=0, checkpoint_offload=False,
        fused_optimizer=False, loss_kernel=LOSS_CHUNKED_HEAD, lora_input_cast=False, fused_qkv=True, expand_kv=True,
        kbit_saves_input=True, kbit_head=True, untied_head=True, head_chunk_tokens=LITGPT_HEAD_CHUNK_TOKENS,
        kbit_dequant_copies=LITGPT_DEQUANT_COPIES,
        source="litgpt@00af8b0d finetune/lora.py with lightning 2.4 and bitsandbytes 0.42: precision bf16-true "
               "(every parameter and adapter bf16), LoRAQKVLinear on the fused qkv Linear, k/v expanded to the "
               "query heads (model.py), BitsandbytesPrecision quantizes every nn.Linear (the head too) from "
               "float16, MatMul4Bit keeps its input, lm_head_chunk_size=128 + chunked_cross_entropy over bf16 "
               "logits, torch.optim.AdamW (foreach) / bnb PagedAdamW for QLoRA, no activation checkpointing"),
}


def get_framework(name: str) -> Framework:
    try:
        return FRAMEWORKS[name]
    except KeyError:
        raise UsageError(f"--framework {name}: expected one of {', '.join(FRAMEWORKS)}") from None


def framework_for(setup: FinetuneSetup) -> Framework:
    """The run's framework profile with the setup's own overrides (loss chunks, activation offload)."""
    fw = get_framework(setup.framework)
    if setup.loss_chunks is not None:      # 1: whole logits; more: torchtune's chunks; 0: a fused kernel
        kernel = {0: LOSS_FUSED_CE, 1: LOSS_LOGITS}.get(setup.loss_chunks, LOSS_CHUNKED_OUTPUT)
        fw = replace(fw, loss_chunks=setup.loss_chunks, loss_kernel=kernel)
    if setup.activation_offload is not None:
        fw = replace(fw, checkpoint_offload=setup.activation_offload)
    if setup.compile is not None:
        fw = replace(fw, compile=setup.compile)
    return fw


def adapter_param_bytes(fw: Framework, method: str, zero_stage: int = 0) -> int:
    """Bytes per LoRA A/B value as the framework leaves them (fp32 training aside). `zero_stage`:
    DeepSpeed's (TRL keeps adapters in the base dtype under ZeRO-3 only, not under FSDP:
    sft_trainer.py checks args.deepspeed_plugin.zero_stage == 3)."""
    if method == "qlora" and fw.qlora_adapter_bytes is not None:
        return fw.qlora_adapter_bytes
    if zero_stage >= 3 and method != "qlora" and fw.zero3_adapter_bytes is not None:
        return fw.zero3_adapter_bytes
    return fw.adapter_bytes


def dora_magnitude_param_bytes(fw: Framework, method: str, zero_stage: int = 0) -> int:
    """Bytes per value of DoRA's magnitude vector (TRL leaves it float32 when it casts A/B to bf16)."""
    if method == "qlora" and fw.dora_magnitude_bytes is not None:
        return fw.dora_magnitude_bytes
    return adapter_param_bytes(fw, method, zero_stage)


def torchao_nf4_bytes(n_elements: int, dtype_bytes: int = BF16_BYTES) -> int:
    """torchao's NF4Tensor of `n_elements` from a `dtype_bytes` tensor: two codes per byte, an int8
    scaler per block of 64, a per-256-scaler-block factor and one mean in the source dtype, and the
    16-value code table. torchao refuses sizes not divisible by 64 x 256 (UsageError here)."""
    blocks = n_elements // TORCHAO_NF4_BLOCK
    if n_elements % TORCHAO_NF4_BLOCK or blocks % TORCHAO_NF4_SCALER_BLOCK:
        raise UsageError(f"torchao NF4 needs a tensor size divisible by {TORCHAO_NF4_BLOCK * TORCHAO_NF4_SCALER_BLOCK}, "
                         f"got {n_elements}")
    factors = blocks // TORCHAO_NF4_SCALER_BLOCK
    return n_elements // 2 + blocks + (factors + 1 + TORCHAO_NF4_TABLE) * dtype_bytes


def _pow2_floor(x: float) -> int:
    """The largest power of two at or below x (1 for x below 1)."""
    p = 1
    while p * 2 <= x:
        p *= 2
    return p


def unsloth_ce_rows(n_rows: int, hidden: int, vocab: int, bytes_per_logit: int = FP32_BYTES) -> int:
    """Rows per chunk of unsloth's fused cross-entropy (fused_linear_rows), with the chunk budget at
    its 2 GiB cap (half the free memory is more)."""
    rows = _pow2_floor(n_rows * hidden / max(vocab, 1))
    min_rows = min(max(_pow2_floor(UNSLOTH_MIN_LOGITS / max(vocab, 1)), UNSLOTH_MIN_ROWS_FLOOR), UNSLOTH_MAX_ROWS)
    rows = min(max(rows, min_rows), UNSLOTH_MAX_ROWS)
    rows = min(rows, max(UNSLOTH_CHUNK_BUDGET_BYTES // max(vocab * bytes_per_logit, 1), 2))
    return max(min(rows, max(n_rows, 1)), 1)


def _head_fp32_grad_bytes(vocab: int, hidden: int) -> int:
    """TRL accumulates a trained output head's gradient in float32 before casting it to the head's
    dtype (the cast is the gradient the states already count)."""
    return vocab * hidden * FP32_BYTES


def _tiled_logprob_bytes(tokens: int, vocab: int, hidden: int, cb: int) -> int:
    """TRL's ChunkedLogProbFunction at its backward: the hidden rows it gathered and saved, their
    float32 gradient and its cast, one [4096, 32768] tile (allocated at the full tile width), the
    saved and accumulated per-token float32 values."""
    tile = min(tokens, TRL_TOKEN_TILE) * TRL_VOCAB_TILE * cb
    rows = tokens * hidden * (cb + FP32_BYTES + cb)
    return rows + tile + tokens * FP32_BYTES * (TRL_ROW_FP32_VECTORS + TRL_SAVED_ROW_FP32)


def _fused_ce_bytes(tokens: int, vocab: int, hidden: int, cb: int) -> int:
    """unsloth's fused CE: the hidden-state gradient it computes in the forward and keeps for the
    backward, one chunk of float32 logits (vocab padded to 8), a float32 log-prob per token."""
    rows = unsloth_ce_rows(tokens, hidden, vocab)
    padded = -(-vocab // UNSLOTH_ROW_PAD) * UNSLOTH_ROW_PAD
    return tokens * hidden * cb + rows * padded * FP32_BYTES + tokens * FP32_BYTES


def _chunked_output_bytes(tokens: int, vocab: int, cb: int, chunks: int, compiled: bool = False) -> int:
    """torchtune's CEWithChunkedOutputLoss: every chunk's logits in the compute dtype, every chunk's
    float32 log-softmax (cross_entropy saves it), and the float32 copy of the chunk being reduced
    (none when the logits are float32 already: `.float()` returns them). Compiled (torchtune's
    compile=True compiles the loss: training.compile_loss), Inductor fuses the upcast, log-softmax and
    gather: autograd keeps the chunk logits and a float32 log-sum-exp per token, and the backward
    writes one chunk's gradient in the logits' dtype."""
    elements = tokens * vocab
    if compiled:
        return elements * cb + elements * cb // chunks + tokens * FP32_BYTES
    copy = elements * FP32_BYTES // chunks if cb < FP32_BYTES else 0
    return elements * cb + elements * FP32_BYTES + copy


def _chunked_head_bytes(fw: Framework, tokens: int, vocab: int, hidden: int, cb: int, seq_len: int,
                        kbit: bool) -> int:
    """litgpt's head per chunk of `head_chunk_tokens` tokens of every sequence and chunked_cross_entropy
    (reduction "none" over each chunk's 16-bit logits, no float32 copy): every chunk's logits (fit()
    holds the list through the backward), every chunk's log_softmax in the logits' dtype (kept by
    autograd) and two chunk-sized tensors of one chunk's backward (nll_loss's and log_softmax's
    gradients); a 4-bit head's dequantized copies on top (each chunk's matmul dequantizes it whole)."""
    chunk_rows = -(-tokens * min(fw.head_chunk_tokens, seq_len) // seq_len)
    dequant = fw.kbit_dequant_copies * vocab * hidden * BF16_BYTES if kbit and fw.kbit_head else 0
    return 2 * tokens * vocab * cb + 2 * chunk_rows * vocab * cb + dequant


def loss_bytes(fw: Framework, tokens: int, vocab: int, hidden: int, cb: int, head_trainable: bool = False,
               seq_len: int = 0, kbit: bool = False) -> int | None:
    """Bytes of the loss moment for the kernels that do not build float32 logits (None for
    LOSS_LOGITS: the activation model's own logits term applies). `cb` the compute dtype's width;
    a trained head's gradient itself is counted with the gradients, not here."""
    if fw.loss_kernel == LOSS_CHUNKED_OUTPUT:
        return _chunked_output_bytes(tokens, vocab, cb, fw.loss_chunks, fw.compile)
    if fw.loss_kernel == LOSS_TILED_LOGPROB:
        head = _head_fp32_grad_bytes(vocab, hidden) if head_trainable else 0
        return _tiled_logprob_bytes(tokens, vocab, hidden, cb) + head
    if fw.loss_kernel == LOSS_FUSED_CE:
        return _fused_ce_bytes(tokens, vocab, hidden, cb)     # the head gradient accumulates in its own dtype
    if fw.loss_kernel == LOSS_CHUNKED_HEAD:
        return _chunked_head_bytes(fw, tokens, vocab, hidden, cb, seq_len or tokens, kbit)
    return None


def offloads_checkpoints(fw: Framework, seq_len: int, input_bytes: int) -> bool:
    """Whether checkpointed layer inputs of this size go to host memory."""
    return (fw.checkpoint_offload and seq_len >= fw.checkpoint_offload_min_seq
            and input_bytes > fw.checkpoint_offload_min_bytes)


def checkpoint_input_bytes(fw: Framework, n_layers: int, input_bytes: int, seq_len: int) -> tuple[int, int]:
    """(GPU bytes, host bytes) of the checkpointed layer inputs, `input_bytes` each. Offloaded: the
    last layer's input stays, the others wait in host memory, and the GPU keeps staging buffers of
    one input each that the backward reloads them into."""
    if not offloads_checkpoints(fw, seq_len, input_bytes):
        return n_layers * input_bytes, 0
    kept = 1 if fw.checkpoint_keeps_last else 0
    device = (kept + fw.checkpoint_staging_buffers) * input_bytes
    return min(device, n_layers * input_bytes), (n_layers - kept) * input_bytes
