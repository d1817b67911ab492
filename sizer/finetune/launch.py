"""The command that runs a planned fine-tuning: every setting that changes memory spelled out, not
left to a default (TRL's `trl sft` loads float32 weights and targets PEFT's per-model modules unless
told otherwise).

- transformers: `trl sft` (TRL 1.16; flags are the fields of ScriptArguments, SFTConfig with
  transformers 5.25's TrainingArguments, ModelConfig), sharded through TRL's named accelerate
  configs (zero1-3, fsdp1, fsdp2) and `accelerate launch` flags, which TRL forwards;
- trainer: transformers' Trainer and PEFT have no command line: the script, with the same
  TrainingArguments names;
- torchtune: `tune run [--nproc_per_node N] <recipe> --config <config> key=value ...` with a recipe
  and config of torchtune 0.6.1 (sizer/data/torchtune_recipes.json, from tools/trl_flags.py);
- unsloth: a Python API: the FastLanguageModel and SFTTrainer arguments, as a script;
- litgpt: `litgpt finetune_lora|finetune_full <checkpoint> --flag value ...` with the parameter names of
  litgpt@00af8b0d's finetune/lora.py and finetune/full.py setup() (jsonargparse: `--train.micro_batch_size`).
"""

from __future__ import annotations

import json
import shlex
from functools import lru_cache

from sizer.errors import UsageError
from sizer.finetune.states import master_weights_default
from sizer.finetune.setup import ALL_LINEAR, FinetuneSetup

DATASET, OUTPUT_DIR = "DATASET", "OUTPUT_DIR"      # placeholders the user fills in

TRL_OPTIM = {"adamw": "adamw_torch_fused", "adamw-8bit": "adamw_bnb_8bit", "paged-adamw-8bit": "paged_adamw_8bit",
             "adafactor": "adafactor", "sgd": "sgd"}
HF_ATTENTION = {"sdpa": "sdpa", "eager": "eager", "flash": "flash_attention_2"}
FSDP_CONFIG = {"full-shard": ("fsdp2", ()), "shard-grad-op": ("fsdp2", ("--fsdp_reshard_after_forward", "false")),
               "hybrid": ("fsdp1", ("--fsdp_reshard_after_forward", "HYBRID_SHARD"))}
TORCHTUNE_OPTIMIZER = {"adamw": "torch.optim.AdamW", "adamw-8bit": "bitsandbytes.optim.AdamW8bit",
                       "paged-adamw-8bit": "bitsandbytes.optim.PagedAdamW8bit", "adafactor": "torch.optim.Adafactor",
                       "sgd": "torch.optim.SGD"}
TORCHTUNE_ATTENTION = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "o_proj": "output_proj"}
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
CONFIG_SUFFIX = {"lora": ("lora",), "qlora": ("qlora", "lora"), "dora": ("dora", "lora"), "full": ("full",)}
LITGPT_PRECISION = {"bf16": "bf16-true", "fp16": "16-true", "fp32": "32-true"}
LITGPT_OPTIMIZER = {"adamw": "AdamW", "sgd": "SGD"}        # torch.optim names (utils.instantiate_torch_optimizer)
# litgpt's LoRA switches (finetune/lora.py setup) and the projections each one adapts
LITGPT_LORA_FLAGS = (("lora_query", ("q_proj",)), ("lora_key", ("k_proj",)), ("lora_value", ("v_proj",)),
                     ("lora_projection", ("o_proj",)), ("lora_mlp", MLP_PROJECTIONS))


def hub_id(model) -> str:
    """The Hugging Face repository of a model reference, a catalog name or a ModelSpec."""
    from sizer.catalog import find_model

    name = model if isinstance(model, str) else model.name
    entry = find_model(name)
    return entry.hf_id if entry is not None and entry.hf_id else name


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _dtype(setup: FinetuneSetup) -> str:
    """`--dtype` of the loaded weights: 16-bit unless the plan keeps fp32 masters (then the model is
    loaded in float32 and autocast computes in 16 bits)."""
    if setup.precision == "fp32" or (setup.method == "full" and master_weights_default(setup)):
        return "float32"
    return {"bf16": "bfloat16", "fp16": "float16"}[setup.precision]


def _trl_targets(setup: FinetuneSetup) -> list[str]:
    names = setup.target_names()
    return [ALL_LINEAR] if names is None else list(names)


