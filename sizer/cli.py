"""The `sizer` command: a click group of thin verbs (parse, call the library, render).

Errors a user can cause become one line on stderr (`Error: ...`) and a non-zero exit code: 2 for
bad arguments, 1 for unreadable files; never a traceback (set SIZER_DEBUG=1 to see one).
"""

from __future__ import annotations

import functools
import inspect
import os
import sys

import click

from sizer import __version__
from sizer.errors import SizerError
from sizer.errors import UsageError as SizerUsage
from sizer.render import FORMATS
from sizer.units import fmt_gib



class SizerGroup(click.Group):
    """Turns library errors into click errors: one line, the class's exit code."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if any("\x00" in arg for arg in args):     # no shell passes one; no file name can hold one
            raise click.UsageError("an argument holds a NUL byte", ctx)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SizerError as e:
            err = click.ClickException(str(e))
            err.exit_code = e.exit_code
            raise err from None
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as e:
            if os.environ.get("SIZER_DEBUG"):
                raise
            raise click.ClickException(f"internal error: {e.__class__.__name__}: {e} "
                                       "(please report it; SIZER_DEBUG=1 shows the traceback)") from None


def output_options(command):
    """--format and -o/--output/--force, shared by every command that prints results."""
    wants_force = "force" in inspect.signature(command).parameters   # commands that write files of their own

    @click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                  help="table for people; json, csv (fixed documented header) and markdown for tools.")
    @click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
                  help="Write to FILE (atomically) instead of standard output.")
    @click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
    @functools.wraps(command)
    def wrapper(*args, fmt: str, output: str | None, force: bool, **kwargs):
        if wants_force:
            kwargs["force"] = force
        text = command(*args, fmt=fmt, **kwargs)
        if output:
            from sizer.io import write_atomic

            write_atomic(output, text, force)
            click.echo(f"wrote {output}", err=True)
        else:
            click.echo(text, nl=False)

    return wrapper


def calibration_option(command):
    return click.option("--calibration", type=click.Path(dir_okay=False), default=None,
                        help="Constants fitted by `sizer calibrate` (default: the shipped sizer/data/calibration.json).")(command)


def refresh_option(command):
    """--refresh: MODEL, when a Hub repository id, is read from the Hub again instead of the local caches."""
    return click.option("--refresh", is_flag=True,
                        help="MODEL is a Hugging Face repository id: read it from the Hub again, not from the local "
                             "caches (a branch such as main may have moved); sizer's cache is updated.")(command)


def _refreshed(model: str, refresh: bool):
    """MODEL, or with --refresh the ModelSpec read from the Hub again."""
    if not refresh:
        return model
    from sizer.inputs.hub import is_repo_id
    from sizer.inputs.resolve import get_model

    if not is_repo_id(model):
        raise SizerUsage(f"--refresh applies to a Hugging Face repository id, not {model!r}")
    return get_model(model, refresh=True)


def engine_name(ctx, param, value):
    """--engine: a known engine, or transformers==<release> for a release sizer models (None: not given)."""
    from sizer.errors import UsageError
    from sizer.plan.engines import parse_engine

    if value is None:
        return None
    try:
        return parse_engine(value)
    except UsageError as e:
        raise click.BadParameter(str(e)) from None


def ram_size(ctx, param, value):
    """--ram 64GB / 64GiB / 64G / 64: GiB of system RAM, in bytes (None: not given)."""
    import re

    if value is None:
        return None
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(gb|gib|g)?\s*$", str(value), re.IGNORECASE)
    if not m or float(m.group(1)) <= 0:
        raise click.BadParameter(f"{value!r}: expected a size such as 32GB or 64GiB (GiB of RAM)")
    return int(float(m.group(1)) * 2**30)


def positive(ctx, param, value):
    if value is not None and value < 1:
        raise click.BadParameter(f"must be a positive integer, got {value}")
    return value


@click.group(cls=SizerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="sizer")
def cli():
    """Which hardware an open LLM needs, whether it fits, and how to make it fit.

    Sizes are printed in GiB (1 GiB = 2^30 bytes); JSON and CSV carry exact integer bytes.
    MODEL is a catalog name or alias (see `sizer models`), a config.json, a folder with config.json
    and *.safetensors (sized exactly from the tensor headers), a .gguf file, or any Hugging Face
    repository id ORG/NAME[@REVISION] (its config.json and safetensors headers, from the local caches or
    by range requests). Only a repository id not cached uses the network.
    """


@cli.command()
@click.argument("model")
@click.option("-p", "--precision", default=None,
              help="Weight precision: fp32 fp16 bf16 fp8 int8 nf4 nf4-dq fp4 fp4-dq nvfp4, gptq-<2|3|4|8>bit-g<N|-1>, "
                   "awq-4bit-g128, or a llama-quantize type (Q8_0 Q6_K Q5_K_M Q4_K_M Q4_0 Q3_K_M Q2_K Q2_K_S IQ4_XS IQ4_NL "
                   "IQ3_M IQ3_S IQ3_XS IQ3_XXS IQ2_M IQ2_S IQ2_XS IQ2_XXS IQ1_M IQ1_S TQ2_0 TQ1_0 MXFP4_MOE; bartowski's "
                   "Q4_K_L Q3_K_XL ...: Q8_0 embeddings and output). A catalog model's "
                   "official quantized checkpoint is sized as it stores it (fp8 of llama-3.1-405b: Meta's FBGEMM FP8). "
                   "Default: the checkpoint's own storage for files, else bf16.")
@click.option("--kv-dtype", default="bf16", show_default=True, help="KV cache dtype: bf16 fp16 fp8 int8 fp32.")
@click.option("-c", "--context-length", type=int, default=None, callback=positive,
              help="Tokens per sequence (prompt + generated). Default: the model's maximum context. Beyond the "
                   "model's maximum it is refused (as vLLM refuses it) unless --allow-long-context.")
@click.option("--allow-long-context", is_flag=True,
              help="Plan a context beyond the model's maximum anyway (vLLM: VLLM_ALLOW_LONG_MAX_MODEL_LEN=1); noted.")
@click.option("-b", "--batch-size", type=int, default=1, show_default=True, callback=positive,
              help="Sequences processed together.")
@click.option("--attention", type=click.Choice(["sdpa", "eager"]), default="sdpa", show_default=True,
              help="sdpa's fused kernels never materialise the score matrix (torch's math fallback does, "
                   "for Falcon's multi-query attention: noted); eager does (batch x heads x seq^2).")
@click.option("--logits", type=click.Choice(["last", "all"]), default="last", show_default=True,
              help="last: generate() computes the last position only; all: a plain forward, fp32 over every position.")
@calibration_option
@refresh_option
@output_options
def estimate(model, precision, kv_dtype, context_length, batch_size, allow_long_context, attention, logits, calibration,
             refresh, fmt):
    """Memory of MODEL: weights by component, KV cache, activations and runtime overhead.

    \b
    Examples:
      sizer estimate llama3-70b
      sizer estimate llama3.1-8b --precision nf4 --context-length 32768 --batch-size 4
      sizer estimate ./my-model/ --format json      (config.json + *.safetensors, exact bytes)
      sizer estimate model-Q4_K_M.gguf --format csv
    """
    from sizer.calc.estimate import estimate as run_estimate
    from sizer.calc.report import render_estimate

    result = run_estimate(_refreshed(model, refresh), precision, kv_dtype, context_length, batch_size, attention, logits, calibration,
                          allow_long_context=allow_long_context)
    return render_estimate(result, fmt)


@cli.command()
@click.argument("model", required=False)
@click.option("-g", "--gpus", default=None,
              help="GPUs to plan for: COUNTxGPU (2x48GB, 2xA100-80GB, 8xH100), a GPU without a count (H100: sizer "
                   "finds the minimum), or 'local' (this machine's GPUs: NVIDIA through NVML or nvidia-smi, AMD through "
                   "rocm-smi, an Apple Silicon Mac through sysctl; the default when there are any). Names are read "
                   "loosely (rtx4090, 'RTX 4090', 7900xtx, m3-max-64gb). A bare size like 48GB means a GPU with 48 "
                   "GiB of device memory, as marketed.")
@click.option("-e", "--engine", default=None, callback=engine_name,
              help="Whose memory budget rules to apply: transformers (the default), vllm, sglang or llamacpp, or "
                   "ollama / lmstudio (llama.cpp with their defaults; engine profiles: docs/engines.md), mlx / "
                   "lmstudio-mlx (mlx-lm on a Mac: -p mlx-4bit, mlx-8bit; memory only). NAME==VERSION "
                   "models that release (transformers==5.24, vllm==0.6.4, sglang==0.4.6, ollama==0.6.8); without one, "
                   "the newest release sizer models, named in the output.")
@click.option("--engine-args", default=None,
              help="The engine's own flags, as passed to it: \"--max-model-len 16000 --gpu-memory-utilization 0.95 "
                   "-tp 2\" (vLLM), \"-c 8192 -fa on -ctk q8_0\" (llama.cpp), \"num_ctx=8192 num_gpu=20 "
                   "OLLAMA_NUM_PARALLEL=2 OLLAMA_KV_CACHE_TYPE=q8_0\" (Ollama), \"context_length=8192 "
                   "flash_attention=on kv_cache_type=q8_0\" (LM Studio). Flags that change no memory are "
                   "accepted; unknown ones are named in a warning; a value sizer's own option contradicts is refused.")
@click.option("--command", "launch_line", default=None,
              help="A whole launch line, model included: \"vllm serve Qwen/Qwen2.5-7B-Instruct "
                   "--tensor-parallel-size 2\", \"python -m vllm.entrypoints.openai.api_server --model M ...\", "
                   "\"llama-server -m model.gguf -c 8192\"; the engine comes from the line.")
@click.option("-p", "--precision", multiple=True,
              help="Precision(s) to evaluate (repeat or comma-separate). Default: the engine's sensible set.")
@click.option("-c", "--context-length", type=int, default=None, callback=positive,
              help="Tokens per sequence. Default: the model's maximum, at most 8192. Beyond the model's maximum it "
                   "is refused (as vLLM refuses it) unless --allow-long-context.")
@click.option("--allow-long-context", is_flag=True,
              help="Plan a context beyond the model's maximum anyway (vLLM: VLLM_ALLOW_LONG_MAX_MODEL_LEN=1); noted.")
@click.option("-b", "--batch-size", type=int, default=1, show_default=True, callback=positive,
              help="Concurrent sequences to serve.")
@click.option("--kv-dtype", default=None,
              help="KV cache dtype: bf16 fp16 fp8 int8 (llamacpp: q8_0 q4_0). Default: the engine's own, bf16 for "
                   "transformers and vLLM, fp16 for llama.cpp.")
@click.option("--tensor-parallel", type=int, default=None, callback=positive, help="Tensor-parallel degree.")
@click.option("--pipeline-parallel", type=int, default=None, callback=positive, help="Pipeline stages.")
@click.option("--data-parallel", type=int, default=None, callback=positive,
              help="vLLM/SGLang: data-parallel replicas of the layout, each with its own KV cache (vLLM "
                   "--data-parallel-size; SGLang --dp-size). GPUs = TP x PP x DP.")
@click.option("--expert-parallel", is_flag=True,
              help="MoE: spread the routed experts over all TP x DP GPUs (vLLM --enable-expert-parallel).")
@click.option("--gpu-memory-utilization", type=float, default=None,
              help="vLLM: fraction of each GPU's total memory vLLM may use (default 0.9, as in vLLM).")
@click.option("--max-num-seqs", type=int, default=None, callback=positive, help="vLLM: scheduler's sequence limit.")
@click.option("--max-num-batched-tokens", type=int, default=None, callback=positive,
              help="vLLM: tokens per scheduler step (sizes the profiling run).")
@click.option("--fabric-gbps", "fabric_gbits", type=float, default=None,
              help="The network between nodes, in Gb/s per node as NICs are sold (8 x 400 Gb/s InfiniBand = 3200). "
                   "Default: the GPU catalog's for the GPU's usual servers.")
@click.option("--ram", "ram", default=None, callback=ram_size,
              help="The machine's system RAM (32GB, 64GiB: GiB, as RAM is sold), for layers kept there (llama.cpp "
                   "-ngl, Ollama num_gpu) and CPU-only plans; a plan whose part in RAM exceeds it, less a 4 GiB "
                   "reserve for the OS, does not fit. With --ram a GPU without a count is one GPU. Default: this "
                   "machine's RAM with --gpus local or cpu, a Mac's unified memory, else unknown (said).")
@click.option("--ram-bandwidth-gbps", type=float, default=None,
              help="Peak bandwidth of the system RAM in GB/s, for the speed of layers kept there. Default: "
                   "--host-memory's, a Mac's unified memory, else DDR5-5600 dual channel (89.6 GB/s).")
@click.option("--host-memory", default=None,
              help="The system RAM's kind, for its peak bandwidth (the GPU catalog's host_memory rows): DDR4-2666-2ch, "
                   "DDR4-3200-2ch, DDR5-4800-2ch, DDR5-5600-2ch, DDR5-6400-2ch, LPDDR5X-8000-256bit, DDR4-3200-8ch, "
                   "DDR5-4800-8ch, DDR5-5200-8ch, DDR5-4800-12ch, DDR5-6000-12ch, DDR5-6400-12ch.")
@click.option("--recommend", is_flag=True, help="Rank the catalog's GPU configurations by price for this workload.")
@click.option("--max-gpus", type=int, default=None, callback=positive,
              help="Most GPUs per configuration to consider (default 8 with --recommend, 64 otherwise).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Also draw each GPU's memory as stacked bars into FILE.png or FILE.svg (extra: plot).")
@calibration_option
@refresh_option
@output_options
def fit(model, gpus, engine, engine_args, launch_line, precision, context_length, batch_size, allow_long_context,
        kv_dtype, tensor_parallel, pipeline_parallel, data_parallel, expert_parallel, gpu_memory_utilization,
        max_num_seqs, max_num_batched_tokens, fabric_gbits, ram, ram_bandwidth_gbps, host_memory, recommend, max_gpus,
        plot_path, calibration, refresh, fmt, force=False):
    """Will MODEL fit on these GPUs? Per precision: verdict, per-GPU memory, max context, max concurrency,
    throughput, price; or, with --recommend, the cheapest catalog hardware that serves the workload.

    \b
    Examples:
      sizer fit llama3-70b --gpus 2x48GB
      sizer fit llama3.1-8b --gpus H100 --engine vllm -c 32768 -b 16
      sizer fit mixtral --recommend --engine vllm --format csv -o options.csv
      sizer fit llama-3.1-405b --gpus 2x8xH100 --engine vllm    (2 nodes of 8: TP8 x PP2, Ray)
      sizer fit --command "vllm serve Qwen/Qwen2.5-7B-Instruct --max-model-len 16000 -tp 2" --gpus 2xL40S
      sizer fit llama-3.1-70b -p Q4_K_M --gpus RTX-3060 --ram 64GB --engine llamacpp   (partial offload: -ngl)
    """
    from dataclasses import replace

    from sizer.plan.fit import fit as run_fit
    from sizer.plan.report import plot_fit, render_fit

    precisions = [p.strip() for value in precision for p in value.split(",") if p.strip()] or None
    if engine is not None and engine.name == "mlx":
        unsupported = [name for name, value in (("--recommend", recommend), ("--command", launch_line),
                                                ("--kv-dtype", kv_dtype), ("--tensor-parallel", tensor_parallel),
                                                ("--pipeline-parallel", pipeline_parallel)) if value]
        if unsupported:
            raise SizerUsage(f"--engine {engine.profile} plans one Mac's memory: {', '.join(unsupported)} "
                             "does not apply (docs/reference/mlx.md)")
        return _mlx_fit(_refreshed(model, refresh), gpus or "local", engine.profile, precisions, context_length,
                        batch_size, engine_args, fmt)
    profile_args = None
    if engine is not None and engine.profile and engine_args:     # Ollama's / LM Studio's own settings
        profile_args, engine_args = engine_args, None
    model, engine, flags = _engine_flags(model, engine, engine_args, launch_line)
    opts = {"tensor_parallel": tensor_parallel, "pipeline_parallel": pipeline_parallel,
            "context_length": context_length, "gpu_memory_utilization": gpu_memory_utilization,
            "max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens, "kv_dtype": kv_dtype,
            "precision": precisions, "data_parallel": data_parallel, "expert_parallel": expert_parallel or None}
    model, opts, settings = _with_engine_flags(_refreshed(model, refresh), opts, flags)
    engine_options = _fit_engine_options(engine.name, opts, settings, calibration)
    if recommend:
        if gpus or opts["tensor_parallel"] or opts["pipeline_parallel"]:
            raise SizerUsage("--recommend ranks the catalog's GPUs: leave out --gpus, --tensor-parallel and --pipeline-parallel")
        from sizer.plan.recommend import recommend as run_recommend

        result = run_recommend(model, engine, opts["precision"], opts["context_length"], batch_size, opts["kv_dtype"],
                               max_gpus or 8, allow_long_context=allow_long_context, **engine_options)
    else:
        result = run_fit(model, gpus or "local", engine, opts["precision"], opts["context_length"], batch_size,
                         opts["kv_dtype"], opts["tensor_parallel"], opts["pipeline_parallel"], max_gpus or 64,
                         allow_long_context=allow_long_context, fabric_gbits=fabric_gbits,
                         data_parallel=opts["data_parallel"] or 1, expert_parallel=bool(opts["expert_parallel"]),
                         dp_attention=bool(settings and settings.options.get("dp_attention")),
                         profile_args=profile_args, ram_bytes=ram, ram_bandwidth_gbps=ram_bandwidth_gbps,
                         host_memory=host_memory, **engine_options)
    if flags is not None:
        result = replace(result, notes=result.notes + tuple(flags.notes(settings)))
        if flags.args.warning:
            click.echo(f"warning: {flags.args.warning}", err=True)
    if plot_path:
        plot_fit(result, plot_path, force)
    return render_fit(result, fmt)


def _mlx_fit(model, gpus, profile, precisions, context_length, batch_size, engine_args, fmt):
    """--engine mlx / lmstudio-mlx: mlx-lm's weights, KV cache and prefill step against the Mac's wired limit."""
    from sizer import get_model
    from sizer.gpuspec import parse_gpus, usable_memory_bytes
    from sizer.plan.mlx import parse_mlx_args, plan_mlx, render_mlx

    spec = get_model(model)
    gpu = parse_gpus(gpus).gpu
    max_kv_size = parse_mlx_args(engine_args)
    context = context_length or min(spec.max_context_length or 8192, 8192)
    plans = [plan_mlx(spec, gpu, usable_memory_bytes(gpu), p, context, batch_size, max_kv_size,
                      lmstudio=profile == "lmstudio-mlx") for p in (precisions or ["mlx-4bit", "mlx-8bit"])]
    return render_mlx(plans, fmt)


def _with_engine_flags(model, opts: dict, flags):
    """(MODEL, sizer's options merged with the engine's flags, the flags' FitSettings or None)."""
    if flags is None:
        return model, opts, None
    from sizer.inputs.resolve import get_model
    from sizer.plan.engine_args import merge_fit_options

    model = get_model(model) if isinstance(model, str) else model
    settings = flags.settings_for(model)
    merged = merge_fit_options(opts, settings, flags.source)
    if merged["precision"] is not None and not isinstance(merged["precision"], list):
        merged["precision"] = [merged["precision"]]
    return model, merged, settings


def _fit_engine_options(name: str, opts: dict, settings, calibration) -> dict:
    """The engine profile's own options: sizer's and those the engine's flags set."""
    options = _engine_options(name, opts["gpu_memory_utilization"], opts["max_num_seqs"], opts["max_num_batched_tokens"])
    if settings is not None and name == "vllm" and settings.options.get("enforce_eager"):
        options["enforce_eager"] = True
    if settings is not None and name == "vllm" and settings.options.get("enable_lora"):
        from sizer.plan.load_buffers import lora_slots

        options["lora"] = lora_slots(settings.options)     # its slot buffers count among vLLM's weights
    if settings is not None and name == "llamacpp":
        options.update({k: settings.options[k] for k in ("llamacpp_settings", "flash_attention") if k in settings.options})
    if settings is not None and name == "sglang":
        options.update({k: settings.options[k] for k in ("mem_fraction_static", "chunked_prefill_size", "page_size",
                                                         "max_running_requests") if k in settings.options})
    if calibration:
        if name not in ("transformers", "vllm"):
            raise SizerUsage(f"--calibration applies to the transformers and vLLM profiles, not --engine {name}")
        options["calibration"] = calibration
    return options


def _engine_flags(model, engine, engine_args, launch_line):
    """(MODEL, the engine, the engine's flags as sizer options or None) from the arguments and a launch line."""
    from sizer.plan.engine_args import EngineFlags
    from sizer.plan.engines import parse_engine

    if engine_args and launch_line:
        raise SizerUsage("--command already holds the engine's flags: give --engine-args or --command, not both")
    if launch_line:
        flags = EngineFlags.from_command(launch_line)
        if engine is not None and engine.name != flags.args.engine:
            raise SizerUsage(f"--engine {engine.name} contradicts --command, a {flags.args.engine} launch line")
        if model is not None and model != flags.args.model:
            raise SizerUsage(f"MODEL {model} contradicts --command, which launches {flags.args.model}")
        pinned = f"=={flags.args.version}" if flags.args.version and flags.args.engine == "vllm" else ""
        return flags.args.model, engine or parse_engine(flags.args.engine + pinned), flags
    if engine is None and isinstance(model, str) and not engine_args:
        from sizer.inputs.ollama_tags import is_ollama_name

        engine = parse_engine("ollama") if is_ollama_name(model) else None   # an Ollama tag: Ollama's defaults
    engine = engine or parse_engine("transformers")
    if model is None:
        raise SizerUsage("MODEL is missing: name a model, or give a whole launch line with --command")
    if engine_args:
        return model, engine, EngineFlags.from_args(engine.name, engine_args)
    return model, engine, None


def _engine_options(engine, gpu_memory_utilization, max_num_seqs, max_num_batched_tokens) -> dict:
    vllm_only = {"--gpu-memory-utilization": gpu_memory_utilization, "--max-num-seqs": max_num_seqs,
                 "--max-num-batched-tokens": max_num_batched_tokens}
    given = [flag for flag, value in vllm_only.items() if value is not None]
    if given and engine != "vllm":
        raise SizerUsage(f"{', '.join(given)} apply to --engine vllm, not {engine}")
    if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
        raise SizerUsage(f"--gpu-memory-utilization must be in (0, 1], got {gpu_memory_utilization}")
    return {"gpu_memory_utilization": gpu_memory_utilization, "max_num_seqs": max_num_seqs,
            "max_num_batched_tokens": max_num_batched_tokens} if engine == "vllm" else {}


def _list(value: str | None, cast, name: str, allow_many: bool) -> list:
    items = [v.strip() for v in str(value).split(",") if v.strip()] if value is not None else []
    if value is not None and not items:
        raise SizerUsage(f"{name} is empty")
    if len(items) > 1 and not allow_many:
        raise SizerUsage(f"{name} takes one value; lists need --sweep")
    try:
        out = [cast(v) for v in items]
    except ValueError:
        raise SizerUsage(f"{name}: cannot read {value!r}") from None
    if cast is int and any(v < 1 for v in out):
        raise SizerUsage(f"{name} must be positive, got {value}")
    return out


def token_count(ctx, param, value):
    """--dataset-tokens: a count of tokens, with an optional K, M, B or T suffix (250M)."""
    if value is None:
        return None
    from sizer.finetune.setup import parse_token_count

    return parse_token_count(value, "--" + param.name.replace("_", "-"))


@cli.command()
@click.argument("model", required=False)
@click.option("-g", "--gpus", default=None,
              help="GPUs as COUNTxGPU (2xRTX-4090, 8xH100, 2x8xH100) or a GPU alone (sizer finds the fewest when the "
                   "run shards the model states). Default: local.")
@click.option("-m", "--method", multiple=True,
              help="full, lora, dora, qlora (a comma list compares them) [default: full,lora,qlora].")
@click.option("--lora-rank", "-r", type=int, default=16, show_default=True, callback=positive, help="LoRA rank r.")
@click.option("--lora-alpha", type=int, default=None, callback=positive,
              help="LoRA alpha (scales the update; no memory effect) [default: 2 x rank].")
@click.option("--lora-targets", default="all-linear", show_default=True,
              help="Projections LoRA adapts: all-linear (PEFT's: every decoder Linear) or a list: q,k,v,o,gate,up,down.")
@click.option("--optimizer", type=click.Choice(["adamw", "adamw-8bit", "paged-adamw-8bit", "adafactor", "sgd"]),
              default="adamw", show_default=True)
@click.option("-p", "--precision", type=click.Choice(["bf16", "fp16", "fp32"]), default="bf16", show_default=True,
              help="Compute dtype (mixed precision for bf16/fp16).")
@click.option("--master-weights/--no-master-weights", default=None,
              help="Keep fp32 master copies of the trained weights [default: where the framework does: fp16, "
                   "DeepSpeed ZeRO].")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=True, show_default=True)
