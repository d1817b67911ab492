"""Working-set constants of sizer's kernels, torch-free: the kernels use them, and the planners
(sizer.quantize.plan, sizer.measure.predict) read them to size what the kernels allocate. The one
module of sizer.kernels that imports nothing, so the calculator path may read it."""

# The QuantLinear reference path (gptq_pack.dequantize_gptq_v1) dequantizes this many input features
# per step; at its peak each chunk element has this many bytes of temporaries alive (int64 unpack,
# int32 codes, float32 gathers and results; CPU allocator trace).
DEQUANT_CHUNK_ROWS = 128
DEQUANT_LIVE_BYTES = 16

# Group sizes torch's int4 matmul takes (int4_matmul, torch._weight_int4pack_mm).
INT4_KERNEL_GROUP_SIZES = (32, 64, 128, 256)
