"""Tensor tables of real llama-quantize output for small made-up models (developer tool, not shipped).

Writes small float32 GGUF models (llama with GQA, with MHA, with tied embeddings, with 8 experts,
with rows that do not fill 256-value blocks; qwen2 with biases; phi3 with a fused attn_qkv) with the
`gguf` package, quantizes each to every llama-quantize file type by calling `llama_model_quantize` of
libllama built from the llama.cpp tree in the llama-cpp-python 0.3.36 sdist (commit 0c1e57098bba, the one
docs/reference/quantization.md cites), with an importance
matrix of ones where asked, reads the tensor table of every result with sizer's GGUF reader and writes
tests/data/llamacpp_quantize_tables.json: per model and file type, the tensors per ggml type and the
tensor bytes. tests/test_gguf_types.py checks sizer's rules against it.

    pip download llama-cpp-python==0.3.36 --no-deps --no-binary :all: -d /tmp/w && tar xzf /tmp/w/*.tar.gz -C /tmp/w
    cmake -S /tmp/w/llama_cpp_python-0.3.36/vendor/llama.cpp -B /tmp/w/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=ON && ninja -C /tmp/w/build llama-quantize
    python tools/llamacpp_quantize_tables.py --lib /tmp/w/build/bin
"""

from __future__ import annotations

import argparse
import ctypes
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests/data/llamacpp_quantize_tables.json"

# llama.h LLAMA_FTYPE_MOSTLY_* values
FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12,
          "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18, "IQ2_XXS": 19,
          "IQ2_XS": 20, "Q2_K_S": 21, "IQ3_XS": 22, "IQ3_XXS": 23, "IQ1_S": 24, "IQ4_NL": 25, "IQ3_S": 26,
          "IQ3_M": 27, "IQ2_S": 28, "IQ2_M": 29, "IQ4_XS": 30, "IQ1_M": 31, "TQ1_0": 36, "TQ2_0": 37,
          "MXFP4_MOE": 38, "Q1_0": 40, "Q2_0": 41}
NEEDS_IMATRIX = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "Q2_K_S")
# the file types whose choice depends on the importance matrix: quantized both ways
IMATRIX_MATTERS = ("IQ3_XXS", "IQ4_NL", "IQ4_XS", "Q4_0", "Q5_0")

