"""`sweep`: verdicts for many models x GPUs x precisions x context lengths in one call, fast.

Stage layouts do not depend on the GPU, so they are built once per (model, precision). For engines
whose memory use does not depend on the GPU's size (transformers, llama.cpp), each (model,
precision, context) is evaluated once and every GPU's capacity is applied to the same totals.
"""

from __future__ import annotations

from dataclasses import dataclass

from sizer.catalog import gpu_entries, model_entries
from sizer.errors import UsageError
from sizer.plan.engines import DOES_NOT_FIT, capacity_verdict, engine_spec, make_engine, parse_engine
from sizer.plan.fit import DEFAULT_PRECISIONS, Planner
from sizer.plan.placement import Placement
from sizer.quant import get_precision
from sizer.spec import Workload

DEFAULT_CONTEXTS = (512, 1024, 2048, 4096, 8192, 16384, 32768, 131072)


@dataclass(frozen=True)
class SweepPoint:
    model: str
    gpu: str
    precision: str
    context_length: int
    verdict: str              # on one GPU of this kind
    total_bytes: int          # the fullest GPU's need
    free_bytes: int


def sweep(models=None, gpus=None, precisions=None, contexts=DEFAULT_CONTEXTS, engine: str = "transformers",
          batch_size: int = 1, kv_dtype: str = "bf16") -> list[SweepPoint]:
    """One GPU of each kind for every model, precision and context length (catalog-wide by default)."""
    from sizer.inputs.resolve import get_model

    choice = parse_engine(engine)
    engine = choice.name
    specs = [engine_spec(get_model(m), choice) for m in (models or model_entries())]
    gpu_specs = [g if not isinstance(g, str) else _gpu(g) for g in (gpus or gpu_entries().values())]
    formats = [get_precision(n) for n in (precisions or DEFAULT_PRECISIONS[engine])]     # resolved once
    eng = make_engine(engine, **choice.engine_options)
    placement = Placement(1, 1)
    points = []
    for spec in specs:
        cache: dict = {}
        planners = [Planner(spec, g, eng, kv_dtype, stage_cache=cache) for g in gpu_specs]
        for fmt in formats:
            precision = fmt.name
            for ctx in contexts:
                workload = Workload(ctx, batch_size)
                if eng.usage_depends_on_capacity:
                    for p in planners:
                        ev = p.evaluate(fmt, placement, workload)
                        g = ev.fullest
                        points.append(SweepPoint(spec.name, p.gpu.name, precision, ctx, ev.verdict, g.total, g.free))
                    continue
                shared: dict = {}           # one evaluation per hardware rule (the format a GPU holds, a refusal)
                for p in planners:
                    rule = p.hardware(fmt)
                    if rule not in shared:
                        shared[rule] = p.evaluate(fmt, placement, workload)
                    ev = shared[rule]
                    total = max(g.total for g in ev.per_gpu)
                    verdict = DOES_NOT_FIT if rule.refusal else capacity_verdict(total, p.capacity)
                    points.append(SweepPoint(spec.name, p.gpu.name, precision, ctx, verdict, total, p.capacity - total))
    return points


def _gpu(name: str):
    from sizer.catalog import get_gpu

    try:
        return get_gpu(name)
    except UsageError:
        from sizer.gpuspec import parse_gpus

        return parse_gpus(name).gpu

