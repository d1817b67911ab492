"""GPTQ solver: second-order weight quantization of one Linear layer, plus a round-to-nearest baseline.

Algorithm of Frantar et al. 2022 ("GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers"). For a weight W [N out, K in] and calibration inputs X [tokens, K] the
layer-wise objective is ||X W^T - X Q^T||^2, whose Hessian with respect to a row of W is
H = 2/n X^T X. Columns are quantized one at a time; the rounding error of column j is spread over
the not-yet-quantized columns through the upper Cholesky factor of H^-1 (optimal brain surgeon
update), in blocks so that most of the work is one matrix product per block.

Layout of the result (see QuantizedWeight): integer codes per weight in the original column order,
one scale and one integer zero point per output row and group, and g_idx giving each input column's
group. dequantized[n, k] = scales[g_idx[k], n] * (codes[n, k] - zeros[g_idx[k], n]).

Everything runs in float32 on the device of the weight. This module imports torch and is never
imported by the memory calculator.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

SUPPORTED_BITS = (2, 3, 4, 8)
DEFAULT_DAMP = 0.01           # fraction of mean(diag(H)) added to the diagonal
MAX_DAMP = 1.0                # damping is raised x10 per failed Cholesky, up to this fraction
FIRST_RAISED_DAMP = 1e-3      # where raising starts when the caller asked for damp=0
MIN_ZERO_POINT = 1            # GPTQ v1 stores zero - 1, so asymmetric zero points start at 1


@dataclass(frozen=True, eq=False)
class QuantizedWeight:
    """A group-quantized Linear weight [N out_features, K in_features]."""
    codes: torch.Tensor      # uint8 [N, K], values in [0, 2^bits), original column order
    scales: torch.Tensor     # float32 [G, N]
    zeros: torch.Tensor      # int32 [G, N], the actual zero point (symmetric: 2^(bits-1))
    g_idx: torch.Tensor      # int32 [K], group of each input column
    bits: int
    group_size: int          # columns per group, or -1 for one group over all K
    sym: bool
    damp_used: float         # fraction of mean(diag(H)) actually added; 0 for round-to-nearest
    damp_raised: bool        # True when the requested damping made Cholesky fail and was raised

    @property
    def out_features(self) -> int:
        return self.codes.shape[0]

    @property
    def in_features(self) -> int:
        return self.codes.shape[1]

    @property
    def num_groups(self) -> int:
        return self.scales.shape[0]


class HessianAccumulator:
    """Streaming H = 2/n * sum over tokens of x^T x, in float32.

    Keeps a running mean, so after any sequence of add() calls `hessian` equals 2 X^T X / n for all
    tokens seen so far. The tensor lives on the device of the first batch unless one is given.
    """

    def __init__(self, in_features: int, device: torch.device | str | None = None):
        if in_features < 1:
            raise ValueError(f"in_features must be positive, got {in_features}")
        self.in_features = in_features
        self.tokens = 0
        self._device = device
        self._hessian: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        """Add a batch of inputs shaped [..., in_features] (every leading position is one token)."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features, accumulator expects {self.in_features}")
        rows = x.detach().reshape(-1, self.in_features)
        if self._hessian is None:
            device = rows.device if self._device is None else torch.device(self._device)
            self._hessian = torch.zeros(self.in_features, self.in_features, dtype=torch.float32, device=device)
        if rows.shape[0] == 0:
            return
        rows = rows.to(device=self._hessian.device, dtype=torch.float32)
        total = self.tokens + rows.shape[0]
        self._hessian.mul_(self.tokens / total)
        self._hessian.addmm_(rows.T, rows, alpha=2.0 / total)
        self.tokens = total

    def hook(self, module, args, output) -> None:
        """Signature of nn.Module.register_forward_hook: accumulates the module's first input."""
        self.add(args[0])

    @property
    def hessian(self) -> torch.Tensor:
        if self._hessian is None:
            raise ValueError("no inputs were added to the Hessian accumulator")
        return self._hessian


