"""Loading a model the way users run it: real weights from a folder or random weights built in place,
in a float dtype, quantized by bitsandbytes while loading, or a GPTQ checkpoint on sizer's QuantLinear.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

from sizer.calc.transformers_releases import spec_for_transformers
from sizer.env.torch_runtime import require_torch
from sizer.errors import UsageError
from sizer.measure.count import weight_bytes
from sizer.spec import ModelSpec

FLOAT_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


BNB_PRECISIONS = ("int8", "nf4", "nf4-dq", "fp4", "fp4-dq")


MEASURABLE = tuple(FLOAT_DTYPES) + BNB_PRECISIONS


GPTQ_PREFIX = "gptq-"      # gptq-<b>bit-g<G>: a GPTQ checkpoint folder, run by sizer's QuantLinear

# Loaded.kernel (and Record.kernel) of a bitsandbytes model on a CPU where bitsandbytes has no
# native kernel for its format and dequantizes every weight at each forward (sizer.calc.activations
# BNB_DEQUANTIZED_*); "" where its native kernels run (and in records written before this was told).
BNB_DEQUANTIZE_KERNEL = "dequantize"


def is_gptq(precision: str) -> bool:
    return precision.startswith(GPTQ_PREFIX)


@dataclass
class Loaded:
    model: object
    spec: ModelSpec
    precision: str
    device: str
    source: str          # "synthetic" or the weights folder
    load_s: float
    attention: str       # the implementation in use (eager when the family has no SDPA path)
    weights_bytes: int = 0   # parameters + quantization statistics as loaded (before any forward)
    buffers_bytes: int = 0
    kernel: str = ""         # GPTQ: QuantLinear's path, "reference" or "int4"


def bnb_kernel(precision: str, device: str) -> str:
    """BNB_DEQUANTIZE_KERNEL where the installed bitsandbytes runs `precision` on this CPU by
    dequantizing each weight: 4-bit without AVX512-BF16 (Linear4bit.forward repacks the weight for
    bnb's own kernel only where `has_avx512bf16()`), int8 where no CPU kernel is registered for
    bitsandbytes::int8_linear_matmul (bnb 0.50 registers torch._int_mm only where torch's CPU
    capability is AVX512; 0.49 always): its default implementation multiplies in float32. "" otherwise."""
    if device != "cpu" or precision not in BNB_PRECISIONS:
        return ""
    import torch
    import bitsandbytes  # noqa: F401  (registers its operators)
    from bitsandbytes.functional import has_avx512bf16

    if precision == "int8":
        native = torch._C._dispatch_has_kernel_for_dispatch_key("bitsandbytes::int8_linear_matmul", "CPU")
    else:
        native = bool(has_avx512bf16())
    return "" if native else BNB_DEQUANTIZE_KERNEL


def _quantization_config(precision: str, torch):
    from transformers import BitsAndBytesConfig

    if precision == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    kind = precision.split("-")[0]
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=kind, bnb_4bit_compute_dtype=torch.bfloat16,
                              bnb_4bit_use_double_quant=precision.endswith("-dq"))


def _hf_config(config: dict):
    import transformers

    raw = dict(config)
    raw.pop("quantization_config", None)
    if raw.get("model_type") == "gemma3" and "text_config" in raw:   # measure the language model
        raw = {**raw["text_config"], "model_type": "gemma3_text"}
    family = raw.get("model_type")
    try:
        return transformers.AutoConfig.for_model(**raw)
    except (ValueError, KeyError) as e:
        raise UsageError(f"transformers cannot build a {family!r} model from this config ({e})") from None


def load(spec: ModelSpec, config: dict, weights_folder, precision: str, device: str, attention: str,
         kernel: str = "reference") -> Loaded:
    """The model on `device`: real weights from `weights_folder`, else random weights built in place.
    A family without an SDPA path in transformers (Gemma 2) is loaded with eager attention. `kernel`
    is the QuantLinear path of a GPTQ checkpoint (sizer.quantize.load)."""
    if precision not in MEASURABLE and not is_gptq(precision):
        raise UsageError(f"sizer measure supports {', '.join(MEASURABLE)} and GPTQ checkpoints (gptq-<b>bit-g<G>); "
                         f"got {precision!r}")
    import transformers

    spec = spec_for_transformers(spec, transformers.__version__)
    try:
        loaded = _load(spec, config, weights_folder, precision, device, attention, kernel)
    except ValueError as e:
        if attention != "sdpa" or "attention implementation" not in str(e):
            raise
        loaded = _load(spec, config, weights_folder, precision, device, "eager", kernel)
    # Count before the first forward: bitsandbytes' CPU backend then repacks 4-bit weights for its
    # kernel (absmax to bf16, nested statistics dropped) and moves int8 scales into module state.
    loaded.weights_bytes, loaded.buffers_bytes = weight_bytes(loaded.model)
    _warm_up(loaded)
    return loaded


def _warm_up(loaded: Loaded) -> None:
    """One short forward, so lazily created kernels and workspaces are not measured as activations."""
    torch = require_torch("sizer measure")
    with torch.inference_mode():
        loaded.model(input_ids=torch.zeros((1, 8), dtype=torch.long, device=loaded.device), use_cache=True,
                     logits_to_keep=1)
    gc.collect()


def _load(spec: ModelSpec, config: dict, weights_folder, precision: str, device: str, attention: str,
          kernel: str) -> Loaded:
    torch = require_torch("sizer measure")
    import transformers

    start = time.perf_counter()
    hf_config = _hf_config(config)
    dtype = getattr(torch, FLOAT_DTYPES.get(precision, "bfloat16"))
    common = {"dtype": dtype, "attn_implementation": attention}
    if precision in BNB_PRECISIONS:
        common["quantization_config"] = _quantization_config(precision, torch)
    if is_gptq(precision):
        model, source = _load_gptq(spec, weights_folder, precision, device, kernel, torch), str(weights_folder)
    elif weights_folder is not None:
        model = transformers.AutoModelForCausalLM.from_pretrained(weights_folder, device_map=device, **common)
        source = str(weights_folder)
    elif precision in BNB_PRECISIONS:
        # bitsandbytes quantizes while loading: hand from_pretrained a state dict of random bf16
        # weights (held in host memory, never written to disk) and let it quantize them on the way in.
        model_class, state = _random_state_dict(hf_config, spec, device, torch)
        model = model_class.from_pretrained(None, config=hf_config, state_dict=state, device_map=device, **common)
        del state
        source = "synthetic"
    else:
        # Allocate and initialise every tensor directly on the target device.
        with torch.device(device):
            model = transformers.AutoModelForCausalLM.from_config(hf_config, **common)
        source = "synthetic"
    model.eval()
    actual = getattr(model.config, "_attn_implementation", None) or attention
    return Loaded(model, spec, precision, device, source, time.perf_counter() - start,
                  "eager" if actual == "eager" else "sdpa" if actual == "sdpa" else attention,
                  kernel=kernel if is_gptq(precision) else bnb_kernel(precision, device))


def _random_state_dict(hf_config, spec: ModelSpec, device: str, torch) -> tuple[type, dict]:
    """(model class, random bf16 state dict in host memory) for `hf_config`.

    The weights are drawn on the GPU when their bf16 bytes fit in 90 % of its free memory (on CPU
    cores transformers initialises about 80 M parameters a second on 2 cores, measured on a
    0.49B-parameter Llama: over a minute and a half for an 8B model), then copied to host memory and the GPU emptied before the quantized load;
    otherwise they are drawn on the CPU."""
    import transformers

    build = "cpu"
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        build = "cuda" if spec.params * 2 < 0.9 * free else "cpu"
    with torch.device(build):
        base = transformers.AutoModelForCausalLM.from_config(hf_config, dtype=torch.bfloat16)
    state = {name: tensor.to("cpu") for name, tensor in base.state_dict().items()}
    model_class = type(base)
    del base
    gc.collect()
    if build == "cuda":
        torch.cuda.empty_cache()
    return model_class, state


def _load_gptq(spec: ModelSpec, weights_folder, precision: str, device: str, kernel: str, torch):
    """A GPTQ checkpoint on sizer's QuantLinear (bfloat16 compute, the `kernel` path), after checking
    it is the one asked for."""
    from sizer.quantize.load import load_gptq

    if weights_folder is None:
        raise UsageError(f"--precision {precision}: sizer measures GPTQ from a checkpoint folder (written by "
                         "`sizer quantize --method gptq`), not from synthetic weights")
    stored = spec.checkpoint.quantization if spec.checkpoint else None
    if stored != precision:
        raise UsageError(f"--precision {precision}: the checkpoint in {weights_folder} is {stored or 'not GPTQ'}")
    return load_gptq(weights_folder, device=device, dtype=torch.bfloat16, kernel=kernel)
