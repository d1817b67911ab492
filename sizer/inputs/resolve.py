"""`get_model`: any model description a user has as one `ModelSpec` (offline, except a Hub id not cached).

Accepted: a catalog name or alias; a config.json path; a folder with config.json (and, if present,
*.safetensors files, read from their headers for exact bytes); a .gguf file (header only); any other
Hugging Face repository id (sizer/inputs/hub.py: the local caches, else config.json and the
safetensors headers over HTTP).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from sizer.catalog import find_model, get_catalog_model
from sizer.config import ConfigView
from sizer.errors import InputFileError, UnsupportedModelError, UsageError
from sizer.families import FAMILIES, quantization_label, raise_unsupported, spec_from_config, supported_families
from sizer.inputs.hub import HubModel, hub_model, is_repo_id, parse_repo_id
from sizer.inputs.names import component_of
from sizer.inputs.ollama_tags import OllamaTag, is_ollama_name, resolve_tag
from sizer.io import read_json_input, regular_file_size
from sizer.spec import FULL_ATTENTION, OTHER, Checkpoint, CheckpointTensor, ModelSpec, TensorSpec


def get_model(ref: str | os.PathLike, *, refresh: bool = False) -> ModelSpec:
    """A ModelSpec from a catalog name, a config.json, a safetensors folder, a .gguf file or a Hub repository
    id (refresh: read a repository id from the Hub again, not from the local caches)."""
    text = os.fspath(ref)
    path = _model_path(text)
    if _exists(path):
        if path.is_dir():
            return replace(_from_folder(path), model_ref=str(path))
        if path.suffix.lower() == ".gguf":
            return replace(_from_gguf(path), model_ref=str(path))
        spec = spec_from_config(_read_config(path), _name_of(path), str(path), f"config file {path}")
        return replace(spec, model_ref=str(path.parent))
    _refuse_missing_path(text)
    if is_ollama_name(text):
        return _from_ollama_tag(resolve_tag(text))
    if (refresh or find_model(text) is None) and is_repo_id(text):
        return _from_hub(hub_model(text, refresh=refresh), parse_repo_id(text)[1])
    entry = get_catalog_model(text)
    spec = spec_from_config(entry.config, entry.name, f"catalog entry {entry.name}", entry.source)
    official = tuple((q["precision"], q["as"], q["hf_id"]) for q in entry.quantized)
    spec = replace(spec, model_ref=entry.hf_id or None, official_checkpoints=official)
    stored = next((q["as"] for q in entry.quantized if q["hf_id"] == entry.hf_id), None)
    # an entry that is itself a quantized checkpoint whose config.json does not say so (ModelOpt's
    # hf_quant_config.json): its catalog `quantized` entry names the format it stores
    return replace(spec, native_precision=stored) if stored and not spec.native_precision else spec


def _from_ollama_tag(tag: OllamaTag) -> ModelSpec:
    """The catalog model an Ollama tag stands for, at the tag's GGUF quantization."""
    spec = get_model(tag.model)
    return replace(spec, native_precision=tag.quant, ollama_tag=tag.asked, notes=spec.notes + (tag.note,))


def _model_path(text: str) -> Path:
    """The path a MODEL argument names (an empty one would silently mean the current folder)."""
    if not text.strip():
        raise UsageError("MODEL is empty: give a catalog name, a config.json, a folder or a .gguf file")
    return Path(text).expanduser()


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError as e:           # a name too long for the file system, say
        raise UsageError(f"{str(path)[:80]}{'...' if len(str(path)) > 80 else ''}: {e.strerror}") from None


def _refuse_missing_path(text: str) -> None:
    """A reference that names a file (by suffix or leading ./ / ~) but does not exist."""
    if text.lower().endswith((".json", ".gguf", ".safetensors")) or text.startswith((".", "/", "~")):
        raise UsageError(f"{text}: no such file or folder")


def _name_of(path: Path) -> str:
    """A display name: the folder holding the config (hub snapshots name the folder after the repo)."""
    folder = path.parent if path.is_file() else path
    return folder.resolve().name or str(path)


def _read_config(path: Path) -> dict:
    raw = read_json_input(path, "config file")
    if not isinstance(raw, dict):
        raise InputFileError(f"{path}: a config.json must hold a JSON object")
    return raw


# ---------------------------------------------------------------------------------------------
# Folders: config.json + *.safetensors


def _from_folder(folder: Path) -> ModelSpec:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise InputFileError(f"{folder}: no config.json in this folder (sizer needs the model's config.json; "
                             "pass a .gguf file directly)")
    raw = _read_config(config_path)
    from sizer.inputs.safetensors import read_tensors

    return _from_parts(raw, read_tensors(folder), folder.resolve().name, str(config_path),
                       f"config file {config_path}", str(folder))


def _from_hub(model: HubModel, revision: str | None = None) -> ModelSpec:
    spec = _from_parts(model.config, list(model.tensors or ()), model.name, f"{model.repo_id}/config.json",
                       f"config.json of {model.label}", model.label)
    return replace(spec, model_ref=model.repo_id + (f"@{revision}" if revision else ""))


