"""Activations of a training step: what autograd saves for the backward, the logits and loss, and the
temporaries of the forward, the backward and the recomputation, per micro-batch of `batch`
sequences of `seq_len` tokens, for a decoder of the Llama / Mistral / Qwen2 / Qwen3 structure as
transformers 5.25 writes it, trained in full or through PEFT 0.22 LoRA adapters.

The step is simulated tensor by tensor (`Timeline`): each operator allocates its output, autograd
keeps what its backward needs, the rest is freed when Python drops it. What each operator keeps
(read in torch's derivatives and the modeling code; docs/reference/finetune.md cites the lines):

- RMSNorm (modeling_llama.py LlamaRMSNorm): the float32 copy of its input (pow and mul keep it) and
  the float32 rsqrt per token; with a trained weight also the normalized input in the compute dtype
  (the weight's gradient needs it). An input that needs no gradient (the embedding output of a
  frozen model without checkpointing) keeps nothing.
- nn.Linear: its input, only when its weight is trained (mm keeps `self` for the weight's gradient).
  A frozen base keeps nothing: the input gradient needs only the weight.
- PEFT LoRA (tuners/lora/layer.py Linear.forward): the input cast to the adapters' float32
  (`_cast_input_dtype`), one copy per adapted module, kept by lora_A; lora_A's float32 output kept by
  lora_B; `result + lora_B(...) * scaling` promotes the 16-bit base output to float32 and adds, then
  `.to()` casts back. lora_dropout > 0 keeps the dropout's output (float32) and its bool mask instead.
- Rotary embedding: multiplies by cos/sin, which need no gradient: only cos and sin are kept (once).
- SDPA: query, key, value (GQA kept at the key/value heads: transformers passes enable_gqa when there
  is no mask), the output and the float32 logsumexp per head and token (CPU's flash kernel and
  CUDA's flash kernel alike); `transpose(1, 2).contiguous()` copies nothing: the kernels write
  the output as (batch, seq, heads, dim), which o_proj reads as is.
- SiLU keeps its input, the gated product both factors.
- The loss (loss_utils.py ForCausalLMLoss): the logits cast to float32, cross_entropy =
  log_softmax (keeps its float32 output) + nll_loss; the 16-bit logits and the final hidden state
  are alive while it runs (the model's forward still holds them).
- Backward of the loss: nll_loss's float32 gradient and log_softmax's float32 input gradient, with
  the saved log-probabilities, then the cast back to the compute dtype.
- Gradient checkpointing (non-reentrant, transformers' default use_reentrant=False): each layer's
  inputs stay alive; the backward of a layer first recomputes its forward, keeping all it saves, up
  to its last saved tensor (torch's early stop), and `enable_input_require_grads` makes the
  embedding output need a gradient.
- QLoRA (peft prepare_model_for_kbit_training casts the unquantized parameters to float32): the
  stream is float32, RMSNorm keeps its input itself, the adapters read their input uncast, and each
  4-bit Linear computes in bf16 (bitsandbytes Linear4bit.forward casts in and out).
- The backward: the loss's float32 gradients, the head's, each layer's MLP input and factor
  gradients (the largest moment inside a layer), the gradients as they accumulate (the head's
  first, the embedding's last; a tied one added out of place). Mixed precision (autocast) is not
  modelled: the step runs in the dtype the model is built in.

litgpt's structure (Framework.fused_qkv, expand_kv, lora_input_cast, kbit_saves_input, kbit_head; all
off for the other profiles): one qkv Linear with LoRA on its fused output in bf16, k and v copied out
to the query heads before SDPA, bitsandbytes 0.42's MatMul4Bit keeping each 4-bit Linear's input, two
dequantized copies of a 4-bit weight per matmul (docs/reference/finetune.md, "litgpt").

Named switches for what differs between the CPU the measurement runs on and the CUDA GPU the planner
plans: `Device` (the caching allocator's 512-byte blocks; the optimizer's per-tensor step scalars).

unsloth's layer kernels (unsloth 2026.10.9; docs "unsloth's layer kernels"), switched on by its
Framework profile and off for the others: its RMSNorm kernel (keeps the input as is and a float32
1/rms per row), RoPE in place, the fused LoRA_QKV / LoRA_W / LoRA_MLP Functions (their own saved
tensors and backward), the reentrant offloaded checkpoint (the whole layer recomputed, its output
held through its backward; staging buffers on the GPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from sizer.finetune.frameworks import Framework, checkpoint_input_bytes, loss_bytes, offloads_checkpoints
from sizer.finetune.setup import FinetuneSetup
from sizer.spec import ModelSpec

FP32_BYTES = 4
INDEX_BYTES = 8                  # int64 labels
KBIT_COMPUTE_BYTES = 2           # bnb_4bit_compute_dtype bfloat16
DROPOUT_MASK_BYTES = 1           # unsloth's fused LoRA dropout keeps a bool mask (fast_lora.py _dropout_forward)


@dataclass(frozen=True)
class Device:
    """What the device changes. CUDA's caching allocator rounds every block up to 512 bytes (tiny
    tensors such as the optimizer's step counters); CPU allocations are counted as requested."""

    name: str = "cuda"
    block_bytes: int = 512
    rng_state_bytes: int = 0     # a checkpoint's saved CPU generator state, where it counts (host memory on CUDA)
    dropout_mask_bytes: int = 1  # per element of a dropout's kept mask: CUDA's fused native_dropout keeps a
                                 # bool mask; the CPU's composite dropout keeps its scaled noise in the input's dtype


# torch.get_rng_state() is a 5056-byte tensor (the Mersenne Twister state); checkpoint keeps one per layer
CUDA = Device("cuda", 512, 0, 1)
CPU = Device("cpu", 1, 5056, FP32_BYTES)


