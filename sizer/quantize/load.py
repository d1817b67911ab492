"""Load a GPTQ v1 checkpoint into a transformers model with sizer's own QuantLinear, no GPTQModel.

The model is built from config.json on the meta device (its `quantization_config` set aside so
transformers does not look for a GPTQ backend), every Linear that has a `qweight` in the checkpoint
is swapped for a QuantLinear, and then all tensors are read from the safetensors shards into place.
Forward runs the reference dequantize-and-matmul path of sizer.kernels.quant_linear, or with
kernel="int4" torch's fused int4 matmul (4-bit weights, group size 32-256; each Linear is repacked
once after loading and its GPTQ tensors freed).
"""

from __future__ import annotations

import json
from pathlib import Path

from sizer.errors import InputFileError, UsageError

QWEIGHT = ".qweight"
KERNELS = ("reference", "int4")


def read_gptq_config(folder: Path) -> dict:
    config = json.loads((folder / "config.json").read_text())
    q = config.get("quantization_config")
    if q is None and (folder / "quantize_config.json").is_file():
        q = json.loads((folder / "quantize_config.json").read_text())
    if not q or q.get("quant_method", "gptq") != "gptq":
        raise UsageError(f"{folder}: not a GPTQ checkpoint (no quantization_config with quant_method gptq)")
    if q.get("checkpoint_format", "gptq") != "gptq":
        raise UsageError(f"{folder}: checkpoint_format {q['checkpoint_format']!r}; sizer loads GPTQ v1 (\"gptq\")")
    return q


def load_gptq(folder: str | Path, device: str = "cpu", dtype=None, cache_dequantized: bool = False,
              kernel: str = "reference"):
    """A transformers causal LM whose quantized Linears are sizer QuantLinear modules."""
    import torch
    import transformers

    from sizer.quantize.shards import ShardReader
    from sizer.kernels.quant_linear import replace_linears

    if kernel not in KERNELS:
        raise UsageError(f"kernel {kernel!r}: choose {' or '.join(KERNELS)}")
    folder = Path(folder).expanduser()
    q = read_gptq_config(folder)
    dtype = dtype or torch.float32
    config = transformers.AutoConfig.from_pretrained(folder)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    reader = ShardReader(folder)
    names = {n[: -len(QWEIGHT)] for n in reader.where if n.endswith(QWEIGHT)}
    if not names:
        raise InputFileError(f"{folder}: no *.qweight tensors in the checkpoint")
    replace_linears(model, names, q["bits"], q["group_size"])
    for module in model.modules():
        if getattr(module, "cache_dequantized", None) is not None:
            module.cache_dequantized = cache_dequantized
    model.to_empty(device=device)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    with torch.no_grad():
        for module in model.modules():
            if module._non_persistent_buffers_set:
                model._init_weights(module)
        initialized = {name for name, module in model.named_modules() if module._non_persistent_buffers_set}
        for name, target in model.state_dict().items():
            if name in reader:
                target.copy_(reader.get(name))
            elif not (tied and name.endswith("lm_head.weight")) and name.rsplit(".", 1)[0] not in initialized:
                raise InputFileError(f"{folder}: checkpoint has no tensor {name!r}")
    if tied:
        model.tie_weights()
    if kernel == "int4":
        _use_int4_kernel(model, folder, dtype, torch)
    model.eval()
    return model


def _use_int4_kernel(model, folder: Path, dtype, torch) -> None:
    """Repack every QuantLinear for the int4 kernel, after checking all of them can be."""
    from sizer.kernels.int4_matmul import int4_kernel_problem
    from sizer.kernels.quant_linear import QuantLinear

    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, QuantLinear)]
    for name, m in linears:
        problem = int4_kernel_problem(m.bits, m.group_size, m.in_features, m.out_features, m.g_idx)
        if problem:
            raise UsageError(f"{folder}: {name} cannot run on the int4 kernel: {problem} (use the reference kernel)")
    for _name, m in linears:
        m.use_int4_kernel(dtype)
    if next(model.parameters()).device.type == "cuda":
        torch.cuda.empty_cache()

