"""llama.cpp's compute buffers: the worst-case graph it reserves, allocated as ggml-alloc allocates it.

llama.cpp sizes each backend's compute buffer once, at context creation, by building the graph of a
full micro-batch (`n_ubatch` tokens, every one an output, the KV cache at its full size) and running
ggml-alloc's dynamic allocator over it without executing anything: each tensor goes into the
best-fitting free block (or the end of the buffer), element-wise ops reuse their input's memory when
that input has no other consumer, and a tensor's memory is freed once its last consumer is allocated.
The buffer is the highest offset reached. This module builds the same sequence of tensors for the
decoder layers llama.cpp builds (llama-style, GPT-NeoX, BERT, MoE) and replays the allocator over
it. Sources: docs/reference/llamacpp-memory.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

F32, F16, I32 = 4, 2, 4
KQ_MASK_PAD = 64          # GGML_KQ_MASK_PAD: the mask's rows are padded to 64 tokens
BUFFER_ALIGNMENT = 128    # CUDA buffers align tensors to 128 bytes (CPU: 64, Metal: 32); bytes, negligible


@dataclass(frozen=True)
class GraphShape:
    """The dimensions llama.cpp's graph uses (print_info's names)."""

    arch: str                 # "llama" (the default graph), "gptneox", "bert", ...
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_embd_head_k: int
    n_embd_head_v: int
    n_vocab: int
    n_ff: int
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    causal: bool = True
    has_output: bool = True   # False for embedding models (no lm head)
    swa_layers: tuple[int, ...] = ()   # layers with a sliding window (their KV holds fewer cells)

    @property
    def n_embd_q(self) -> int:
        return self.n_head * self.n_embd_head_k

    @property
    def n_embd_k_gqa(self) -> int:
        return self.n_head_kv * self.n_embd_head_k

    @property
    def n_embd_v_gqa(self) -> int:
        return self.n_head_kv * self.n_embd_head_v


# ---------------------------------------------------------------------------------------------
# tensors and the allocator


@dataclass(eq=False)
class Tensor:
    nbytes: int
    srcs: tuple["Tensor", ...] = ()
    inplace: bool = False                 # ggml_op_can_inplace: may take a sole consumer's parent memory
    view_of: "Tensor | None" = None       # views (reshape, permute, view) own no memory
    external: bool = False                # weights and the KV cache: in other buffers
    is_input: bool = False
    is_output: bool = False
    name: str = ""
    # allocator state
    offset: int | None = field(default=None, repr=False)
    children: int = field(default=0, repr=False)
    views: int = field(default=0, repr=False)


class DynAllocator:
    """ggml_dyn_tallocr for one chunk: a sorted free list whose last block is the open end."""

    def __init__(self, alignment: int = BUFFER_ALIGNMENT):
        self.alignment = alignment
        self.blocks: list[list[int]] = [[0, 1 << 62]]     # [offset, size]; the last one never ends
        self.max_size = 0

    def _aligned(self, size: int) -> int:
        return -(-size // self.alignment) * self.alignment

    def alloc(self, size: int) -> int:
        size = self._aligned(size)
        best, best_size = None, None
        for i, (_, bsize) in enumerate(self.blocks[:-1]):
            if bsize >= size and (best_size is None or bsize <= best_size):
                best, best_size = i, bsize
        if best is None:
            best = len(self.blocks) - 1
        block = self.blocks[best]
        offset = block[0]
        block[0] += size
        block[1] -= size
        if block[1] == 0:
            del self.blocks[best]
        self.max_size = max(self.max_size, offset + size)
        return offset

    def free(self, offset: int, size: int) -> None:
        size = self._aligned(size)
        for i, block in enumerate(self.blocks):
            if block[0] + block[1] == offset:
                block[1] += size
                if i + 1 < len(self.blocks) and block[0] + block[1] == self.blocks[i + 1][0]:
                    block[1] += self.blocks[i + 1][1]
                    del self.blocks[i + 1]
                return
            if offset + size == block[0]:
                block[0] = offset
                block[1] += size
                if i > 0 and self.blocks[i - 1][0] + self.blocks[i - 1][1] == block[0]:
                    self.blocks[i - 1][1] += block[1]
                    del self.blocks[i]
                return
        pos = next((i for i, b in enumerate(self.blocks) if b[0] > offset), len(self.blocks))
        self.blocks.insert(pos, [offset, size])


def allocated_bytes(nodes: list[Tensor], alignment: int = BUFFER_ALIGNMENT) -> int:
    """The buffer ggml_gallocr reserves for `nodes` (in graph order): inputs first, then each node,
    parents freed once their last consumer is allocated (ggml_gallocr_alloc_graph_impl)."""
    for node in nodes:
        node.offset, node.children, node.views = None, 0, 0
    for node in nodes:
        for src in node.srcs:
            src.children += 1
        if node.view_of is not None:
            node.view_of.views += 1
    alloc = DynAllocator(alignment)

    def allocate(t: Tensor) -> None:
        if t.external or t.offset is not None:
            return
        if t.view_of is not None:
            t.offset = -1
            return
        if t.inplace:
            for parent in t.srcs:
                if parent.external or parent.is_output or parent.nbytes != t.nbytes:
                    continue
                if parent.children == 1 and parent.views == 0:
                    if parent.view_of is None:
                        t.offset, parent.offset = parent.offset, -2     # take over the parent's memory
                        return
                    src = parent.view_of
                    if src.views == 1 and src.children == 0 and src.nbytes == t.nbytes and not src.external:
                        t.offset, src.offset = src.offset, -2
                        return
        t.offset = alloc.alloc(t.nbytes)

    def release(t: Tensor) -> None:
        if t.external or t.is_output or t.offset is None or t.offset < 0:
            return
        alloc.free(t.offset, t.nbytes)
        t.offset = -3

    for node in nodes:
        if node.is_input:
            allocate(node)
    for node in nodes:
        for src in node.srcs:
            allocate(src)
        allocate(node)
        for parent in node.srcs:
            parent.children -= 1
            if parent.children == 0 and parent.views == 0:
                if parent.view_of is not None:
                    src = parent.view_of
                    src.views -= 1
                    if src.views == 0 and src.children == 0:
                        release(src)
                else:
                    release(parent)
    return alloc.max_size


# ---------------------------------------------------------------------------------------------
# the graph, as llama.cpp builds it


@dataclass(frozen=True)
class GraphSettings:
    n_tokens: int             # the micro-batch reserved: min(n_ctx, n_ubatch)
    n_kv: int                 # KV cells the attention reads (the whole cache at reserve)
    n_kv_swa: int | None = None
    n_outputs: int | None = None   # rows of logits (the worst case: every token)
    flash_attn: bool = False


class GraphBuilder:
    """Appends tensors in the order ggml_build_forward_expand visits them."""

    def __init__(self, shape: GraphShape, settings: GraphSettings):
        self.s, self.g = shape, settings
        self.nodes: list[Tensor] = []
        self.weight = Tensor(0, external=True, name="weight")
        self.cache = Tensor(0, external=True, name="kv cache")
        self.out_ids: Tensor | None = None

    def add(self, nbytes: int, *srcs: Tensor, inplace: bool = False, name: str = "", **kw) -> Tensor:
        t = Tensor(nbytes, tuple(srcs), inplace, name=name, **kw)
        self.nodes.append(t)
        return t

    def view(self, src: Tensor, name: str = "view") -> Tensor:
        """A view of `src`; as in ggml, a view of a view points at the tensor that owns the memory."""
        return self.add(src.nbytes, src, view_of=src.view_of or src, name=name)

    def act(self, width: int, tokens: int | None = None) -> int:
        return width * (self.g.n_tokens if tokens is None else tokens) * F32

    # -- pieces
    def linear(self, x: Tensor, width: int, bias: bool = False, name: str = "mm") -> Tensor:
        out = self.add(self.act(width), x, self.weight, name=name)
        if bias:
            out = self.add(out.nbytes, out, self.weight, inplace=True, name=name + "_b")
        return out

    def norm(self, x: Tensor, bias: bool = False) -> Tensor:
        out = self.add(x.nbytes, x, inplace=True, name="norm")
        out = self.add(out.nbytes, out, self.weight, inplace=True, name="norm_w")
        if bias:
            out = self.add(out.nbytes, out, self.weight, inplace=True, name="norm_b")
        return out

    def attention(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, il: int) -> Tensor:
        """llm_build_kv: store K and V in the cache, then attend over the whole cache."""
        s, g = self.s, self.g
        n_kv = g.n_kv_swa if (il in s.swa_layers and g.n_kv_swa) else g.n_kv
        self.add(0, k, self.cache, external=True, name="cpy_k")
        v_t = v if g.flash_attn else self.view(v, "v_t")
        self.add(0, v_t, self.cache, external=True, name="cpy_v")
        q_p = self.view(q, "q_perm")
        if g.flash_attn:
            out = self.add(self.act(s.n_head * s.n_embd_head_v), q_p, self.cache, mask, name="flash_attn")
            return self.view(out, "kqv_2d")
        kq = self.add(n_kv * g.n_tokens * s.n_head * F32, q_p, self.cache, name="kq")
        kq = self.add(kq.nbytes, kq, mask, inplace=True, name="kq_soft_max")
        kqv = self.add(self.act(s.n_head * s.n_embd_head_v), self.cache, kq, name="kqv")
        merged = self.view(kqv, "kqv_perm")
        return self.add(kqv.nbytes, merged, name="kqv_merged_cont")

    def ffn(self, x: Tensor, gated: bool, bias: bool = False) -> Tensor:
        """llm_build_ffn: up, then gate, the activation in place, their product, down."""
        up = self.linear(x, self.s.n_ff, bias, "ffn_up")
        if gated:
            gate = self.linear(x, self.s.n_ff, bias, "ffn_gate")
            gate = self.add(gate.nbytes, gate, inplace=True, name="ffn_act")
            cur = self.add(gate.nbytes, gate, up, inplace=True, name="ffn_par")
        else:
            cur = self.add(up.nbytes, up, inplace=True, name="ffn_act")
        return self.linear(cur, self.s.n_embd, bias, "ffn_down")

    def moe(self, x: Tensor) -> Tensor:
        """llm_build_moe_ffn: router, top-k, the selected experts' up/gate/down (mul_mat_id), weighted sum."""
        s, t = self.s, self.g.n_tokens
        logits = self.linear(x, s.n_expert, name="ffn_moe_logits")
        probs = self.add(logits.nbytes, logits, inplace=True, name="ffn_moe_probs")
        argsort = self.add(s.n_expert * t * I32, probs, name="ffn_moe_argsort")
        selected = self.view(argsort, "ffn_moe_topk")
        weights = self.add(s.n_expert_used * t * F32, self.view(probs), selected, name="ffn_moe_weights")
        x3 = self.view(x, "moe_in")
        n_ff = s.n_ff_exp or s.n_ff
        up = self.add(n_ff * s.n_expert_used * t * F32, x3, self.weight, selected, name="ffn_moe_up")
        gate = self.add(up.nbytes, x3, self.weight, selected, name="ffn_moe_gate")
        gate = self.add(gate.nbytes, gate, inplace=True, name="ffn_moe_act")
        par = self.add(gate.nbytes, gate, up, inplace=True, name="ffn_moe_par")
        experts = self.add(s.n_embd * s.n_expert_used * t * F32, par, self.weight, selected, name="ffn_moe_down")
        experts = self.add(experts.nbytes, experts, weights, inplace=True, name="ffn_moe_weighted")
        out = self.view(experts, "expert_view_0")
        for i in range(1, s.n_expert_used):
            out = self.add(self.act(s.n_embd), out, self.view(experts, f"expert_view_{i}"), inplace=True,
                           name="ffn_moe_out")
        return out

    def output_rows(self, cur: Tensor, residual: Tensor, il: int) -> tuple[Tensor, Tensor]:
        """The last layer keeps only the output rows (ggml_get_rows with inp_out_ids), built even when
        every token is an output so that the graph's topology stays fixed."""
        if il != self.s.n_layer - 1 or self.out_ids is None:
            return cur, residual
        n = self.n_outputs
        return (self.add(self.act(self.s.n_embd, n), cur, self.out_ids, name="get_rows_cur"),
                self.add(self.act(self.s.n_embd, n), residual, self.out_ids, name="get_rows_inp"))

    @property
    def n_outputs(self) -> int:
        return self.g.n_outputs if self.g.n_outputs is not None else self.g.n_tokens

    # -- layers
    def inputs(self) -> tuple[Tensor, Tensor]:
        """The graph's inputs as copied into this device's buffer: the token embeddings (gathered on
        the host, where tok_embd lives) and the attention mask (f32; cast to f16 for flash attention)."""
        s, g = self.s, self.g
        x = self.add(self.act(s.n_embd), is_input=True, name="inp_embd")
        self.add(g.n_tokens * I32, is_input=True, name="inp_pos")
        self.out_ids = self.add(self.n_outputs * I32, is_input=True, name="inp_out_ids") if s.has_output else None
        mask_rows = -(-g.n_tokens // KQ_MASK_PAD) * KQ_MASK_PAD
        mask = self.add(g.n_kv * mask_rows * F32, is_input=True, name="kq_mask")
        if g.flash_attn:
            mask = self.add(g.n_kv * mask_rows * F16, mask, name="kq_mask_f16")
        return x, mask

    def llama_layer(self, x: Tensor, mask: Tensor, il: int) -> Tensor:
        s = self.s
        cur = self.norm(x)
        q = self.add(self.act(s.n_embd_q), self.view(self.linear(cur, s.n_embd_q, name="q")), inplace=True,
                     name="q_rope")
        k = self.add(self.act(s.n_embd_k_gqa), self.view(self.linear(cur, s.n_embd_k_gqa, name="k")),
                     inplace=True, name="k_rope")
        v = self.linear(cur, s.n_embd_v_gqa, name="v")
        att = self.linear(self.attention(q, k, v, mask, il), s.n_embd, name="wo")
        att, x = self.output_rows(att, x, il)
        ffn_inp = self.add(att.nbytes, att, x, inplace=True, name="ffn_inp")
        cur = self.norm(ffn_inp)
        out = self.moe(cur) if s.n_expert else self.ffn(cur, gated=True)
        return self.add(out.nbytes, out, ffn_inp, inplace=True, name="l_out")

    def gptneox_layer(self, x: Tensor, mask: Tensor, il: int) -> Tensor:
        """build_gptneox: fused QKV with bias, Q/K/V copied out (ggml_cont), parallel residual."""
        s = self.s
        cur = self.norm(x, bias=True)
        qkv = self.linear(cur, 3 * s.n_embd, bias=True, name="wqkv")
        q = self.add(self.act(s.n_embd), self.view(qkv), name="q_cont")
        q = self.add(q.nbytes, self.view(q), inplace=True, name="q_rope")
        k = self.add(self.act(s.n_embd), self.view(qkv), name="k_cont")
        k = self.add(k.nbytes, self.view(k), inplace=True, name="k_rope")
        v = self.add(self.act(s.n_embd), self.view(qkv), name="v_cont")
        att = self.linear(self.attention(q, k, v, mask, il), s.n_embd, bias=True, name="wo")
        att, x = self.output_rows(att, x, il)
        cur = self.norm(x, bias=True)
        ffn = self.ffn(cur, gated=False, bias=True)
        cur = self.add(ffn.nbytes, ffn, x, inplace=True, name="ffn_res")
        return self.add(cur.nbytes, cur, att, inplace=True, name="l_out")

    def bert_layer(self, x: Tensor, mask: Tensor, il: int) -> Tensor:
        """build_bert: separate Q/K/V with biases, no cache read (Q permuted, K and V permuted and copied), post-norm."""
        s, g = self.s, self.g
        q = self.view(self.view(self.linear(x, s.n_embd_q, bias=True, name="q")), "q_perm")
        k = self.linear(x, s.n_embd_k_gqa, bias=True, name="k")
        v = self.linear(x, s.n_embd_v_gqa, bias=True, name="v")
        k = self.add(k.nbytes, self.view(self.view(k)), name="k_cont")
        kq = self.add(g.n_tokens * g.n_tokens * s.n_head * F32, k, q, name="kq")
        kq = self.add(kq.nbytes, kq, mask, inplace=True, name="kq_soft_max")
        v = self.add(v.nbytes, self.view(v), name="v_cont")
        kqv = self.add(self.act(s.n_embd_q), v, kq, name="kqv")
        merged = self.add(kqv.nbytes, self.view(kqv), name="kqv_merged_cont")
        cur = self.linear(merged, s.n_embd, bias=True, name="wo")
        cur = self.add(cur.nbytes, cur, x, inplace=True, name="attn_res")
        cur = self.norm(cur, bias=True)
        ffn = self.ffn(cur, gated=False, bias=True)
        cur = self.add(ffn.nbytes, ffn, cur, inplace=True, name="ffn_res")
        return self.norm(cur, bias=True)

    def output(self, x: Tensor) -> Tensor:
        cur = self.norm(x)
        return self.add(self.s.n_vocab * self.n_outputs * F32, cur, self.weight, is_output=True, name="result_output")


def build_graph(shape: GraphShape, settings: GraphSettings, layers: range | None = None,
                output: bool = True, inputs: bool = True) -> list[Tensor]:
    """The device's part of the reserve graph: its layers (all by default) and the output head."""
    b = GraphBuilder(shape, settings)
    x, mask = b.inputs()
    layer = {"gptneox": b.gptneox_layer, "bert": b.bert_layer}.get(shape.arch, b.llama_layer)
    for il in (range(shape.n_layer) if layers is None else layers):
        x = layer(x, mask, il)
    if output and shape.has_output:
        b.output(x)
    else:
        b.add(x.nbytes, x, is_output=True, name="result_embd")
    return b.nodes


@lru_cache(maxsize=256)     # probes of one model at several precisions replay the same graph
def compute_buffer_bytes(shape: GraphShape, settings: GraphSettings, layers: range | None = None,
                         output: bool = True) -> int:
    """One device's compute buffer for its layers (and the output head when it holds it)."""
    return allocated_bytes(build_graph(shape, settings, layers, output))


def host_compute_bytes(shape: GraphShape, settings: GraphSettings) -> int:
    """The host's compute buffer when every layer is offloaded: the graph's inputs (token ids,
    positions, the f32 mask) and the token embeddings gathered from tok_embd, which stays on the host
    (the host's part of the graph is that gather, so the sum is its peak)."""
    g = settings
    mask_rows = -(-g.n_tokens // KQ_MASK_PAD) * KQ_MASK_PAD
    # BERT's input layer also gathers its token-type and absolute-position embeddings (input-layer
    # tensors, on the host) and adds them to the token embeddings: two n_embd x n_tokens tensors at once
    embeddings = 2 if shape.arch == "bert" else 1
    parts = (g.n_tokens * I32, embeddings * g.n_tokens * F32 * shape.n_embd, g.n_tokens * I32,
             g.n_kv * mask_rows * F32)
    return sum(-(-p // BUFFER_ALIGNMENT) * BUFFER_ALIGNMENT for p in parts)