def _from_parts(raw: dict, tensors: list[CheckpointTensor], name: str, origin: str, source: str,
                weights: str) -> ModelSpec:
    """A config and the tensors of its safetensors headers (none: sized from the config)."""
    quantization = quantization_label(raw.get("quantization_config"))
    checkpoint = _checkpoint(weights, "safetensors", tensors, quantization) if tensors else None
    family = ConfigView(raw, origin).str("model_type", default="")
    if family not in FAMILIES and checkpoint is not None:
        spec = generic_spec(raw, checkpoint, origin, name)
    else:
        spec = spec_from_config(raw, name, origin, source)
    return replace(spec, checkpoint=checkpoint)


def _checkpoint(path: Path | str, fmt: str, tensors: list[CheckpointTensor], quantization: str | None) -> Checkpoint:
    by_dtype: dict[str, int] = {}
    for t in tensors:
        by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + t.n_bytes
    dtypes = tuple(sorted(by_dtype, key=lambda d: -by_dtype[d]))
    return Checkpoint(str(path), fmt, tuple(tensors), quantization, dtypes)


def generic_spec(raw: dict, checkpoint: Checkpoint, origin: str, name: str) -> ModelSpec:
    """An unsupported family sized from its tensor headers, with KV from the generic config keys."""
    c = ConfigView(raw, origin)
    family = c.str("model_type", default="unknown")
    try:
        hidden = c.int("hidden_size", "d_model", "n_embd")
        n_layers = c.int("num_hidden_layers", "n_layer", "n_layers")
        n_heads = c.int("num_attention_heads", "n_head", "n_heads")
    except InputFileError:
        raise_unsupported(origin, family)
    n_kv = c.int("num_key_value_heads", default=n_heads)
    head_dim = c.int("head_dim", default=None) or hidden // n_heads
    tensors = tuple(TensorSpec(ct.name, ct.component, ct.shape, OTHER, None) for ct in checkpoint.tensors)
    return ModelSpec(name=name, family=family, hidden_size=hidden, n_layers=n_layers, n_heads=n_heads,
                     n_kv_heads=n_kv, head_dim=head_dim, v_head_dim=head_dim,
                     vocab_size=c.int("vocab_size", default=0, minimum=0), d_ff=c.int("intermediate_size", default=0, minimum=0),
                     tied_embeddings=bool(raw.get("tie_word_embeddings", False)),
                     layer_types=(FULL_ATTENTION,) * n_layers, sliding_window=None,
                     max_context_length=c.int("max_position_embeddings", default=None),
                     max_context_key=c.key_of("max_position_embeddings"), tensors=tensors,
                     source=f"safetensors headers in {checkpoint.path}",
                     notes=(f"family {family!r} is not modelled: weights and parameter counts come from the tensor "
                            "headers, KV cache from the generic config keys",))


# ---------------------------------------------------------------------------------------------
# GGUF


def _from_gguf(path: Path) -> ModelSpec:
    from sizer.inputs.gguf import gguf_to_hf_config, read_gguf

    regular_file_size(path, "GGUF file")
    g = read_gguf(path)
    config = gguf_to_hf_config(g)
    family = str(config.get("model_type", ""))
    if family.startswith("gguf:") or family not in FAMILIES:
        raise UnsupportedModelError(
            f"{path}: GGUF architecture {family.removeprefix('gguf:')!r} is not supported; supported: "
            f"{', '.join(supported_families())}")
    name = str(config.get("_gguf_name") or path.stem)
    spec = spec_from_config(config, name, str(path), f"GGUF header of {path}")
    if not g.tensors:
        raise InputFileError(f"{path}: the GGUF file holds no tensors (metadata only): nothing to size")
    tensors = [CheckpointTensor(t.name, component_of(t.name), t.type_name, t.shape, t.n_bytes) for t in g.tensors]
    ftype = config.get("_gguf_file_type")
    label = ftype.removeprefix("MOSTLY_") if isinstance(ftype, str) else None
    checkpoint = _checkpoint(path, "gguf", tensors, label)
    if label is None:
        checkpoint = replace(checkpoint, quantization=checkpoint.dtypes[0] if checkpoint.dtypes else None)
    return replace(spec, checkpoint=checkpoint)


def get_config(ref: str | os.PathLike) -> tuple[dict, Path | None]:
    """The Hugging Face config dict behind a model reference, and the folder of its weights (if any).

    For `sizer measure`, which builds the model with transformers; a .gguf file has no such config.
    """
    text = os.fspath(ref)
    path = _model_path(text)
    if _exists(path) and path.is_dir():
        config_path = path / "config.json"
        if not config_path.is_file():
            raise InputFileError(f"{path}: no config.json in this folder")
        return _read_config(config_path), path if any(path.glob("*.safetensors")) else None
    if _exists(path):
        if path.suffix.lower() == ".gguf":
            raise UsageError(f"{path}: sizer measure loads models with transformers; pass a config.json or a "
                             "safetensors folder (GGUF files run in llama.cpp)")
        return _read_config(path), None
    _refuse_missing_path(text)
    if find_model(text) is None and is_repo_id(text):
        return dict(hub_model(text).config), None
    return dict(get_catalog_model(text).config), None
