"""bitsandbytes checkpoints (int8, nf4, fp4) through transformers' BitsAndBytesConfig: the checkpoint
is quantized while loading and saved with safetensors (4-bit needs bitsandbytes >= 0.41.3, 8-bit
>= 0.37.2).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sizer.errors import UsageError
from sizer.quantize.folders import atomic_output_dir, model_folder

BNB_METHODS = ("int8", "nf4", "fp4")


@dataclass(frozen=True)
class QuantizeResult:
    output: Path
    method: str
    seconds: float
    bytes_written: int
    quantization_config: dict


def _bnb_config(method: str):
    import torch
    from transformers import BitsAndBytesConfig

    if method == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=method, bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def quantize_bnb(model_dir: str, method: str, output: str, force: bool = False, device: str = "cpu",
                 progress=lambda text: None) -> QuantizeResult:
    """Quantize a transformers checkpoint with bitsandbytes and save it with safetensors."""
    if method not in BNB_METHODS:
        raise UsageError(f"--method {method}: bitsandbytes methods are {', '.join(BNB_METHODS)}")
    from sizer.env.torch_runtime import TORCH_EXTRA, require_torch

    torch = require_torch("sizer quantize")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UsageError(f"bitsandbytes is not installed: {TORCH_EXTRA}") from None
    import transformers

    source = model_folder(model_dir)
    target = Path(output).expanduser()
    start = time.perf_counter()
    with atomic_output_dir(target, force) as tmp:
        progress(f"loading {source} with bitsandbytes {method} on {device}")
        model = transformers.AutoModelForCausalLM.from_pretrained(
            source, quantization_config=_bnb_config(method), device_map=device, dtype=torch.bfloat16)
        progress(f"saving to {target}")
        model.save_pretrained(tmp, safe_serialization=True)
        for extra in source.iterdir():      # tokenizer and generation files travel with the weights
            if extra.is_file() and extra.suffix in (".json", ".model", ".txt") and not (tmp / extra.name).exists():
                shutil.copy2(extra, tmp / extra.name)
        config = model.config.quantization_config.to_dict()
        del model
    written = sum(f.stat().st_size for f in target.glob("*.safetensors"))
    return QuantizeResult(target, method, time.perf_counter() - start, written, config)