def _check_weight(weight: torch.Tensor, bits: int, group_size: int) -> None:
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [out_features, in_features], got shape {tuple(weight.shape)}")
    if not weight.is_floating_point():
        raise ValueError(f"weight must be a floating-point tensor, got {weight.dtype}")
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}")
    if group_size != -1 and group_size < 1:
        raise ValueError(f"group_size must be -1 or positive, got {group_size}")
    if not torch.isfinite(weight).all():
        raise ValueError("weight contains NaN or infinite values")


def _check_solver_args(weight: torch.Tensor, hessian: torch.Tensor, damp: float, block_size: int) -> None:
    k = weight.shape[1]
    if tuple(hessian.shape) != (k, k):
        raise ValueError(f"hessian must have shape [{k}, {k}] for in_features={k}, got {tuple(hessian.shape)}")
    if not torch.isfinite(hessian).all():
        raise ValueError("hessian contains NaN or infinite values")
    if not damp >= 0:
        raise ValueError(f"damp must be a non-negative fraction of mean(diag(H)), got {damp}")
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")


def _group_params(w: torch.Tensor, bits: int, sym: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point per row of w [N, c], from its min and max (range widened to hold 0).

    Returns float32 tensors [N]; the zero is an integer value stored as float. Scales are rounded to
    float16 here, because the checkpoint stores them in float16: the error feedback then sees exactly
    the weights a loader will reconstruct. Asymmetric zero points are kept >= 1 because GPTQ v1
    stores `zero - 1`: a group whose range starts at 0 gets zero 1 and scale high / (maxq - 1), so
    code 0 (one step below zero) goes unused instead of the top value being clipped.
    """
    maxq = 2 ** bits - 1
    low = w.min(dim=1).values.clamp(max=0.0)
    high = w.max(dim=1).values.clamp(min=0.0)
    if sym:
        scale = _fp16_scale(torch.maximum(-low, high) * 2.0 / maxq)
        return scale, torch.full_like(scale, float((maxq + 1) // 2))
    scale = _fp16_scale((high - low) / maxq)
    zero = torch.round(-low / scale).clamp(0, maxq)
    at_zero = zero < MIN_ZERO_POINT
    if bool(at_zero.any()):
        scale = torch.where(at_zero, _fp16_scale(high / (maxq - MIN_ZERO_POINT)), scale)
        zero = torch.where(at_zero, torch.full_like(zero, float(MIN_ZERO_POINT)), zero)
    return scale, zero


def _fp16_scale(scale: torch.Tensor) -> torch.Tensor:
    """Scales as float16 will store them, rounded up so the group's range still fits; a zero or
    unrepresentable scale becomes 1 (its group is all zeros, which any scale represents exactly)."""
    half = scale.to(torch.float16)
    half = torch.where(half.to(torch.float32) < scale, torch.nextafter(half, torch.full_like(half, float("inf"))), half)
    rounded = half.to(torch.float32)
    return torch.where((rounded > 0) & torch.isfinite(rounded), rounded, torch.ones_like(rounded))


def group_count(in_features: int, group_size: int) -> int:
    """Groups of a Linear: ceil(K / g), the last one partial when g does not divide K (GPTQ v1 stores
    ceil(K / g) rows of scales and zeros, and g_idx[k] = k // g); one group for group_size -1."""
    return 1 if group_size == -1 else -(-in_features // group_size)


def _consecutive_group_params(w: torch.Tensor, size: int, bits: int, sym: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero [G, N] of the groups of `size` consecutive columns of w [N, K]; the last
    group holds the K % size columns left over, if any."""
    n, k = w.shape
    full = k // size * size
    flat = w[:, :full].reshape(n, full // size, size).transpose(0, 1).reshape(-1, size)
    scales, zeros = _group_params(flat, bits, sym)
    scales, zeros = scales.reshape(-1, n), zeros.reshape(-1, n)
    if full == k:
        return scales, zeros
    last_scale, last_zero = _group_params(w[:, full:], bits, sym)
    return torch.cat([scales, last_scale[None]]), torch.cat([zeros, last_zero[None]])


def _codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Integer codes (as float) of w: clamp(round(w / scale) + zero, 0, maxq)."""
    return torch.clamp(torch.round(w / scale) + zero, 0, maxq)


def dequantize(q: QuantizedWeight) -> torch.Tensor:
    """float32 [N, K]: scales[g_idx[k], n] * (codes[n, k] - zeros[g_idx[k], n])."""
    g = q.g_idx.long()
    scales = q.scales[g].T                       # [N, K]
    zeros = q.zeros[g].T.to(torch.float32)
    return scales * (q.codes.to(torch.float32) - zeros)


def rtn_quantize(weight: torch.Tensor, bits: int, group_size: int, sym: bool) -> QuantizedWeight:
    """Round-to-nearest baseline in the same layout as gptq_quantize (groups over original columns)."""
    _check_weight(weight, bits, group_size)
    w = weight.detach().to(torch.float32)
    k = w.shape[1]
    g = k if group_size == -1 else group_size
    scales, zeros = _consecutive_group_params(w, g, bits, sym)
    g_idx = torch.arange(k, device=w.device, dtype=torch.int32) // g
    codes = _codes(w, scales[g_idx].T, zeros[g_idx].T, 2 ** bits - 1)
    return QuantizedWeight(codes.to(torch.uint8), scales, zeros.to(torch.int32), g_idx,
                           bits, group_size, sym, 0.0, False)


def _inverse_cholesky_upper(h: torch.Tensor, damp: float) -> tuple[torch.Tensor, float, bool]:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, raising damp x10 while it fails.

    Returns (factor, damp actually used, whether damp was raised). Intermediates are dropped as
    soon as the next one exists, so at most two K x K matrices besides `h` are alive.
    """
    mean_diag = h.diagonal().mean()
    tried = damp
    while True:
        damped = h.clone()
        damped.diagonal().add_(tried * mean_diag)
        lower, info = torch.linalg.cholesky_ex(damped)
        del damped
        if int(info) == 0 and bool(torch.isfinite(lower).all()):
            inverse = torch.cholesky_inverse(lower)
            del lower
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            del inverse
            if int(info) == 0 and bool(torch.isfinite(upper).all()):
                return upper, tried, tried != damp
        if tried >= MAX_DAMP:
            raise ValueError(f"Cholesky of the Hessian failed even with damp={tried}; "
                             "the Hessian is not positive semi-definite")
        tried = min(tried * 10 if tried > 0 else FIRST_RAISED_DAMP, MAX_DAMP)


class _Groups:
    """Scale and zero point per group, and which group parameters apply to each (permuted) column."""

    def __init__(self, w: torch.Tensor, bits: int, group_size: int, sym: bool,
                 perm: torch.Tensor | None, static: bool):
        n, k = w.shape
        self.bits, self.sym = bits, sym
        self.size = k if group_size == -1 else group_size
        self.scales = torch.empty(group_count(k, self.size), n, dtype=torch.float32, device=w.device)
        self.zeros = torch.empty_like(self.scales)
        # Up front: one group over all K, or static groups from the original (unpermuted) weight.
        self.fixed = group_size == -1 or static
        if self.fixed:
            scales, zeros = _consecutive_group_params(w, self.size, bits, sym)
            self.scales.copy_(scales)
            self.zeros.copy_(zeros)
        self.original_column = list(range(k)) if perm is None else perm.tolist()

    def params(self, column: int, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters for permuted column `column` of w, the weights as they stood when the current
        block began (the earlier blocks' lazy updates applied, not this block's column updates).

        Dynamic groups are measured when quantization reaches their first column, as the reference
        GPTQ and its descendants (AutoGPTQ, GPTQModel) measure them: from those block-start weights,
        so a group's range is not widened by the error feedback of the columns just before it in the
        same block, and weights that feedback pushes outside it are clamped. With fewer calibration
        tokens than input features this clamping keeps GPTQ from overfitting (measured in
        docs/quantize.md). Groups never straddle blocks (see _effective_block); the last group is
        K % size columns wide when size does not divide K.
        """
        if self.fixed:
            group = self.original_column[column] // self.size
        else:
            group = column // self.size
            if column % self.size == 0:
                scale, zero = _group_params(w[:, column:column + self.size], self.bits, self.sym)
                self.scales[group], self.zeros[group] = scale, zero
        return self.scales[group], self.zeros[group]


def _effective_block(block_size: int, groups: _Groups) -> int:
    """Block width that keeps every dynamic group inside one block (a multiple of the group size)."""
    if groups.fixed:
        return block_size
    return groups.size * max(1, block_size // groups.size)


def _solve(w: torch.Tensor, hinv: torch.Tensor, groups: _Groups, block_size: int, bits: int) -> torch.Tensor:
    """Quantize w [N, K] in place column by column with error feedback; returns uint8 codes [N, K]."""
    n, k = w.shape
    maxq = 2 ** bits - 1
    codes = torch.empty(n, k, dtype=torch.uint8, device=w.device)
    for start in range(0, k, block_size):
        end = min(start + block_size, k)
        block = w[:, start:end].clone()
        errors = torch.empty_like(block)
        hinv_block = hinv[start:end, start:end]
        for i in range(end - start):
            scale, zero = groups.params(start + i, w)    # w[:, start:end] keeps the block-start weights
            column = block[:, i]
            q = _codes(column, scale, zero, maxq)
            codes[:, start + i] = q.to(torch.uint8)
            error = (column - scale * (q - zero)) / hinv_block[i, i]
            # rank-1 update as an [N, 1] x [1, rest] matmul: torch's addr_ on this strided view is
            # 1.2-2.1x slower on CPU (torch 2.13; benchmarks/results/gptq_rank1_update.csv)
            block[:, i + 1:].addmm_(error[:, None], hinv_block[i:i + 1, i + 1:], alpha=-1.0)
            errors[:, i] = error
        w[:, end:].addmm_(errors, hinv[start:end, end:], alpha=-1.0)   # lazy batch update
    return codes


@dataclass(frozen=True, eq=False)
class PreparedHessian:
    """What GPTQ derives from a Hessian alone, shareable by every Linear that reads the same input
    (q/k/v; gate/up): dead inputs, the act-order permutation and the upper Cholesky factor of the
    damped inverse (in permuted order)."""
    dead: torch.Tensor
    perm: torch.Tensor | None
    hinv: torch.Tensor
    damp_used: float
    damp_raised: bool


def prepare_hessian(hessian: torch.Tensor, act_order: bool = False, damp: float = DEFAULT_DAMP) -> PreparedHessian:
    if hessian.dim() != 2 or hessian.shape[0] != hessian.shape[1]:
        raise ValueError(f"hessian must be square, got shape {tuple(hessian.shape)}")
    if not torch.isfinite(hessian).all():
        raise ValueError("hessian contains NaN or infinite values")
    if not damp >= 0:
        raise ValueError(f"damp must be a non-negative fraction of mean(diag(H)), got {damp}")
    h = hessian.detach().to(torch.float32).clone()
    dead = h.diagonal() == 0
    h.diagonal()[dead] = 1.0
    perm = torch.argsort(h.diagonal(), descending=True, stable=True) if act_order else None
    if perm is not None:
        h = h[perm][:, perm]
    hinv, damp_used, damp_raised = _inverse_cholesky_upper(h, damp)
    return PreparedHessian(dead, perm, hinv, damp_used, damp_raised)


def gptq_quantize(weight: torch.Tensor, hessian: torch.Tensor | None, bits: int, group_size: int = 128,
                  sym: bool = True, act_order: bool = False, damp: float = DEFAULT_DAMP,
                  block_size: int = 128, static_groups: bool = False,
                  prepared: PreparedHessian | None = None) -> QuantizedWeight:
    """GPTQ-quantize weight [N, K] given the layer-input Hessian [K, K] (see HessianAccumulator),
    or a `prepared` one (prepare_hessian with the same act_order and damp) shared between Linears.

    act_order quantizes columns by descending diag(H); its groups are then consecutive in that
    order (g_idx = invperm[k] // g) unless static_groups, where group parameters come up front
    from the original weight's groups of g consecutive columns (g_idx = k // g).
    """
    _check_weight(weight, bits, group_size)
    if prepared is None:
        if hessian is None:
            raise ValueError("give a hessian or a prepared hessian")
        _check_solver_args(weight, hessian, damp, block_size)
        prepared = prepare_hessian(hessian.to(weight.device), act_order, damp)
    elif block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    k = weight.shape[1]
    if tuple(prepared.hinv.shape) != (k, k):
        raise ValueError(f"hessian must have shape [{k}, {k}] for in_features={k}, got {tuple(prepared.hinv.shape)}")
    w = weight.detach().to(torch.float32).clone()
    w[:, prepared.dead.to(w.device)] = 0.0
    static = static_groups and group_size != -1
    perm = prepared.perm
    groups = _Groups(w, bits, group_size, sym, perm, static)    # fixed groups: original column order
    if perm is not None:
        w = w[:, perm]
    hinv, damp_used, damp_raised = prepared.hinv, prepared.damp_used, prepared.damp_raised
    codes = _solve(w, hinv, groups, _effective_block(block_size, groups), bits)
    column = torch.arange(k, device=w.device)
    g_idx = column // groups.size
    if perm is not None:
        invperm = torch.argsort(perm)
        codes = codes[:, invperm]
        if not static:
            g_idx = invperm // groups.size
    return QuantizedWeight(codes, groups.scales, groups.zeros.to(torch.int32), g_idx.to(torch.int32),
                           bits, group_size, sym, float(damp_used), damp_raised)


def split_rows(q: QuantizedWeight, sizes: list[int]) -> list[QuantizedWeight]:
    """Cut a quantization of stacked weights [sum(sizes), K] back into one per weight. Exact: every
    step of GPTQ and of round-to-nearest is row-wise except the Hessian, so Linears that read the same
    input (q/k/v, gate/up) can be solved as one stacked weight with one pass over the columns."""
    if sum(sizes) != q.out_features:
        raise ValueError(f"row sizes {sizes} do not add up to {q.out_features}")
    out, start = [], 0
    for n in sizes:
        rows = slice(start, start + n)
        out.append(QuantizedWeight(q.codes[rows], q.scales[:, rows], q.zeros[:, rows], q.g_idx, q.bits,
                                   q.group_size, q.sym, q.damp_used, q.damp_raised))
        start += n
    return out


def output_relative_error(weight: torch.Tensor, dequantized: torch.Tensor, x: torch.Tensor) -> float:
    """||x W^T - x Q^T||_F / ||x W^T||_F over inputs x [..., K], computed in float32."""
    w = weight.detach().to(torch.float32)
    rows = x.detach().reshape(-1, w.shape[1]).to(device=w.device, dtype=torch.float32)
    reference = torch.linalg.matrix_norm(rows @ w.T)
    if reference == 0:
        raise ValueError("the reference output x W^T is zero; relative error is undefined")
    difference = rows @ (w - dequantized.to(device=w.device, dtype=torch.float32)).T
    return float(torch.linalg.matrix_norm(difference) / reference)


def hessian_relative_error(weight: torch.Tensor, dequantized: torch.Tensor, hessian: torch.Tensor) -> float:
    """output_relative_error over the inputs a Hessian was accumulated from, without the inputs:
    with H = 2/n X^T X, ||X D^T||_F^2 = n/2 tr(D H D^T), so the ratio needs only H [K, K]."""
    return hessian_relative_errors(weight, [dequantized], hessian)[0]


def hessian_relative_errors(weight: torch.Tensor, dequantized: list[torch.Tensor], hessian: torch.Tensor) -> list[float]:
    """hessian_relative_error of several quantizations of one weight, in one matrix product."""
    w = weight.detach().to(torch.float32)
    h = hessian.detach().to(device=w.device, dtype=torch.float32)
    rows = torch.cat([w] + [w - d.to(device=w.device, dtype=torch.float32) for d in dequantized])
    energy = ((rows @ h) * rows).sum(dim=1).reshape(len(dequantized) + 1, -1).sum(dim=1)
    reference = float(energy[0])
    if reference <= 0:
        raise ValueError("the reference output is zero on these inputs; relative error is undefined")
    return [max(float(e), 0.0) ** 0.5 / reference ** 0.5 for e in energy[1:]]
