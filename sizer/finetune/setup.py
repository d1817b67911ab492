"""The fine-tuning run as the user describes it: method, adapters, optimizer, precision, batch,
sharding and the framework whose behaviour to follow. Validated once, here."""

from __future__ import annotations

from dataclasses import dataclass

from sizer.errors import UsageError

METHODS = ("full", "lora", "dora", "qlora")
OPTIMIZERS = ("adamw", "adamw-8bit", "paged-adamw-8bit", "adafactor", "sgd")
PRECISIONS = ("bf16", "fp16", "fp32")
QUANTS = ("nf4", "nf4-dq", "fp4", "fp4-dq")
ATTENTIONS = ("sdpa", "eager", "flash")
FRAMEWORKS = ("transformers", "trainer", "torchtune", "unsloth", "litgpt")
FSDP_MODES = ("full-shard", "shard-grad-op", "hybrid")
OFFLOAD_TARGETS = ("none", "cpu")

# --lora-targets short names (the projections' own names work too). PEFT's "all-linear" is every
# nn.Linear of the decoder layers (the output head excluded: peft.tuners.tuners_utils
# _maybe_include_all_linear_layers).
TARGET_ALIASES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj", "up": "up_proj",
                  "down": "down_proj"}
ALL_LINEAR = "all-linear"


