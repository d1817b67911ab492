"""The launch lines of `sizer finetune`: every flag is one the framework's own argument parsers
define at the modelled version (tests/data/finetune/trl_flags.json and
sizer/data/torchtune_recipes.json, both written by tools/trl_flags.py from the wheels), and the
line parsed back gives the plan's values."""

import argparse
import ast
import json
import shlex

import pytest

from conftest import ROOT
from sizer.errors import UsageError
from sizer.finetune.launch import launch_command, torchtune_recipes
from sizer.finetune.setup import FinetuneSetup

TRL = json.loads((ROOT / "tests" / "data" / "finetune" / "trl_flags.json").read_text(encoding="utf-8"))
MODEL = "llama3-8b"

TRL_SETUPS = [
    FinetuneSetup(method="qlora", seq_len=2048),
    FinetuneSetup(method="qlora", quant="fp4", lora_targets=("q", "v"), micro_batch_size=4, packing=True),
    FinetuneSetup(method="lora", gradient_checkpointing=False, optimizer="paged-adamw-8bit", attention="flash"),
    FinetuneSetup(method="dora", precision="fp16", gradient_accumulation_steps=8),
    FinetuneSetup(method="full", zero=3, offload_optimizer=True, offload_params=True),
    FinetuneSetup(method="full", fsdp="shard-grad-op", optimizer="adafactor"),
    FinetuneSetup(method="qlora", fsdp="full-shard"),
    FinetuneSetup(method="lora", fsdp="hybrid", offload_params=True),
    FinetuneSetup(method="full", precision="fp32", optimizer="sgd"),
]


def trl_parser() -> argparse.ArgumentParser:
    """`trl sft`'s flags as HfArgumentParser builds them: a bool field takes an optional value, a
    list field one or more; plus the accelerate launch flags TRL forwards."""
    parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    for flag, annotation in TRL["sft_flags"].items():
        if annotation.startswith("bool"):
            parser.add_argument(flag, nargs="?", const="true")
        elif annotation.startswith("list"):
            parser.add_argument(flag, nargs="+")
        else:
            parser.add_argument(flag)
    for flag in TRL["accelerate_launch_flags"]:
        if flag not in TRL["sft_flags"]:
            parser.add_argument(flag)
    assert "--accelerate_config" in TRL["trl_cli_flags"]          # trl/cli/accelerate_config.py
    parser.add_argument("--accelerate_config", choices=TRL["accelerate_configs"])
    return parser


def parse_trl(line: str) -> argparse.Namespace:
    words = shlex.split(line)
    assert words[:2] == ["trl", "sft"]
    return trl_parser().parse_args(words[2:])                  # an unknown flag exits (SystemExit)


def test_the_flag_list_is_the_modelled_versions():
    assert TRL["versions"] == {"trl": "1.16.0", "transformers": "5.25.0", "accelerate": "1.16.0"}
    assert torchtune_recipes()["version"] == "0.6.1"


@pytest.mark.parametrize("setup", TRL_SETUPS, ids=lambda s: f"{s.method}-{s.zero}-{s.fsdp}-{s.precision}")
def test_trl_sft_line_parses_back_to_the_plan(setup):
    gpus = 4 if setup.shard_stage else 1
    args = parse_trl(launch_command(MODEL, setup, gpus))
    assert args.model_name_or_path == "meta-llama/Meta-Llama-3-8B"
    assert int(args.per_device_train_batch_size) == setup.micro_batch_size
    assert int(args.gradient_accumulation_steps) == setup.gradient_accumulation_steps
    assert int(args.max_length) == setup.seq_len
    assert args.activation_checkpointing == str(setup.gradient_checkpointing).lower()
    assert args.packing == str(setup.packing).lower()
    assert args.optim in TRL["optimizer_names"]
    assert (args.bf16, args.fp16) == (str(setup.precision == "bf16").lower(), str(setup.precision == "fp16").lower())
    assert (args.use_peft == "true") == setup.adapters
    if setup.adapters:
        assert int(args.lora_r) == setup.lora_rank and int(args.lora_alpha) == 2 * setup.lora_rank
        assert args.lora_target_modules == (["all-linear"] if setup.target_names() is None else
                                            list(setup.target_names()))
    assert (args.load_in_4bit == "true") == (setup.method == "qlora")
    if setup.shard_stage:
        assert int(args.num_processes) == gpus and args.accelerate_config is not None