@click.option("-b", "--micro-batch-size", type=int, default=1, show_default=True, callback=positive,
              help="Sequences per GPU per forward (per_device_train_batch_size).")
@click.option("-s", "--seq-len", type=int, default=2048, show_default=True, callback=positive,
              help="Tokens per sequence (max_length; the longest a batch holds).")
@click.option("--gradient-accumulation-steps", type=int, default=1, show_default=True, callback=positive)
@click.option("--packing", is_flag=True, help="Sequences packed to --seq-len (every micro-batch is full).")
@click.option("--attention", type=click.Choice(["sdpa", "eager", "flash"]), default="sdpa", show_default=True,
              help="attn_implementation: sdpa, eager, or flash (flash_attention_2).")
@click.option("--quant", type=click.Choice(["nf4", "nf4-dq", "fp4", "fp4-dq"]), default="nf4-dq", show_default=True,
              help="QLoRA's 4-bit base weights (bitsandbytes); -dq: double quantization.")
@click.option("--zero", type=click.IntRange(0, 3), default=0, show_default=True, help="DeepSpeed ZeRO stage.")
@click.option("--fsdp", type=click.Choice(["full-shard", "shard-grad-op", "hybrid"]), default=None,
              help="PyTorch FSDP sharding strategy.")
@click.option("--offload-optimizer", type=click.Choice(["none", "cpu"]), default="none", show_default=True)
@click.option("--offload-params", type=click.Choice(["none", "cpu"]), default="none", show_default=True)
@click.option("--compile/--no-compile", "compile_", default=None,
              help="torch.compile [default: the framework's: unsloth compiles; torchtune's recipes default to off] "
                   "(torchtune: the chunked loss is fused, no float32 log-softmax kept).")
