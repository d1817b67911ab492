"""GPTQ as `sizer quantize --method gptq` runs it: validate and estimate everything before touching a
weight (`plan_gptq`), then run the plan into an output folder written atomically (`quantize_gptq`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from sizer.errors import UsageError
from sizer.quantize.compute import choose_compute_dtype
from sizer.quantize.folders import atomic_output_dir, has_weights, model_folder
from sizer.quantize.plan import Preflight, RunEstimate, estimate_run, few_tokens_note, preflight
from sizer.quantize.run import GptqSettings, run_gptq


@dataclass(frozen=True)
class GptqPlan:
    """What `quantize --method gptq` checks and predicts before touching a weight."""
    source: Path
    preflight: Preflight
    estimate: RunEstimate
    available_bytes: int         # free memory on the device now
    documents: list
    n_layers: int
    settings: GptqSettings       # with the compute dtype resolved
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


def plan_gptq(model_dir: str, settings, calibration: str | None, tensor_parallel: int = 1,
              dry_run: bool = False) -> GptqPlan:
    """Validate everything that can be validated before the run, and estimate the run. A dry run
    also takes a catalog name or a config.json (plan before downloading the weights)."""
    from sizer.env.torch_runtime import check_device
    from sizer.inputs.resolve import get_model
    from sizer.quantize.text import read_calibration_text

    source = model_folder(model_dir) if not dry_run or has_weights(model_dir) else None
    spec = get_model(source or model_dir)
    already = spec.checkpoint.quantization if spec.checkpoint else None
    if already:
        raise UsageError(f"{model_dir}: already quantized ({already}), so it has no 16-bit Linear weights to "
                         "quantize; start from the original checkpoint")
    fmt = settings.format
    pre = preflight(spec, fmt.bits, fmt.group_size, fmt.sym, fmt.desc_act, fmt.static_groups, tensor_parallel)
    if not pre.ok:
        more = f" (and {len(pre.problems) - 1} more)" if len(pre.problems) > 1 else ""
        raise UsageError(f"cannot write this GPTQ checkpoint: {pre.problems[0]}{more}")
    if calibration is None and not dry_run:
        raise UsageError("--method gptq needs --calibration-text FILE: text (one document per line), .jsonl with a "
                         "\"text\" field, or a .json list; the end of it is held out for perplexity")
    docs = read_calibration_text(calibration) if calibration is not None else []
    available = check_device(settings.device, "sizer quantize")
    from sizer.env.proc import resident_bytes
    from sizer.quantize.run import load_config_and_tokenizer, skeleton
    from sizer.quantize.text import tokenize_documents

    notes: tuple[str, ...] = ()
    if source is not None:
        config, tokenizer = load_config_and_tokenizer(source)   # the libraries the run will hold: its baseline
        skeleton(config, None)
        if docs:
            settings, notes = windows_of_text(settings, len(tokenize_documents(tokenizer, docs)))
    else:
        import transformers  # noqa: F401  (most of the baseline)

    few = few_tokens_note(pre.linears, settings.samples * settings.seq_len)
    notes += (few,) if few else ()
    compute_dtype, gflops, fp32_gflops = choose_compute_dtype(settings.device, settings.compute_dtype)
    settings = replace(settings, compute_dtype=compute_dtype)
    estimate = estimate_run(spec, settings.samples, settings.seq_len, settings.heldout_samples, gflops,
                            compute_bytes=4 if compute_dtype == "float32" else 2, solver_gflops=fp32_gflops,
                            baseline_bytes=resident_bytes() if settings.device == "cpu" else 0)
    return GptqPlan(source, pre, estimate, available, docs, spec.n_layers, settings, tensor_parallel, notes)


def quantize_gptq(plan: GptqPlan, output: str, force: bool = False,
                  on_layer=lambda done, total, seconds: None):
    """Run GPTQ as planned into `output` (atomically)."""

    target = Path(output).expanduser()
    with atomic_output_dir(target, force) as tmp:
        result = run_gptq(plan.source, tmp, plan.settings, plan.documents, on_layer)
    return replace(result, output=target)
