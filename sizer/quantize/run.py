"""GPTQ over a whole checkpoint, streamed one decoder layer at a time (`sizer quantize --method gptq`).

The model skeleton is built on torch's meta device (no memory). Real tensors exist only for:
the embedding (while calibration inputs are captured, then freed), one decoder layer (read from the
safetensors shards, quantized, written out, freed), the final norm and lm_head (at the end, for the
held-out perplexity), and the cached hidden states of the calibration and held-out samples. Peak
memory is therefore about one layer plus its Hessians plus the cached activations, whatever the
model's size (sizer.quantize.plan.estimate_run predicts it before the run starts).

Order of work in each layer (sequential GPTQ: every layer is calibrated on the outputs of the
already-quantized layers before it):
1. held-out samples through the original layer (the "before" path, for perplexity);
2. Linears grouped by shared input (q/k/v; gate/up), in execution order; per group, one partial
   forward of the calibration samples (stopped as soon as the group's input is seen) accumulates
   one Hessian; each Linear is solved, its weight replaced by the dequantized one, and packed;
3. calibration and held-out samples through the quantized layer: the next layer's inputs.
Per-Linear relative output error of GPTQ and of round-to-nearest is computed from a Hessian of
held-out inputs accumulated in the same partial forwards (from the calibration Hessian when no text
is held out): one matrix product per Linear, no inputs kept.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from sizer.env.proc import peak_resident_bytes, release_free_memory
from sizer.errors import InputFileError, UsageError
from sizer.quant import GroupQuantFormat
from sizer.quantize.shards import ShardReader, ShardWriter
from sizer.quantize.text import token_windows, tokenize_documents

DEFAULT_MAX_SHARD_BYTES = 4 * 1024 ** 3    # written as they come: the shard size costs no memory
# Groups whose Hessian is at most this wide are solved on one thread: their Cholesky / inverse and
# column loop are many small BLAS / LAPACK calls, each ending at an OpenMP barrier that, on a loaded
# machine, waits for a descheduled thread (SmolLM2-135M, K 576-1536, 2 busy cores: 5-20x faster
# factoring, 2x faster column loop). It also makes the codes independent of the machine's core count.
SINGLE_THREAD_MAX_K = 2048


_SKIP_COPY = {"config.json", "model.safetensors.index.json", "quantize_config.json"}


def gptq_format(bits: int = 4, group_size: int = 128, sym: bool = True, act_order: bool = False,
                static_groups: bool = False, damp: float = 0.01) -> GroupQuantFormat:
    """The GPTQ checkpoint format `sizer quantize` writes, in its command's terms (--bits, --group-size,
    --sym, --act-order, --static-groups, --damp)."""
    return GroupQuantFormat("gptq", bits, group_size, sym, act_order, damp, static_groups)


@dataclass(frozen=True)
class GptqSettings:
    """A GPTQ run: the checkpoint format it writes (the same object the calculator sizes) and how the
    run calibrates and computes."""

    format: GroupQuantFormat = gptq_format()
    samples: int = 128
    seq_len: int = 2048
    heldout_samples: int = 8
    block_size: int = 128
    device: str = "cpu"
    compute_dtype: str = "auto"     # layer forwards: "bfloat16", "float32" or "auto" (sizer.quantize.compute decides)
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES


@dataclass(frozen=True)
class LinearReport:
    layer: int
    name: str                       # inside the layer, e.g. "self_attn.q_proj"
    in_features: int
    out_features: int
    error_inputs: str               # "held-out" (text never calibrated on) or "calibration"
    gptq_error: float               # relative output error ||XW - XQ|| / ||XW|| on those inputs
    rtn_error: float                # the same for round-to-nearest of the same weight
    damp_used: float
    damp_raised: bool
    seconds: float


@dataclass(frozen=True)
class GptqResult:
    output: Path
    seconds: float
    peak_rss_bytes: int
    bytes_written: int
    calibration_tokens: int
    heldout_tokens: int
    perplexity_before: float | None
    perplexity_after: float | None
    linears: tuple[LinearReport, ...]
    quantization_config: dict
    compute_dtype: str = "float32"
    notes: tuple[str, ...] = field(default=())
    peak_device_bytes: int | None = None     # torch.cuda.max_memory_allocated of the run; None on CPU


class _Stop(Exception):
    """Raised by a hook to end a forward pass early."""


def load_config_and_tokenizer(source: Path):
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(source)
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise InputFileError(f"{source}: cannot load config and tokenizer ({str(e).splitlines()[0]})") from None
    config._attn_implementation = "sdpa"
    return config, tokenizer


def skeleton(config, dtype):
    """The causal LM on torch's meta device (no memory), its decoder, the decoder's layer list and
    that list's name in the state dict."""
    import torch
    import transformers

    with torch.device("meta"):
        try:
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
        except ValueError as e:
            if "attention implementation" not in str(e) or config._attn_implementation == "eager":
                raise UsageError(f"transformers cannot build a causal LM for model_type {config.model_type!r} "
                                 f"({str(e).splitlines()[0]})") from None
            config._attn_implementation = "eager"      # families without an SDPA path (Gemma 2)
            model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise UsageError(f"{type(decoder).__name__} has no `layers` list; sizer's GPTQ streams decoders built "
                         "the Llama way (model.layers)")
    prefix = next(name for name, module in model.named_modules() if module is layers)
    return model, decoder, layers, prefix