@click.option("--framework", type=click.Choice(["transformers", "trainer", "torchtune", "unsloth", "litgpt"]),
              default="transformers", show_default=True,
              help="Whose behaviour to follow: transformers (TRL's SFTTrainer + PEFT), trainer (transformers' Trainer + "
                   "PEFT, without TRL), torchtune, unsloth.")
@click.option("--dataset-tokens", default=None, callback=token_count,
              help="Training tokens per epoch (250M, 1.5B): the epoch's time and cost.")
@click.option("--recommend", is_flag=True, help="Rank the catalog's GPUs by the cost of the training tokens.")
@click.option("--max-gpus", type=int, default=None, callback=positive,
              help="The most GPUs to consider when finding the fewest [64; --recommend: 8].")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Also draw the per-GPU memory as stacked bars to FILE (.png or .svg; needs matplotlib).")
@output_options
def finetune(model, gpus, method, lora_rank, lora_alpha, lora_targets, optimizer, precision, master_weights,
             gradient_checkpointing, micro_batch_size, seq_len, gradient_accumulation_steps, packing, attention, quant,
             zero, fsdp, offload_optimizer, offload_params, compile_, framework, dataset_tokens, recommend, max_gpus,
             plot_path, fmt, force=False):
    """Can MODEL be fine-tuned on these GPUs, and how long will it take? Per method: frozen weights,
    adapters, gradients, optimizer states, activations and overhead per GPU; the largest micro-batch
    and sequence length that fit; the fewest GPUs; time per step, tokens/s and cost.

    \b
    Examples:
      sizer finetune llama3-8b --method qlora --gpus RTX-4090 --seq-len 2048
      sizer finetune llama3-8b --gpus A100-80GB -b 4 --dataset-tokens 100M
      sizer finetune llama-3.1-70b --method full --gpus H100 --zero 3 --offload-optimizer cpu
      sizer finetune qwen2.5-7b --method lora --recommend --format csv -o options.csv
    """
    from sizer.finetune.plan import finetune as run_finetune, recommend_finetune
    from sizer.finetune.report import plot_finetune, render_finetune
    from sizer.finetune.setup import setups_for

    if model is None:
        raise SizerUsage("name a MODEL: a catalog name (llama3-8b), a Hub id, a config.json or a folder")
    setups = setups_for(method, lora_rank=lora_rank, lora_alpha=lora_alpha, lora_targets=lora_targets,
                        optimizer=optimizer, precision=precision, master_weights=master_weights,
                        gradient_checkpointing=gradient_checkpointing, micro_batch_size=micro_batch_size,
                        seq_len=seq_len, packing=packing, attention=attention, quant=quant, framework=framework,
                        zero=zero, fsdp=fsdp, offload_optimizer=offload_optimizer == "cpu",
                        offload_params=offload_params == "cpu", gradient_accumulation_steps=gradient_accumulation_steps,
                        compile=compile_)
    if recommend:
        if gpus:
            raise SizerUsage("--recommend ranks the catalog's GPUs: leave out --gpus")
        result = recommend_finetune(model, setups, dataset_tokens, max_gpus or 8)
    else:
        result = run_finetune(model, gpus or "local", setups, dataset_tokens, max_gpus or 64)
    if plot_path:
        plot_finetune(result, plot_path, force)
    return render_finetune(result, fmt)