def test_trl_line_loads_the_weights_the_plan_counts():
    """`trl sft` loads float32 unless told (ModelConfig.dtype); the line names the plan's dtype:
    16-bit weights, float32 where the plan keeps fp32 masters (full fine-tuning under ZeRO)."""
    assert parse_trl(launch_command(MODEL, FinetuneSetup(method="qlora"))).dtype == "bfloat16"
    assert parse_trl(launch_command(MODEL, FinetuneSetup(method="full"))).dtype == "bfloat16"
    assert parse_trl(launch_command(MODEL, FinetuneSetup(method="full", zero=2), 2)).dtype == "float32"
    qlora = parse_trl(launch_command(MODEL, FinetuneSetup(method="qlora", quant="nf4")))
    assert (qlora.bnb_4bit_quant_type, qlora.use_bnb_nested_quant) == ("nf4", "false")
    sharded = parse_trl(launch_command(MODEL, FinetuneSetup(method="qlora", fsdp="full-shard"), 2))
    assert sharded.bnb_4bit_quant_storage == "bfloat16" and sharded.accelerate_config == "fsdp2"


def test_trl_launcher_flags_reach_accelerate():
    """TRL hands the arguments its own parsers do not know to `accelerate launch`: the launcher's
    flags must be accelerate's and none of the training script's."""
    words = shlex.split(launch_command(MODEL, FinetuneSetup(method="full", fsdp="full-shard", offload_params=True), 4))
    launcher = [w for w in words[2:words.index("--model_name_or_path")] if w.startswith("--")]
    assert launcher[0] == "--accelerate_config" and len(launcher) == 4
    assert all(f in TRL["accelerate_launch_flags"] and f not in TRL["sft_flags"] for f in launcher[1:])


def test_trl_sharding_flags():
    zero = parse_trl(launch_command(MODEL, FinetuneSetup(method="full", zero=3, offload_optimizer=True), 8))
    assert (zero.accelerate_config, zero.offload_optimizer_device, zero.offload_param_device) == ("zero3", "cpu", None)
    grad_op = parse_trl(launch_command(MODEL, FinetuneSetup(method="full", fsdp="shard-grad-op"), 2))
    assert (grad_op.accelerate_config, grad_op.fsdp_reshard_after_forward) == ("fsdp2", "false")
    ddp = parse_trl(launch_command(MODEL, FinetuneSetup(method="lora"), 2))
    assert (ddp.accelerate_config, ddp.num_processes) == ("multi_gpu", "2")
    assert parse_trl(launch_command(MODEL, FinetuneSetup(method="lora"))).accelerate_config is None


def _keywords(script: str, call: str) -> set[str]:
    """The keyword names of every call to `call` in a Python script."""
    names = set()
    for node in ast.walk(ast.parse(script)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == call:
            names |= {k.arg for k in node.keywords}
    return names


@pytest.mark.parametrize("framework", ["trainer", "unsloth"])
def test_scripts_use_training_argument_names(framework):
    script = launch_command(MODEL, FinetuneSetup(method="qlora", framework=framework))
    config = "TrainingArguments" if framework == "trainer" else "SFTConfig"
    used = _keywords(script, config)
    assert used and {f"--{k}" for k in used} <= set(TRL["sft_flags"])
    assert 'optim="adamw_torch_fused"' in script


def tune_words(setup: FinetuneSetup, gpus: int = 1) -> list[str]:
    words = shlex.split(launch_command(MODEL, setup, gpus))
    assert words[:2] == ["tune", "run"]
    return words[2:]


def _overrides(words: list[str]) -> dict[str, str]:
    return dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("~"))