@dataclass(frozen=True)
class ActivationParts:
    saved: int                   # tensors kept for the backward when the forward ends (checkpointed: layer inputs)
    layer: int                   # one layer's saved tensors (what a checkpointed layer recomputes)
    logits: int                  # the loss moment above the saved tensors: 16-bit and float32 logits, log-probabilities
    backward: int                # the backward's largest moment above what it starts from
    host: int = 0                # checkpointed inputs offloaded to host memory
    forward_peak: int = 0        # the forward's peak (loss included), above the weights and optimizer states
    backward_peak: int = 0       # the backward's peak (the gradients created so far included)
    step_peak: int = 0           # the optimizer step's peak (gradients included)
    gradients: int = 0           # the gradients the planner adds beside these parts

    @property
    def peak(self) -> int:
        """Device bytes at the step's peak above weights, gradients and optimizer states (the
        gradients are counted beside: a forward-time peak has none of them yet)."""
        top = max(self.forward_peak, self.backward_peak, self.step_peak)
        if top == 0:
            return self.saved + max(self.logits, self.layer + self.backward)
        return max(top - self.gradients, 0)

    @property
    def step_total(self) -> int:
        """The peak above weights and optimizer states: what a measurement of the step compares."""
        return max(self.forward_peak, self.backward_peak, self.step_peak)


@dataclass
class Timeline:
    """Live bytes over a sequence of allocations and frees; `peak` is the highest point. With
    `keeping` false (a checkpointed forward) what autograd would keep is freed at once."""

    live: int = 0
    peak: int = 0
    named: dict = field(default_factory=dict)
    keeping: bool = True
    input_grad: bool = True      # whether the layer input in use needs a gradient (a dropout mask is kept)
    stop_after: str = ""         # a recompute's early stop: the module whose saved tensor is the layer's last

    def alloc(self, name: str, nbytes: int) -> None:
        if name == "saved" and not self.keeping:
            self.peak = max(self.peak, self.live + nbytes)
            return
        self.named[name] = self.named.get(name, 0) + nbytes
        self.live += nbytes
        self.peak = max(self.peak, self.live)

    def free(self, *names: str) -> None:
        for name in names:
            self.live -= self.named.pop(name, 0)

    def bump(self, nbytes: int) -> None:
        """A moment `nbytes` above the live bytes (a transient allocated and freed at once)."""
        self.peak = max(self.peak, self.live + nbytes)


@dataclass(frozen=True)
class Shape:
    """Per-token widths and the setup's choices, the inputs of the layer simulation."""

    tokens: int
    hidden: int
    q_width: int
    k_width: int
    v_width: int
    heads: int
    kv_heads: int
    ff: int
    gated: bool
    qk_norm: bool
    cb: int                      # compute dtype bytes
    rank: int
    dropout: bool
    full: bool
    targets: frozenset           # adapted projection names
    mask_bytes: int = 1          # Device.dropout_mask_bytes
    cast: bool = True            # LoRA copies its input to float32 (a 16-bit stream)
    loss_chunks: int = 1         # Framework.loss_chunks: float32 loss tensors for 1/chunks of the tokens; 0 none
    ckpt_offload: bool = False   # Framework.checkpoint_offload: checkpointed inputs in host memory
    kbit: bool = False           # base Linears are bitsandbytes 4-bit (computing in bf16)
    fused_loss: int | None = None    # bytes of a loss kernel that builds no float32 logits (frameworks.loss_bytes)
    # unsloth's layer kernels (Framework switches; all off: transformers' modules)
    norm_kernel: bool = False        # Framework.norm_kernel
    norm_grad_in_place: bool = False  # Framework.norm_grad_in_place
    rope_in_place: bool = False      # Framework.rope_in_place
    fused_qkv: bool = False          # LoRA_QKV runs q/k/v (all three adapted, no bias, 16-bit base)
    fused_o: bool = False            # LoRA_W runs o_proj
    fused_mlp: bool = False          # LoRA_MLP runs gate/up/down (all three adapted, a dense gated MLP)
    lora_dx_in_place: bool = False   # the fused backward writes dX into its saved input (not under compile)
    reentrant: bool = False          # Framework.checkpoint_reentrant
    staging_inputs: int = 0          # offloaded: Framework.checkpoint_staging_buffers (reloads land in them)
    keeps_last_input: bool = False   # offloaded: Framework.checkpoint_keeps_last
    # litgpt's structure (Framework fields of the same names; the defaults are transformers + PEFT)
    peft: bool = True            # PEFT's LoRA layer (its temporaries); False: litgpt's LoRALinear / LoRAQKVLinear
    qkv_linear: bool = False     # one q/k/v Linear; k and v copied out of it (Framework.fused_qkv)
    eager_cells: int = 0         # eager attention: score cells per layer (batch x heads x seq x seq); 0 for SDPA/flash
    expand_kv: bool = False      # GQA key/value heads copied out to the query heads before SDPA
    kbit_saves_input: bool = False   # bitsandbytes 0.42 MatMul4Bit keeps its input
    kbit_head: bool = False      # the output head is 4-bit too (its input kept like the others')
    dequant_weight_copies: int = 0   # bf16-wide copies of a 4-bit weight a forward matmul holds (modelled when > 0)


def stream_bytes(setup: FinetuneSetup, kbit_upcast_fp32: bool = True) -> int:
    """Bytes per activation value: the compute dtype's; float32 for QLoRA where the framework casts
    the unquantized parameters (embeddings, norms, head) to float32 (peft's
    prepare_model_for_kbit_training), so the residual stream, attention and logits run in float32."""
    if setup.precision == "fp32" or (setup.method == "qlora" and kbit_upcast_fp32):
        return FP32_BYTES
    return 2