@cli.command()
@click.argument("model")
@click.option("-p", "--precision", default=None,
              help="bf16 fp16 fp32, or bitsandbytes int8 nf4 nf4-dq fp4 fp4-dq (quantized on load), or gptq-<b>bit-g<G> "
                   "for a GPTQ checkpoint folder (run by sizer's QuantLinear). Default: the checkpoint's GPTQ "
                   "format, else bf16. With --sweep, a list.")
@click.option("-c", "--context-length", default=None,
              help="Prompt tokens [1024, or the model's maximum when smaller]. With --sweep, a list.")
@click.option("-b", "--batch-size", default="1", show_default=True, help="Sequences. With --sweep, a list.")
@click.option("--new-tokens", type=int, default=16, show_default=True, help="Decode steps timed after the prefill.")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default=None, help="Default: cuda when available, else cpu.")
@click.option("--weights", default=None,
              help="A folder of safetensors weights, or 'synthetic': random weights built in place from the config "
                   "(the default when MODEL has no weights).")
@click.option("--attention", type=click.Choice(["sdpa", "eager"]), default="sdpa", show_default=True)
@click.option("--gptq-kernel", type=click.Choice(["reference", "int4"]), default="reference", show_default=True,
              help="How sizer's QuantLinear runs a GPTQ checkpoint: reference (dequantize, then matmul; every bit "
                   "width) or int4 (torch's fused int4 matmul on weights repacked at load; 4-bit, group size "
                   "32-256; much faster decode).")