def _materialize(model, module, prefix: str, reader: ShardReader, device, recurse: bool = True,
                 tied: frozenset = frozenset()) -> None:
    """Give a meta module real storage: buffers recomputed by the model's own initializer (rotary
    frequencies and the like), parameters read from the checkpoint (`tied` names are left for
    tie_weights)."""
    import torch

    module.to_empty(device=device, recurse=recurse)
    subs = module.modules() if recurse else [module]
    with torch.no_grad():
        for sub in subs:
            if any(True for _ in sub.buffers(recurse=False)):
                model._init_weights(sub)
        for name, param in module.named_parameters(recurse=recurse):
            full = f"{prefix}.{name}" if prefix else name
            if full not in tied:
                param.copy_(reader.get(full))


def _check_names(model, reader: ShardReader, tied: bool) -> None:
    expected = [name for name, _ in model.named_parameters()]
    missing = [n for n in expected if n not in reader and not (tied and n.endswith("lm_head.weight"))]
    if missing:
        raise InputFileError(f"checkpoint lacks {len(missing)} tensor(s) transformers expects, e.g. {missing[0]!r}; "
                             "sizer's GPTQ reads checkpoints saved by transformers")


@dataclass
class _Streams:
    """Cached hidden states: calibration (quantized path) and held-out (original and quantized paths)."""
    calib: list
    held_fp: list
    held_q: list


def _layer_kwargs(model, decoder, layers, windows, device):
    """Run the embedding and the model's own mask / position code once per sample, with every layer
    replaced by a recorder; returns (hidden states after the embedding, per-layer call arguments)."""
    import torch
    from torch import nn

    class Recorder(nn.Module):
        def __init__(self, index: int, template):
            super().__init__()
            self.index = index
            if hasattr(template, "attention_type"):
                self.attention_type = template.attention_type

        def forward(self, hidden_states, *args, **kwargs):
            record[self.index] = (args, kwargs)
            if first[0] is None:
                first[0] = hidden_states
            if self.index == len(layers) - 1:
                raise _Stop
            return hidden_states

    real = list(layers)
    for i, layer in enumerate(real):
        layers[i] = Recorder(i, layer)
    hidden, calls = [], []
    try:
        for ids in windows:
            record, first = {}, [None]
            try:
                decoder(input_ids=torch.tensor([ids], device=device), use_cache=False)
            except _Stop:
                pass
            hidden.append(first[0])
            calls.append(record)
    finally:
        for i, layer in enumerate(real):
            layers[i] = layer
    return hidden, calls


def _forward(layer, hidden, call):
    args, kwargs = call
    out = layer(hidden, *args, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def _linear_groups(layer, hidden, call) -> list[list[tuple[str, object]]]:
    """Linears of a layer grouped by the input tensor they read (the same object: q/k/v, gate/up),
    in call order, from one forward. The inputs are held until grouping ends, so no two of them can
    share storage."""
    import torch
    from torch import nn

    calls: list[tuple[str, object, object]] = []
    handles = []
    for name, module in layer.named_modules():
        if isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(
                lambda m, args, out, name=name: calls.append((name, m, args[0]))))
    try:
        with torch.no_grad():
            _forward(layer, hidden, call)
    finally:
        for h in handles:
            h.remove()
    groups: list[list[tuple[str, object]]] = []
    inputs: list[object] = []
    seen: set[int] = set()
    for name, module, x in calls:
        if id(module) in seen:
            continue
        seen.add(id(module))
        match = next((g for g, y in zip(groups, inputs) if y is x), None)
        if match is None:
            groups.append([(name, module)])
            inputs.append(x)
        else:
            match.append((name, module))
    return groups