def shape_of(spec: ModelSpec, setup: FinetuneSetup, tokens: int, device: Device = CUDA, fw: Framework | None = None,
             seq_len: int = 0) -> Shape:
    from sizer.finetune.params import adapted, module_name

    ff = spec.d_ff_expert * spec.n_experts_active if spec.is_moe else spec.d_ff
    cb = stream_bytes(setup, fw.kbit_upcast_fp32 if fw else True)
    targets = frozenset(module_name(t) for t in spec.tensors if setup.adapters and adapted(t, setup))
    kbit = setup.method == "qlora"
    shape = Shape(tokens, spec.hidden_size, spec.n_heads * spec.head_dim, spec.n_kv_heads * spec.head_dim,
                 spec.n_kv_heads * spec.v_head_dim, spec.n_heads, spec.n_kv_heads, ff, spec.gated_mlp,
                 any(t.name.endswith("q_norm.weight") for t in spec.tensors),
                 cb, setup.lora_rank, setup.lora_dropout > 0,
                 setup.method == "full", targets, device.dropout_mask_bytes,
                 cb != FP32_BYTES and (fw.lora_input_cast if fw else True),
                 fw.loss_chunks if fw else 1, _offloads(spec, setup, fw, tokens, cb), kbit,
                 None if fw is None else loss_bytes(fw, tokens, spec.vocab_size, spec.hidden_size, cb,
                                                    setup.method == "full", seq_len or setup.seq_len, kbit),
                 *_kernel_switches(spec, setup, fw, targets, cb))
    if setup.attention == "eager":
        from dataclasses import replace

        shape = replace(shape, eager_cells=tokens * spec.n_heads * (seq_len or setup.seq_len))
    return shape if fw is None else _framework_shape(shape, fw)


def _kernel_switches(spec: ModelSpec, setup: FinetuneSetup, fw: Framework | None, targets: frozenset, cb: int
                     ) -> tuple:
    """Shape's unsloth switches, from the profile and where its fused LoRA Functions apply
    (llama.py patch_peft_model: every projection of the group adapted, no base bias, no DoRA, a
    16-bit base)."""
    if fw is None:
        return (False,) * 8 + (0, False)
    from sizer.finetune.params import module_name

    biased = {module_name(t) for t in spec.tensors if t.name.endswith(".bias")}
    fused = fw.fused_lora and setup.method in ("lora", "qlora") and cb != FP32_BYTES

    def group(*names: str) -> bool:
        return fused and all(n in targets and n not in biased for n in names)

    mlp = spec.gated_mlp and not spec.is_moe and group("gate_proj", "up_proj", "down_proj")
    return (fw.norm_kernel, fw.norm_grad_in_place, fw.rope_in_place, group("q_proj", "k_proj", "v_proj"),
            group("o_proj"), mlp, fw.fused_lora_grad_in_place and not fw.compile,
            fw.checkpoint_reentrant and setup.gradient_checkpointing, fw.checkpoint_staging_buffers,
            fw.checkpoint_keeps_last)


def _framework_shape(s: Shape, fw: Framework) -> Shape:
    """The framework's structural switches on the shape (litgpt's; none for the PEFT-based ones)."""
    from dataclasses import replace

    return replace(s, peft=fw.lora_input_cast, qkv_linear=fw.fused_qkv, expand_kv=fw.expand_kv,
                   kbit_saves_input=fw.kbit_saves_input, kbit_head=fw.kbit_head,
                   dequant_weight_copies=fw.kbit_dequant_copies)


def _offloads(spec: ModelSpec, setup: FinetuneSetup, fw: Framework | None, tokens: int, cb: int) -> bool:
    """Whether the checkpointed layer inputs go to host memory (unsloth: from 512 tokens, inputs above 2 MiB)."""
    if fw is None or not setup.gradient_checkpointing:
        return False
    return offloads_checkpoints(fw, setup.seq_len, tokens * spec.hidden_size * cb)


def linear(tl: Timeline, s: Shape, name: str, width_in: int, width_out: int, out: str, inp: str,
           adapters: int | None = None) -> None:
    """A projection of the tensor named `inp` into `out`: the base Linear (a trained one keeps its
    input), and LoRA's A and B beside it where `name` is adapted (`adapters`: how many projections
    one fused LoRA adapts, litgpt's qkv)."""
    t = s.tokens
    adapted = name in s.targets if adapters is None else adapters > 0
    if s.full or (adapted and not s.cast and not s.dropout) or (s.kbit and s.kbit_saves_input):
        _keep_input(tl, inp)                                        # kept as is (an adapter or MatMul4Bit reads it)
    if s.kbit:                                                      # bitsandbytes: input and output in bf16
        tl.bump(t * (width_in + width_out) * KBIT_COMPUTE_BYTES
                + s.dequant_weight_copies * width_in * width_out * KBIT_COMPUTE_BYTES)
    tl.alloc(out, t * width_out * s.cb)                             # the base layer's result, first
    if not adapted:
        return
    if not s.peft:
        _litgpt_lora(tl, s, width_in, width_out, adapters or 1)
        return
    x_bytes = t * width_in * FP32_BYTES
    if s.cast:
        tl.alloc("lora_x", x_bytes)                                 # the float32 cast, held by forward's `x`
    if s.dropout:
        mask = t * width_in * s.mask_bytes if tl.input_grad else 0
        tl.alloc("saved", x_bytes + mask)                           # dropout output and its mask
    else:
        _keep(tl, "lora_x")
    tl.alloc("saved", t * s.rank * FP32_BYTES)                      # lora_A's output
    if tl.stop_after == name:                                       # a recompute stops at its last saved tensor
        tl.free("lora_x")
        return
    if s.kbit:
        tl.bump(t * width_out * s.cb)                               # PEFT's defensive result.clone()
        tl.bump(2 * t * width_out * FP32_BYTES)                     # the scaled branch, the sum
    else:
        # lora_B's output, scaled; the 16-bit base output promoted to float32 and the sum
        tl.bump(3 * t * width_out * FP32_BYTES)
    tl.free("lora_x")