def _trl_adapter_args(setup: FinetuneSetup) -> list[str]:
    if not setup.adapters:
        return []
    args = ["--use_peft", "--lora_r", str(setup.lora_rank), "--lora_alpha", str(setup.lora_alpha or 2 * setup.lora_rank),
            "--lora_target_modules", *_trl_targets(setup)]
    if setup.method == "dora":
        args.append("--use_dora")
    if setup.method == "qlora":
        if setup.quant not in ("nf4", "nf4-dq", "fp4", "fp4-dq"):
            raise UsageError(f"--quant {setup.quant}: TRL loads 4-bit bitsandbytes weights only")
        args += ["--load_in_4bit", "--bnb_4bit_quant_type", setup.quant.split("-")[0],
                 "--use_bnb_nested_quant", _bool(setup.quant.endswith("-dq"))]
        if setup.shard_stage >= 3:
            args += ["--bnb_4bit_quant_storage", "bfloat16"]     # FSDP / ZeRO-3 shard the 4-bit storage as bf16
    return args


def _accelerate_args(setup: FinetuneSetup, gpus: int) -> list[str]:
    """`trl sft`'s launcher arguments: a named TRL accelerate config and the flags that differ."""
    if setup.fsdp is not None:
        config, extra = FSDP_CONFIG[setup.fsdp]
        args = ["--accelerate_config", config, *extra]
        if setup.offload_params or setup.offload_optimizer:
            args += ["--fsdp_offload_params", "true"]
    elif setup.zero:
        args = ["--accelerate_config", f"zero{setup.zero}"]
        if setup.offload_optimizer:
            args += ["--offload_optimizer_device", "cpu"]
        if setup.offload_params:
            args += ["--offload_param_device", "cpu"]
    elif gpus > 1:
        args = ["--accelerate_config", "multi_gpu"]
    else:
        return []
    mixed = {"bf16": "bf16", "fp16": "fp16", "fp32": "no"}[setup.precision]
    return args + ["--num_processes", str(gpus), "--mixed_precision", mixed]


def trl_sft_args(model, setup: FinetuneSetup, gpus: int = 1) -> list[str]:
    """The `trl sft` argument list (after `trl sft`) that realises `setup` on `gpus` GPUs."""
    args = [*_accelerate_args(setup, gpus), "--model_name_or_path", hub_id(model), "--dtype", _dtype(setup),
            "--dataset_name", DATASET, "--output_dir", OUTPUT_DIR, *_trl_adapter_args(setup),
            "--per_device_train_batch_size", str(setup.micro_batch_size),
            "--gradient_accumulation_steps", str(setup.gradient_accumulation_steps),
            "--max_length", str(setup.seq_len), "--packing", _bool(setup.packing),
            "--activation_checkpointing", _bool(setup.gradient_checkpointing),
            "--bf16", _bool(setup.precision == "bf16"), "--fp16", _bool(setup.precision == "fp16"),
            "--optim", TRL_OPTIM[setup.optimizer], "--attn_implementation", HF_ATTENTION[setup.attention]]
    return args


@lru_cache(maxsize=1)
def torchtune_recipes() -> dict:
    """sizer/data/torchtune_recipes.json: torchtune's recipes, configs and their models."""
    from sizer.catalog import data_dir

    return json.loads((data_dir() / "torchtune_recipes.json").read_text(encoding="utf-8"))


def _repo_key(repo: str) -> str:
    """A repository name compared across spellings: no owner, no `Meta-` prefix, no `-Instruct`."""
    name = repo.split("/")[-1].lower().removeprefix("meta-")
    return name.removesuffix("-instruct").removesuffix("-hf")


def torchtune_recipe(setup: FinetuneSetup, gpus: int) -> str:
    kind = "full" if setup.method == "full" else "lora"
    return f"{kind}_finetune_{'distributed' if gpus > 1 or setup.shard_stage else 'single_device'}"


def torchtune_config(model, setup: FinetuneSetup, recipe: str) -> str:
    """The recipe's config for this model, the method's own where torchtune ships one (a QLoRA or
    DoRA run otherwise starts from the LoRA config)."""
    data = torchtune_recipes()
    key = _repo_key(hub_id(model))
    mine = [c for c in data["recipes"][recipe] if _repo_key(data["downloads"][c]) == key]
    if not mine:
        raise UsageError(f"torchtune {data['version']} has no {recipe} config for {hub_id(model)}")
    for suffix in CONFIG_SUFFIX[setup.method]:
        found = sorted(c for c in mine if c.split("/")[-1].split("_")[1] == suffix)
        if found:
            return found[0]
    raise UsageError(f"torchtune {data['version']} has no {setup.method} config for {hub_id(model)} ({recipe})")


