"""Print what sizer's CPU meter counts during one prefill (or, with --decode, the first decode step
after it): every allocation and free above a size, with the operators it happened in and the live
total, and sizer's prediction (KV cache and activation parts; for --decode, the absolute decode peak
as `sizer measure` predicts it) beside.

This is how the activation model's terms are read (sizer/calc/activations.py): run a small model of
the family, find the peak, name the tensors alive there. The events are the ones `sizer measure`
counts on CPU (sizer.measure.meter.counted_allocations: each operator's own workspaces left out).

Run: python benchmarks/allocation_timeline.py MODEL [-c CONTEXT] [-b BATCH] [--attention sdpa|eager]
     [--min-bytes N] [--scaled] [-p PRECISION] [--decode]
MODEL is anything `sizer measure` accepts; --scaled shrinks a catalog model as the CPU campaign does
(benchmarks/measure_campaign.py); --min-bytes hides smaller events (their bytes still count);
-p loads it as `sizer measure -p` does (bf16, or bitsandbytes int8 / nf4 / ...); --decode lists the
first decode step's events instead, the live total absolute from the prefill's start (as
measure_point traces it: the decode's frees of prefill tensors need the prefill in the profile),
and marks the peak.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def model_and_config(name: str, scaled: bool):
    """The spec and config `sizer measure` would load (with `scaled`, the CPU campaign's version)."""
    if scaled:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from measure_campaign import model_and_config as campaign_model

        return campaign_model(name, False)
    from sizer.inputs.resolve import get_config, get_model

    return get_model(name), get_config(name)[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("-c", "--context-length", type=int, default=256)
    parser.add_argument("-b", "--batch-size", type=int, default=1)
    parser.add_argument("--attention", choices=["sdpa", "eager"], default="sdpa")
    parser.add_argument("--min-bytes", type=int, default=1 << 16)
    parser.add_argument("--scaled", action="store_true", help="shrink a catalog model as the CPU campaign does")
    parser.add_argument("-p", "--precision", default="bf16", help="as sizer measure -p (bf16, int8, nf4, ...)")
    parser.add_argument("--decode", action="store_true", help="the first decode step's events, after the prefill")
    args = parser.parse_args()
    if args.decode:
        return decode_timeline(args)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from sizer.calc.activations import peak_of, step_peak, transformers_attention
    from sizer.calc.kv import transformers_kv_cache_bytes
    from sizer.measure.load import load
    from sizer.measure.meter import counted_allocations
    from sizer.measure.point import prompt_inputs

    spec, config = model_and_config(args.model, args.scaled)
    loaded = load(spec, config, None, args.precision, "cpu", args.attention)
    b, s = args.batch_size, args.context_length
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        inputs = prompt_inputs(loaded.model, spec.vocab_size, b, s, "cpu", torch)    # as sizer measure
        out = loaded.model(**inputs, use_cache=True, logits_to_keep=1)
    del out, inputs
    live = peak = 0
    for _, nbytes, path in counted_allocations(prof, paths=True):
        live += nbytes
        peak = max(peak, live)
        if abs(nbytes) >= args.min_bytes:
            print(f"{nbytes:+14,d}  live {live:14,d}  {path or '(between operators)'}")
    eager = transformers_attention(spec, args.attention) == "eager"
    parts = step_peak(spec, b, s, s, eager, 1, 2, kernels="cpu")
    kv = transformers_kv_cache_bytes(spec, "bf16", s, b, storage=True)   # the prompt's K/V, before windows trim it
    print(f"measured prefill peak {peak:,} bytes above the weights; predicted {peak_of(parts) + kv:,}: "
          f"kv_cache {kv:,}, " + ", ".join(f"{k} {v:,}" for k, v in parts.items()))
    return 0


def decode_timeline(args) -> int:
    """--decode: the prefill and the first decode step in one profile, as sizer.measure.point does;
    the decode step's events with the live total since the prefill began, the peak marked."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from sizer.calc.calibration import default_calibration
    from sizer.measure.load import load
    from sizer.measure.meter import TRACE_RANGE, counted_allocations
    from sizer.measure.point import decode_steps, next_tokens, output_cache, prompt_inputs
    from sizer.measure.predict import predict

    spec, config = model_and_config(args.model, args.scaled)
    loaded = load(spec, config, None, args.precision, "cpu", args.attention)
    b, s = args.batch_size, args.context_length
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        inputs = prompt_inputs(loaded.model, spec.vocab_size, b, s, "cpu", torch)
        out = loaded.model(**inputs, use_cache=True, logits_to_keep=1)
        inputs, cache = {**inputs, "input_ids": next_tokens(out, torch)}, output_cache(out)
        out = None
        with torch.profiler.record_function(TRACE_RANGE + "decode"):
            cache, inputs, _ = decode_steps(loaded.model, inputs, cache, 1, torch, "cpu")
    del cache, inputs
    start = next(n.start_time_ns for n in prof.profiler.kineto_results.experimental_event_tree()
                 if n.name == TRACE_RANGE + "decode")
    live, events = 0, []
    for t, nbytes, path in counted_allocations(prof, paths=True):
        live += nbytes
        if t >= start:
            events.append((nbytes, live, path))
    peak_at = max(range(len(events)), key=lambda k: events[k][1])
    for k, (nbytes, total, path) in enumerate(events):
        if abs(nbytes) >= args.min_bytes or k == peak_at:
            mark = "PEAK " if k == peak_at else "     "
            print(f"{mark}{nbytes:+14,d}  live {total:14,d}  {path or '(between operators)'}")
    measured = loaded.weights_bytes + events[peak_at][1]
    pred = predict(spec, args.precision, s, b, "cpu", loaded.attention, default_calibration(), loaded.kernel or "reference")
    print(f"measured decode peak {measured:,} bytes (weights {loaded.weights_bytes:,} included); predicted "
          f"{pred['decode_peak']:,}; kernel {loaded.kernel or '(native)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
