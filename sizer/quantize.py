"""`sizer quantize`: compressed checkpoints the ecosystem loads.

bitsandbytes methods (int8, nf4, fp4) go through transformers' BitsAndBytesConfig: the checkpoint
is quantized while loading and saved with safetensors (4-bit needs bitsandbytes >= 0.41.3, 8-bit
>= 0.37.2). GPTQ uses sizer's own solver (sizer.kernels.gptq), streamed one decoder layer at a time
(sizer.gptq_run), after pre-flight checks and a time / memory estimate (sizer.gptq_plan).

Outputs are written to a temporary folder beside the output and renamed at the end, so an
interrupted run leaves no half-written checkpoint under the output name; an existing output is
replaced only with `force`.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from glob import escape as glob_escape
from pathlib import Path

from sizer.errors import InputFileError, SizerError, UsageError
from sizer.io import current_umask

BNB_METHODS = ("int8", "nf4", "fp4")
PARTIAL = ".partial"          # suffix of an output being written: .<name>.<pid>.<random>.partial


@dataclass(frozen=True)
class QuantizeResult:
    output: Path
    method: str
    seconds: float
    bytes_written: int
    quantization_config: dict


@contextmanager
def atomic_output_dir(output: Path, force: bool):
    """Yield a temporary folder beside `output`; on success it becomes `output` (replacing an
    existing folder only with `force`), with the permissions the umask gives a new folder; on any
    failure, SIGTERM included (handled as Ctrl-C), it is removed and `output` is untouched. Folders a
    killed run left (SIGKILL) are removed first."""
    check_output_dir(output, force)
    remove_stale_partials(output)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.{os.getpid()}.", suffix=PARTIAL, dir=output.parent))
    except OSError as e:
        raise SizerError(f"{output}: cannot write in {output.parent} ({e.strerror})") from None
    with _sigterm_as_interrupt():
        try:
            yield tmp
            tmp.chmod(0o777 & ~current_umask())
            if output.exists():
                old = output.with_name(f".{output.name}.old-{os.getpid()}")
                output.rename(old)
                tmp.rename(output)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(output)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def check_output_dir(output: str | Path, force: bool) -> Path:
    """The output folder, refused before any work when it cannot be written as asked."""
    output = Path(output).expanduser()
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise UsageError(f"{output}: not a folder (a file, link or pipe): sizer quantize does not replace it")
    if output.exists() and not force:
        raise UsageError(f"{output}: already exists (use --force to replace it)")
    if not output.parent.is_dir():
        raise UsageError(f"{output}: folder {output.parent} does not exist")
    return output


def remove_stale_partials(output: Path) -> list[Path]:
    """Remove the temporary folders of `output` whose run is gone (its process id in the name no
    longer runs); return them."""
    removed = []
    for folder in output.parent.glob(f".{glob_escape(output.name)}.*{PARTIAL}"):
        pid = folder.name[len(output.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _running(int(pid)) and folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # alive, another user's
        pass
    return True


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises KeyboardInterrupt here, so cleanup runs as it does for Ctrl-C (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _model_dir(path: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UsageError(f"{path}: sizer quantize needs a model folder (config.json and *.safetensors)")
    if not (folder / "config.json").is_file():
        raise InputFileError(f"{folder}: no config.json in this folder")
    if not any(folder.glob("*.safetensors")):
        raise InputFileError(f"{folder}: no *.safetensors weights in this folder")
    return folder


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
    from sizer.measure import TORCH_EXTRA, require_torch

    torch = require_torch("sizer quantize")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UsageError(f"bitsandbytes is not installed: {TORCH_EXTRA}") from None
    import transformers

    source = _model_dir(model_dir)
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


@dataclass(frozen=True)
class GptqPlan:
    """What `quantize --method gptq` checks and predicts before touching a weight."""
    source: Path
    preflight: object            # sizer.gptq_plan.Preflight
    estimate: object             # sizer.gptq_plan.RunEstimate
    available_bytes: int         # free memory on the device now
    documents: list
    n_layers: int
    settings: object             # sizer.gptq_run.GptqSettings with the compute dtype resolved
    tensor_parallel: int
    notes: tuple[str, ...] = ()  # what the plan changed (fewer windows than asked, the text being short)


def windows_of_text(settings, token_count: int):
    """`settings` with --samples and --heldout-samples cut to the windows `token_count` tokens hold, and
    a note when they were (checked before planning, not found at the end of the run)."""
    windows = token_count // settings.seq_len
    if windows == 0:
        raise UsageError(f"the calibration text has {token_count:,} tokens, fewer than one --seq-len "
                         f"{settings.seq_len} window")
    samples = min(settings.samples, windows)
    heldout = min(settings.heldout_samples, windows - samples)
    if (samples, heldout) == (settings.samples, settings.heldout_samples):
        return settings, ()
    note = (f"the calibration text holds {windows:,} windows of {settings.seq_len} tokens ({token_count:,} tokens): "
            f"planned for {samples} calibration and {heldout} held-out windows (asked: {settings.samples} and "
            f"{settings.heldout_samples})")
    return replace(settings, samples=samples, heldout_samples=heldout), (note,)


def measure_matmul_gflops(device: str, dtype: str = "float32") -> float:
    """Best of a few 1024x1024 matrix products in `dtype` on `device` (about 20 ms on 2 CPU cores)."""
    import torch

    n = 1024
    a = torch.randn(n, n, device=device).to(getattr(torch, dtype))
    b = torch.randn(n, n, device=device).to(getattr(torch, dtype))
    best = float("inf")
    for _ in range(4):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def choose_compute_dtype(device: str, requested: str) -> tuple[str, float, float]:
    """(dtype of the layer forwards, its measured matmul GFLOP/s, float32's). "auto": bfloat16 on
    CUDA; on a CPU, bfloat16 when it multiplies faster than float32 (AMX / AVX512-BF16: 4.5x on the
    CI Xeon), else float32. Hessians, the solver and the errors are float32 whatever this is."""
    fp32 = measure_matmul_gflops(device, "float32")
    if requested in ("fp32", "float32"):
        return "float32", fp32, fp32
    bf16 = measure_matmul_gflops(device, "bfloat16")
    if requested == "auto" and device != "cuda" and bf16 <= fp32:
        return "float32", fp32, fp32
    return "bfloat16", bf16, fp32


def plan_gptq(model_dir: str, settings, calibration: str | None, tensor_parallel: int = 1,
              dry_run: bool = False) -> GptqPlan:
    """Validate everything that can be validated before the run, and estimate the run. A dry run
    also takes a catalog name or a config.json (plan before downloading the weights)."""
    from sizer.gptq_plan import estimate_run, preflight
    from sizer.gptq_run import read_calibration_text
    from sizer.inputs.resolve import get_model
    from sizer.measure import check_device

    source = _model_dir(model_dir) if not dry_run or _has_weights(model_dir) else None
    spec = get_model(source or model_dir)
    already = spec.checkpoint.quantization if spec.checkpoint else None
    if already:
        raise UsageError(f"{model_dir}: already quantized ({already}), so it has no 16-bit Linear weights to "
                         "quantize; start from the original checkpoint")
    pre = preflight(spec, settings.bits, settings.group_size, settings.sym, settings.act_order,
                    settings.static_groups, tensor_parallel)
    if not pre.ok:
        more = f" (and {len(pre.problems) - 1} more)" if len(pre.problems) > 1 else ""
        raise UsageError(f"cannot write this GPTQ checkpoint: {pre.problems[0]}{more}")
    if calibration is None and not dry_run:
        raise UsageError("--method gptq needs --calibration-text FILE: text (one document per line), .jsonl with a "
                         "\"text\" field, or a .json list; the end of it is held out for perplexity")
    docs = read_calibration_text(calibration) if calibration is not None else []
    available = check_device(settings.device)
    from sizer.gptq_run import load_config_and_tokenizer, skeleton, tokenize_documents
    from sizer.procmem import resident_bytes

    notes: tuple[str, ...] = ()
    if source is not None:
        config, tokenizer = load_config_and_tokenizer(source)   # the libraries the run will hold: its baseline
        skeleton(config, None)
        if docs:
            settings, notes = windows_of_text(settings, len(tokenize_documents(tokenizer, docs)))
    else:
        import transformers  # noqa: F401  (most of the baseline)

    compute_dtype, gflops, fp32_gflops = choose_compute_dtype(settings.device, settings.compute_dtype)
    settings = replace(settings, compute_dtype=compute_dtype)
    estimate = estimate_run(spec, settings.samples, settings.seq_len, settings.heldout_samples, gflops,
                            compute_bytes=4 if compute_dtype == "float32" else 2, solver_gflops=fp32_gflops,
                            baseline_bytes=resident_bytes() if settings.device == "cpu" else 0)
    return GptqPlan(source, pre, estimate, available, docs, spec.n_layers, settings, tensor_parallel, notes)


def _has_weights(ref: str) -> bool:
    folder = Path(ref).expanduser()
    return folder.is_dir() and any(folder.glob("*.safetensors"))


def quantize_gptq(plan: GptqPlan, output: str, force: bool = False,
                  on_layer=lambda done, total, seconds: None):
    """Run GPTQ as planned into `output` (atomically)."""
    from sizer.gptq_run import run_gptq

    target = Path(output).expanduser()
    with atomic_output_dir(target, force) as tmp:
        result = run_gptq(plan.source, tmp, plan.settings, plan.documents, on_layer)
    return replace(result, output=target)
