"""Exact parameter counts of a family sizer does not model, from transformers on the meta device.

`count_on_meta_device` builds `AutoModelForCausalLM.from_config` under `torch.device("meta")` (no
memory, no weights) and lists its parameters module by module (shared tensors once, decoder layers
and experts folded into repeats), so the ModelSpec's params equal `sum(p.numel())` exactly. The list
and the config numbers transformers resolved (class defaults included) are cached per config hash
under the user cache folder ($XDG_CACHE_HOME/sizer/meta/<sha256>.json), so the next run needs no
torch; catalog entries ship theirs (sizer/data/meta_counts). torch and transformers are imported
here only, inside the function.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from sizer.config import ConfigView
from sizer.errors import SizerError
from sizer.families.common import TensorList, as_ranges, layer_types_of, make_spec
from sizer.inputs.names import component_of
from sizer.io import write_atomic
from sizer.spec import BIAS, EMBEDDING, FULL_ATTENTION, LINEAR, NORM, OTHER, SLIDING_ATTENTION, ModelSpec, TensorSpec

CACHE_FORMAT = 1
# Numbers read from the transformers config object (its class defaults fill what the file leaves out).
NUMBER_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
               "vocab_size", "intermediate_size", "moe_intermediate_size", "num_experts_per_tok",
               "tie_word_embeddings", "max_position_embeddings", "sliding_window", "use_sliding_window", "layer_types")
REQUIRED = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
KV_LAYER_TYPES = (FULL_ATTENTION, SLIDING_ATTENTION)


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/sizer/meta, or ~/.cache/sizer/meta."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sizer" / "meta"


def config_hash(raw: dict) -> str:
    """sha256 of the config as canonical JSON (sorted keys), its quantization_config left out (the
    count is of the model transformers builds without it, so a quantized checkpoint shares its base's)."""
    shape = {k: v for k, v in raw.items() if k != "quantization_config"}
    text = json.dumps(shape, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_path(raw: dict) -> Path:
    return cache_dir() / f"{config_hash(raw)}.json"


def shipped_path(raw: dict) -> Path:
    """The record shipped with sizer for a catalog entry of a family it sizes this way
    (sizer/data/meta_counts/<sha256>.json), so the catalog never needs torch."""
    from sizer.catalog import data_dir

    return data_dir() / "meta_counts" / f"{config_hash(raw)}.json"


def load_cached(raw: dict) -> dict | None:
    """The record counted for this config before (shipped with sizer, else in the user cache), or None
    (absent, unreadable or malformed: recounted)."""
    shipped = shipped_path(raw)
    return _load_record(shipped if shipped.is_file() else cache_path(raw))


def _load_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("format") != CACHE_FORMAT or record.get("sha256") != path.stem or not all(
                isinstance(record[k], str) for k in ("transformers", "class")) or not isinstance(record["numbers"], dict):
            return None
        if sum(t.params for t in spec_tensors(record)) != record["params"]:
            return None
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
    return {**record, "cached_at": str(path)}


def count_on_meta_device(raw: dict, family: str, origin: str) -> tuple[dict | None, str]:
    """(the record of transformers' count, "") or (None, why it could not be counted)."""
    try:
        import torch
        import transformers
    except ImportError:
        return None, "torch and transformers are not both installed (no exact count)"
    version = transformers.__version__
    model_type = raw.get("model_type")
    from transformers.utils import logging as hf_logging
    import warnings

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                hf = transformers_config(raw, transformers)
            except (ValueError, KeyError):
                return None, f"transformers {version} does not know model_type {model_type!r}"
            except Exception as e:       # a config class refusing the values: report, size from the keys
                return None, f"transformers {version} refused the config ({type(e).__name__}: {_short(e)})"
            numbers = {k: getattr(hf, k, None) for k in NUMBER_KEYS}
            lacking = [k for k in REQUIRED if not isinstance(numbers[k], int)]
            if lacking:
                return None, (f"transformers' {type(hf).__name__} has no {', '.join(lacking)} "
                              "(not an attention decoder sizer can size)")
            try:
                model = meta_model(hf, torch, transformers)
            except Exception as e:       # no causal-LM class, or the class refuses the config
                return None, f"transformers {version} could not build it ({type(e).__name__}: {_short(e)})"
    finally:
        hf_logging.set_verbosity(verbosity)
    record = {"format": CACHE_FORMAT, "sha256": config_hash(raw), "model_type": hf.model_type,
              "transformers": version, "class": type(model).__name__,
              "params": sum(p.numel() for p in model.parameters()),
              "numbers": {k: v for k, v in numbers.items() if _jsonable(v)},
              "tensors": list_tensors(model, torch, numbers.get("num_experts_per_tok"))}
    if sum(t.params for t in spec_tensors(record)) != record["params"]:      # a layout list_tensors misreads
        return None, f"sizer could not list the tensors transformers {version} built"
    _store(raw, record)
    return record, ""


def _short(e: Exception) -> str:
    return str(e).splitlines()[0][:160] if str(e) else "no message"


def _jsonable(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str)) or (
        isinstance(value, list) and all(isinstance(v, (str, int)) for v in value))


def transformers_config(raw: dict, transformers):
    """The transformers config of the language model: `AutoConfig.for_model(**config)`, a multimodal
    config's text part (`get_text_config()`, an outer tie_word_embeddings applied to it); the
    quantization_config is left out (the count is of the unquantized modules)."""
    cfg = {k: v for k, v in raw.items() if k not in ("quantization_config", "auto_map")}
    if not isinstance(cfg.get("model_type"), str):
        raise ValueError("no model_type")
    hf = transformers.AutoConfig.for_model(**cfg)
    if isinstance(cfg.get("text_config"), dict):
        text = hf.get_text_config()
        if "tie_word_embeddings" in cfg and "tie_word_embeddings" not in cfg["text_config"]:
            text.tie_word_embeddings = cfg["tie_word_embeddings"]
        hf = text
    return hf


def meta_model(hf, torch, transformers):
    """`AutoModelForCausalLM.from_config(hf)` on the meta device: the modules, no memory."""
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(hf)


def _store(raw: dict, record: dict) -> None:
    """Best effort: an unwritable cache only means the next run counts again."""
    path = cache_path(raw)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(record, indent=1) + "\n", force=True)
    except (OSError, SizerError):
        pass