@dataclass(frozen=True)
class FinetuneSetup:
    """One fine-tuning run. Sizes are per micro-batch; `seq_len` tokens per sequence (with `packing`,
    every sequence is full; without, `seq_len` is the longest the run meets, which sets the peak)."""

    method: str = "lora"
    lora_rank: int = 16
    lora_alpha: int | None = None            # scales the update; no memory effect (recorded for the launch)
    lora_targets: tuple[str, ...] = (ALL_LINEAR,)
    optimizer: str = "adamw"
    precision: str = "bf16"                  # the compute dtype
    master_weights: bool | None = None       # fp32 copies of what is trained; None: the framework's default
    gradient_checkpointing: bool = True
    micro_batch_size: int = 1
    seq_len: int = 2048
    packing: bool = False
    attention: str = "sdpa"
    quant: str = "nf4-dq"                    # QLoRA's base weights (bitsandbytes)
    framework: str = "transformers"
    zero: int = 0                            # DeepSpeed ZeRO stage
    fsdp: str | None = None                  # FSDP sharding strategy
    offload_optimizer: bool = False
    offload_params: bool = False
    gradient_accumulation_steps: int = 1
    # per-run overrides of what the framework profile does by default (None: the profile's behaviour)
    loss_chunks: int | None = None           # cross-entropy over the logits in this many chunks (0: fused, no fp32 logits)
    activation_offload: bool | None = None   # checkpointed activations kept in host memory (torchtune enable_activation_offloading)
    compile: bool | None = None              # torch.compile (None: the framework's default)
    optimizer_in_backward: bool = False      # each parameter stepped, and its gradient freed, in the backward (torchtune optimizer_in_bwd)
    gpus_per_node: int | None = None         # GPUs in one node (HYBRID_SHARD's shard group, host memory per node);
    #                                          None: up to 8 (sizer.finetune.deepspeed.GPUS_PER_NODE)
    lora_dropout: float = 0.0                # PEFT's default; > 0 keeps a dropout output and mask per adapted module

    def __post_init__(self) -> None:
        _one_of("--method", self.method, METHODS)
        _one_of("--optimizer", self.optimizer, OPTIMIZERS)
        _one_of("--precision", self.precision, PRECISIONS)
        _one_of("--quant", self.quant, QUANTS)
        _one_of("--attention", self.attention, ATTENTIONS)
        _one_of("--framework", self.framework, FRAMEWORKS)
        for name in ("lora_rank", "micro_batch_size", "seq_len", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be a positive number, got {getattr(self, name)}")
        if self.loss_chunks is not None and self.loss_chunks < 0:
            raise UsageError(f"loss chunks must be 0 (fused) or a positive number, got {self.loss_chunks}")
        if self.optimizer_in_backward and self.gradient_accumulation_steps > 1:
            raise UsageError("the optimizer step in the backward frees each gradient at once: no gradient accumulation")
        if self.gpus_per_node is not None and self.gpus_per_node < 1:
            raise UsageError(f"--gpus-per-node must be a positive number, got {self.gpus_per_node}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise UsageError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if self.zero not in (0, 1, 2, 3):
            raise UsageError(f"--zero must be 0, 1, 2 or 3, got {self.zero}")
        if self.fsdp is not None:
            _one_of("--fsdp", self.fsdp, FSDP_MODES)
            if self.zero:
                raise UsageError("--zero and --fsdp are two ways to shard: give one of them")
        if self.offload_params and self.shard_stage < 3:
            raise UsageError("--offload-params cpu needs parameters sharded: --zero 3 or --fsdp full-shard")
        if self.offload_optimizer and not self.shard_stage:
            raise UsageError("--offload-optimizer cpu needs DeepSpeed ZeRO (--zero 1, 2 or 3) or FSDP (--fsdp)")
        # torchtune shards QLoRA with FSDP2 (recipes/configs/llama3_1/405B_qlora.yaml: "Config for multi-device
        # QLoRA in lora_finetune_fsdp2.py"); Unsloth does not shard parameters.
        if self.method == "qlora" and self.shard_stage == 3 and self.framework == "unsloth":
            raise UsageError(f"QLoRA with sharded parameters runs under transformers' FSDP/ZeRO-3 support or "
                             f"torchtune's FSDP2 recipe, not --framework {self.framework}")

    @property
    def adapters(self) -> bool:
        return self.method in ("lora", "dora", "qlora")

    @property
    def shard_stage(self) -> int:
        """What is sharded across GPUs, on ZeRO's scale: 1 optimizer states, 2 + gradients, 3 + parameters.
        FSDP FULL_SHARD (and HYBRID_SHARD inside a node) is 3, SHARD_GRAD_OP 2."""
        if self.fsdp is not None:
            return 2 if self.fsdp == "shard-grad-op" else 3
        return self.zero

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.micro_batch_size * self.seq_len

    def target_names(self) -> tuple[str, ...] | None:
        """The projection names LoRA adapts; None for PEFT's all-linear."""
        if ALL_LINEAR in self.lora_targets:
            return None
        return tuple(TARGET_ALIASES.get(t, t) for t in self.lora_targets)


def _one_of(flag: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise UsageError(f"{flag} {value}: expected one of {', '.join(allowed)}")


def parse_targets(text: str) -> tuple[str, ...]:
    """--lora-targets: all-linear, or projections by name or short name, comma separated (q,k,v,o)."""
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    if not names:
        raise UsageError("--lora-targets: name at least one projection (q,k,v,o) or all-linear")
    if ALL_LINEAR in names and len(names) > 1:
        raise UsageError("--lora-targets: all-linear already names every projection")
    return names


DEFAULT_METHODS = ("full", "lora", "qlora")
_SUFFIXES = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}


def setups_for(methods, **options) -> list[FinetuneSetup]:
    """One FinetuneSetup per method named (--method, repeated or comma separated; default full, lora,
    qlora), the other options shared."""
    names = [m.strip().lower() for value in methods for m in value.split(",") if m.strip()] or list(DEFAULT_METHODS)
    targets = parse_targets(options.pop("lora_targets", ALL_LINEAR))
    return [FinetuneSetup(method=name, lora_targets=targets, **options) for name in dict.fromkeys(names)]


def parse_token_count(text: str, flag: str) -> int:
    """A token count as people write it: 250000, 250K, 100M, 1.5B, 2T."""
    raw = str(text).strip().replace(",", "").replace("_", "")
    scale = _SUFFIXES.get(raw[-1:].lower(), 1)
    number = raw[:-1] if scale > 1 else raw
    try:
        value = float(number)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: expected a number of tokens such as 250000, 100M or 1.5B") from None
    if not 1 <= value * scale < 1e18:
        raise UsageError(f"{flag} {text!r}: expected a positive number of tokens below 10^18")
    return int(round(value * scale))