# HF-style configs (what sizer reads) of the made-up models
MODELS = {
    "llama-gqa4": {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 16,
                   "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 512},
    "llama-mha": {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 8,
                  "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 512},
    "llama-tied": {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 8,
                   "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 512,
                   "tie_word_embeddings": True},
    "llama-odd-rows": {"model_type": "llama", "hidden_size": 320, "intermediate_size": 544, "num_hidden_layers": 8,
                       "num_attention_heads": 10, "num_key_value_heads": 5, "vocab_size": 512},
    "mixtral-8": {"model_type": "mixtral", "hidden_size": 256, "intermediate_size": 256, "num_hidden_layers": 8,
                  "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 512, "num_local_experts": 8,
                  "num_experts_per_tok": 2},
    "qwen2": {"model_type": "qwen2", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 8,
              "num_attention_heads": 8, "num_key_value_heads": 1, "vocab_size": 512},
    "qwen2moe-shexp": {"model_type": "qwen2_moe", "hidden_size": 256, "intermediate_size": 256,
                       "moe_intermediate_size": 256, "shared_expert_intermediate_size": 256, "num_hidden_layers": 16,
                       "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 512, "num_experts": 4,
                       "num_experts_per_tok": 2},
    "phi3": {"model_type": "phi3", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 8,
             "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 512},
}


def _tensors(cfg: dict) -> dict[str, tuple[int, ...]]:
    """GGUF tensor names and numpy shapes (out, in) of a config."""
    h, f, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    hd = h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    out = {"token_embd.weight": (cfg["vocab_size"], h), "output_norm.weight": (h,)}
    if not cfg.get("tie_word_embeddings"):
        out["output.weight"] = (cfg["vocab_size"], h)
    experts = cfg.get("num_local_experts", cfg.get("num_experts", 0))
    shexp = cfg.get("shared_expert_intermediate_size", 0)
    for i in range(n):
        b = f"blk.{i}."
        out[b + "attn_norm.weight"] = (h,)
        out[b + "ffn_norm.weight"] = (h,)
        if cfg["model_type"] == "phi3":
            out[b + "attn_qkv.weight"] = (q + 2 * kv, h)
        else:
            out.update({b + "attn_q.weight": (q, h), b + "attn_k.weight": (kv, h), b + "attn_v.weight": (kv, h)})
        if cfg["model_type"] in ("qwen2", "qwen2_moe"):
            out.update({b + "attn_q.bias": (q,), b + "attn_k.bias": (kv,), b + "attn_v.bias": (kv,)})
        out[b + "attn_output.weight"] = (h, q)
        if experts:
            out.update({b + "ffn_gate_inp.weight": (experts, h), b + "ffn_gate_exps.weight": (experts, f, h),
                        b + "ffn_up_exps.weight": (experts, f, h), b + "ffn_down_exps.weight": (experts, h, f)})
            if shexp:
                out.update({b + "ffn_gate_inp_shexp.weight": (h,), b + "ffn_gate_shexp.weight": (shexp, h),
                            b + "ffn_up_shexp.weight": (shexp, h), b + "ffn_down_shexp.weight": (h, shexp)})
        elif cfg["model_type"] == "phi3":
            out.update({b + "ffn_up.weight": (2 * f, h), b + "ffn_down.weight": (h, f)})
        else:
            out.update({b + "ffn_gate.weight": (f, h), b + "ffn_up.weight": (f, h), b + "ffn_down.weight": (h, f)})
    return out


def write_model(path: Path, cfg: dict) -> dict[str, tuple[int, ...]]:
    import gguf

    arch = {"mixtral": "llama", "qwen2_moe": "qwen2moe"}.get(cfg["model_type"], cfg["model_type"])
    w = gguf.GGUFWriter(str(path), arch)
    h, n = cfg["hidden_size"], cfg["num_hidden_layers"]
    w.add_context_length(4096)
    w.add_embedding_length(h)
    w.add_block_count(n)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(h // cfg["num_attention_heads"])
    w.add_file_type(0)
    w.add_vocab_size(cfg["vocab_size"])
    if cfg.get("num_local_experts") or cfg.get("num_experts"):
        w.add_expert_count(cfg.get("num_local_experts") or cfg["num_experts"])
        w.add_expert_used_count(cfg["num_experts_per_tok"])
    if cfg.get("shared_expert_intermediate_size"):
        w.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
        w.add_expert_shared_feed_forward_length(cfg["shared_expert_intermediate_size"])
    rng = np.random.default_rng(0)
    tensors = _tensors(cfg)
    for name, shape in tensors.items():
        w.add_tensor(name, rng.standard_normal(shape, dtype=np.float32) * 0.02)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


class _Imatrix(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("data", ctypes.POINTER(ctypes.c_float)), ("size", ctypes.c_size_t)]


class _Params(ctypes.Structure):
    """llama_model_quantize_params of include/llama.h at 0c1e570."""

    _fields_ = [("nthread", ctypes.c_int32), ("ftype", ctypes.c_int), ("output_tensor_type", ctypes.c_int),
                ("token_embedding_type", ctypes.c_int), ("allow_requantize", ctypes.c_bool),
                ("quantize_output_tensor", ctypes.c_bool), ("only_copy", ctypes.c_bool), ("pure", ctypes.c_bool),
                ("keep_split", ctypes.c_bool), ("dry_run", ctypes.c_bool), ("imatrix", ctypes.POINTER(_Imatrix)),
                ("kv_overrides", ctypes.c_void_p), ("tt_overrides", ctypes.c_void_p),
                ("prune_layers", ctypes.c_void_p), ("max_buf_size", ctypes.c_size_t)]


def load_library(folder: Path):
    for dep in ("libggml-base.so", "libggml-cpu.so", "libggml.so"):
        ctypes.CDLL(str(folder / dep), mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(str(folder / "libllama.so"))
    lib.llama_model_quantize_default_params.restype = _Params
    lib.llama_model_quantize.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(_Params)]
    lib.llama_model_quantize.restype = ctypes.c_uint32
    lib.llama_backend_init()
    return lib


def _imatrix(tensors: dict[str, tuple[int, ...]]):
    """An importance matrix of ones for every 2-D / 3-D weight (ne[0] values, times the experts)."""
    keep, rows = [], []
    for name, shape in tensors.items():
        if len(shape) < 2:
            continue
        n = shape[-1] * (shape[0] if len(shape) == 3 else 1)
        data = (ctypes.c_float * n)(*([1.0] * n))
        keep.append(data)
        rows.append(_Imatrix(name.encode(), ctypes.cast(data, ctypes.POINTER(ctypes.c_float)), n))
    rows.append(_Imatrix(None, None, 0))
    return (_Imatrix * len(rows))(*rows), keep


def quantize(lib, src: Path, dst: Path, ftype: str, imatrix) -> None:
    params = lib.llama_model_quantize_default_params()
    params.ftype = FTYPES[ftype]
    params.nthread = 2
    if imatrix is not None:
        params.imatrix = ctypes.cast(imatrix, ctypes.POINTER(_Imatrix))
    if lib.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama_model_quantize failed: {src.name} {ftype}")


def table(path: Path) -> dict:
    from sizer.inputs.gguf import read_gguf

    g = read_gguf(path)
    counts = Counter(t.type_name for t in g.tensors)
    return {"types": dict(sorted(counts.items())), "tensor_bytes": sum(t.n_bytes for t in g.tensors)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", type=Path, required=True, help="folder holding libllama.so and libggml*.so")
    ap.add_argument("--only", nargs="*", help="regenerate these models only, keeping the others' cases")
    args = ap.parse_args()
    lib = load_library(args.lib)
    chosen = set(args.only or MODELS)
    cases = [c for c in json.loads(OUT.read_text())["cases"] if c["model"] not in chosen] if args.only else []
    with tempfile.TemporaryDirectory() as tmp:
        for model, cfg in MODELS.items():
            if model not in chosen:
                continue
            src = Path(tmp) / f"{model}-f32.gguf"
            tensors = write_model(src, cfg)
            imatrix, _keep = _imatrix(tensors)
            for ftype in FTYPES:
                if ftype == "MXFP4_MOE" and not (cfg.get("num_local_experts") or cfg.get("num_experts")):
                    continue
                modes = (True, False) if ftype in IMATRIX_MATTERS else (ftype in NEEDS_IMATRIX or ftype.startswith("IQ"),)
                for with_imatrix in modes:
                    dst = Path(tmp) / "out.gguf"
                    case = {"model": model, "ftype": ftype, "imatrix": with_imatrix}
                    try:
                        quantize(lib, src, dst, ftype, imatrix if with_imatrix else None)
                    except RuntimeError:        # e.g. "no tensor type fallback is defined for type q1_0"
                        cases.append({**case, "refused": True})
                        continue
                    cases.append({**case, **table(dst)})
    doc = {"source": "llama.cpp 0c1e57098bba (the llama-cpp-python 0.3.36 sdist's tree, built here), "
                     "llama_model_quantize on float32 GGUF models written by tools/llamacpp_quantize_tables.py",
           "models": MODELS, "cases": sorted(cases, key=lambda c: list(MODELS).index(c["model"]))}
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT}: {len(cases)} quantized files")


if __name__ == "__main__":
    main()
