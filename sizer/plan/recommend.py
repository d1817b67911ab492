"""`fit --recommend`: the GPU configurations of the catalog that serve a workload, cheapest first."""

from __future__ import annotations


from sizer.catalog import gpu_entries
from sizer.spec import Workload, check_context_length
from sizer.errors import UsageError
from sizer.plan.engines import DOES_NOT_FIT, EngineChoice, engine_spec, make_engine, parse_engine
from sizer.plan.fit import (DEFAULT_CONTEXT_CAP, DEFAULT_KV_DTYPE, FitOption, FitResult, Planner, plan_option,
                            resolve_precisions)

DEFAULT_RECOMMEND_MAX_GPUS = 8      # one server


def _rank_key(option: FitOption):
    """Cheapest per hour first; configurations without a price last; then the faster one."""
    price = option.price_per_hour if option.price_per_hour is not None else float("inf")
    speed = option.throughput.decode_tokens_per_s_total or 0.0
    return (price, -speed, option.gpu_count)


def rentable_gpus() -> list:
    """The catalog GPUs --recommend ranks: datacenter GPUs, and cards people own only where a cloud lists
    them by the hour (RTX 3090/4090/5090); a Mac or a desktop card nobody rents has no price to rank by."""
    return [gpu for gpu in gpu_entries().values() if not gpu.owned or gpu.price_per_hour_usd is not None]


def recommend(model, engine: str | EngineChoice = "transformers", precision: str | list | None = None,
              context_length: int | None = None, batch_size: int = 1, kv_dtype: str | None = None,
              max_gpus: int = DEFAULT_RECOMMEND_MAX_GPUS, allow_long_context: bool = False,
              **engine_options) -> FitResult:
    """For every catalog GPU and precision, the fewest GPUs (up to max_gpus) that serve the workload,
    ranked by price per hour. Configurations that fit on none are left out."""
    from sizer.inputs.resolve import get_model

    choice = parse_engine(engine)
    if choice.profile:
        raise UsageError(f"--recommend with --engine {choice.profile}: its defaults (num_ctx, flash attention) depend "
                         "on the GPU; rank with --engine llamacpp, or plan one machine with --gpus")
    engine = choice.name
    kv_dtype = kv_dtype or DEFAULT_KV_DTYPE[engine]
    spec = engine_spec(get_model(model) if isinstance(model, str) else model, choice)
    if max_gpus < 1:
        raise UsageError(f"--max-gpus must be positive, got {max_gpus}")
    ctx = context_length or min(spec.max_context_length or DEFAULT_CONTEXT_CAP, DEFAULT_CONTEXT_CAP)
    workload = Workload(ctx, batch_size)
    long_note = check_context_length(spec, ctx, allow_long_context)
    formats = resolve_precisions(spec, engine, precision)
    eng = make_engine(engine, **engine_options, **choice.engine_options)
    options, notes = [], []
    for gpu in rentable_gpus():
        planner = Planner(spec, gpu, eng, kv_dtype)
        for fmt in formats:
            if planner.min_gpus(fmt, workload, max_gpus) is None:
                continue
            option = plan_option(planner, fmt, None, workload, max_gpus)
            if option.verdict != DOES_NOT_FIT:
                options.append(option)
                if planner.hardware(fmt).note:
                    notes.append(planner.hardware(fmt).note)
    options.sort(key=_rank_key)
    any_gpu = next(iter(gpu_entries().values()))      # FitResult wants one; "catalog" options name their own
    return FitResult(spec.name, spec.family, spec.params, spec.active_params, "catalog", any_gpu, engine,
                     ctx, batch_size, kv_dtype, tuple(options), spec.notes + ((long_note,) if long_note else ()) + tuple(dict.fromkeys(notes)),
                     engine_version=choice.version,
                     model_max_context_length=spec.max_context_length)
