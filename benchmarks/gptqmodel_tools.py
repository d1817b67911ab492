"""Standalone GPTQModel (7.6.x) helpers for CPU-only reference runs.

Subcommands
-----------
logits MODEL_DIR --ids IDS.npy --out OUT.npy [--backend torch] [--dtype auto]
    Load a GPTQ v1 checkpoint folder with GPTQModel on CPU, run one forward
    pass on the int64 [batch, seq] token ids in IDS.npy and save the logits as
    float32 .npy.  Prints the backend and the QuantLinear kernel class selected.

quantize MODEL_DIR --calibration TEXT --bits 4 --group-size 128 [--act-order]
         [--sym/--asym] --samples N --seq-len L --out OUT_DIR --csv RESULT.csv
    Quantize a plain HF causal-LM folder with GPTQModel on CPU, using N chunks
    of L tokens cut from the tokenized, concatenated lines of TEXT.  Measures
    wall time of quantize+save and peak RSS, writes GPTQModel's per-module
    quant log next to the checkpoint (gptqmodel_quant_log.json) and appends
    one row to RESULT.csv.

GPTQModel is imported lazily so that `--help` works without it.  The script
forces a CPU-only view (CUDA_VISIBLE_DEVICES="") unless the caller already
set the variable.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import sys
import threading
import time
from pathlib import Path

CSV_COLUMNS = [
    "tool",
    "model",
    "bits",
    "group_size",
    "act_order",
    "sym",
    "samples",
    "seq_len",
    "wall_s",
    "peak_rss_bytes",
    "machine",
    "device",
    "peak_device_bytes",
]


# --------------------------------------------------------------------------- #
# environment / memory helpers
# --------------------------------------------------------------------------- #
def _cpu_env() -> None:
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(os.cpu_count() or 1))


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakSampler:
    """Samples /proc/self/status VmRSS/VmHWM in a background thread."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak_rss_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = _status_kib("VmRSS") or 0
            self.peak_rss_kib = max(self.peak_rss_kib, rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        rss = _status_kib("VmRSS") or 0
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        return False


def _machine_string() -> str:
    import torch

    try:
        import gptqmodel

        gq = getattr(gptqmodel, "__version__", "?")
    except ImportError:  # pragma: no cover - informational only
        gq = "?"
    proc = platform.processor() or platform.machine()
    gpu = f"/gpu={torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{proc}/cpus={os.cpu_count()}{gpu}/torch={torch.__version__}/gptqmodel={gq}"


def _peak_device_bytes(device: str):
    """torch.cuda.max_memory_allocated for a CUDA run (GPTQModel allocates through torch); '' on CPU."""
    if device != "cuda":
        return ""
    import torch

    return torch.cuda.max_memory_allocated()


def _torch_dtype(name: str):
    import torch

    return {
        "auto": None,
        "float32": torch.float32,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
    }[name]


# --------------------------------------------------------------------------- #
# logits
# --------------------------------------------------------------------------- #
def _describe_kernels(qmodel) -> dict:
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    classes: dict[str, int] = {}
    backends: set[str] = set()
    asym_fused = False
    for _, mod in qmodel.model.named_modules():
        if isinstance(mod, BaseQuantLinear):
            # GPTQModel 7.6.0 TorchFusedLinear.transform_cpu() zeroes qzeros, i.e. it
            # silently drops asymmetric zero points on CPU -> wrong logits for sym=False.
            if type(mod).__name__ == "TorchFusedLinear" and not getattr(
                mod, "sym", True
            ):
                asym_fused = True
            classes[type(mod).__name__] = classes.get(type(mod).__name__, 0) + 1
            be = getattr(mod, "backend", None)
            if be is not None:
                backends.add(str(getattr(be, "value", be)))
    kernel = getattr(qmodel, "qlinear_kernel", None)
    return {
        "qlinear_kernel": getattr(kernel, "__name__", str(kernel)),
        "module_classes": classes,
        "module_backends": sorted(backends),
        "asym_fused": asym_fused,
    }


def cmd_logits(args: argparse.Namespace) -> int:
    _cpu_env()
    import numpy as np
    import torch
    from gptqmodel import BACKEND, GPTQModel

    ids = np.load(args.ids)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2:
        raise SystemExit(f"--ids must be [batch, seq], got shape {ids.shape}")
    input_ids = torch.from_numpy(ids.astype(np.int64, copy=False))

    load_kwargs = {}
    dtype = _torch_dtype(args.dtype)
    if dtype is not None:
        load_kwargs["dtype"] = dtype
    t0 = time.perf_counter()
    qmodel = GPTQModel.load(
        args.model_dir,
        device="cpu",
        backend=BACKEND(args.backend),
        **load_kwargs,
    )
    t_load = time.perf_counter() - t0
    info = _describe_kernels(qmodel)
    print(
        f"[gptqmodel_tools] backend={','.join(info['module_backends']) or args.backend} kernel={info['qlinear_kernel']} "
        f"modules={info['module_classes']} dtype={qmodel.model.dtype} load_s={t_load:.2f}",
        flush=True,
    )

    if info["asym_fused"]:
        print(
            "[gptqmodel_tools] WARNING: torch_fused ignores sym=False zero points on CPU "
            "in GPTQModel 7.6.0; use --backend torch or auto (TorchAtenLinear)",
            file=sys.stderr,
            flush=True,
        )
    qmodel.model.eval()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = qmodel.model(input_ids=input_ids, use_cache=False)
    t_fwd = time.perf_counter() - t0
    logits = out.logits.float().cpu().numpy()
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(out_path, logits.astype(np.float32, copy=False))
    finite = bool(np.isfinite(logits).all())
    print(
        f"[gptqmodel_tools] logits shape={logits.shape} finite={finite} forward_s={t_fwd:.3f} -> {out_path}",
        flush=True,
    )
    return 0 if finite else 2


# --------------------------------------------------------------------------- #
# quantize
# --------------------------------------------------------------------------- #
def build_calibration(tokenizer, text_file: str, samples: int, seq_len: int):
    import torch

    with open(text_file, encoding="utf-8") as fh:
        lines = [ln.strip() for ln in fh if ln.strip()]
    stream: list[int] = []
    need = samples * seq_len
    sep = tokenizer.eos_token_id
    for ln in lines:
        stream.extend(tokenizer(ln, add_special_tokens=False)["input_ids"])
        if sep is not None:
            stream.append(sep)
        if len(stream) >= need:
            break
    if len(stream) < need:
        raise SystemExit(
            f"calibration text too short: {len(stream)} tokens < samples*seq_len = {need}"
        )
    calib = []
    for i in range(samples):
        chunk = torch.tensor(stream[i * seq_len : (i + 1) * seq_len], dtype=torch.long)
        calib.append(
            {
                "input_ids": chunk.unsqueeze(0),
                "attention_mask": torch.ones_like(chunk).unsqueeze(0),
            }
        )
    return calib


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _flatten_quant_log(result, qmodel) -> list[dict]:
    rows = []
    if isinstance(result, dict):
        for proc, entries in result.items():
            for e in entries or []:
                if isinstance(e, dict):
                    rows.append({"process": proc, **e})
    if not rows:
        for e in getattr(qmodel, "quant_log", None) or []:
            if isinstance(e, dict):
                rows.append(e)
    return _jsonable(rows)


def cmd_quantize(args: argparse.Namespace) -> int:
    if args.device == "cpu":
        _cpu_env()
    from gptqmodel import BACKEND, GPTQModel, QuantizeConfig
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    calib = build_calibration(tokenizer, args.calibration, args.samples, args.seq_len)

    qcfg = QuantizeConfig(
        bits=args.bits,
        group_size=args.group_size,
        desc_act=args.act_order,
        # GPTQModel 7.x turns on GAR (group-aware activation reordering) by
        # default whenever desc_act=False; keep classic GPTQ unless asked.
        act_group_aware=bool(args.act_group_aware and not args.act_order),
        sym=args.sym,
        format="gptq",  # v1 checkpoint layout (qzeros store zero-1)
        damp_percent=args.damp_percent,
        offload_to_disk=False,
    )
    load_kwargs = {}
    dtype = _torch_dtype(args.dtype)
    if dtype is not None:
        load_kwargs["dtype"] = dtype

    # Timed region: model load + quantize + save (load is reported separately).
    with PeakSampler() as sampler:
        t0 = time.perf_counter()
        if args.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
        qmodel = GPTQModel.load(args.model_dir, qcfg, device=args.device, **load_kwargs)
        t_load = time.perf_counter() - t0
        t1 = time.perf_counter()
        result = qmodel.quantize(
            calib, batch_size=1, tokenizer=tokenizer, backend=BACKEND(args.backend)
        )
        qmodel.save(args.out)
        wall = time.perf_counter() - t1

    ru_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    hwm_kib = _status_kib("VmHWM") or 0
    peak_bytes = max(ru_kib, hwm_kib, sampler.peak_rss_kib) * 1024

    qlog = _flatten_quant_log(result, qmodel)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "gptqmodel_quant_log.json", "w", encoding="utf-8") as fh:
        json.dump(qlog, fh, indent=1)
    for e in qlog:
        if "loss" in e:
            print(
                f"  layer={e.get('layer')} module={e.get('module')} loss={e.get('loss')} time={e.get('time')}"
            )

    row = {
        "tool": "gptqmodel" + ("-gar" if qcfg.act_group_aware else ""),
        "model": os.path.basename(os.path.normpath(args.model_dir)),
        "bits": args.bits,
        "group_size": args.group_size,
        "act_order": int(args.act_order),
        "sym": int(args.sym),
        "samples": args.samples,
        "seq_len": args.seq_len,
        "wall_s": f"{wall:.3f}",
        "peak_rss_bytes": peak_bytes,
        "machine": _machine_string(),
        "device": args.device,
        "peak_device_bytes": _peak_device_bytes(args.device),
    }
    csv_path = Path(args.csv)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    new = not csv_path.exists() or csv_path.stat().st_size == 0
    with open(csv_path, "a", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        if new:
            w.writeheader()
        w.writerow(row)
    print(
        f"[gptqmodel_tools] quantized in {wall:.2f}s (load {t_load:.2f}s), "
        f"peak RSS {peak_bytes / 2**20:.1f} MiB (ru_maxrss {ru_kib} KiB, VmHWM {hwm_kib} KiB, "
        f"sampled {sampler.peak_rss_kib} KiB) -> {out_dir}, row appended to {csv_path}",
        flush=True,
    )
    return 0


# --------------------------------------------------------------------------- #
def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    pl = sub.add_parser(
        "logits", help="forward a GPTQ checkpoint on CPU and dump logits"
    )
    pl.add_argument("model_dir")
    pl.add_argument("--ids", required=True, help="int64 .npy, shape [batch, seq]")
    pl.add_argument("--out", required=True, help="output .npy (float32 logits)")
    pl.add_argument(
        "--backend", default="torch", help="GPTQModel BACKEND value (default: torch)"
    )
    pl.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "float16", "bfloat16"],
        help="activation dtype; the `torch` backend supports only float16/bfloat16",
    )
    pl.set_defaults(func=cmd_logits)

    pq = sub.add_parser("quantize", help="GPTQ-quantize a HF causal LM on CPU")
    pq.add_argument("model_dir")
    pq.add_argument(
        "--calibration", required=True, help="text file, one sample per line"
    )
    pq.add_argument("--bits", type=int, default=4)
    pq.add_argument("--group-size", type=int, default=128)
    pq.add_argument("--act-order", action="store_true", help="desc_act=True")
    g = pq.add_mutually_exclusive_group()
    g.add_argument("--sym", dest="sym", action="store_true", default=True)
    g.add_argument("--asym", dest="sym", action="store_false")
    pq.add_argument("--samples", type=int, default=128)
    pq.add_argument("--seq-len", type=int, default=2048)
    pq.add_argument(
        "--act-group-aware",
        action="store_true",
        help="enable GPTQModel's GAR reordering (its default when desc_act=False); "
        "off here so --act-order absent means classic GPTQ",
    )
    pq.add_argument("--damp-percent", type=float, default=0.05)
    pq.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"]
    )
    pq.add_argument(
        "--backend",
        default="auto",
        help="BACKEND used for the post-quant kernel (default auto)",
    )
    pq.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    pq.add_argument("--out", required=True)
    pq.add_argument("--csv", required=True)
    pq.set_defaults(func=cmd_quantize)

    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