@click.option("--sweep", is_flag=True, help="Measure every combination of the listed precisions, contexts and batches "
                                            "in one process (one load per precision).")
@click.option("--record", "record_path", type=click.Path(dir_okay=False), default=None,
              help="Append the records to FILE (.csv or .json; docs/output.md documents the columns).")
@click.option("--force", is_flag=True, help="Measure even when sizer predicts the model does not fit the device.")
@click.option("--allow-long-context", is_flag=True,
              help="Measure a context beyond the model's maximum anyway (refused otherwise, as in estimate and fit).")
@click.option("--finetune", "finetune_method", type=click.Choice(["full", "lora", "qlora"]), default=None,
              help="Measure two real training steps (transformers Trainer + PEFT, fused AdamW; on the CPU unless "
                   "--device cuda) instead of "
                   "inference: weights, gradients, optimizer states and the step's peaks beside `sizer finetune "
                   "--framework trainer`'s prediction. -c is the sequence length [128], -b the micro-batch.")
@click.option("--lora-rank", type=int, default=16, show_default=True, callback=positive, help="With --finetune.")
@click.option("--lora-dropout", type=float, default=0.0, show_default=True, help="With --finetune.")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True,
              help="With --finetune.")
@click.option("--gradient-checkpointing/--no-gradient-checkpointing", default=True, show_default=True,
              help="With --finetune.")
@click.option("--full-size", is_flag=True,
              help="With --finetune: the model at its own size (default: scaled down to 2 layers of width 256, "
                   "vocabulary 8192, keeping the architecture).")
@calibration_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
def measure(model, precision, context_length, batch_size, new_tokens, device, weights, attention, gptq_kernel, sweep,
            record_path, force, allow_long_context, finetune_method, lora_rank, lora_dropout, optimizer,
            gradient_checkpointing, full_size, calibration, fmt):
    """Load MODEL the way users run it, profile memory and speed, and print sizer's prediction beside
    each measurement with the error. Needs the extra: pip install 'sizer-llm[torch]'.

    \b
    Examples:
      sizer measure llama3-8b --device cuda -c 4096 -b 4
      sizer measure ./tiny-llama --device cpu --sweep -p bf16,nf4 -c 512,2048 -b 1,4 --record runs.csv
    """
    if finetune_method:
        return _measure_finetune(model, finetune_method, context_length, batch_size, lora_rank, lora_dropout,
                                 optimizer, gradient_checkpointing, full_size, attention, (sweep, record_path, device),
                                 fmt)
    from sizer.measure.run import run_measure

    precisions = _list(precision, str, "--precision", sweep) if precision else None
    contexts = _list(context_length, int, "--context-length", sweep) if context_length is not None else None
    batches = _list(batch_size, int, "--batch-size", sweep)
    if new_tokens < 0:
        raise SizerUsage(f"--new-tokens must not be negative, got {new_tokens}")
    records = run_measure(model, precisions, contexts, batches, new_tokens, device, weights, attention, force,
                          calibration, progress=lambda text: click.echo(text, err=True), gptq_kernel=gptq_kernel,
                          allow_long_context=allow_long_context)
    if record_path:
        from sizer.measure.records import write_records

        write_records(record_path, records)
        click.echo(f"appended {len(records)} record(s) to {record_path}", err=True)
    from sizer.measure.report import render_records

    click.echo(render_records(records, fmt), nl=False)
    if any(r.status != "ok" for r in records):
        raise SizerError("out of memory while profiling: recorded as a measured does-not-fit")


