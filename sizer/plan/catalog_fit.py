"""`sizer models --fits GPUS`: what of the catalog runs on this hardware.

For every catalog model, `fit` (the public API, one model at a time) finds the best quantization that
serves the context: the highest-quality precision of the engine's ladder (QUALITY_LADDER) among those
with the best verdict the model reaches; then the longest context it allows, its decode speed, the
memory it takes and the command that runs it. The rows are ranked as RANKING says and rendered from one
`CatalogFit` by sizer.plan.catalog_report.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

from sizer.errors import SizerError, UsageError
from sizer.gpuspec import GpuSelection

# llama.cpp's file types, best quality first (bits per weight of the mix: F16 16, Q8_0 8.5, Q6_K 6.6,
# Q5_K_M ~5.7, Q4_K_M ~4.9, IQ4_XS 4.25, Q3_K_M ~3.9, IQ3_M ~3.7). Q2_K and the 1-2 bit IQ types are
# left out: below ~3 bits a smaller model at a higher precision is usually the better choice (name them
# with --precision to rank them anyway). Types sizer cannot size yet (IQ*) are skipped.
GGUF_LADDER = ("fp16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "IQ4_XS", "Q3_K_M", "IQ3_M")
GGUF_ENGINES = ("llamacpp", "ollama", "lmstudio")
DEFAULT_CONTEXT = 8192            # a chat's context: long enough for a conversation, cut to the model's maximum
DEFAULT_LIMIT = 20

# Verdicts best first; any verdict but does-not-fit runs (fits-with-offload: part of the layers in system RAM).
RUNNABLE_ORDER = ("fits", "marginal", "fits-with-offload")
DOES_NOT_FIT = "does-not-fit"

# How the rows are ranked (what a person choosing a model for a machine asks first):
#   1. the verdict: fits before marginal before fits-with-offload (a model served from system RAM is
#      several times slower);
#   2. the release generation: RECENT_MONTHS-wide bands back from the newest model that runs here,
#      newer bands first (a newer model of a size usually beats an older, larger one: Qwen3-32B beats
#      Falcon-40B; Gemma 3, 13 months before the newest, beats it too); band 0 is `recent`;
#   3. the model's quality proxy, larger first: the parameter count; for a mixture of experts the
#      geometric mean of its total and active parameters (a dense-equivalent size, the common rule of
#      thumb);
#   4. the decode speed, faster first; then the name.
RANKING = ("verdict", "generation", "quality_params", "decode_tokens_per_s", "model")

# 12 months: the open families ship a generation about once a year (Llama 2 2023-07, Llama 3.1
# 2024-07; Qwen2.5 2024-09, Qwen3 2025-04, Qwen3.5 2026-02; Gemma 2 2024-06, Gemma 3 2025-03, Gemma 4
# 2026-04), so one year back from the newest model keeps the current generation of each family
# together and puts the previous one behind it. Compared by calendar month (dates may give no day).
RECENT_MONTHS = 12


@dataclass(frozen=True)
class ModelFit:
    """One catalog model at its best quantization on the hardware asked for."""

    model: str
    family: str
    params: int
    active_params: int
    quality_params: int              # the ranking's size: params, or sqrt(total x active) for MoE
    precision: str
    verdict: str
    context_length: int              # the context planned: asked (default 8192), cut to the model's maximum
    max_context_length: int          # the longest context this precision allows
    model_max_context_length: int | None
    decode_tokens_per_s: float | None
    prefill_tokens_per_s: float | None
    gpu_memory_bytes: int            # all GPUs together, as planned
    gpu_capacity_bytes: int          # usable memory of those GPUs
    host_bytes: int                  # what stays in system RAM (token embeddings; offloaded layers)
    launch: tuple[tuple[str, str], ...]   # (where, command) steps; the last one runs the model
    reason: str
    released: str | None = None      # the catalog's release date, "YYYY-MM-DD" or "YYYY-MM"
    recent: bool = False             # released within RECENT_MONTHS of the newest row that runs


@dataclass(frozen=True)
class CatalogFit:
    gpus: str
    engine: str
    context_length: int
    ranking: tuple[str, ...]
    rows: tuple[ModelFit, ...]       # the ranked rows shown (after --min-tokens-per-s and --limit)
    runnable: int                    # rows before --limit
    planned: int                     # catalog models planned
    skipped: tuple[tuple[str, str], ...]   # (model, why) that the engine cannot plan
    notes: tuple[str, ...] = ()
    recent_since: str | None = None  # "YYYY-MM": the oldest release month counted as recent


def default_engine(selection: GpuSelection) -> str:
    """llama.cpp for consumer GPUs, Macs and GPUs given by size (what people run at home); vLLM for
    the catalog's data-centre GPUs (what serves models there)."""
    gpu = selection.gpu
    return "vllm" if gpu.market == "datacenter" and gpu.vendor else "llamacpp"