@pytest.mark.parametrize("setup,gpus", [
    (FinetuneSetup(method="lora", framework="torchtune"), 1),
    (FinetuneSetup(method="qlora", framework="torchtune", lora_targets=("q", "v", "o")), 1),
    (FinetuneSetup(method="dora", framework="torchtune"), 1),
    (FinetuneSetup(method="full", framework="torchtune", optimizer="adamw"), 1),
    (FinetuneSetup(method="full", framework="torchtune", optimizer="paged-adamw-8bit"), 1),
    (FinetuneSetup(method="lora", framework="torchtune", optimizer="adamw-8bit", fsdp="full-shard"), 2),
    (FinetuneSetup(method="qlora", framework="torchtune", fsdp="full-shard"), 4),
    (FinetuneSetup(method="full", framework="torchtune", fsdp="full-shard", offload_params=True), 8),
    (FinetuneSetup(method="full", framework="torchtune", fsdp="shard-grad-op"), 2),
])
def test_tune_run_uses_the_versions_recipes_configs_and_keys(setup, gpus):
    data = torchtune_recipes()
    words = tune_words(setup, gpus)
    if gpus > 1:
        assert words[:2] == ["--nproc_per_node", str(gpus)]
        words = words[2:]
    recipe, config = words[0], words[2]
    assert words[1] == "--config" and config in data["recipes"][recipe]
    assert data["downloads"][config].lower().endswith(("meta-llama-3-8b-instruct", "meta-llama-3-8b"))
    builder = data["builder_args"][data["components"][config]]
    for key in _overrides(words[3:]):
        top, _, rest = key.partition(".")
        assert top in data["config_keys"][recipe], key
        if top == "model":
            assert rest in builder, key
    for removal in (w for w in words if w.startswith("~")):
        assert removal[1:].split(".")[1] in data["config_values"][config]["optimizer"]
    values = _overrides(words[3:])
    assert values["batch_size"] == str(setup.micro_batch_size) and values["tokenizer.max_seq_len"] == str(setup.seq_len)
    assert values["enable_activation_checkpointing"] == str(setup.gradient_checkpointing)


def test_tune_run_adapters_and_optimizer():
    values = _overrides(tune_words(FinetuneSetup(method="qlora", framework="torchtune", lora_targets=("q", "v", "o"),
                                                 lora_rank=8)))
    assert values["model.lora_attn_modules"] == "[q_proj,v_proj,output_proj]"
    assert values["model.apply_lora_to_mlp"] == "False" and values["model.lora_rank"] == "8"
    full = tune_words(FinetuneSetup(method="full", framework="torchtune", optimizer="adamw-8bit"))
    assert _overrides(full)["optimizer"] == "bitsandbytes.optim.AdamW8bit"
    assert _overrides(full)["optimizer_in_bwd"] == "True"
    accumulating = tune_words(FinetuneSetup(method="full", framework="torchtune", gradient_accumulation_steps=4))
    assert _overrides(accumulating)["optimizer_in_bwd"] == "False"     # the recipe requires accumulation 1


@pytest.mark.parametrize("setup,message", [
    (FinetuneSetup(method="lora", framework="torchtune", precision="fp16"), "bf16 or fp32"),
    (FinetuneSetup(method="lora", framework="torchtune", zero=2), "not DeepSpeed"),
    (FinetuneSetup(method="lora", framework="torchtune", lora_targets=("q", "gate")), "all three MLP"),
    (FinetuneSetup(method="qlora", framework="torchtune", quant="fp4"), "NF4"),
])
def test_tune_run_refuses_what_torchtune_cannot_do(setup, message):
    with pytest.raises(UsageError, match=message):
        launch_command(MODEL, setup, 2 if setup.shard_stage else 1)


def test_torchtune_needs_a_model_it_ships():
    with pytest.raises(UsageError, match="no lora_finetune_single_device config"):
        launch_command("falcon-7b", FinetuneSetup(method="lora", framework="torchtune"))


def test_unsloth_is_a_script_on_one_gpu():
    script = launch_command(MODEL, FinetuneSetup(method="qlora", framework="unsloth", lora_targets=("q", "v")))
    assert _keywords(script, "from_pretrained") >= {"max_seq_length", "dtype", "load_in_4bit", "full_finetuning"}
    assert "load_in_4bit=True" in script and "target_modules=['q_proj', 'v_proj']" in script
    with pytest.raises(UsageError, match="one GPU"):
        launch_command(MODEL, FinetuneSetup(method="lora", framework="unsloth"), 2)


