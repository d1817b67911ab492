"""GPTQ v1 packing: bit-exact round trips, and the layout as docs/reference/quantization.md
describes it, checked against a reference written literally from that description."""

import pytest
from hypothesis import given, settings, strategies as st

torch = pytest.importorskip("torch")
from sizer.kernels.gptq_pack import (dequantize_gptq_v1, pack_gptq_v1, pack_rows, unpack_gptq_v1,  # noqa: E402
                                     unpack_rows)
from sizer.quant import GroupQuantFormat  # noqa: E402

PERIOD = {2: 16, 3: 32, 4: 8, 8: 4}     # values per repeating unit along the packed dimension


def literal_pack(q: list[list[int]], bits: int) -> list[list[int]]:
    """quantization.md, literally: for b in {2,4,8}, word r of column n holds q[r*pf + j] in bits
    [b*j, b*j+b); for b = 3, each 32 values fill 3 words as 10 values + 2 low bits of the 11th,
    its high bit + 10 values + the low bit of the 22nd, its 2 high bits + 10 values."""
    rows, cols = len(q), len(q[0])
    out = []
    if bits != 3:
        pf = 32 // bits
        for r in range(rows // pf):
            out.append([sum(q[r * pf + j][n] << (bits * j) for j in range(pf)) for n in range(cols)])
        return out
    for base in range(0, rows, 32):
        w0, w1, w2 = [0] * cols, [0] * cols, [0] * cols
        for n in range(cols):
            v = [q[base + i][n] for i in range(32)]
            w0[n] = sum(v[j] << (3 * j) for j in range(10)) | ((v[10] & 0b11) << 30)
            w1[n] = (v[10] >> 2) | sum(v[11 + j] << (3 * j + 1) for j in range(10)) | ((v[21] & 1) << 31)
            w2[n] = (v[21] >> 1) | sum(v[22 + j] << (3 * j + 2) for j in range(10))
        out += [w0, w1, w2]
    return out


def as_uint32(t: torch.Tensor) -> list[list[int]]:
    return [[int(x) & 0xFFFFFFFF for x in row] for row in t.tolist()]


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_layout_matches_the_documented_one(bits):
    g = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2**bits, (64, 5), generator=g)
    packed = pack_rows(codes, bits)
    assert packed.dtype == torch.int32 and packed.shape == (64 * bits // 32, 5)
    assert as_uint32(packed) == literal_pack(codes.tolist(), bits)


@settings(max_examples=200, deadline=None)
@given(bits=st.sampled_from([2, 3, 4, 8]), units=st.integers(1, 6), cols=st.integers(1, 9), seed=st.integers(0, 2**31))
def test_pack_unpack_bit_exact(bits, units, cols, seed):
    rows = units * PERIOD[bits]
    codes = torch.randint(0, 2**bits, (rows, cols), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(unpack_rows(pack_rows(codes, bits), bits, rows), codes.to(torch.int32))


@settings(max_examples=100, deadline=None)
@given(bits=st.sampled_from([2, 3, 4, 8]), k_units=st.integers(1, 4), n_units=st.integers(1, 3),
       group=st.sampled_from([32, 64, -1]), seed=st.integers(0, 2**31))
def test_checkpoint_tensors_round_trip(bits, k_units, n_units, group, seed):
    k, n = 64 * k_units, 32 * n_units
    g = torch.Generator().manual_seed(seed)
    groups = 1 if group == -1 else k // group
    codes = torch.randint(0, 2**bits, (n, k), generator=g)
    zeros = torch.randint(1, 2**bits, (groups, n), generator=g)
    scales = torch.rand(groups, n, generator=g).to(torch.float16) + 0.01
    g_idx = torch.arange(k, dtype=torch.int32) // (k if group == -1 else group)
    tensors = pack_gptq_v1(codes, zeros, scales, g_idx, bits)
    assert tensors["qweight"].shape == (k * bits // 32, n)
    assert tensors["qzeros"].shape == (groups, n * bits // 32)
    back = unpack_gptq_v1(tensors, bits, k, n)
    assert torch.equal(back[0], codes.to(torch.int32)) and torch.equal(back[1], zeros.to(torch.int32))
    assert torch.equal(back[2], scales) and torch.equal(back[3], g_idx)
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    assert nbytes == GroupQuantFormat("gptq", bits, group).linear_bytes(k, n)   # the calculator's own size
    w = dequantize_gptq_v1(tensors, bits, k, n)
    expected = scales.float()[g_idx.long()].t() * (codes.float() - zeros.float()[g_idx.long()].t())
    assert torch.equal(w, expected)


@pytest.mark.parametrize("bits, word", [(4, 0x77777777), (8, 0x7F7F7F7F), (2, 0x55555555)])
def test_symmetric_zero_points_give_the_known_words(bits, word):
    n, k = 64, 128
    zeros = torch.full((1, n), 2 ** (bits - 1))
    tensors = pack_gptq_v1(torch.zeros(n, k, dtype=torch.int64), zeros, torch.ones(1, n), torch.zeros(k, dtype=torch.int32), bits)
    assert {int(x) & 0xFFFFFFFF for x in tensors["qzeros"].flatten().tolist()} == {word}


def test_bad_input():
    with pytest.raises(ValueError, match="2, 3, 4 or 8"):
        pack_rows(torch.zeros(32, 1, dtype=torch.int64), 5)
    with pytest.raises(ValueError, match="not a multiple of 32"):
        pack_rows(torch.zeros(48, 1, dtype=torch.int64), 3)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 16\)"):
        pack_rows(torch.full((8, 1), 16), 4)
    with pytest.raises(ValueError, match="zero point of 0"):
        pack_gptq_v1(torch.zeros(8, 32, dtype=torch.int64), torch.zeros(1, 8), torch.ones(1, 8), torch.zeros(32, dtype=torch.int32), 4)