def quality_params(params: int, active_params: int) -> int:
    """Dense-equivalent size: the parameters, or for a mixture of experts sqrt(total x active)."""
    if active_params and active_params < params:
        return math.isqrt(params * active_params)
    return params


def ladder(spec, engine: str, precisions: tuple[str, ...] | None) -> list[str]:
    """The precisions tried for `spec`, best first: as given, GGUF_LADDER for llama.cpp and its
    profiles, else the engine's default set (sizer.plan.fit.default_precisions, its own format first)."""
    from sizer.plan.fit import default_precisions
    from sizer.quant import get_precision

    if precisions:
        return list(precisions)
    if engine in GGUF_ENGINES:
        known = []
        for name in GGUF_LADDER:
            try:
                get_precision(name)
            except UsageError:
                continue
            known.append(name)
        return known
    return [p for p in default_precisions(spec, engine) if p]


def ram_parameter() -> str | None:
    """The name of fit's system-RAM parameter (for partial offload), when fit has one."""
    from sizer.plan.fit import fit

    for name in inspect.signature(fit).parameters:
        if "ram" in name.lower().split("_"):
            return name
    return None


def ram_argument(ram_text: str, ram_bytes: int) -> dict:
    """fit's keyword for the RAM: bytes for a `*_bytes` or int-typed parameter, else the text as given."""
    from sizer.plan.fit import fit

    name = ram_parameter()
    if name is None:
        return {}
    annotation = str(inspect.signature(fit).parameters[name].annotation)
    wants_text = "str" in annotation and not name.endswith("_bytes")
    return {name: ram_text if wants_text else ram_bytes}


def _rank(verdict: str) -> int:
    return RUNNABLE_ORDER.index(verdict) if verdict in RUNNABLE_ORDER else len(RUNNABLE_ORDER)


def _runnable(verdict: str) -> bool:
    return verdict != DOES_NOT_FIT


def best_precision(probe, names: list[str]) -> tuple[str, str] | None:
    """(precision, verdict): the highest-quality name with the best verdict any name reaches, or None.
    probe(name) -> verdict. Verdicts only improve down the ladder (fewer bytes), so the lowest
    precision gives the best verdict and a bisection finds the first name that reaches it."""
    if not names:
        return None
    lowest = probe(names[-1])
    if not _runnable(lowest):
        return None
    target = _rank(lowest)
    lo, hi = 0, len(names) - 1          # names[hi] reaches the target
    found = {hi: lowest}
    while lo < hi:
        mid = (lo + hi) // 2
        verdict = probe(names[mid])
        if _runnable(verdict) and _rank(verdict) <= target:
            hi, found[mid] = mid, verdict
        else:
            lo = mid + 1
    return names[hi], found[hi]


def _row(result, option) -> ModelFit:
    spec_params, active = result.params, result.active_params
    return ModelFit(
        model=result.model, family=result.family, params=spec_params, active_params=active,
        quality_params=quality_params(spec_params, active), precision=option.precision, verdict=option.verdict,
        context_length=result.context_length, max_context_length=option.max_context_length,
        model_max_context_length=result.model_max_context_length,
        decode_tokens_per_s=option.throughput.decode_tokens_per_s,
        prefill_tokens_per_s=option.throughput.prefill_tokens_per_s,
        gpu_memory_bytes=sum(g.total for g in option.per_gpu),
        gpu_capacity_bytes=sum(g.capacity for g in option.per_gpu), host_bytes=option.host_bytes,
        launch=tuple((s.on, s.command) for s in option.launch), reason=option.reason)


def generation(row: ModelFit, newest_month: int | None, months: int = RECENT_MONTHS) -> int:
    """The row's release band: 0 for a release within `months` of the newest (the `recent` ones), 1 for
    the band before it, ...; an undated row comes after every dated one."""
    from sizer.catalog import release_month

    if newest_month is None or row.released is None:
        return 1 << 30
    behind = newest_month - release_month(row.released)          # whole months behind the newest
    return 0 if behind <= months else (behind - 1) // months


def rank_key(row: ModelFit, newest_month: int | None = None, months: int = RECENT_MONTHS) -> tuple:
    """RANKING as a sort key: verdict, release band (generation), size, speed, name."""
    return (_rank(row.verdict), generation(row, newest_month, months), -row.quality_params,
            -(row.decode_tokens_per_s or 0.0), row.model.lower())


def recent_since_month(rows: list[ModelFit], months: int = RECENT_MONTHS) -> int | None:
    """The oldest release month (a month count, sizer.catalog.release_month) that is still recent: the
    newest release among `rows` less `months`; None when no row has a date."""
    from sizer.catalog import release_month

    dated = [release_month(r.released) for r in rows if r.released]
    return max(dated) - months if dated else None