def _measure_finetune(model, method, context_length, batch_size, lora_rank, lora_dropout, optimizer,
                      gradient_checkpointing, full_size, attention, unsupported, fmt):
    """`measure --finetune`: real training steps of MODEL (scaled down unless --full-size) on the CPU."""
    from sizer.env.torch_runtime import require_torch
    from sizer.measure.finetune import measure_finetune, render, scaled_down
    from sizer.inputs.resolve import get_config

    sweep, record_path, device = unsupported
    if sweep or record_path:
        raise SizerUsage("--finetune measures one point: --sweep and --record do not apply")
    torch = require_torch("sizer measure --finetune")
    if device == "cuda" and not torch.cuda.is_available():
        raise SizerUsage("--device cuda: torch sees no CUDA device here")
    seq_len = int(context_length) if context_length and str(context_length).isdigit() else 128
    batch = int(batch_size) if str(batch_size).isdigit() else None
    if context_length and not str(context_length).isdigit() or not batch or seq_len < 1:
        raise SizerUsage("--finetune takes one positive -c (sequence length) and one positive -b (micro-batch)")
    config = dict(get_config(model)[0])
    name = str(model) if full_size else f"{model} (scaled down)"
    record = measure_finetune(config if full_size else scaled_down(config), method, seq_len, batch,
                              gradient_checkpointing, lora_rank, optimizer, lora_dropout=lora_dropout,
                              attention=attention, name=name, device=device or "cpu")
    click.echo(render([record], fmt), nl=False)


@cli.command()
@click.argument("logfile", type=click.Path(dir_okay=False))
@click.option("-m", "--model", default=None,
              help="The model the log ran, when the log's own name is not one sizer can read (a catalog name, a "
                   "config.json, a folder or a Hub id). Default: the model the log names.")
@click.option("-g", "--gpus", default=None,
              help="The GPU kind (H100, A100-40GB, 4090), needed when the log does not print the GPU's memory.")
@click.option("-e", "--engine", default=None,
              help="NAME==VERSION (sglang==0.4.1) when the log does not say its release; SGLang never does.")
@click.option("--command", "launch_line", default=None,
              help="The launch line the log came from, for the settings the log does not print (a log cut before "
                   "its args / server_args line); what the log prints wins.")
@click.option("--engine-args", default=None,
              help="Launch flags the log does not print, in the engine's spelling (\"--max-lora-rank 64\": vLLM's "
                   "LoRA slots count among its weights, and the log shows only that LoRA is on).")
@click.option("--record", "record_path", type=click.Path(dir_okay=False), default=None,
              help="Append the components to FILE (CSV, the columns of --format csv): `sizer calibrate FILE` fits "
                   "the vLLM constants to them.")
@calibration_option
@output_options
def check(logfile, model, gpus, engine, launch_line, engine_args, record_path, calibration, fmt):
    """Read a vLLM, SGLang or llama.cpp startup LOGFILE and print sizer's plan of the same launch beside it:
    weights, activation peak, non-torch memory, CUDA graphs, KV cache memory and tokens, concurrency;
    for llama.cpp (llama-server, llama-cli, Ollama's runner) the model, KV, compute and output buffers
    per device, in MiB as llama.cpp prints them (the model's shape from the log's loader lines, or --model).

    \b
    Examples:
      sizer check vllm-startup.log
      sizer check server.log --model ./Qwen2.5-7B-Instruct/ --gpus L40S --format json
      sizer check llama-server.log --model llama-3.1-8b
      sizer check tail.log --model DeepSeek-R1 --gpus 96GB --engine sglang==0.4.3 \\
          --command "python3 -m sglang.launch_server --model-path /models --tp 16 --nnodes 2"
    """
    from sizer.check.report import render_check

    result = _llamacpp_check(logfile, model, launch_line)
    if result is None:
        result = _engine_log_check(logfile, model, gpus, engine, launch_line, engine_args, calibration)
    if record_path:
        from sizer.check.records import append_check_records

        added = append_check_records(record_path, result)
        click.echo(f"appended {added} component(s) to {record_path}", err=True)
    return render_check(result, fmt)


def _engine_log_check(logfile, model, gpus, engine, launch_line, engine_args, calibration):
    """The check of a vLLM or SGLang startup log, with the settings it does not print from the launch
    line (--command) or the engine's flags (--engine-args)."""
    from sizer.check.compare import check_log
    from sizer.check.logs import read_engine_log_file, with_settings
    from sizer.plan.engine_args import EngineFlags, parse_command

    log = read_engine_log_file(logfile)
    if launch_line:
        args = parse_command(launch_line)
        if args.engine != log.engine:
            raise SizerUsage(f"--command launches {args.engine}, the log is {log.engine}'s")
        log = with_settings(log, args.settings, "--command")
    if engine_args:
        log = with_settings(log, EngineFlags.from_args(log.engine, engine_args).args.settings, "--engine-args")
    return check_log(log, model, gpus, engine, calibration)


def _llamacpp_check(logfile, model, launch_line):
    """The check of a llama.cpp startup log (llama-server, llama-cli, Ollama's runner), or None for other logs."""
    from sizer.check.llamacpp_check import check_llamacpp_log, is_llamacpp_log
    from sizer.check.llamacpp_log import read_llamacpp_log_file

    log = read_llamacpp_log_file(logfile)
    if not is_llamacpp_log(log):
        return None
    overrides = {}
    if launch_line:
        from sizer.plan.engine_args import parse_command

        args = parse_command(launch_line)
        if args.engine != "llamacpp":
            raise SizerUsage(f"--command launches {args.engine}, the log is llama.cpp's")
        names = {"max_model_len": "n_ctx", "batch_size": "n_batch", "ubatch_size": "n_ubatch", "parallel": "n_seq_max",
                 "n_gpu_layers": "n_gpu_layers", "tensor_split": "tensor_split"}
        overrides = {names[k]: v for k, v in args.settings.items() if k in names}
    return check_llamacpp_log(log, str(logfile), model, overrides=overrides)


