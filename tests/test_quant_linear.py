"""QuantLinear: the reference dequantize-and-matmul path over GPTQ v1 tensors, and the int4 kernel."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from sizer.quantize.plan import int4_kernel_linear_bytes
from sizer.kernels.gptq_pack import pack_gptq_v1  # noqa: E402
from sizer.kernels.int4_matmul import int4_kernel_problem  # noqa: E402
from sizer.kernels.quant_linear import QuantLinear, replace_linears  # noqa: E402


def random_packed(k: int, n: int, bits: int, group: int, seed: int = 0, act_order: bool = False):
    g = torch.Generator().manual_seed(seed)
    groups = 1 if group == -1 else k // group
    codes = torch.randint(0, 2**bits, (n, k), generator=g)
    zeros = torch.randint(1, 2**bits, (groups, n), generator=g)
    scales = (torch.rand(groups, n, generator=g) * 0.01 + 0.001).to(torch.float16)
    g_idx = torch.arange(k, dtype=torch.int32) // (k if group == -1 else group)
    if act_order:                                   # act-order: each group's features scattered over K
        g_idx = g_idx[torch.randperm(k, generator=g)]
    weight = scales.float()[g_idx.long()].t() * (codes.float() - zeros.float()[g_idx.long()].t())
    return pack_gptq_v1(codes, zeros, scales, g_idx, bits), weight


@pytest.mark.parametrize("bits, group", [(4, 128), (3, 64), (2, 32), (8, -1)])
def test_forward_equals_the_dequantized_linear(bits, group):
    k, n = 256, 96
    tensors, weight = random_packed(k, n, bits, group)
    layer = QuantLinear(k, n, bits, group, bias=True)
    layer.load_state_dict({**tensors, "bias": torch.linspace(-1, 1, n).to(torch.float16)})
    x = torch.randn(3, 7, k)
    expected = nn.functional.linear(x, weight, torch.linspace(-1, 1, n).to(torch.float16).float())
    assert torch.allclose(layer(x), expected, atol=1e-5, rtol=1e-5)
    assert layer(x.to(torch.bfloat16)).dtype == torch.bfloat16


def test_buffers_have_the_checkpoint_shapes_and_bytes():
    layer = QuantLinear(4096, 11008, 4, 128, bias=False)
    shapes = {name: tuple(t.shape) for name, t in layer.state_dict().items()}
    assert shapes == {"qweight": (512, 11008), "qzeros": (32, 1376), "scales": (32, 11008), "g_idx": (4096,)}
    from sizer.quant import GroupQuantFormat

    assert sum(t.numel() * t.element_size() for t in layer.state_dict().values()) == \
        GroupQuantFormat("gptq", 4, 128).linear_bytes(4096, 11008)


def test_replace_linears_in_a_model():
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 64, bias=False))
    assert replace_linears(model, {"0", "2"}, 4, 32) == ["0", "2"]
    assert isinstance(model[0], QuantLinear) and model[0].bias is not None and model[2].bias is None
    with pytest.raises(ValueError, match="not a Linear"):
        replace_linears(model, {"1"}, 4, 32)


def quant_linear(k: int, n: int, group: int, act_order: bool = False, seed: int = 0, bias: bool = True):
    tensors, weight = random_packed(k, n, 4, group, seed, act_order)
    bias_tensor = torch.linspace(-1, 1, n).to(torch.float16)
    layer = QuantLinear(k, n, 4, group, bias=bias)
    layer.load_state_dict({**tensors, **({"bias": bias_tensor} if bias else {})})
    return layer, weight, bias_tensor.float() if bias else None


# The kernel and the reference sum K float32 products in different orders: hypothesis found 1.2e-6
# of the largest output at K = 512, so "equal to float32 rounding" is held to 1e-5 (bf16: ~4e-3).
FLOAT32_SUMS = 1e-5


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.mark.parametrize("group, act_order", [(128, False), (32, True), (64, True), (256, False), (-1, False)])
def test_int4_kernel_equals_the_reference_path(group, act_order):
    k, n = 256, 96
    layer, weight, bias = quant_linear(k, n, group, act_order)
    x = torch.randn(2, 5, k)
    reference = layer(x)
    layer.use_int4_kernel()
    assert layer.kernel == "int4" and layer.qweight is None and layer.g_idx is None
    assert set(layer.state_dict()) == {"bias", "int4_packed", "int4_scales_and_zeros"} | (
        {"int4_perm"} if act_order else set())
    fast = layer(x)
    assert fast.shape == (2, 5, n) and fast.dtype == torch.float32
    assert relative_error(fast, reference) < FLOAT32_SUMS              # float32: equal to rounding
    exact = nn.functional.linear(x.double(), weight.double(), bias.double())
    x16 = x.to(torch.bfloat16)
    assert layer(x16).dtype == torch.bfloat16
    assert relative_error(layer(x16), exact) < 2e-2                    # bf16 input: bf16 rounding
    with pytest.raises(RuntimeError, match="repacked for the int4 kernel"):
        layer.dequantized(torch.float32)


@settings(max_examples=25, deadline=None)
@given(k_groups=st.integers(1, 4), group=st.sampled_from([32, 64, 128]), n_sixteenths=st.integers(1, 8),
       act_order=st.booleans(), rows=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_int4_kernel_matches_the_reference_for_any_shape(k_groups, group, n_sixteenths, act_order, rows, seed):
    k, n = k_groups * group, n_sixteenths * 16
    layer, _, _ = quant_linear(k, n, group, act_order, seed, bias=False)
    x = torch.randn(rows, k, generator=torch.Generator().manual_seed(seed))
    reference = layer(x)
    layer.use_int4_kernel()
    assert relative_error(layer(x), reference) < FLOAT32_SUMS


@pytest.mark.parametrize("group, act_order", [(128, False), (32, True), (-1, False)])
def test_int4_kernel_bytes_are_predicted_exactly(group, act_order):
    k, n = 256, 96
    for scale_dtype, scale_bytes in [(torch.float32, 4), (torch.bfloat16, 2)]:
        layer, _, _ = quant_linear(k, n, group, act_order, bias=False)
        layer.use_int4_kernel(scale_dtype)
        held = sum(t.numel() * t.element_size() for t in layer.weight_tensors())
        assert held == int4_kernel_linear_bytes(k, n, group, act_order, scale_bytes)


def test_int4_kernel_refuses_what_it_cannot_take():
    assert int4_kernel_problem(4, 128, 4096, 11008) is None
    assert "4-bit weights, not 3-bit" in int4_kernel_problem(3, 128, 4096, 11008)
    assert "group sizes 32, 64, 128, 256, not 16" in int4_kernel_problem(4, 16, 4096, 11008)
    assert "group sizes 32, 64, 128, 256, not 4096" in int4_kernel_problem(4, -1, 4096, 11008)
    assert "out_features 104 is not a multiple of 16" in int4_kernel_problem(4, 32, 256, 104)
    assert ("in_features 352 is not a multiple of the group size 128: torch's int4 kernel takes whole groups only, "
            "not a partial last group of 96") == int4_kernel_problem(4, 128, 352, 64)
    ragged = torch.tensor([0] * 40 + [1] * 24, dtype=torch.int32)      # groups of 40 and 24, not 32 and 32
    assert "exactly group_size" in int4_kernel_problem(4, 32, 64, 64, ragged)
    layer = QuantLinear(256, 64, 8, 128, bias=False)
    with pytest.raises(ValueError, match="4-bit weights, not 8-bit"):
        layer.use_int4_kernel()
    assert layer.kernel == "reference" and layer.qweight is not None  # nothing freed on refusal


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("act_order", [False, True])
def test_int4_kernel_on_cuda_equals_the_reference_path(act_order):
    """The tensor-core kernel (bf16 only): as close to the exact product as the bf16 reference path."""
    k, n = 4096, 1024
    layer, weight, bias = quant_linear(k, n, 128, act_order)
    layer = layer.to("cuda")
    x = torch.randn(3, 16, k, device="cuda", dtype=torch.bfloat16)
    exact = nn.functional.linear(x.double(), weight.to("cuda", torch.float64), bias.to("cuda", torch.float64))
    reference_error = relative_error(layer(x), exact)
    layer.use_int4_kernel(torch.bfloat16)
    assert layer.int4_packed.device.type == "cuda" and layer.int4_scales_and_zeros.dtype == torch.bfloat16
    assert relative_error(layer(x), exact) < max(2 * reference_error, 1e-2)
    with pytest.raises(RuntimeError, match="converted on cuda"):
        layer(x.cpu())