def _torchtune_targets(setup: FinetuneSetup) -> tuple[list[str], bool]:
    """(lora_attn_modules, apply_lora_to_mlp): torchtune adapts its MLP's three projections or none."""
    names = setup.target_names()
    if names is None:
        return list(TORCHTUNE_ATTENTION.values()), True
    mlp = [n for n in names if n in MLP_PROJECTIONS]
    if mlp and len(mlp) != len(MLP_PROJECTIONS):
        raise UsageError("torchtune adapts all three MLP projections or none: name gate, up and down together")
    unknown = [n for n in names if n not in TORCHTUNE_ATTENTION and n not in MLP_PROJECTIONS]
    if unknown:
        raise UsageError(f"torchtune's LoRA builders have no projection {', '.join(unknown)}")
    return [TORCHTUNE_ATTENTION[n] for n in names if n in TORCHTUNE_ATTENTION], bool(mlp)


def _torchtune_model_args(setup: FinetuneSetup, config: str) -> list[str]:
    if not setup.adapters:
        return []
    data = torchtune_recipes()
    builder = data["builder_args"][data["components"][config]]
    attn, mlp = _torchtune_targets(setup)
    args = [f"model.lora_rank={setup.lora_rank}", f"model.lora_alpha={setup.lora_alpha or 2 * setup.lora_rank}",
            f"model.lora_attn_modules=[{','.join(attn)}]", f"model.apply_lora_to_mlp={mlp}",
            "model.apply_lora_to_output=False"]
    own = config.split("/")[-1].split("_")[1]
    if setup.method == "qlora" and own != "qlora":
        args.append("model.quantize_base=True")
    if setup.method == "dora" and own != "dora":
        args.append("model.use_dora=True")
    missing = [a.split("=")[0].removeprefix("model.") for a in args if a.split("=")[0].removeprefix("model.") not in builder]
    if missing:
        raise UsageError(f"torchtune's {data['components'][config]} takes no {', '.join(missing)}")
    return args


def _torchtune_optimizer_args(setup: FinetuneSetup, config: str) -> list[str]:
    current = torchtune_recipes()["config_values"][config].get("optimizer", {})
    args = [f"optimizer={TORCHTUNE_OPTIMIZER[setup.optimizer]}"]
    if setup.optimizer == "adamw":
        args.append("optimizer.fused=True")
    elif "fused" in current:
        args.append("~optimizer.fused")
    return args


def _torchtune_checks(setup: FinetuneSetup) -> None:
    if setup.precision == "fp16":
        raise UsageError("torchtune's recipes train in bf16 or fp32, not fp16")
    if setup.zero:
        raise UsageError("torchtune shards with FSDP (--fsdp full-shard), not DeepSpeed ZeRO")
    if setup.fsdp == "hybrid":
        raise UsageError("torchtune's recipes shard fully or reshard-free (fsdp_reshard_after_forward), not hybrid")
    if setup.method == "qlora" and setup.quant not in ("nf4", "nf4-dq"):
        raise UsageError(f"--quant {setup.quant}: torchtune's QLoRA stores torchao NF4 (double-quantized scalers)")


def torchtune_args(model, setup: FinetuneSetup, gpus: int = 1) -> list[str]:
    """The `tune run` argument list (after `tune run`)."""
    _torchtune_checks(setup)
    recipe = torchtune_recipe(setup, gpus)
    config = torchtune_config(model, setup, recipe)
    launcher = ["--nproc_per_node", str(gpus)] if "distributed" in recipe else []
    args = [*launcher, recipe, "--config", config, f"batch_size={setup.micro_batch_size}",
            f"gradient_accumulation_steps={setup.gradient_accumulation_steps}",
            f"tokenizer.max_seq_len={setup.seq_len}", f"dataset.packed={setup.packing}",
            f"dtype={'fp32' if setup.precision == 'fp32' else 'bf16'}", f"compile={bool(setup.compile)}",
            f"enable_activation_checkpointing={setup.gradient_checkpointing}",
            f"enable_activation_offloading={bool(setup.activation_offload)}",
            *_torchtune_model_args(setup, config), *_torchtune_optimizer_args(setup, config)]
    if setup.method == "full":
        args.append(f"optimizer_in_bwd={setup.gradient_accumulation_steps == 1 and not setup.shard_stage}")
    if "distributed" in recipe:
        args += [f"fsdp_cpu_offload={setup.offload_params or setup.offload_optimizer}",
                 f"fsdp_reshard_after_forward={setup.fsdp != 'shard-grad-op'}"]
    return args