def _litgpt_lora(tl: Timeline, s: Shape, width_in: int, width_out: int, adapters: int) -> None:
    """litgpt's LoRA beside the base output (lora.py LoRALinear / LoRAQKVLinear.forward): A reads the
    input (or its dropout) in the adapters' 16-bit dtype, its output [tokens, rank x adapters] kept by
    B (conv1d for the fused qkv); zero_pad's full-width output, `* scaling`, then the sum."""
    t = s.tokens
    if s.dropout:
        mask = t * width_in * s.mask_bytes if tl.input_grad else 0
        tl.alloc("saved", t * width_in * s.cb + mask)               # dropout output and its mask
    tl.alloc("saved", t * s.rank * adapters * s.cb)                 # A's output
    tl.bump(2 * t * width_out * s.cb)                               # zero_pad's output, scaled


def norm(tl: Timeline, s: Shape, width: int, rows: int, out: str, needs_grad: bool, inp: str) -> None:
    """RMSNorm of the tensor named `inp` over `width` values, `rows` of them per token, into `out`."""
    t = s.tokens
    if s.norm_kernel:
        _norm_kernel(tl, s, width, rows, out, needs_grad, inp)
        return
    fp32 = t * rows * width * FP32_BYTES
    if needs_grad:
        if s.cb == FP32_BYTES:
            _keep_input(tl, inp)                                    # .to(float32) is the input itself
        else:
            tl.alloc("saved", fp32)                                 # its float32 copy
        tl.alloc("saved", t * rows * FP32_BYTES)                    # rsqrt
        if s.full:
            tl.alloc("saved", t * rows * width * s.cb)              # the normalized input the weight multiplies
        tl.bump(fp32 + t * rows * width * s.cb)                     # normalized float32, its cast
    else:
        tl.bump(2 * fp32 + t * rows * width * s.cb)
    tl.alloc(out, t * rows * width * s.cb)


def _norm_kernel(tl: Timeline, s: Shape, width: int, rows: int, out: str, needs_grad: bool, inp: str) -> None:
    """unsloth's Fast_RMS_Layernorm (rms_layernorm.py): one kernel writes the output and a float32
    1/rms per row, and the Function saves its input as is (the weight's gradient is made from the
    input and 1/rms: no normalized copy); nothing is recorded when nothing needs a gradient."""
    if needs_grad:
        _keep_input(tl, inp)
        tl.alloc("saved", s.tokens * rows * FP32_BYTES)
    tl.alloc(out, s.tokens * rows * width * s.cb)


def _fused_linear(tl: Timeline, s: Shape, width_in: int, width_out: int, out: str) -> None:
    """One projection inside unsloth's fused LoRA Functions (utils.py matmul_lora): a 4-bit base
    weight dequantized to the compute dtype, the base output, then X @ A (rank wide) added into it
    in place through B (addmm_). With lora_dropout, the dropped-out input the branch reads and its
    bool mask, which the Function saves."""
    t, cb = s.tokens, s.cb
    if s.dropout:
        tl.alloc("saved", t * width_in * DROPOUT_MASK_BYTES)
        tl.alloc("xd", t * width_in * cb)
    if s.kbit:
        tl.bump(width_in * width_out * cb + t * width_out * cb)    # the dequantized weight beside the output
    tl.alloc(out, t * width_out * cb)
    tl.bump(t * s.rank * cb)                                        # X @ A
    tl.free("xd")


def _keep_input(tl: Timeline, name: str) -> None:
    """A tensor the caller still uses becomes a saved one (nothing to free in a checkpoint)."""
    if tl.keeping:
        _keep(tl, name)


def _keep(tl: Timeline, *names: str) -> None:
    """Move tensors the backward needs into the saved total."""
    if not tl.keeping:
        tl.free(*names)
        return
    for name in names:
        nbytes = tl.named.pop(name, 0)
        tl.named["saved"] = tl.named.get("saved", 0) + nbytes


def _keep_if(tl: Timeline, keep: bool, *names: str) -> None:
    if keep:
        _keep(tl, *names)
    else:
        tl.free(*names)


def _fused_attention(tl: Timeline, s: Shape) -> None:
    """litgpt's CausalSelfAttention (model.py): one qkv Linear; q, k, v reshaped out of its permuted
    view (copies; k and v expanded to the query heads first), rotary in float32 against float32
    cos/sin then cast back, `torch.cat` of the rotated part (a copy SDPA keeps), the qkv output alive
    until forward returns; SDPA's output is proj's input."""
    t, cb = s.tokens, s.cb
    adapters = sum(1 for n in ("q_proj", "k_proj", "v_proj") if n in s.targets)
    linear(tl, s, "qkv", s.hidden, s.q_width + s.k_width + s.v_width, "qkv", "x", adapters)
    tl.input_grad = True
    _keep_if(tl, s.full, "x")
    k_width = s.q_width if s.expand_kv else s.k_width
    v_width = s.v_width * s.heads // s.kv_heads if s.expand_kv else s.v_width
    for name, width in (("q", s.q_width), ("k", k_width)):
        tl.alloc(name, t * width * cb)                              # reshape's copy
        tl.bump(t * width * (cb + 3 * FP32_BYTES))                  # rotated half, x*cos, rotated*sin, their sum
        tl.alloc(name + "r", t * width * cb)                        # apply_rope's cast back
        tl.alloc(name + "c", t * width * cb)                        # torch.cat: the tensor SDPA keeps
        tl.free(name, name + "r")
    tl.alloc("v", t * v_width * cb)
    tl.alloc("attn", t * s.q_width * cb + t * s.heads * FP32_BYTES)
    _keep(tl, "qc", "kc", "v", "attn")
    linear(tl, s, "o_proj", s.q_width, s.hidden, "o", "attn")
    tl.free("qkv")


