"""Architecture families: a config.json (Hugging Face keys) normalized into one `ModelSpec`.

Each family function enumerates the parameter tensors exactly as the family's transformers
implementation creates them (module names in comments), so that `ModelSpec.params` equals
`sum(p.numel() for p in model.parameters())`; tests/test_against_transformers.py checks that on
scaled-down configs of every family built on the meta device, and tests/test_catalog.py checks the
full-size counts against tests/data/reference_models/params.md.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from sizer.config import ConfigView
from sizer.errors import UnsupportedModelError
from sizer.families.classic import bloom, gpt_bigcode, gpt_neox, mpt, phi
from sizer.families.deepseek import deepseek
from sizer.families.ernie import ernie4_5
from sizer.families.falcon import falcon
from sizer.families.gemma3n import gemma3n_text, gemma4_text
from sizer.families.vision import vision_tower
from sizer.families.generic import generic_spec_from_config
from sizer.families.glm import glm4_moe
from sizer.families.hybrid import (falcon_h1, granitemoehybrid, jamba, minimax, nemotron_h, qwen3_5, qwen3_5_moe,
                                   qwen3_next)
from sizer.families.llama import llama_like
from sizer.families.llama4 import llama4
from sizer.families.mimo import mimo_v2_flash
from sizer.families.olmo import olmo2
from sizer.quant import compressed_tensors_label, fbgemm_label, group_quant_label, modelopt_label
from sizer.spec import ModelSpec

# model_type -> the normalizer that lists its tensors (one module per family group in this package)


FAMILIES: dict[str, Callable[[ConfigView, str], ModelSpec]] = {
    **{f: llama_like for f in ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe",
                               "gemma", "gemma2", "gemma3_text", "phi3", "phimoe", "gpt_oss", "smollm3")},
    "gemma3": llama_like,
    "llama4": llama4,
    "llama4_text": llama4,
    "deepseek_v2": deepseek,
    "deepseek_v3": deepseek,
    "glm4_moe_lite": deepseek,
    "deepseek_v32": deepseek,
    "glm_moe_dsa": deepseek,
    "glm4_moe": glm4_moe,
    "ernie4_5": ernie4_5,
    "ernie4_5_moe": ernie4_5,
    "olmo2": olmo2,
    "olmo3": olmo2,
    "falcon": falcon,
    "RefinedWeb": falcon,
    "RefinedWebModel": falcon,
    "bloom": bloom,
    "mpt": mpt,
    "phi": phi,
    "gpt_bigcode": gpt_bigcode,
    "gpt_neox": gpt_neox,
    "qwen3_next": qwen3_next,
    "jamba": jamba,
    "falcon_h1": falcon_h1,
    "mimo_v2_flash": mimo_v2_flash,
    "gemma3n_text": gemma3n_text,
    "gemma3n": gemma3n_text,
    "gemma4_text": gemma4_text,
    "gemma4": gemma4_text,
    "granitemoehybrid": granitemoehybrid,
    "nemotron_h": nemotron_h,
    "minimax": minimax,
    "qwen3_5": qwen3_5,
    "qwen3_5_text": qwen3_5,
    "qwen3_5_moe": qwen3_5_moe,
    "qwen3_5_moe_text": qwen3_5_moe,
}


def supported_families() -> list[str]:
    return sorted(f for f in FAMILIES if f[0].islower())


# Defaults of the transformers config classes for sizing keys that hub configs leave out, e.g.
# Gemma 3's text_config lists only what differs from Gemma3TextConfig (transformers 5.24).
CLASS_DEFAULTS: dict[str, dict] = {
    # sliding_window defaults of the config classes; an explicit null in a config still means none.
    # MistralConfig's shape defaults too: LLaVA-NeXT's text_config (llava-v1.6-mistral-7b-hf) lists only what differs
    "mistral": {"sliding_window": 4096, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 4096 * 32,
                "tie_word_embeddings": False},
    "gemma2": {"sliding_window": 4096},
    "gpt_oss": {"sliding_window": 128},
    "qwen2": {"sliding_window": 4096},
    "qwen2_moe": {"sliding_window": 4096},
    "qwen3": {"sliding_window": 4096},
    "qwen3_moe": {"sliding_window": 4096},
    "olmo3": {"sliding_window": 4096},
    "gemma3_text": {"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
                    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "sliding_window": 4096,
                    "max_position_embeddings": 131072, "tie_word_embeddings": True},
}


# model_type -> the family of its language model: Gemma3ForConditionalGeneration's text model is
# gemma3_text; Kimi K2.5's text_config says kimi_k2 (or nothing), which Kimi_K25Config reads as deepseek_v3;
# Mistral3's text model is a mistral (when its text_config leaves model_type out).
TEXT_FAMILY = {"gemma3": "gemma3_text", "gemma3n": "gemma3n_text", "gemma4": "gemma4_text", "kimi_k2": "deepseek_v3", "kimi_k25": "deepseek_v3", "mistral3": "mistral",
                # Qwen-VL language models: Qwen2 (Qwen2.5-VL, biased q/k/v), Qwen3 and Qwen3-MoE (q/k norms)
                "qwen2_5_vl": "qwen2", "qwen2_5_vl_text": "qwen2", "qwen3_vl_text": "qwen3",
                "qwen3_vl_moe_text": "qwen3_moe"}


def spec_from_config(raw: dict, name: str, origin: str, source: str = "") -> ModelSpec:
    """Normalize a config.json dict; `origin` names the file in error messages."""
    c = ConfigView(raw, origin)
    family = c.str("model_type", default="")
    if family in TEXT_FAMILY:      # a multimodal wrapper (or an alias) whose text model is another family
        c.raw["model_type"] = family = TEXT_FAMILY[family]
    c.raw = {**CLASS_DEFAULTS.get(family, {}), **c.raw}
    build = FAMILIES.get(family)
    if build is None:        # the generic path: transformers' own count, or the standard keys (families/generic.py)
        shown = family or "(no model_type)"
        spec = generic_spec_from_config(c, raw, name, family or "unknown", origin, unsupported_message(origin, shown))
    else:
        spec = build(c, name)
    if uses_mrope(raw):
        spec = replace(spec, mrope=True)
    tower = vision_tower(raw)
    if tower is not None:
        spec = replace(spec, vision=tower, notes=spec.notes + (
            "vLLM plans add the vision tower as vLLM loads it (TP-sharded) and its encoder profiling "
            "(sizer.plan.multimodal)",))
    native = quantization_label(c.raw.get("quantization_config"), spec)
    if native or source:
        spec = replace(spec, native_precision=native, source=source or spec.source)
    return spec


def uses_mrope(raw: dict) -> bool:
    """Whether a config.json's rope_scaling (top level or text_config's; rope_parameters in transformers 5)
    names an mrope_section: the multimodal RoPE that vLLM's get_rope builds as MRotaryEmbedding."""
    text = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else {}
    for holder in (raw, text):
        for key in ("rope_scaling", "rope_parameters"):
            if isinstance(holder.get(key), dict) and "mrope_section" in holder[key]:
                return True
    return False