def _unsloth_checks(setup: FinetuneSetup, gpus: int) -> None:
    if gpus > 1 or setup.shard_stage:
        raise UsageError("unsloth's FastLanguageModel trains on one GPU in this plan; use --framework transformers "
                         "to shard")


def unsloth_script(model, setup: FinetuneSetup, gpus: int = 1) -> str:
    """unsloth is a Python API: the script whose arguments realise `setup`."""
    _unsloth_checks(setup, gpus)
    dtype = {"bf16": "torch.bfloat16", "fp16": "torch.float16", "fp32": "torch.float32"}[setup.precision]
    checkpointing = '"unsloth"' if setup.gradient_checkpointing else "False"
    lines = ["# unsloth 2026.10.9: FastLanguageModel + TRL's SFTTrainer", "import torch",
             "from unsloth import FastLanguageModel", "from trl import SFTConfig, SFTTrainer",
             "model, tokenizer = FastLanguageModel.from_pretrained(",
             f'    "{hub_id(model)}", max_seq_length={setup.seq_len}, dtype={dtype},',
             f"    load_in_4bit={setup.method == 'qlora'}, full_finetuning={setup.method == 'full'},",
             f"    use_gradient_checkpointing={checkpointing})"]
    if setup.adapters:
        targets = setup.target_names() or ("q_proj", "k_proj", "v_proj", "o_proj", *MLP_PROJECTIONS)
        dora = ", use_dora=True" if setup.method == "dora" else ""
        lines += ["model = FastLanguageModel.get_peft_model(",
                  f"    model, r={setup.lora_rank}, lora_alpha={setup.lora_alpha or 2 * setup.lora_rank},",
                  f"    target_modules={list(targets)}, use_gradient_checkpointing={checkpointing}{dora})"]
    lines += ["trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=DATASET, args=SFTConfig(",
              f"    per_device_train_batch_size={setup.micro_batch_size}, "
              f"gradient_accumulation_steps={setup.gradient_accumulation_steps},",
              f"    max_length={setup.seq_len}, packing={setup.packing}, optim=\"{TRL_OPTIM[setup.optimizer]}\",",
              f"    bf16={setup.precision == 'bf16'}, fp16={setup.precision == 'fp16'}, output_dir=\"{OUTPUT_DIR}\"))",
              "trainer.train()"]
    return "\n".join(lines)


def _hf_quantization(setup: FinetuneSetup) -> str:
    quant, dq = setup.quant.split("-")[0], setup.quant.endswith("-dq")
    storage = ', bnb_4bit_quant_storage=torch.bfloat16' if setup.shard_stage >= 3 else ""
    return (f'quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="{quant}", '
            f'bnb_4bit_use_double_quant={dq}, bnb_4bit_compute_dtype=torch.{_dtype(setup)}{storage})')


def trainer_script(model, setup: FinetuneSetup, gpus: int = 1) -> str:
    """transformers' Trainer + PEFT without TRL: the model's own loss over its logits."""
    quant = f", {_hf_quantization(setup)}" if setup.method == "qlora" else ""
    targets = _trl_targets(setup)
    lines = ["# transformers 5.25 Trainer + PEFT 0.22, no TRL" + (f"; run with accelerate launch ({gpus} GPUs)"
                                                                  if gpus > 1 else ""),
             "import torch", "from transformers import AutoModelForCausalLM, BitsAndBytesConfig, Trainer, TrainingArguments",
             "from peft import LoraConfig, get_peft_model",
             f'model = AutoModelForCausalLM.from_pretrained("{hub_id(model)}", dtype=torch.{_dtype(setup)},',
             f'    attn_implementation="{HF_ATTENTION[setup.attention]}"{quant})']
    if setup.adapters:
        target = f'"{ALL_LINEAR}"' if targets == [ALL_LINEAR] else str(targets)
        lines += [f"model = get_peft_model(model, LoraConfig(r={setup.lora_rank}, "
                  f"lora_alpha={setup.lora_alpha or 2 * setup.lora_rank}, target_modules={target},",
                  f'    use_dora={setup.method == "dora"}, task_type="CAUSAL_LM"))']
        if setup.gradient_checkpointing:
            lines.append("model.enable_input_require_grads()")
    lines += ["trainer = Trainer(model=model, train_dataset=DATASET, args=TrainingArguments(",
              f'    output_dir="{OUTPUT_DIR}", per_device_train_batch_size={setup.micro_batch_size}, '
              f"gradient_accumulation_steps={setup.gradient_accumulation_steps},",
              f"    activation_checkpointing={setup.gradient_checkpointing}, bf16={setup.precision == 'bf16'}, "
              f"fp16={setup.precision == 'fp16'}, optim=\"{TRL_OPTIM[setup.optimizer]}\"))",
              "trainer.train()"]
    return "\n".join(lines)


