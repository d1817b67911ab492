"""`sizer quantize`: compressed checkpoints the ecosystem loads.

bitsandbytes methods (int8, nf4, fp4) go through transformers' BitsAndBytesConfig: the checkpoint
is quantized while loading and saved with safetensors (4-bit needs bitsandbytes >= 0.41.3, 8-bit
>= 0.37.2). GPTQ uses sizer's own solver (sizer.kernels.gptq), streamed one decoder layer at a time
(sizer.quantize.run), after pre-flight checks and a time / memory estimate (sizer.quantize.plan).

Outputs are written to a temporary folder beside the output and renamed at the end, so an
interrupted run leaves no half-written checkpoint under the output name; an existing output is
replaced only with `force`.
"""