@cli.command()
@click.argument("records", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the fitted calibration to FILE (use it with --calibration FILE).")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@calibration_option
def calibrate(records, output, force, calibration):
    """Fit the transformers profile's constants (CUDA context, activation coefficients, decode
    efficiency) to `sizer measure` records, and show the peak-memory error before and after on
    held-out records; fit the vLLM profile's (profiling peak, non-torch memory, CUDA graphs) to
    `sizer check --record` records of engine startup logs. --calibration names the calibration the
    records were predicted with."""
    from sizer.calc.calibration import resolve
    from sizer.measure.calibrate import fit_calibration, render_report
    from sizer.measure.records import read_records

    from sizer.check.records import fit_vllm, is_check_record_file, read_check_records, render_vllm_fit

    checked = [path for path in records if is_check_record_file(path)]
    measured = [path for path in records if path not in checked]
    fitted = resolve(calibration)
    if measured:
        report = fit_calibration([r for path in measured for r in read_records(path)], fitted)
        click.echo(render_report(report), nl=False)
        fitted = report.calibration
    if checked:
        vllm = fit_vllm([r for path in checked for r in read_check_records(path)], fitted)
        click.echo(render_vllm_fit(vllm), nl=False)
        fitted = vllm.calibration
    if output:
        from sizer.io import write_atomic

        write_atomic(output, fitted.to_json(), force)
        click.echo(f"wrote {output}", err=True)


GPTQ_ONLY_OPTIONS = ("bits", "group_size", "act_order", "static_groups", "sym", "damp", "calibration", "samples",
                     "seq_len", "heldout_samples", "tensor_parallel", "report", "dry_run", "compute_dtype")


@cli.command()
@click.argument("model_dir")
@click.option("--method", type=click.Choice(["int8", "nf4", "fp4", "gptq"]), required=True,
              help="bitsandbytes LLM.int8 / 4-bit NF4 / FP4 (quantized on load), or GPTQ with sizer's own solver.")
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Folder for the quantized checkpoint (required unless --dry-run).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None, help="Default: cuda when available.")
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--bits", type=click.Choice(["2", "3", "4", "8"]), default=None, help="GPTQ bits per weight [4].")
@click.option("--group-size", type=click.Choice(["32", "64", "128", "-1"]), default=None,
              help="GPTQ input features per scale and zero point; -1 for one group per output channel [128].")
@click.option("--act-order", is_flag=True, default=None,
              help="GPTQ: quantize columns by descending Hessian diagonal (usually lower error). Alone it scatters "
                   "the groups (desc_act, g_idx), which vLLM 0.32 no longer loads; add --static-groups for that.")
@click.option("--static-groups", is_flag=True, default=None,
              help="GPTQ with --act-order: groups stay contiguous (g_idx = k // g), so no loader reorders and "
                   "the checkpoint is written as desc_act false; loads in vLLM, safe under tensor parallelism.")
@click.option("--sym/--asym", default=None, help="GPTQ symmetric (default; vLLM loads symmetric GPTQ only) or asymmetric zero points.")
@click.option("--damp", type=float, default=None,
              help="GPTQ dampening, a fraction of mean(diag H) [0.01]; raised automatically (and reported) if "
                   "Cholesky fails.")
@click.option("--calibration", "constants_file", default=None, hidden=True)   # refused: a constants file elsewhere
@click.option("--calibration-text", "calibration", type=click.Path(dir_okay=False), default=None,
              help="GPTQ calibration text: one document per line, .jsonl with a \"text\" field, or a .json list. "
                   "Windows after the calibration samples are held out for the perplexity report.")
@click.option("--samples", type=click.IntRange(1), default=None, help="GPTQ calibration windows [128].")
@click.option("--seq-len", type=click.IntRange(2), default=None, help="GPTQ tokens per window [2048].")
@click.option("--heldout-samples", type=click.IntRange(0), default=None,
              help="GPTQ held-out windows for error and perplexity [8].")
@click.option("--tensor-parallel", type=click.IntRange(1), default=None,
              help="GPTQ: check the result splits over N GPUs the way vLLM splits it [1].")
@click.option("--report", type=click.Path(dir_okay=False), default=None,
              help="GPTQ: write the per-Linear error table to this CSV file (columns in docs/output.md).")
@click.option("--dry-run", is_flag=True, default=None,
              help="GPTQ: run the checks and print the estimate, then stop. MODEL_DIR may then also be a catalog "
                   "name or a config.json, and --calibration-text may be left out.")
@click.option("--compute-dtype", type=click.Choice(["auto", "bf16", "fp32"]), default=None,
              help="GPTQ: dtype of the layer forwards [auto: bf16 on CUDA, and on CPUs where it multiplies faster "
                   "than fp32]. Hessians, solver and errors are always fp32.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True,
              help="GPTQ result: table for people, json (everything), csv (one row per Linear).")
def quantize(model_dir, method, output, device, force, fmt, **gptq):
    """Write a quantized copy of the checkpoint in MODEL_DIR (config.json + *.safetensors).

    \b
    bitsandbytes (int8, nf4, fp4): quantized by transformers while loading, saved with safetensors.
    GPTQ: checks first (packing, tensor-parallel alignment, which vLLM kernels accept the result) and
    estimates time and peak memory; then streams one decoder layer at a time from the shards, so the
    model need not fit in memory; reports per-Linear error against round-to-nearest and perplexity
    before/after on held-out text. The checkpoint is GPTQ v1, the layout transformers, vLLM and
    GPTQModel read.

    \b
    Examples:
      sizer quantize ./Llama-3.1-8B --method gptq --calibration-text text.txt --dry-run
      sizer quantize ./Llama-3.1-8B --method gptq --bits 4 --act-order --static-groups --tensor-parallel 2 \\
          --calibration-text text.txt --samples 256 --report layers.csv --output ./l8b-gptq
      sizer quantize ./Llama-3.1-8B --method nf4 --output ./l8b-nf4

    The output is written to a temporary folder and renamed when complete, so an interrupted run
    leaves nothing under OUTPUT. Needs the extra: pip install 'sizer-llm[torch]'.
    """
    if gptq.pop("constants_file") is not None:
        raise SizerUsage("quantize takes its calibration text as --calibration-text FILE (--calibration names a "
                         "constants file in estimate, fit and measure)")
    from sizer.env.torch_runtime import require_torch
    from sizer.quantize.folders import check_output_dir

    if not gptq.get("dry_run"):
        if output is None:
            raise SizerUsage("quantize needs --output FOLDER for the quantized checkpoint (or --dry-run to plan only)")
        check_output_dir(output, force)         # before minutes of loading, planning or tokenizing
    torch = require_torch("sizer quantize")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if method == "gptq":
        return _quantize_gptq(model_dir, output, device, force, fmt, gptq)
    given = [name for name in GPTQ_ONLY_OPTIONS if gptq[name] is not None]
    if given:
        flag = "calibration-text" if given[0] == "calibration" else given[0].replace("_", "-")
        raise SizerUsage(f"--{flag} applies to --method gptq only")
    from sizer.quantize.bnb import quantize_bnb

    result = quantize_bnb(model_dir, method, output, force, device, progress=lambda text: click.echo(text, err=True))
    from sizer import estimate

    predicted = estimate(output).weights_bytes
    click.echo(f"wrote {result.output} ({fmt_gib(result.bytes_written, 3, unit=True)} of safetensors, sizer reads "
               f"{fmt_gib(predicted, 3, unit=True)} of weights) in {result.seconds:.1f} s")