def mark_recent(rows: list[ModelFit], months: int = RECENT_MONTHS) -> list[ModelFit]:
    """The rows with `recent` set: released in or after recent_since_month (an undated row is not recent)."""
    from dataclasses import replace

    from sizer.catalog import release_month

    since = recent_since_month(rows, months)
    return [replace(r, recent=since is not None and r.released is not None and release_month(r.released) >= since)
            for r in rows]


def rank_rows(rows: list[ModelFit], months: int = RECENT_MONTHS) -> list[ModelFit]:
    """The rows, recency marked, in RANKING order."""
    since = recent_since_month(rows, months)
    newest = None if since is None else since + months
    return sorted(mark_recent(rows, months), key=lambda r: rank_key(r, newest, months))


def month_text(month: int | None) -> str | None:
    """A month count as "YYYY-MM"."""
    return None if month is None else f"{month // 12:04d}-{month % 12 + 1:02d}"


def plan_model(name: str, selection: GpuSelection, engine: str, context_length: int | None,
               precisions: tuple[str, ...] | None, extra: dict) -> ModelFit | None:
    """The model at its best precision on `selection`, or None when no precision runs."""
    from sizer.inputs.resolve import get_model
    from sizer.plan.fit import fit

    spec = get_model(name)
    model_max = spec.max_context_length
    ctx = min(context_length or DEFAULT_CONTEXT, model_max) if model_max else (context_length or DEFAULT_CONTEXT)
    common = dict(context_length=ctx, max_gpus=selection.count, suggestions=False, **extra)

    def probe(precision: str) -> str:
        return fit(spec, selection, engine, precision, limits=(), **common).options[0].verdict

    best = best_precision(probe, ladder(spec, engine, precisions))
    if best is None:
        return None
    result = fit(spec, selection, engine, best[0], limits=("context",), **common)
    return _row(result, result.options[0])


def fits_catalog(gpus: str | GpuSelection, engine: str | None = None, context_length: int | None = None,
                 min_tokens_per_s: float | None = None, limit: int | None = DEFAULT_LIMIT,
                 ram: str | None = None, precisions: tuple[str, ...] | None = None,
                 models: list[str] | None = None) -> CatalogFit:
    """Every catalog model (or `models`) that runs on `gpus` (a bare GPU means one of it), at its best
    precision, ranked (RANKING; recency relative to the newest of the rows that run, after
    --min-tokens-per-s). engine: default_engine's choice when None. ram: system RAM for
    partial offload ("32GB"), passed to fit when fit takes it, else noted as ignored."""
    from dataclasses import replace

    from sizer.catalog import find_model, model_entries
    from sizer.gpuspec import parse_gpus
    from sizer.plan.engines import parse_engine

    selection = parse_gpus(gpus) if isinstance(gpus, str) else gpus
    if selection.count is None:
        from dataclasses import replace

        selection = replace(selection, count=1)
    choice = parse_engine(engine or default_engine(selection))
    if context_length is not None and context_length < 1:
        raise UsageError(f"--context-length must be a positive number of tokens, got {context_length}")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be a positive number of models, got {limit}")
    notes, extra = [], {}
    if ram:
        ram_bytes = parse_ram_bytes(ram)
        extra = ram_argument(ram, ram_bytes)
        if not extra:
            notes.append(f"--ram {ram} is ignored: this sizer plans no partial offload (fit takes no RAM)")
    rows, skipped = [], []
    names = models or list(model_entries())
    for name in names:
        try:
            row = plan_model(name, selection, engine or default_engine(selection), context_length, precisions, extra)
        except SizerError as e:
            skipped.append((name, str(e).splitlines()[0]))
            continue
        if row is not None:
            entry = find_model(name)
            rows.append(replace(row, released=entry.released if entry else None))
    if min_tokens_per_s is not None:
        rows = [r for r in rows if (r.decode_tokens_per_s or 0.0) >= min_tokens_per_s]
    rows = rank_rows(rows)
    shown = rows[:limit] if limit else rows
    return CatalogFit(selection.label, choice.label, context_length or DEFAULT_CONTEXT, RANKING, tuple(shown),
                      len(rows), len(names), tuple(skipped), tuple(notes), month_text(recent_since_month(rows)))


_RAM_UNITS = {"": 1 << 30, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40,
              "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20}


def parse_ram_bytes(text: str) -> int:
    """`--ram 32GB`: system RAM in bytes. GB means GiB, as RAM is sold (a 32 GB kit holds 32 GiB)."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text or "")
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _RAM_UNITS or float(m.group(1)) <= 0:
        raise UsageError(f"--ram {text!r}: expected a size like 32GB or 64GiB")
    return int(float(m.group(1)) * _RAM_UNITS[unit])