# ---------------------------------------------------------------------------------------------
# The module's parameters as sizer tensors


_INDEX = re.compile(r"^\d+$")


def list_tensors(model, torch, top_k) -> list[list]:
    """[name, component, shape, kind, [first, stop) layers or None, experts, active, fp32] rows."""
    strict = tuple(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
    groups: dict[tuple, dict[int | None, set]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:                 # tied: counted once, where first met
                continue
            seen.add(id(p))
            full = f"{module_name}.{pname}" if module_name else pname
            parts = full.removeprefix("model.").split(".")
            indices = [int(x) for x in parts if _INDEX.match(x)]
            name = ".".join(x for x in parts if not _INDEX.match(x))
            component = component_of(full)
            shape, kind = _shape_and_kind(module, pname, tuple(p.shape), component, torch)
            fused = 0
            if component in ("experts", "shared_experts") and len(shape) == (2 if kind == BIAS else 3):
                fused, shape = shape[0], shape[1:]          # one fused tensor of every expert
            fp32 = any(s in full for s in strict)
            key = (name, component, shape, kind, fused, fp32)
            layer = indices[0] if indices else None
            groups.setdefault(key, {}).setdefault(layer, set()).add(indices[1] if len(indices) > 1 else None)
    rows = []
    for (name, component, shape, kind, fused, fp32), by_layer in groups.items():
        by_count: dict[int, list] = {}
        for layer, experts in by_layer.items():
            by_count.setdefault(fused or len(experts), []).append(layer)
        for experts, layers in by_count.items():
            active = top_k if component == "experts" and experts > 1 and isinstance(top_k, int) else None
            if layers == [None]:
                rows.append([name, component, list(shape), kind, None, experts, active, fp32])
                continue
            for run in as_ranges(sorted(layers)):
                rows.append([name, component, list(shape), kind, [run.start, run.stop], experts, active, fp32])
    return rows


def _shape_and_kind(module, pname: str, shape: tuple[int, ...], component: str, torch) -> tuple[tuple[int, ...], str]:
    nn = torch.nn
    if pname == "bias" or pname.endswith("_bias"):
        return shape, BIAS
    if isinstance(module, nn.Embedding):
        return shape, EMBEDDING
    if isinstance(module, nn.Linear):
        return shape, LINEAR
    if component == "norms" or "norm" in type(module).__name__.lower():
        return shape, NORM
    if type(module).__name__ == "Conv1D" and len(shape) == 2:        # GPT-2 style: weight is (in, out)
        return (shape[1], shape[0]), LINEAR
    if component in ("experts", "shared_experts") and len(shape) == 3:
        return shape, LINEAR
    return shape, OTHER


def spec_tensors(record: dict) -> tuple[TensorSpec, ...]:
    """The record's rows as TensorSpecs (a malformed row raises ValueError/TypeError/KeyError)."""
    out = []
    for name, component, shape, kind, layers, experts, active, fp32 in record["tensors"]:
        if not (isinstance(name, str) and isinstance(component, str) and isinstance(kind, str)
                and all(isinstance(d, int) and d >= 0 for d in shape) and isinstance(experts, int)):
            raise ValueError(f"malformed tensor row {name!r}")
        where = range(int(layers[0]), int(layers[1])) if layers is not None else None
        out.append(TensorSpec(name, component, tuple(shape), kind, where, experts,
                              int(active) if active is not None else None, bool(fp32)))
    return tuple(out)


def spec_numbers_from(c: ConfigView, family: str, name: str, record: dict) -> ModelSpec:
    """The ModelSpec of a counted record: tensors as transformers built them, KV from the standard keys."""
    numbers = {k: v for k, v in record["numbers"].items() if v is not None}
    c.raw = {**c.raw, **numbers}
    tensors = spec_tensors(record)
    hidden, n_layers, n_heads = c.int("hidden_size"), c.int("num_hidden_layers"), c.int("num_attention_heads")
    n_kv = c.int("num_key_value_heads", default=n_heads)
    head_dim = c.int("head_dim", default=None) or hidden // n_heads
    expert_tensors = [t for t in tensors if t.component == "experts"]
    n_experts = max((t.experts for t in expert_tensors), default=0)
    top_k = max((t.active_experts or 0 for t in expert_tensors), default=0)
    d_ff = c.int("intermediate_size", default=0, minimum=0) if any(t.component == "mlp" for t in tensors) else 0
    d_ff_expert = (c.int("moe_intermediate_size", default=None) or c.int("intermediate_size", default=0, minimum=0)
                   ) if n_experts else 0
    given = c.raw.get("layer_types")
    exotic = sorted({t for t in given if t not in KV_LAYER_TYPES}) if isinstance(given, list) else []
    if exotic:           # chunked, linear attention, Mamba layers...: sized as full attention (an upper bound)
        c.raw["layer_types"] = [t if t in KV_LAYER_TYPES else FULL_ATTENTION for t in given]
    types, window = layer_types_of(c, n_layers, lambda i: c.raw.get("use_sliding_window") is not False)
    where = f"cached in {record['cached_at']}" if "cached_at" in record else "now cached for runs without torch"
    notes = [f"family {family!r} is not modelled by sizer: parameters counted by transformers "
             f"{record['transformers']} on the meta device ({record['class']}; {where})",
             kv_note(types, window)]
    if exotic:
        notes.append(f"layer types {', '.join(exotic)} are sized as full attention (an upper bound on their cache)")
    gated = any(re.search(r"gate_(up_)?proj", t.name) for t in tensors if t.component in ("mlp", "experts"))
    t = TensorList(n_layers)
    t.items = list(tensors)
    return make_spec(c, family, name, t, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads,
                     n_kv_heads=n_kv, head_dim=head_dim, vocab_size=c.int("vocab_size"), d_ff=d_ff,
                     tied_embeddings=not any(t.component == "lm_head" and t.kind == LINEAR for t in tensors),
                     layer_types=types, sliding_window=window, n_experts=n_experts, n_experts_active=top_k,
                     d_ff_expert=d_ff_expert, gated_mlp=gated, notes=notes)


def kv_note(types: tuple[str, ...], window: int | None) -> str:
    if window is None:
        return "KV cache from the standard keys: full attention in every layer"
    sliding = sum(1 for t in types if t == SLIDING_ATTENTION)
    return f"KV cache from the standard keys: a sliding window of {window:,} tokens in {sliding} of {len(types)} layers"