def quantization_label(q, spec: ModelSpec | None = None) -> str | None:
    """The sizer precision name of a config's quantization_config (None when there is none). FBGEMM, ModelOpt,
    GPTQ and AWQ configs name the modules they keep in 16-bit; with the model's `spec` the name says which."""
    if not isinstance(q, dict):
        return None
    method = str(q.get("quant_method", "")).lower()
    if not method and (q.get("producer") or {}).get("name") == "modelopt":
        method = "modelopt"          # a ModelOpt hf_quant_config.json: {"producer": ..., "quantization": ...}
    if method in ("gptq", "awq"):
        return group_quant_label(q, spec)
    if method == "bitsandbytes":
        if q.get("load_in_8bit"):
            return "int8"
        kind = str(q.get("bnb_4bit_quant_type", "fp4")).lower()
        return kind + ("-dq" if q.get("bnb_4bit_use_double_quant") else "")
    if method == "compressed-tensors":
        return compressed_tensors_label(q)
    if method == "modelopt":          # NVIDIA ModelOpt: the algorithm at the top or under "quantization"
        return modelopt_label(q, spec)
    if method == "fbgemm_fp8":
        return fbgemm_label(q, spec)
    if method == "fp8":
        block = q.get("weight_block_size")
        return f"fp8-block{block[0]}" if isinstance(block, list) and block and block[0] == block[-1] else "fp8"
    return method or None


def unsupported_message(origin: str, family: str) -> str:
    return (f"{origin}: architecture family {family!r} is not supported; supported: {', '.join(supported_families())}. "
            "Pass a folder with the checkpoint's *.safetensors files to size it from the tensor headers instead.")


def raise_unsupported(origin: str, family: str) -> None:
    raise UnsupportedModelError(unsupported_message(origin, family))