def _accumulate(layer, group, streams_and_calls) -> list:
    """Hessian accumulators of the group's input over each stream, with forwards stopped early."""
    import torch

    from sizer.kernels.gptq import HessianAccumulator

    accumulators = []
    first = group[0][1]
    for stream, calls in streams_and_calls:
        acc = HessianAccumulator(first.in_features)

        def hook(module, args, acc=acc):
            acc.add(args[0])
            raise _Stop

        handle = first.register_forward_pre_hook(hook)
        try:
            with torch.no_grad():
                for hidden, call in zip(stream, calls):
                    try:
                        _forward(layer, hidden, call)
                    except _Stop:
                        pass
        finally:
            handle.remove()
        accumulators.append(acc if acc.tokens else None)
    return accumulators


def _nll(model, decoder, hidden_list, windows) -> tuple[float, int]:
    """Summed next-token negative log-likelihood and token count of held-out windows."""
    import torch

    head = model.get_output_embeddings()
    total, count = 0.0, 0
    with torch.no_grad():
        for hidden, ids in zip(hidden_list, windows):
            logits = head(decoder.norm(hidden)).float()[0, :-1]
            target = torch.tensor(ids[1:], device=logits.device)
            total += float(torch.nn.functional.cross_entropy(logits, target, reduction="sum"))
            count += len(ids) - 1
    return total, count