# litgpt@00af8b0d: the parameters of finetune/lora.py and finetune/full.py setup() (jsonargparse
# flags) and the fields of args.py TrainArgs (nested as --train.<field>)
LITGPT_LORA_PARAMS = {"checkpoint_dir", "out_dir", "precision", "quantize", "devices", "num_nodes", "lora_r",
                      "lora_alpha", "lora_dropout", "lora_query", "lora_key", "lora_value", "lora_projection",
                      "lora_mlp", "lora_head", "data", "train", "eval", "optimizer", "logger_name", "seed",
                      "access_token"}
LITGPT_FULL_PARAMS = {"checkpoint_dir", "out_dir", "precision", "devices", "num_nodes", "resume", "data", "train",
                      "eval", "optimizer", "logger_name", "seed", "access_token"}
LITGPT_TRAIN_FIELDS = {"save_interval", "log_interval", "global_batch_size", "micro_batch_size", "lr_warmup_steps",
                       "lr_warmup_fraction", "epochs", "max_tokens", "max_steps", "max_seq_length", "tie_embeddings",
                       "max_norm", "min_lr"}


def _litgpt_flags(line: str, params: set) -> dict:
    words = shlex.split(line)
    assert words[0] == "litgpt" and not words[2].startswith("--")     # the checkpoint, positional
    flags = dict(w[2:].split("=", 1) for w in words[3:])
    for name in flags:
        top, _, field = name.partition(".")
        assert top in params and (not field or (top == "train" and field in LITGPT_TRAIN_FIELDS)), name
    return flags


def test_litgpt_line_is_the_config_hub_qlora_run():
    """config_hub/finetune/llama-3-8b/qlora.yaml@00af8b0d as a plan gives back its own values."""
    setup = FinetuneSetup(method="qlora", framework="litgpt", quant="nf4", lora_rank=32, lora_alpha=16,
                          lora_dropout=0.05, lora_targets=("q", "v"), micro_batch_size=2, seq_len=512,
                          gradient_checkpointing=False)
    line = launch_command(MODEL, setup)
    assert shlex.split(line)[1] == "finetune_lora"
    flags = _litgpt_flags(line, LITGPT_LORA_PARAMS)
    assert flags == {**flags, "precision": "bf16-true", "quantize": "bnb.nf4", "devices": "1", "lora_r": "32",
                     "lora_alpha": "16", "lora_dropout": "0.05", "lora_query": "true", "lora_key": "false",
                     "lora_value": "true", "lora_projection": "false", "lora_mlp": "false", "lora_head": "false",
                     "train.micro_batch_size": "2", "train.max_seq_length": "512", "optimizer": "AdamW"}
    full = launch_command(MODEL, FinetuneSetup(method="full", framework="litgpt"), 4)
    assert shlex.split(full)[1] == "finetune_full" and _litgpt_flags(full, LITGPT_FULL_PARAMS)["devices"] == "4"


@pytest.mark.parametrize("setup,gpus,message", [
    (FinetuneSetup(method="dora", framework="litgpt", gradient_checkpointing=False), 1, "no DoRA"),
    (FinetuneSetup(method="qlora", framework="litgpt"), 2, "one GPU only"),
    (FinetuneSetup(method="lora", framework="litgpt"), 1, "--no-gradient-checkpointing"),
    (FinetuneSetup(method="lora", framework="litgpt", gradient_checkpointing=False, lora_targets=("q", "gate")), 1,
     "all three MLP projections"),
    (FinetuneSetup(method="lora", framework="litgpt", gradient_checkpointing=False, optimizer="adamw-8bit"), 1,
     "AdamW or SGD"),
    (FinetuneSetup(method="full", framework="litgpt", zero=3), 2, "FSDP only"),
])
def test_litgpt_line_refuses_what_litgpt_cannot_do(setup, gpus, message):
    with pytest.raises(UsageError, match=message):
        launch_command(MODEL, setup, gpus)
