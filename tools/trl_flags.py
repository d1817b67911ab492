"""The command-line names that `sizer finetune`'s launch lines may use, read from the frameworks'
own wheels, so tests can check every flag offline (tests/test_finetune_launch.py).

    pip download trl==1.16.0 transformers==5.25.0 accelerate==1.16.0 torchtune==0.6.1 --no-deps -d WHEELS
    python tools/trl_flags.py WHEELS

writes tests/data/finetune/trl_flags.json (the `trl sft` flags: HfArgumentParser makes one
`--name` per dataclass field of ScriptArguments, SFTConfig and its bases up to transformers'
TrainingArguments, ModelConfig and DatasetMixtureConfig; transformers' OptimizerNames; the
`accelerate launch` flags TRL forwards; TRL's named accelerate configs) and
sizer/data/torchtune_recipes.json (torchtune's fine-tuning recipes and their configs, the keys each
recipe reads from its config, the model repository each config downloads, its model builder and
the builder's parameters, the memory-relevant values each config sets), which
sizer/finetune/launch.py reads for the `tune run` line. The sources are parsed, not imported
(PyYAML reads the configs): nothing needs installing.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "tests" / "data" / "finetune"
TORCHTUNE_OUT = ROOT / "sizer" / "data" / "torchtune_recipes.json"   # read by sizer/finetune/launch.py

TRL_CLASSES = {  # file in the trl wheel -> dataclasses whose fields become `trl sft` flags
    "trl/trainer/sft_config.py": ("SFTConfig",),
    "trl/trainer/base_config.py": ("_BaseConfig",),
    "trl/trainer/model_config.py": ("ModelConfig",),
    "trl/scripts/utils.py": ("ScriptArguments", "DatasetMixtureConfig"),
}
TRANSFORMERS_ARGS = "transformers/training_args.py"
ACCELERATE_LAUNCH = "accelerate/commands/launch.py"
FLAG = re.compile(r'"(--[a-z0-9_]+)"')
CFG_KEY = re.compile(r'cfg\.get\(\s*"([a-z0-9_]+)"|cfg\.([a-z0-9_]+)')
DOWNLOAD = re.compile(r"tune download ([\w.-]+/[\w.-]+)")
CONFIG_VALUES = ("batch_size", "gradient_accumulation_steps", "dtype", "compile", "optimizer", "optimizer_in_bwd",
                 "enable_activation_checkpointing", "enable_activation_offloading", "loss", "fsdp_cpu_offload",
                 "fsdp_reshard_after_forward")
FINETUNE_RECIPES = ("lora_finetune_single_device", "lora_finetune_distributed", "full_finetune_single_device",
                    "full_finetune_distributed")


def wheel(folder: Path, name: str) -> zipfile.ZipFile:
    found = sorted(folder.glob(f"{name}-*.whl"))
    if not found:
        raise SystemExit(f"no {name} wheel in {folder}")
    return zipfile.ZipFile(found[-1])


def wheel_version(zf: zipfile.ZipFile) -> str:
    return Path(zf.filename).name.split("-")[1]


def class_fields(source: str, name: str) -> dict[str, str]:
    """Field name -> annotation text of one class's annotated assignments."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == name:
            return {s.target.id: ast.unparse(s.annotation) for s in node.body
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    raise SystemExit(f"class {name} not found")


def enum_values(source: str, name: str) -> list[str]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == name:
            return [s.value.value for s in node.body
                    if isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant)]
    raise SystemExit(f"enum {name} not found")