def _quantize_gptq(model_dir, output, device, force, fmt, options):
    from sizer.quantize.gptq import plan_gptq, quantize_gptq
    from sizer.quantize.report import render_csv, render_json, render_plan, render_table
    from sizer.quantize.run import GptqSettings, gptq_format

    if options["static_groups"] and not options["act_order"]:
        raise SizerUsage("--static-groups applies with --act-order only")
    given = {k: options[k] for k in ("bits", "group_size", "sym", "damp") if options[k] is not None}
    checkpoint_format = gptq_format(act_order=bool(options["act_order"]), static_groups=bool(options["static_groups"]),
                                    **{k: int(v) if k in ("bits", "group_size") else v for k, v in given.items()})
    defaults = GptqSettings()
    pick = lambda name: getattr(defaults, name) if options[name] is None else options[name]   # noqa: E731
    settings = GptqSettings(checkpoint_format, samples=pick("samples"), seq_len=pick("seq_len"),
                            heldout_samples=pick("heldout_samples"), device=device,
                            compute_dtype=pick("compute_dtype"))
    tensor_parallel = options["tensor_parallel"] or 1
    if options["report"] and os.path.exists(options["report"]) and not force:
        raise SizerUsage(f"{options['report']}: already exists (use --force to overwrite)")
    plan = plan_gptq(model_dir, settings, options["calibration"], tensor_parallel, bool(options["dry_run"]))
    click.echo(render_plan(plan), err=True, nl=False)
    if options["dry_run"]:
        return
    from tqdm import tqdm

    with tqdm(total=plan.n_layers, desc="GPTQ", unit="layer", file=sys.stderr, dynamic_ncols=True) as bar:
        result = quantize_gptq(plan, output, force, lambda done, total, seconds: bar.update(done - bar.n))
    if options["report"]:
        from sizer.io import write_atomic

        write_atomic(options["report"], render_csv(result), force)
    text = {"table": render_table, "json": render_json}.get(fmt)
    click.echo(text(result, plan) if text else render_csv(result), nl=False)
    click.echo(f"wrote {result.output}", err=True)


MODEL_COLUMNS = ("name", "family", "params", "active_params", "layers", "attention", "heads", "kv_heads",
                 "head_dim", "context", "kv_bytes_per_token_bf16", "hf_id", "released", "aliases")


@cli.command()
@click.option("--family", default=None, help="Only models of this family (model_type), e.g. llama, qwen3_moe.")
@click.option("--fits", "fits_gpus", default=None, metavar="GPUS",
              help="What runs on these GPUs: every catalog model at its best quantization that serves the "
                   "context, ranked (fits first, then by release generation: 12-month bands back from the newest "
                   "that runs, then larger, then faster), with its launch command. GPUS "
                   "as in fit --gpus: local, RTX-4060, 24GB, m3-max-64gb, 2xRTX-3090 (a GPU without a count is one).")
@click.option("-g", "--gpus", "gpus_alias", default=None, metavar="GPUS", help="Same as --fits.")
@click.option("-e", "--engine", default=None,
              help="With --fits: llamacpp (default for consumer GPUs, Macs and GPUs given by size), ollama, lmstudio, "
                   "vllm (default for data-centre GPUs), sglang, transformers.")
@click.option("-c", "--context-length", type=int, default=None, callback=positive,
              help="With --fits: tokens per sequence to serve (default 8192, cut to each model's maximum).")
@click.option("--min-tokens-per-s", type=float, default=None,
              help="With --fits: only models that decode at least this fast (one sequence).")
@click.option("--limit", type=int, default=20, show_default=True, callback=positive,
              help="With --fits: show the N best; the footer says how many more run.")
@click.option("--ram", default=None, metavar="SIZE",
              help="With --fits: system RAM for partial offload (32GB; GB read as GiB, as RAM is sold). Used when "
                   "sizer plans partial offload; otherwise noted as ignored.")
@click.option("-p", "--precision", multiple=True,
              help="With --fits: the precisions to try, best first (repeat or comma-separate). Default: F16 Q8_0 "
                   "Q6_K Q5_K_M Q4_K_M Q3_K_M for llama.cpp (IQ4_XS, IQ3_M where sizer sizes them), the "
                   "engine's usual set otherwise.")
@output_options
def models(family, fits_gpus, gpus_alias, engine, context_length, min_tokens_per_s, limit, ram, precision, fmt):
    """The model catalog: parameters, attention layout, context, KV bytes per token; with --fits GPUS,
    what of it runs on those GPUs.

    \b
    Examples:
      sizer models --fits local
      sizer models --fits RTX-4060 --ram 32GB
      sizer models --fits m3-max-64gb --engine ollama --limit 10
      sizer models --fits 24GB -c 32768 --format csv
    """
    from sizer.calc.report import render_rows
    from sizer.listing import model_rows

    if fits_gpus and gpus_alias and fits_gpus != gpus_alias:
        raise SizerUsage(f"--fits {fits_gpus} and --gpus {gpus_alias} disagree: give one")
    gpus = fits_gpus or gpus_alias
    rows = model_rows(family)
    if gpus:
        from sizer.plan.catalog_fit import fits_catalog
        from sizer.plan.catalog_report import render_catalog_fit

        precisions = tuple(p.strip() for value in precision for p in value.split(",") if p.strip()) or None
        result = fits_catalog(gpus, engine, context_length, min_tokens_per_s, limit, ram, precisions,
                              [r["name"] for r in rows])
        return render_catalog_fit(result, fmt)
    asked = [name for name, value in (("--engine", engine), ("-c/--context-length", context_length),
                                      ("--min-tokens-per-s", min_tokens_per_s), ("--ram", ram),
                                      ("--precision", precision)) if value]
    if asked:
        raise SizerUsage(f"{', '.join(asked)}: only with --fits GPUS (what of the catalog runs on those GPUs)")
    if fmt in ("table", "markdown"):
        from sizer.units import fmt_params

        rows = [{**r, "params": fmt_params(r["params"]), "active_params": fmt_params(r["active_params"])} for r in rows]
    return render_rows(rows, MODEL_COLUMNS if fmt != "table" else MODEL_COLUMNS[:-1], fmt,
                       f"{len(rows)} models · parameters in billions (B) here, exact integers in JSON/CSV")


GPU_COLUMNS = ("name", "vendor", "memory_gib", "memory_bytes", "bandwidth_gb_s", "bf16_tflops", "fp16_tflops", "fp8_tflops",
               "int8_tops", "price_per_hour_usd", "price_date", "full_name")


@cli.command()
@output_options
def gpus(fmt):
    """The GPU catalog, and what this machine has: its GPUs (NVML or nvidia-smi, rocm-smi, an Apple Silicon
    Mac's sysctl) or, without one, a CPU-only line with its RAM."""
    from sizer.calc.report import render_rows
    from sizer.listing import gpu_rows, local_gpu_text

    rows = gpu_rows()
    local_text, local_rows = local_gpu_text()
    if fmt == "json":
        import json

        return json.dumps({"catalog": rows, "local": local_rows}, indent=2) + "\n"
    text = render_rows(rows, GPU_COLUMNS, fmt, "GPU catalog · memory as the driver reports it; dense tensor throughput; "
                       "indicative on-demand prices")
    return text if fmt == "csv" else text + "\n" + local_text + "\n"


def main() -> None:
    cli(prog_name="sizer")


if __name__ == "__main__":
    sys.exit(main())
