"""Published training throughput (tests/data/finetune/published_speed.json) against the step-time
model: each record as a model spec and a FinetuneSetup, the MFU its measurement implies, and the
MFU per framework profile fitted on the records of the fitting sources."""

from __future__ import annotations

from statistics import median

from sizer.catalog import gpu_entries
from sizer.finetune.setup import FinetuneSetup, parse_targets
from sizer.finetune.speed import step_time
from sizer.spec import ModelSpec

# Which framework profile stands for each published stack: Trainer+PEFT is transformers; the
# optimized PyTorch stacks (FSDP with flash attention, torch.compile or Transformer Engine) are
# closest to torchtune's compiled recipes.
PROFILE = {"transformers": "transformers", "torchtune": "torchtune", "unsloth": "unsloth",
           "composer": "torchtune", "nemo-automodel": "torchtune", "fms-fsdp": "torchtune"}
FIT_SOURCES = frozenset({"torchtune README", "LLaMA-Factory benchmark (via Unsloth README)"})
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
    """The MFU at which the model's step time equals the measured one: the measured step less its
    memory-bound and exposed communication time, against the FLOPs at the GPU's peak."""
    spec, setup = record_spec(record), record_setup(record)
    gpu, n = gpu_entries()[record["gpu"]], record["gpu_count"]
    at_peak = step_time(spec, setup, gpu, n, mfu=1.0)
    modelled = step_time(spec, setup, gpu, n)
    measured_s = at_peak.tokens_per_step / record["measured_tokens_per_s_per_gpu"]
    return at_peak.compute_s / (measured_s - modelled.memory_s - modelled.communication_s)


def fitted_mfu(records: list[dict]) -> dict[str, float]:
    """Per profile, the median implied MFU of the fitting sources' plausible records."""
    by_profile: dict[str, list[float]] = {}
    for r in records:
        mfu = implied_mfu(r) if r["source"] in FIT_SOURCES else None
        if mfu is not None and mfu <= MAX_PLAUSIBLE_MFU:
            by_profile.setdefault(PROFILE[r["framework"]], []).append(mfu)
    return {k: round(median(v), 2) for k, v in by_profile.items()}