def _write_configs(source: Path, target: Path, config: dict) -> None:
    raw = json.loads((source / "config.json").read_text())
    raw["quantization_config"] = config
    (target / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    (target / "quantize_config.json").write_text(json.dumps(config, indent=2) + "\n")
    for extra in source.iterdir():
        if extra.is_file() and extra.suffix != ".safetensors" and extra.name not in _SKIP_COPY:
            shutil.copy2(extra, target / extra.name)


def run_gptq(source: Path, target_tmp: Path, settings: GptqSettings, docs: list[str],
             on_layer=lambda done, total, seconds: None) -> GptqResult:
    """Quantize the checkpoint in `source` into the (temporary) folder `target_tmp`."""
    import torch

    start = time.perf_counter()
    device = torch.device(settings.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if settings.compute_dtype == "auto":
        from sizer.quantize.compute import choose_compute_dtype

        settings = replace(settings, compute_dtype=choose_compute_dtype(settings.device, "auto")[0])
    dtype = torch.float32 if settings.compute_dtype in ("float32", "fp32") else torch.bfloat16
    config, tokenizer = load_config_and_tokenizer(source)
    calib_windows, held_windows, notes = _windows(settings, tokenize_documents(tokenizer, docs))
    model, decoder, layers, prefix = skeleton(config, dtype)
    reader = ShardReader(source)
    writer = ShardWriter(target_tmp, settings.max_shard_bytes)
    _outside_layers(model, layers, prefix, reader, writer, device, bool(getattr(config, "tie_word_embeddings", False)))
    all_windows = calib_windows + held_windows
    with torch.no_grad():
        hidden, calls = _layer_kwargs(model, decoder, layers, all_windows, device)
    n_calib = len(calib_windows)
    streams = _Streams(hidden[:n_calib], hidden[n_calib:], list(hidden[n_calib:]))

    reports: list[LinearReport] = []
    on_layer(0, len(layers), 0.0)
    for i, layer in enumerate(layers):
        layer_start = time.perf_counter()
        _materialize(model, layer, f"{prefix}.{i}", reader, device)
        reports += _quantize_layer(i, layer, streams, [c[i] for c in calls[:n_calib]],
                                   [c[i] for c in calls[n_calib:]], settings, writer, reader, f"{prefix}.{i}")
        on_layer(i + 1, len(layers), time.perf_counter() - layer_start)

    writer.close()
    before = after = None
    if held_windows:
        nll_fp, count = _nll(model, decoder, streams.held_fp, held_windows)
        nll_q, _ = _nll(model, decoder, streams.held_q, held_windows)
        before, after = math.exp(nll_fp / count), math.exp(nll_q / count)
    qconfig = settings.format.quantization_config()
    _write_configs(source, target_tmp, qconfig)
    return GptqResult(target_tmp, time.perf_counter() - start, peak_resident_bytes(), writer.bytes_written,
                      n_calib * settings.seq_len, len(held_windows) * settings.seq_len, before, after,
                      tuple(reports), qconfig, str(dtype).removeprefix("torch."), tuple(notes),
                      torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None)


def _windows(settings: GptqSettings, token_ids: list[int]) -> tuple[list, list, list[str]]:
    """(calibration windows, held-out windows, notes on what the text could not give)."""
    calib, held = token_windows(token_ids, settings.seq_len, settings.samples, settings.heldout_samples)
    notes = []
    if len(calib) < settings.samples:
        notes.append(f"calibration text holds {len(calib)} windows of {settings.seq_len} tokens, "
                     f"fewer than --samples {settings.samples}")
    if not held:
        notes.append("no text left after calibration for a held-out window: perplexity not reported")
    return calib, held, notes


def _outside_layers(model, layers, prefix: str, reader: ShardReader, writer: ShardWriter, device, tied: bool) -> None:
    """Copy the tensors outside the decoder layers (embeddings, final norm, lm_head) to the output
    unchanged, and give them storage in the model (the embedding is needed now, the norm and lm_head
    at the end); the layers stay on meta until their turn."""
    _check_names(model, reader, tied)
    layer_names = {f"{prefix}.{i}." for i in range(len(layers))}
    in_layers = lambda name: any(name.startswith(p) for p in layer_names)   # noqa: E731
    for name in reader.where:
        if not in_layers(name):
            writer.add(name, reader.get(name))
    for name, module in model.named_modules():
        if module is layers or any(module is layer for layer in layers) or in_layers(name + "."):
            continue
        own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        if any(t.is_meta for t in own):
            _materialize(model, module, name, reader, device, recurse=False,
                         tied=frozenset(n for n in (f"{name}.weight",) if tied and n not in reader))
    if tied:
        model.tie_weights()


def _quantize_layer(index: int, layer, streams: _Streams, calib_calls: list, held_calls: list,
                    settings: GptqSettings, writer: ShardWriter, reader: ShardReader,
                    layer_prefix: str) -> list[LinearReport]:
    """One decoder layer, sequentially: the held-out samples through the original layer, each group of
    Linears calibrated and solved, the samples through the quantized layer (the held-out Hessians of
    the error report gathered on the way), the layer written out and freed."""
    import torch

    with torch.no_grad():
        streams.held_fp = [_forward(layer, h, c) for h, c in zip(streams.held_fp, held_calls)]
    groups = _linear_groups(layer, streams.calib[0], calib_calls[0])
    if index == 0 and not groups:
        raise UsageError(f"{type(layer).__name__} has no Linear layers to quantize")
    packed: dict[str, dict] = {}
    reports, pending = [], []      # pending: solved groups whose errors wait for the held-out Hessians
    original = lambda name, module: reader.get(f"{layer_prefix}.{name}.weight").to(    # noqa: E731
        device=module.weight.device, dtype=module.weight.dtype)      # as _materialize gave it to the layer
    for group in groups:
        (calib_acc,) = _accumulate(layer, group, [(streams.calib, calib_calls)])
        solved, shared_s = _solve_group(group, calib_acc, settings, packed)
        if held_calls:
            pending.append((group, solved, shared_s))
        else:
            reports += _error_reports(index, group, solved, shared_s, "calibration", calib_acc.hessian, settings,
                                      original)
        del calib_acc
    with torch.no_grad():
        streams.calib = [_forward(layer, h, c) for h, c in zip(streams.calib, calib_calls)]
    if held_calls:
        held_accs = _held_out_pass(layer, groups, streams, held_calls)
        for (group, solved, shared_s), acc in zip(pending, held_accs):
            reports += _error_reports(index, group, solved, shared_s, "held-out", acc.hessian, settings, original)
    _write_layer(writer, reader, layer_prefix, packed, layer)
    layer.to("meta")
    release_free_memory()
    return reports


def _held_out_pass(layer, groups, streams: _Streams, held_calls: list) -> list:
    """The held-out samples through the quantized layer (the next layer's inputs), accumulating each
    group's input Hessian in the same pass. A group's input depends only on the groups before it, all
    quantized by now, so these are the inputs a stopped pass right after its solve would have seen."""
    import torch

    from sizer.kernels.gptq import HessianAccumulator

    accumulators = [HessianAccumulator(group[0][1].in_features) for group in groups]
    handles = [group[0][1].register_forward_pre_hook(lambda module, args, acc=acc: acc.add(args[0]))
               for group, acc in zip(groups, accumulators)]
    try:
        with torch.no_grad():
            streams.held_q = [_forward(layer, h, c) for h, c in zip(streams.held_q, held_calls)]
    finally:
        for handle in handles:
            handle.remove()
    return accumulators


def _solve_group(group, calib_acc, settings: GptqSettings, packed: dict) -> tuple[list, float]:
    """GPTQ for the Linears of one group (they read the same input): one stacked solve (exact: GPTQ is
    row-wise given H), the packed tensors into `packed`, and each module's weight replaced by its
    dequantized GPTQ weight for the forwards that follow. Returns (the quantizations, seconds)."""
    import torch

    from sizer.kernels.gptq import dequantize, gptq_quantize, prepare_hessian, split_rows
    from sizer.kernels.gptq_pack import pack_gptq_v1

    t0 = time.perf_counter()
    fmt = settings.format
    threads = torch.get_num_threads()
    if calib_acc.in_features <= SINGLE_THREAD_MAX_K:
        torch.set_num_threads(1)
    try:
        prepared = prepare_hessian(calib_acc.hessian, fmt.desc_act, fmt.damp_percent)
        weights = [module.weight.detach().to(torch.float32) for _, module in group]
        sizes = [w.shape[0] for w in weights]
        stacked = torch.cat(weights) if len(weights) > 1 else weights[0]
        solved = split_rows(gptq_quantize(stacked, None, fmt.bits, fmt.group_size, fmt.sym, fmt.desc_act,
                                          fmt.damp_percent, settings.block_size, fmt.static_groups,
                                          prepared=prepared), sizes)
    finally:
        torch.set_num_threads(threads)
    del stacked, prepared
    for (name, module), q in zip(group, solved):
        packed[name] = pack_gptq_v1(q.codes, q.zeros, q.scales, q.g_idx, fmt.bits)
        with torch.no_grad():
            module.weight.copy_(dequantize(q).to(module.weight.dtype))
    return solved, time.perf_counter() - t0


def _error_reports(layer_index: int, group, solved: list, shared_seconds: float, inputs: str, h_err,
                   settings: GptqSettings, original) -> list[LinearReport]:
    """Relative output error of GPTQ and of round-to-nearest for each Linear of a group, on the inputs
    whose Hessian is `h_err` ("held-out" or "calibration"); `original(name, module)` gives the weight
    the layer held before its solve (read again from the checkpoint: no copy is kept meanwhile)."""
    import torch

    from sizer.kernels.gptq import dequantize, hessian_relative_errors, rtn_quantize

    fmt = settings.format
    total_rows = sum(q.out_features for q in solved)
    reports = []
    for (name, module), q in zip(group, solved):
        t0 = time.perf_counter()
        weight = original(name, module).to(torch.float32)
        errors = hessian_relative_errors(
            weight, [dequantize(q), dequantize(rtn_quantize(weight, fmt.bits, fmt.group_size, fmt.sym))], h_err)
        share = shared_seconds * weight.shape[0] / total_rows
        reports.append(LinearReport(layer_index, name, module.in_features, module.out_features, inputs, *errors,
                                    q.damp_used, q.damp_raised, time.perf_counter() - t0 + share))
    return reports


def _write_layer(writer: ShardWriter, reader: ShardReader, layer_prefix: str, packed: dict, layer) -> None:
    """A layer's tensors in the GPTQ layout: packed Linears (bias in float16), everything else with
    the checkpoint's own bytes."""
    import torch

    quantized_weights = {f"{layer_prefix}.{name}.weight" for name in packed}
    quantized_biases = {f"{layer_prefix}.{name}.bias" for name in packed}
    for name, tensors in packed.items():
        for key, tensor in tensors.items():
            writer.add(f"{layer_prefix}.{name}.{key}", tensor)
    for name in sorted(n for n in reader.where if n.startswith(layer_prefix + ".")):
        if name in quantized_weights:
            continue
        tensor = reader.get(name)
        writer.add(name, tensor.to(torch.float16) if name in quantized_biases else tensor)