def _litgpt_checks(setup: FinetuneSetup, gpus: int) -> None:
    """What litgpt's finetune scripts cannot be told (UsageError names it)."""
    if setup.method == "dora":
        raise UsageError("litgpt has no DoRA: --method lora, qlora or full")
    if setup.zero or setup.offload_optimizer or setup.offload_params:
        raise UsageError("litgpt shards with FSDP only (no ZeRO, no offload)")
    if setup.fsdp not in (None, "full-shard"):
        raise UsageError(f"--fsdp {setup.fsdp}: litgpt's FSDPStrategy shards fully")
    if setup.method == "qlora" and gpus > 1:
        raise UsageError("litgpt quantizes on one GPU only (finetune/lora.py refuses --quantize with devices > 1)")
    if setup.gradient_checkpointing != (gpus > 1):
        raise UsageError("litgpt checkpoints activations under FSDP (devices > 1) and never on one GPU: "
                         f"use {'--gradient-checkpointing' if gpus > 1 else '--no-gradient-checkpointing'}")
    if setup.optimizer not in LITGPT_OPTIMIZER or (setup.method == "qlora" and setup.optimizer != "adamw"):
        raise UsageError(f"--optimizer {setup.optimizer}: litgpt's line runs AdamW or SGD (QLoRA: AdamW, "
                         "as bitsandbytes PagedAdamW)")
    if setup.packing or setup.attention != "sdpa":
        raise UsageError("litgpt runs SDPA over padded, unpacked batches")


def _litgpt_lora_args(setup: FinetuneSetup) -> list[str]:
    names = setup.target_names()
    every, targets = names is None, set(names or ())
    words = [f"--lora_r={setup.lora_rank}", f"--lora_alpha={setup.lora_alpha or 2 * setup.lora_rank}",
             f"--lora_dropout={setup.lora_dropout}"]
    for flag, projections in LITGPT_LORA_FLAGS:
        hit = every or bool(targets & set(projections))
        if hit and not every and not set(projections) <= targets:
            raise UsageError("litgpt's lora_mlp adapts all three MLP projections or none: name gate, up and down")
        words.append(f"--{flag}={_bool(hit)}")
    unknown = targets - {n for _, projections in LITGPT_LORA_FLAGS for n in projections}
    if unknown:
        raise UsageError(f"litgpt's LoRA has no projection {', '.join(sorted(unknown))}")
    words.append("--lora_head=false")
    if setup.method == "qlora":
        words.append(f"--quantize=bnb.{setup.quant}")
    return words


def litgpt_args(model, setup: FinetuneSetup, gpus: int = 1) -> list[str]:
    """`litgpt finetune_lora|finetune_full` arguments (litgpt@00af8b0d)."""
    _litgpt_checks(setup, gpus)
    script = "finetune_full" if setup.method == "full" else "finetune_lora"
    words = [script, hub_id(model), f"--precision={LITGPT_PRECISION[setup.precision]}", f"--devices={gpus}"]
    if setup.method != "full":
        words += _litgpt_lora_args(setup)
    batch = setup.micro_batch_size * setup.gradient_accumulation_steps * gpus
    return words + [f"--train.micro_batch_size={setup.micro_batch_size}", f"--train.global_batch_size={batch}",
                    f"--train.max_seq_length={setup.seq_len}", f"--optimizer={LITGPT_OPTIMIZER[setup.optimizer]}",
                    f"--out_dir={OUTPUT_DIR}"]


def _shell(words: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def launch_command(model, setup: FinetuneSetup, gpus: int = 1) -> str:
    """The command (trainer, unsloth: the script) that runs `setup` for `model` (a catalog name, a
    Hugging Face id or a ModelSpec) on `gpus` GPUs."""
    if setup.framework == "transformers":
        return _shell(["trl", "sft", *trl_sft_args(model, setup, gpus)])
    if setup.framework == "torchtune":
        return _shell(["tune", "run", *torchtune_args(model, setup, gpus)])
    if setup.framework == "trainer":
        return trainer_script(model, setup, gpus)
    if setup.framework == "litgpt":
        return _shell(["litgpt", *litgpt_args(model, setup, gpus)])
    return unsloth_script(model, setup, gpus)