def trl_flags(folder: Path) -> dict:
    trl, tf, acc = wheel(folder, "trl"), wheel(folder, "transformers"), wheel(folder, "accelerate")
    fields = class_fields(tf.read(TRANSFORMERS_ARGS).decode(), "TrainingArguments")
    for path, classes in TRL_CLASSES.items():
        for name in classes:
            fields.update(class_fields(trl.read(path).decode(), name))
    configs = sorted(Path(n).stem for n in trl.namelist() if n.startswith("trl/accelerate_configs/") and n.endswith(".yaml"))
    return {
        "versions": {"trl": wheel_version(trl), "transformers": wheel_version(tf), "accelerate": wheel_version(acc)},
        "sft_flags": {f"--{name}": annotation for name, annotation in sorted(fields.items())},
        "optimizer_names": enum_values(tf.read(TRANSFORMERS_ARGS).decode(), "OptimizerNames"),
        "accelerate_launch_flags": sorted(set(FLAG.findall(acc.read(ACCELERATE_LAUNCH).decode()))),
        "accelerate_configs": configs,
        "trl_cli_flags": sorted(set(FLAG.findall(trl.read("trl/cli/accelerate_config.py").decode()))),
    }


def recipe_registry(source: str) -> dict[str, list[str]]:
    """torchtune/_recipe_registry.py: recipe name -> its config names."""
    out = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Recipe":
            kw = {k.arg: k.value for k in node.keywords}
            configs = [ast.literal_eval(c.keywords[0].value) for c in kw["configs"].elts]
            out[ast.literal_eval(kw["name"])] = sorted(configs)
    return out


def _function_args(tree: ast.Module, function: str) -> list[str] | str | None:
    """A function's parameters; a `name = partial(f, k=v)`'s: f's without the bound ones; for an
    alias `name = other`, the other name (looked up across the models)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            return [a.arg for a in node.args.args + node.args.kwonlyargs]
        if not (isinstance(node, ast.Assign) and any(getattr(t, "id", "") == function for t in node.targets)):
            continue
        if isinstance(node.value, ast.Name):
            return node.value.id
        if isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "partial":
            bound = {k.arg for k in node.value.keywords}
            inner = _function_args(tree, node.value.args[0].id)
            return inner if isinstance(inner, str) else [a for a in inner or [] if a not in bound]
    return None


def builder_args(tt: zipfile.ZipFile, component: str) -> list[str]:
    """The parameters of a torchtune model builder (torchtune.models.<family>.<function>)."""
    package, function = component.rsplit(".", 1)
    sources = sorted(n for n in tt.namelist() if n.startswith("torchtune/models/") and n.endswith("_model_builders.py"))
    own = [n for n in sources if n.startswith(package.replace(".", "/") + "/")]
    for name in own + sources:
        found = _function_args(ast.parse(tt.read(name).decode()), function)
        if isinstance(found, str):
            return builder_args(tt, "torchtune.models.any." + found)
        if found is not None:
            return found
    raise SystemExit(f"builder {component} not found")


def torchtune_recipes(folder: Path) -> dict:
    tt = wheel(folder, "torchtune")
    registry = recipe_registry(tt.read("torchtune/_recipe_registry.py").decode())
    registry = {recipe: registry[recipe] for recipe in FINETUNE_RECIPES}
    keys, downloads, components, values = {}, {}, {}, {}
    for recipe, configs in registry.items():
        text = tt.read(f"recipes/{recipe}.py").decode()
        keys[recipe] = sorted({a or b for a, b in CFG_KEY.findall(text)} - {"get"})
        for config in configs:
            text = tt.read(f"recipes/configs/{config}.yaml").decode()
            downloads[config] = DOWNLOAD.search(text).group(1)
            parsed = yaml.safe_load(text)
            components[config] = parsed["model"]["_component_"]
            values[config] = {k: parsed[k] for k in CONFIG_VALUES if k in parsed}
    builders = {c: builder_args(tt, c) for c in sorted(set(components.values()))}
    return {"version": wheel_version(tt), "recipes": registry, "config_keys": keys,
            "downloads": dict(sorted(downloads.items())), "components": dict(sorted(components.items())),
            "config_values": dict(sorted(values.items())),
            "builder_args": builders}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[3].strip(), file=sys.stderr)
        return 2
    folder = Path(argv[1])
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for path, data in ((OUT_DIR / "trl_flags.json", trl_flags(folder)), (TORCHTUNE_OUT, torchtune_recipes(folder))):
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