def attention(tl: Timeline, s: Shape) -> None:
    """q/k/v projections, (q/k norms), rotary, SDPA and o_proj, from the normed input "x"."""
    t, cb = s.tokens, s.cb
    if s.qkv_linear:                                                # litgpt: one q/k/v Linear
        _fused_attention(tl, s)
        return
    if s.fused_qkv:                                                 # LoRA_QKV saves its input, not its outputs
        for name, width in (("q", s.q_width), ("k", s.k_width), ("v", s.v_width)):
            _fused_linear(tl, s, s.hidden, width, name)
        _keep(tl, "x")
    else:
        linear(tl, s, "q_proj", s.hidden, s.q_width, "q", "x")
        linear(tl, s, "k_proj", s.hidden, s.k_width, "k", "x")
        linear(tl, s, "v_proj", s.hidden, s.v_width, "v", "x")
        _keep_if(tl, s.full, "x")
    tl.input_grad = True
    if s.qk_norm:
        norm(tl, s, s.q_width // s.heads, s.heads, "qn", True, "q")
        norm(tl, s, s.k_width // s.kv_heads, s.kv_heads, "kn", True, "k")
        tl.free("q", "k")
        tl.named["q"], tl.named["k"] = tl.named.pop("qn"), tl.named.pop("kn")
    _rotary(tl, s)
    if s.eager_cells:
        _eager_attention(tl, s)
    else:
        # output and logsumexp; the kernels write the output as (batch, seq, heads, dim), so
        # transpose(1, 2).contiguous() copies nothing and o_proj's input is this same tensor
        tl.alloc("attn", t * s.q_width * cb + t * s.heads * FP32_BYTES)
        _keep(tl, "qr", "kr", "v", "attn")
    if s.fused_o:                                                   # LoRA_W saves its input: the output kept above
        _fused_linear(tl, s, s.q_width, s.hidden, "o")
    else:
        linear(tl, s, "o_proj", s.q_width, s.hidden, "o", "attn")
    tl.free("attn")                                                 # eager's output copy, where nothing kept it


def _eager_attention(tl: Timeline, s: Shape) -> None:
    """transformers' eager_attention_forward: K and V repeated to the query heads (repeat_kv copies
    them when there are fewer), the scores, scaled, masked, their float32 softmax (kept: its backward
    needs it) and its cast back (kept by the product with V), then the output transposed into a
    contiguous (batch, seq, heads, dim) copy, o_proj's input (kept only where o_proj's weight is trained:
    the product with V keeps its inputs, not its output)."""
    t, cb, cells = s.tokens, s.cb, s.eager_cells
    for name, width in (("kr", s.k_width), ("v", s.v_width)):
        if width < s.q_width:                                       # repeat_kv: expand + reshape copies
            tl.alloc(name + "x", t * s.q_width * cb)
    tl.alloc("scores", cells * cb)
    tl.bump(2 * cells * cb + cells * FP32_BYTES)                    # scaled, masked, float32 softmax being made
    tl.free("scores")
    tl.alloc("probs", cells * (FP32_BYTES + cb))                    # softmax's float32 output and its cast
    tl.alloc("ctx", t * s.q_width * cb)                             # probs @ V, (batch, heads, seq, dim)
    tl.alloc("attn", t * s.q_width * cb)                            # transposed and made contiguous
    tl.free("ctx")
    repeated = [n for n in ("krx", "vx") if n in tl.named]
    _keep(tl, "qr", "probs", *(repeated or ["kr", "v"]))            # "attn": kept by o_proj only if trained
    if repeated:                                                    # the matmuls keep the copies, not these
        tl.free("kr", "v")


def _rotary(tl: Timeline, s: Shape) -> None:
    """q and k rotated: into new tensors through two temporaries each (transformers'
    apply_rotary_pos_emb), or where they are (unsloth's Fast_RoPE_Embedding_QK_Positions)."""
    if s.rope_in_place:
        tl.named["qr"], tl.named["kr"] = tl.named.pop("q"), tl.named.pop("k")
        return
    t, cb = s.tokens, s.cb
    tl.alloc("qr", t * s.q_width * cb)                              # rotary outputs (kept by SDPA)
    tl.bump(2 * t * s.q_width * cb)                                 # q*cos, rotate_half(q)*sin
    tl.free("q")
    tl.alloc("kr", t * s.k_width * cb)
    tl.bump(2 * t * s.k_width * cb)
    tl.free("k")


def mlp(tl: Timeline, s: Shape) -> None:
    """gate/up/act/down (gated) or fc1/act/fc2, from the normed input "x"."""
    t, cb = s.tokens, s.cb
    if s.fused_mlp:
        _fused_mlp(tl, s)
        return
    if s.gated:
        linear(tl, s, "gate_proj", s.hidden, s.ff, "gate", "x")
        tl.alloc("act", t * s.ff * cb)
        _keep(tl, "gate", "act")                                    # silu keeps its input, the product both factors
        linear(tl, s, "up_proj", s.hidden, s.ff, "up", "x")
        _keep(tl, "up")
        tl.alloc("prod", t * s.ff * cb)
    else:
        linear(tl, s, "fc1", s.hidden, s.ff, "fc1", "x")
        tl.alloc("prod", t * s.ff * cb)
        _keep(tl, "fc1")
    linear(tl, s, "down_proj" if s.gated else "fc2", s.ff, s.hidden, "down", "prod")
    _keep_if(tl, s.full, "x", "prod")                               # MLP.forward's `x` lives until it returns


def _fused_mlp(tl: Timeline, s: Shape) -> None:
    """unsloth's LoRA_MLP: e = gate(X), g = up(X), h = swiglu(e, g) in a new tensor, down(h); the
    Function saves X, e and g (and the dropout masks): h is made again in the backward."""
    t, f, cb = s.tokens, s.ff, s.cb
    _fused_linear(tl, s, s.hidden, f, "gate")
    _fused_linear(tl, s, s.hidden, f, "up")
    tl.alloc("prod", t * f * cb)
    _fused_linear(tl, s, f, s.hidden, "down")
    tl.free("prod")
    _keep(tl, "x", "gate", "up")


def layer_forward(tl: Timeline, s: Shape, input_needs_grad: bool) -> None:
    """One decoder layer from its input "h" to its output "h" (the input is left to the caller as
    "h_in"); what autograd keeps goes to "saved"."""
    t = s.tokens
    tl.named["h_in"] = tl.named.pop("h", 0)
    norm(tl, s, s.hidden, 1, "x", input_needs_grad, "h_in")
    tl.input_grad = input_needs_grad
    attention(tl, s)
    tl.alloc("h2", t * s.hidden * s.cb)                             # residual add
    tl.free("o")
    norm(tl, s, s.hidden, 1, "x", True, "h2")
    mlp(tl, s)
    if tl.stop_after and s.fused_mlp:                                 # LoRA_MLP saves last, after its output
        return
    tl.alloc("h", t * s.hidden * s.cb)
    tl.free("down", "h2")


def layer_saved_bytes(s: Shape, input_needs_grad: bool = True) -> int:
    """What one layer keeps for the backward."""
    tl = Timeline()
    tl.alloc("h", s.tokens * s.hidden * s.cb)
    layer_forward(tl, s, input_needs_grad)
    return tl.named.get("saved", 0)



@dataclass(frozen=True)
class StepGradients:
    """Gradient bytes as the backward creates them: the output head's (and final norm's) first, then
    each layer's, then the embedding's."""

    head: int
    per_layer: int
    embedding: int


def step_gradients(spec: ModelSpec, setup: FinetuneSetup, total: int) -> StepGradients:
    """Split the run's gradient bytes by when the backward creates them (a tied head's gradient is
    the embedding's, created by the head's backward)."""
    from sizer.spec import EMBEDDING

    if setup.method != "full":
        return StepGradients(0, total // spec.n_layers, 0)
    width = total // spec.params if spec.params else 0
    outside = [t for t in spec.tensors if t.layers is None]
    embedding = sum(t.params for t in outside if t.kind == EMBEDDING and t.component != "lm_head")
    head = sum(t.params for t in outside) - embedding
    if spec.tied_embeddings:
        head, embedding = head + embedding, 0
    per_layer = (total - (head + embedding) * width) // spec.n_layers
    return StepGradients(head * width, per_layer, embedding * width)


@dataclass(frozen=True)
class StepMoments:
    forward_peak: int            # above what the step starts with (weights, optimizer states)
    saved: int                   # live when the backward begins
    backward_peak: int
    layer: int                   # one decoder layer's saved tensors
    logits: int                  # the loss moment above the saved tensors of the layers


def _forward(tl: Timeline, spec: ModelSpec, s: Shape, setup: FinetuneSetup, seq_len: int, device: Device) -> list[int]:
    """Embedding, rotary tables, the decoder layers; returns each layer's saved bytes."""
    t = s.tokens
    tl.alloc("h", t * s.hidden * s.cb)                                # the embedding's output
    tl.alloc("rope", 2 * seq_len * spec.head_dim * s.cb)              # cos, sin (one row per position)
    if s.eager_cells:                                                 # eager: one additive causal mask [b, 1, q, kv]
        tl.alloc("mask", s.eager_cells // s.heads * s.cb)
    layers = [layer_saved_bytes(s, s.full or setup.gradient_checkpointing or i > 0) for i in range(spec.n_layers)]
    tl.keeping = not setup.gradient_checkpointing                     # a checkpoint keeps none of them
    if s.ckpt_offload:
        tl.alloc("staging", s.staging_inputs * t * s.hidden * s.cb)   # the GPU buffers reloads land in
    for i in range(spec.n_layers):
        if setup.gradient_checkpointing:
            tl.alloc(f"rng{i}", device.rng_state_bytes)                   # preserve_rng_state: the CPU generator's state
        layer_forward(tl, s, s.full or setup.gradient_checkpointing or i > 0)
        kept = not s.ckpt_offload or (s.keeps_last_input and i == spec.n_layers - 1)
        if setup.gradient_checkpointing and kept:
            tl.named[f"ckpt{i}"] = tl.named.pop("h_in")
        else:
            tl.free("h_in")                                           # (offloaded: copied to host memory)
    tl.keeping = True
    return layers


def _loss_forward(tl: Timeline, spec: ModelSpec, s: Shape, batch: int, seq_len: int) -> None:
    """Final norm, output head, ForCausalLMLoss: the float32 logits, log_softmax, nll_loss."""
    t, v = s.tokens, spec.vocab_size
    before = tl.named.get("saved", 0)
    norm(tl, s, s.hidden, 1, "x", True, "h")
    tl.free("h")                                                      # the last layer's output, normalized
    tl.named["final_norm"] = tl.named.get("saved", 0) - before
    tl.named["saved"] = before
    if s.fused_loss is not None:                                      # no [tokens, vocab] logits kept
        tl.bump(s.fused_loss)
        _keep_head_input(tl, s)
        return
    tl.alloc("logits", t * v * s.cb)
    f32 = _loss_fp32_bytes(s, v)
    if s.cb != FP32_BYTES:
        tl.alloc("logits32", f32)                                     # logits.float()
    # the labels padded by one; shifted by one, contiguous already for one sequence, else copied
    tl.alloc("labels", batch * (seq_len + 1) * INDEX_BYTES if batch == 1 else t * INDEX_BYTES)
    tl.alloc("logp", f32)                                             # log_softmax's output (kept)
    tl.free("logits32")
    tl.free("logits")                                                 # the model's forward returns
    _keep_head_input(tl, s)


def _keep_head_input(tl: Timeline, s: Shape) -> None:
    if s.full or (s.kbit and s.kbit_head and s.kbit_saves_input):
        tl.named["head_in"] = tl.named.pop("x")                       # a trained head keeps its input
    else:
        tl.free("x")


def _loss_fp32_bytes(s: Shape, vocab: int) -> int:
    """One float32 [tokens, vocab] tensor of the loss, or the chunk a chunked loss holds; none for a
    fused kernel."""
    if s.loss_chunks == 0:
        return 0
    return -(-s.tokens // s.loss_chunks) * vocab * FP32_BYTES


def _loss_backward(tl: Timeline, s: Shape, vocab: int, grads: StepGradients) -> None:
    t = s.tokens
    if s.fused_loss is not None:                                      # the kernel's moment was counted whole
        tl.bump(s.fused_loss)
        tl.alloc("grads", grads.head)
        tl.alloc("g", t * s.hidden * s.cb)
        tl.free("head_in")
        tl.bump(final_norm_backward_bytes(s))
        tl.free("final_norm")
        return
    f32 = _loss_fp32_bytes(s, vocab)
    tl.bump(2 * f32)                                                  # nll_loss's gradient, log_softmax's
    tl.free("logp", "labels")
    tl.alloc("g32", f32)
    tl.alloc("glogits", t * vocab * s.cb)                             # cast back to the compute dtype
    tl.free("g32")
    tl.alloc("grads", grads.head)
    tl.alloc("g", t * s.hidden * s.cb)                                # the hidden state's gradient
    tl.free("glogits", "head_in")
    tl.bump(final_norm_backward_bytes(s))
    tl.free("final_norm")


def final_norm_backward_bytes(s: Shape) -> int:
    """The final norm's backward: transformers' float32 temporaries; unsloth's kernel writes a new
    input gradient, or none where it overwrites the output's (reuse_grad)."""
    if not s.norm_kernel:
        return 3 * s.tokens * s.hidden * FP32_BYTES
    return 0 if s.norm_grad_in_place else s.tokens * s.hidden * s.cb


def _before_recompute(tl: Timeline, s: Shape) -> None:
    """What the backward computes before a checkpointed layer's first saved tensor is needed: an
    adapted last projection's output nodes save nothing, so the float32 gradient of its LoRA branch
    (after `* scaling`) and the 16-bit gradient of its base output exist before the recompute."""
    last = "down_proj" if s.gated else "fc2"
    if last in s.targets and not s.fused_mlp:                         # (LoRA_MLP's output node saves all)
        tl.alloc("out_grads", s.tokens * s.hidden * (FP32_BYTES + s.cb))


def _down_weight_grad_bytes(s: Shape) -> int:
    return s.hidden * s.ff * s.cb if s.full else 0


def _mlp_backward(tl: Timeline, s: Shape) -> int:
    """The start of a layer's backward, its largest moment: down_proj's input gradient (a trained
    one also its weight gradient, and its kept input freed after), then the gated product's two
    factor gradients beside it. Returns the saved bytes freed here."""
    t, f, cb = s.tokens, s.ff, s.cb
    if s.fused_mlp:
        _fused_mlp_backward(tl, s)
        return 0
    tl.free("out_grads")
    if s.kbit:                                  # bitsandbytes' backward: the weight dequantized, the bf16 gradient
        copies = max(1, s.dequant_weight_copies)
        tl.bump(copies * s.hidden * f * KBIT_COMPUTE_BYTES + t * f * KBIT_COMPUTE_BYTES)
    tl.alloc("gin", t * f * cb)
    freed = 0
    if s.full:
        tl.alloc("grads", _down_weight_grad_bytes(s))
        freed = t * f * cb                                            # the product down_proj kept
    elif ("down_proj" if s.gated else "fc2") in s.targets:
        # LoRA: the float32 input gradient of the branch beside the base's (cast to a 16-bit stream)
        tl.bump(t * f * (FP32_BYTES + cb) if s.cast else t * f * FP32_BYTES)
        freed = t * f * FP32_BYTES + t * s.rank * FP32_BYTES          # the float32 input and A's output
    tl.named["saved"] = tl.named.get("saved", 0) - freed
    tl.live -= freed
    if s.gated:
        tl.bump(2 * t * f * cb)                                       # the gradients of both factors
    tl.free("gin")
    return freed


def mlp_backward_bytes(s: Shape) -> int:
    """The largest moment of one layer's MLP backward above the bytes live when it starts."""
    tl = Timeline()
    _mlp_backward(tl, s)
    return tl.peak


def _fused_mlp_backward(tl: Timeline, s: Shape) -> None:
    """LoRA_MLP.backward (fast_lora.py): dY through down_proj (a 4-bit weight dequantized) into one
    new [tokens, ff] tensor; swiglu's backward writes h, df and de over it and the saved e and g;
    the rank-wide products of the adapters' gradients; dX written into the saved X (eager) or new
    (compiled) while up's and then gate's weight is dequantized. Its saved tensors are freed
    with the layer's."""
    t, f, cb, r = s.tokens, s.ff, s.cb, s.rank
    weight = s.hidden * f * cb if s.kbit else 0
    tl.bump(weight + t * f * cb)                                      # matmul_lora: the weight and DW
    tl.alloc("gin", t * f * cb)
    tl.bump(t * r * cb)                                               # dY @ B_down (then A_down @ h.t())
    tl.alloc("rank_grads", 2 * t * r * cb)                            # up_dB, gate_dB
    tl.bump(t * r * cb)                                               # A @ X.t(), one at a time
    dx = 0 if s.lora_dx_in_place else t * s.hidden * cb
    tl.bump(weight + dx)                                              # up's (then gate's) weight beside dX
    tl.free("gin", "rank_grads")


def _layers_backward(tl: Timeline, spec: ModelSpec, s: Shape, setup: FinetuneSetup, layers: list[int],
                     grads: StepGradients, device: Device) -> None:
    for i in reversed(range(spec.n_layers)):
        lent = _recompute(tl, s, i, device) if setup.gradient_checkpointing else 0   # keeping what it saves
        early = _mlp_backward(tl, s)
        tl.named["saved"] = tl.named.get("saved", 0) - (layers[i] - early)
        tl.live -= layers[i] - early
        tl.alloc("grads", grads.per_layer - _down_weight_grad_bytes(s))
        tl.free("h_in", f"rng{i}", "h_out")
        tl.alloc("staging", lent)                                     # the staging buffer, free again
    tl.free("rope")


def _recompute(tl: Timeline, s: Shape, i: int, device: Device) -> int:
    """A checkpointed layer's forward again, keeping what it saves. Non-reentrant (transformers):
    what the backward computes before the first saved tensor is needed, then the forward up to its
    last saved tensor. Reentrant (unsloth's checkpoint Function): the whole forward, its output
    held until torch.autograd.backward(output, dY) returns. Returns the staging bytes the input
    borrowed."""
    if not s.reentrant:
        _before_recompute(tl, s)
    tl.alloc("rng_now", device.rng_state_bytes)                       # the generator's state, read again
    lent = 0 if f"ckpt{i}" in tl.named else _reload(tl, s, i)        # brought back from host memory
    tl.named["h"] = tl.named.pop(f"ckpt{i}")
    tl.stop_after = "" if s.reentrant else ("down_proj" if s.gated else "fc2")   # torch's early stop
    layer_forward(tl, s, True)
    tl.stop_after = ""
    if s.reentrant:
        tl.named["h_out"] = tl.named.pop("h")
    tl.free("h", "rng_now", "out_grads", "down", "x", "h2", "prod")
    return lent


def _reload(tl: Timeline, s: Shape, i: int) -> int:
    """An offloaded layer input copied back: into one of the staging buffers (its bytes lent to
    the layer until its backward ends), or a new tensor where the framework keeps none."""
    x = s.tokens * s.hidden * s.cb
    if not s.staging_inputs:
        tl.alloc(f"ckpt{i}", x)
        return 0
    tl.named["staging"] -= x                                          # the same bytes, now the layer's input
    tl.named[f"ckpt{i}"] = x
    return x


def _embedding_backward(tl: Timeline, spec: ModelSpec, s: Shape, setup: FinetuneSetup, grads: StepGradients) -> None:
    """A trained embedding's gradient, made from the hidden state's; a tied one is added to the
    head's out of place (AccumulateGrad: the old gradient, the new one and their sum)."""
    if setup.method != "full":
        tl.free("g")
        return
    table = spec.vocab_size * s.hidden * s.cb
    if spec.tied_embeddings:
        tl.bump(table)
        tl.free("g")
        tl.bump(2 * table)
        return
    tl.alloc("grads", grads.embedding)
    tl.free("g")


def step_moments(spec: ModelSpec, setup: FinetuneSetup, batch: int, seq_len: int, grads: StepGradients,
                 device: Device = None, fw: Framework | None = None) -> StepMoments:
    """The forward's peak, the saved bytes and the backward's peak of one micro-batch."""
    device = device or CUDA
    s = shape_of(spec, setup, batch * seq_len, device, fw, seq_len)
    tl = Timeline()
    layers = _forward(tl, spec, s, setup, seq_len, device)
    before_loss = tl.live
    _loss_forward(tl, spec, s, batch, seq_len)
    forward_peak, saved = tl.peak, tl.live
    tl.peak = tl.live
    _loss_backward(tl, s, spec.vocab_size, grads)
    _layers_backward(tl, spec, s, setup, layers, grads, device)
    _embedding_backward(tl, spec, s, setup, grads)
    return StepMoments(forward_peak, saved, tl.peak, max(layers), forward_peak - before_loss)


@lru_cache(maxsize=4096)      # the planner asks the same step for every GPU it ranks (--recommend)
def activation_parts(spec: ModelSpec, setup: FinetuneSetup, fw: Framework, batch: int, seq_len: int,
                     gradients: int = 0, optimizer_temporaries: int = 0, device: Device = CUDA) -> ActivationParts:
    """The step's activations; `gradients` the trained parameters' gradient bytes (on this device)."""
    m = step_moments(spec, setup, batch, seq_len, step_gradients(spec, setup, gradients), device, fw)
    host = 0
    if setup.gradient_checkpointing:
        cb = stream_bytes(setup, fw.kbit_upcast_fp32)
        host = checkpoint_input_bytes(fw, spec.n_layers, batch * seq_len * spec.hidden_size * cb, seq_len)[1]
    return ActivationParts(m.saved, m.layer, m.logits, max(m.backward_peak - m.saved, 0), host, m.forward_peak,
                           m.backward_peak, gradients + optimizer_temporaries, gradients)
