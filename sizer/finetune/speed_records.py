"""Published training throughput (tests/data/finetune/published_speed.json) against the step-time
model: each record as a model spec and a FinetuneSetup, the MFU its measurement implies, and the
MFU per framework profile fitted on the records of the fitting sources."""

from __future__ import annotations

import json
from statistics import median

from sizer.catalog import gpu_entries
from sizer.finetune.setup import FinetuneSetup, parse_targets
from sizer.finetune.speed import ARCHITECTURE_EFFICIENCY, step_time
from sizer.spec import ModelSpec

# Which framework profile stands for each published stack: Trainer+PEFT is transformers; the
# optimized PyTorch stacks (FSDP with flash attention, torch.compile or Transformer Engine) are
# closest to torchtune's compiled recipes.
PROFILE = {"transformers": "transformers", "torchtune": "torchtune", "unsloth": "unsloth",
           "composer": "torchtune", "nemo-automodel": "torchtune", "fms-fsdp": "torchtune"}
FIT_SOURCES = frozenset({"torchtune README", "LLaMA-Factory benchmark (via Unsloth README)"})
ARCHITECTURE_SOURCE = "LLM Foundry training benchmarks"      # fits ARCHITECTURE_EFFICIENCY (paired A100 / H100 runs)
# What may differ between the two runs of a pair (the GPU, and what the measurement and its citation say)
PAIR_IGNORED = frozenset({"id", "gpu", "quote", "measured_tokens_per_s_per_gpu", "micro_batch_size",
                          "gradient_accumulation_steps", "notes"})
SETUP_FIELDS = ("method", "optimizer", "precision", "micro_batch_size", "seq_len", "gradient_checkpointing",
                "attention", "fsdp", "zero", "offload_optimizer", "offload_params", "gradient_accumulation_steps",
                "lora_rank")
# A step cannot run faster than its GEMMs, and large bf16 GEMMs reach about 80-90 % of the dense peak:
# a record implying more is a mislabelled card or a setting the model does not capture (tensor
# parallelism), left out of the fit and shown as such.
MAX_PLAUSIBLE_MFU = 0.85
REQUIRED = ("id", "source", "url", "quote", "framework", "method", "gpu", "gpu_count", "precision",
            "micro_batch_size", "seq_len", "gradient_checkpointing", "measured_tokens_per_s_per_gpu")


def record_spec(record: dict) -> ModelSpec:
    from sizer.families import spec_from_config
    from sizer.inputs.resolve import get_model

    if record.get("model"):
        return get_model(record["model"])
    return spec_from_config(dict(record["config"]), record["id"], "published_speed.json")


def record_setup(record: dict) -> FinetuneSetup:
    values = {k: record[k] for k in SETUP_FIELDS if record.get(k) is not None}
    if record.get("lora_targets"):
        values["lora_targets"] = parse_targets(",".join(record["lora_targets"]))
    return FinetuneSetup(framework=PROFILE[record["framework"]], **values)


def tokens_per_gpu_s(record: dict, mfu: float | None = None) -> float:
    """The model's tokens per second per GPU for the record's settings (the profile's MFU unless given)."""
    st = step_time(record_spec(record), record_setup(record), gpu_entries()[record["gpu"]], record["gpu_count"], mfu)
    return st.tokens_per_s / record["gpu_count"]


def implied_mfu(record: dict) -> float:
    """The MFU (on the record's GPU) at which the modelled step time equals the measured one, by
    bisection (tokens/s grows with the MFU); infinity when even the GPU's peak is too slow, i.e. the
    measurement outruns what the model allows (its memory-bound and communication time alone)."""
    spec, setup = record_spec(record), record_setup(record)
    gpu, n = gpu_entries()[record["gpu"]], record["gpu_count"]
    target = record["measured_tokens_per_s_per_gpu"] * n

    def rate(mfu: float) -> float:
        return step_time(spec, setup, gpu, n, mfu).tokens_per_s

    low, high = 1e-3, 4.0
    if rate(high) < target:
        return float("inf")
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if rate(mid) < target else (low, mid)
    return (low + high) / 2


def profile_mfu(record: dict) -> float:
    """The implied MFU divided by the GPU architecture's factor: the framework profile's own MFU."""
    gpu = gpu_entries()[record["gpu"]]
    return implied_mfu(record) / ARCHITECTURE_EFFICIENCY.get(gpu.architecture, 1.0)


def fitted_mfu(records: list[dict]) -> dict[str, float]:
    """Per profile, the median profile MFU of the MFU-fitting sources' plausible records."""
    by_profile: dict[str, list[float]] = {}
    for r in records:
        if r["source"] in FIT_SOURCES and implied_mfu(r) <= MAX_PLAUSIBLE_MFU:
            by_profile.setdefault(PROFILE[r["framework"]], []).append(profile_mfu(r))
    return {k: round(median(v), 2) for k, v in by_profile.items()}


def fitted_architecture_efficiency(records: list[dict], architecture: str = "hopper",
                                   reference: str = "ampere") -> float:
    """Median ratio of implied MFU between `architecture` and `reference` GPUs over the records of
    ARCHITECTURE_SOURCE that pair the same model config and settings."""
    def key(r: dict) -> str:
        return json.dumps({k: v for k, v in r.items() if k not in PAIR_IGNORED}, sort_keys=True)

    by_arch: dict[str, dict[str, float]] = {}
    for r in records:
        if r["source"] == ARCHITECTURE_SOURCE:
            arch = gpu_entries()[r["gpu"]].architecture
            by_arch.setdefault(arch, {})[key(r)] = implied_mfu(r)
    new, old = by_arch.get(architecture, {}), by_arch.get(reference, {})
    return round(median(new[k] / old[k] for k in new.keys() & old.keys()), 2)
