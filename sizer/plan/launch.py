"""The launch commands that realise a plan, in each engine's own flags.

vLLM: `vllm serve MODEL --tensor-parallel-size TP --pipeline-parallel-size PP --max-model-len N ...`
with only the flags that differ from vLLM's defaults; over several nodes vLLM runs on a Ray cluster
(vLLM's docs, "Distributed inference and serving": `ray start --head` on one node, `ray start
--address` on the others, then `vllm serve ... --distributed-executor-backend ray` on the head),
tensor parallelism inside a node and pipeline stages across nodes. llama.cpp: `llama-server -m
FILE.gguf -c N -ngl 999 ...`. transformers has no server command: none is printed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sizer.plan.placement import Placement
from sizer.spec import ModelSpec, Workload

RAY_PORT = 6379
# sizer's KV dtype -> vLLM's --kv-cache-dtype
VLLM_KV_CACHE_DTYPE = {"fp8": "fp8"}
# a 16/32-bit precision other than the checkpoint's -> vLLM's --dtype
VLLM_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
LLAMACPP_CACHE_TYPE = {"q8_0": "q8_0", "q4_0": "q4_0", "fp8": None, "bf16": "bf16", "fp32": "f32"}


@dataclass(frozen=True)
class LaunchStep:
    """One command and where to run it ("head node", "each other node", "the server")."""

    on: str
    command: str

    def as_dict(self) -> dict:
        return {"on": self.on, "command": self.command}


def model_argument(spec: ModelSpec, precision) -> tuple[str, list[str]]:
    """What to pass as the model, and the flags it needs (a Hub revision). A precision the engine
    cannot produce from this checkpoint (GPTQ, AWQ, GGUF types of a 16-bit model) needs that
    checkpoint: a placeholder names it."""
    official = next((o for o in spec.official_checkpoints if o[1] == getattr(precision, "name", "")), None)
    if official:                       # the model's official checkpoint in this precision (Qwen3-32B-FP8)
        return official[2], []
    ref = spec.model_ref or spec.name
    repo, _, revision = ref.partition("@") if "/" in ref and not ref.startswith((".", "/", "~")) else (ref, "", "")
    flags = ["--revision", revision] if revision else []
    needs_checkpoint = getattr(precision, "kind", "") == "group" or getattr(precision, "checkpoint_only", False)
    if needs_checkpoint and not precision.stored and precision.name != spec.native_precision:
        return f"<{precision.name} checkpoint of {repo}>", []
    return repo, flags


def _official(spec: ModelSpec, precision) -> bool:
    return any(o[1] == getattr(precision, "name", "") for o in spec.official_checkpoints)


def vllm_launch(spec: ModelSpec, engine, precision, placement: Placement, workload: Workload, kv_dtype: str,
                nodes: int) -> tuple[LaunchStep, ...]:
    model, flags = model_argument(spec, precision)
    words = ["vllm", "serve", model, *flags]
    if placement.tensor_parallel > 1:
        words += ["--tensor-parallel-size", str(placement.tensor_parallel)]
    if placement.pipeline_parallel > 1:
        words += ["--pipeline-parallel-size", str(placement.pipeline_parallel)]
    if placement.data_parallel > 1:
        words += ["--data-parallel-size", str(placement.data_parallel)]
    if placement.expert_parallel:
        words += ["--enable-expert-parallel"]
    words += ["--max-model-len", str(workload.context_length)]
    if engine.gpu_memory_utilization and abs(engine.gpu_memory_utilization
                                             - engine.release.gpu_memory_utilization) > 1e-9:
        words += ["--gpu-memory-utilization", f"{engine.gpu_memory_utilization:g}"]
    if engine.enforce_eager:
        words += ["--enforce-eager"]
    if engine.max_num_seqs:
        words += ["--max-num-seqs", str(engine.max_num_seqs)]
    if engine.max_num_batched_tokens:
        words += ["--max-num-batched-tokens", str(engine.max_num_batched_tokens)]
    if kv_dtype in VLLM_KV_CACHE_DTYPE:
        words += ["--kv-cache-dtype", VLLM_KV_CACHE_DTYPE[kv_dtype]]
    words += _vllm_precision_flags(spec, precision)
    if nodes > 1 and placement.data_parallel > 1 and placement.data_parallel % nodes == 0:
        return _vllm_dp_nodes(words, placement, nodes)
    if nodes > 1:
        words += ["--distributed-executor-backend", "ray"]
        return (LaunchStep("head node", f"ray start --head --port {RAY_PORT}"),
                LaunchStep(f"each of the other {nodes - 1} node(s)", f"ray start --address <head-node-ip>:{RAY_PORT}"),
                LaunchStep("head node", " ".join(words)))
    return (LaunchStep("the server", " ".join(words)),)


VLLM_DP_RPC_PORT = 13345


def _vllm_dp_nodes(words: list[str], placement: Placement, nodes: int) -> tuple[LaunchStep, ...]:
    """Data-parallel replicas spread over nodes, as vLLM's data-parallel deployment guide runs them: the
    same line on every node, the head with the API server, the others --headless from their first rank."""
    local = placement.data_parallel // nodes
    common = words + ["--data-parallel-size-local", str(local), "--data-parallel-address", "<head-node-ip>",
                      "--data-parallel-rpc-port", str(VLLM_DP_RPC_PORT)]
    steps = [LaunchStep("head node", " ".join(common))]
    for rank in range(1, nodes):
        steps.append(LaunchStep(f"node {rank}", " ".join(common + ["--headless", "--data-parallel-start-rank",
                                                                    str(rank * local)])))
    return tuple(steps)


def _vllm_precision_flags(spec: ModelSpec, precision) -> list[str]:
    """vLLM quantizes a 16-bit checkpoint online to fp8 (--quantization fp8) and, in releases with it,
    bitsandbytes; a quantized checkpoint names its method in its config (no flag)."""
    if precision.stored or spec.checkpoint is not None or _official(spec, precision) or \
            getattr(precision, "checkpoint_only", False):
        return []
    if precision.is_fp8:
        return ["--quantization", "fp8"] if spec.native_precision in (None, "bf16", "fp16", "fp32") else []
    if precision.is_bitsandbytes:
        return ["--quantization", "bitsandbytes"]
    dtype = VLLM_DTYPE.get(precision.name)
    if dtype and precision.name != (spec.native_precision or "bf16"):
        return ["--dtype", dtype]
    return []


SGLANG_DIST_PORT = 5000
# sizer's KV dtype -> SGLang's --kv-cache-dtype
SGLANG_KV_CACHE_DTYPE = {"fp8": "fp8_e4m3"}


def sglang_launch(spec: ModelSpec, engine, precision, placement: Placement, workload: Workload, kv_dtype: str,
                  nodes: int) -> tuple[LaunchStep, ...]:
    """`python -m sglang.launch_server`; over several nodes the same line on each, with its --node-rank
    (SGLang's multi-node guide: --nnodes, --node-rank, --dist-init-addr of node 0)."""
    model, flags = model_argument(spec, precision)
    words = ["python", "-m", "sglang.launch_server", "--model-path", model, *flags]
    if placement.tensor_parallel > 1:
        words += ["--tp-size", str(placement.tensor_parallel)]
    if placement.pipeline_parallel > 1:
        words += ["--pp-size", str(placement.pipeline_parallel)]
    if placement.data_parallel > 1:
        words += ["--dp-size", str(placement.data_parallel)] + (["--enable-dp-attention"] if placement.dp_attention else [])
    if placement.expert_parallel:
        words += ["--ep-size", str(placement.expert_ranks)]
    words += ["--context-length", str(workload.context_length)]
    if engine.mem_fraction_static:
        words += ["--mem-fraction-static", f"{engine.mem_fraction_static:g}"]
    if engine.max_running_requests is not None:
        words += ["--max-running-requests", str(engine.max_running_requests)]
    if kv_dtype in SGLANG_KV_CACHE_DTYPE:
        words += ["--kv-cache-dtype", SGLANG_KV_CACHE_DTYPE[kv_dtype]]
    if precision.is_fp8 and not precision.stored and spec.checkpoint is None and not _official(spec, precision) and \
            not getattr(precision, "checkpoint_only", False) and spec.native_precision in (None, "bf16", "fp16", "fp32"):
        words += ["--quantization", "fp8"]
    if nodes == 1:
        return (LaunchStep("the server", " ".join(words)),)
    words += ["--nnodes", str(nodes), "--dist-init-addr", f"<node-0-ip>:{SGLANG_DIST_PORT}"]
    return tuple(LaunchStep(f"node {rank}", " ".join(words + ["--node-rank", str(rank)])) for rank in range(nodes))


def llamacpp_launch(spec: ModelSpec, precision, workload: Workload, kv_dtype: str,
                    flash_attention: bool, settings=None) -> tuple[LaunchStep, ...]:
    """llama-server with the settings planned (settings: sizer.plan.llamacpp.LlamaCppSettings or None)."""
    ref = spec.model_ref or f"{spec.name}-{precision.name}.gguf"
    if not ref.lower().endswith(".gguf"):
        ref = f"<{precision.name} GGUF of {ref}>"
    slots = settings.n_seq_max if settings is not None and settings.n_seq_max else workload.batch_size
    ngl = settings.n_gpu_layers if settings is not None else 999
    words = ["llama-server", "-m", ref, "-c", str(workload.context_length * slots), "-ngl", str(ngl)]
    if slots > 1:
        words += ["-np", str(slots)]
    cache = LLAMACPP_CACHE_TYPE.get(kv_dtype)
    if settings is not None and (settings.type_k, settings.type_v) != ("f16", "f16"):
        words += ["-ctk", settings.type_k, "-ctv", settings.type_v]
    elif cache:
        words += ["-ctk", cache, "-ctv", cache]
    if not flash_attention:                   # -fa auto (the default) turns it on where the GPU has it
        words += ["-fa", "off"]
    if settings is not None:
        words += _llamacpp_placement_words(settings)
    return (LaunchStep("the server", " ".join(words)),)


def _llamacpp_placement_words(s) -> list[str]:
    """The placement and batch flags the user gave, repeated as given."""
    words = []
    if s.n_ubatch != 512:
        words += ["-ub", str(s.n_ubatch)]
    if s.n_cpu_moe:
        words += ["--n-cpu-moe", str(s.n_cpu_moe)]
    if s.cpu_moe:
        words += ["-cmoe"]
    for pattern in s.override_tensor:
        words += ["-ot", pattern]
    if s.split_mode != "layer":
        words += ["-sm", s.split_mode]
    if s.tensor_split:
        words += ["-ts", ",".join(f"{x:g}" for x in s.tensor_split)]
    if not s.kv_offload:
        words += ["-nkvo"]
    if s.fit:
        words += ["--fit", "on"]
    return words


def launch_steps(engine, spec: ModelSpec, precision, placement: Placement, workload: Workload, kv_dtype: str,
                 nodes: int) -> tuple[LaunchStep, ...]:
    """The commands for `engine` (an engine profile object); none for transformers."""
    if engine.name == "vllm":
        return vllm_launch(spec, engine, precision, placement, workload, kv_dtype, nodes)
    if engine.name == "sglang":
        return sglang_launch(spec, engine, precision, placement, workload, kv_dtype, nodes)
    if engine.name == "llamacpp":
        return llamacpp_launch(spec, precision, workload, kv_dtype, engine.flash_attention,
                               getattr(engine, "settings", None))
    return ()
