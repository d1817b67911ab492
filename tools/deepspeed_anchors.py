"""Record DeepSpeed's own ZeRO model-state estimators for a grid of inputs, as anchors for sizer.

    python tools/deepspeed_anchors.py [--out tests/data/finetune/deepspeed_estimates.json]

Imports the real deepspeed (install it in a separate environment: `DS_BUILD_OPS=0 pip install
deepspeed==0.19.8`, with torch and transformers beside it) and calls
estimate_zero2_model_states_mem_needs and estimate_zero3_model_states_mem_needs (the functions the
_all_cold/_all_live printers call) for every combination of model size (125M to 405B parameters,
with the largest layer of the catalog model of that size), node layout (1 to 64 GPUs, 1 to 4 nodes),
offload option, zero_init and buffer factor. It also records DeepSpeed's model_to_params (the counts
_all_live derives from a model) for tiny transformers models built from a config, so the tests can
check sizer's count of total and largest-layer parameters from the same config.
tests/test_finetune_sharding.py holds sizer.finetune.deepspeed to every recorded value exactly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Catalog models: their parameter counts and largest layers come from sizer's catalog; DeepSpeed's
# answers for them are what is recorded. OPT-125m (not in the catalog) by its published counts:
# 125,239,296 parameters, the largest layer its 50272 x 768 embedding.
MODELS = ("qwen3-0.6b", "llama3.2-1b", "llama3-8b", "qwen3-30b-a3b", "llama3-70b", "llama3.1-405b")
EXTRA_MODELS = ({"model": "opt-125m", "total_params": 125_239_296, "largest_layer_params": 50272 * 768},)
LAYOUTS = ((1, 1), (2, 1), (8, 1), (3, 3), (4, 2), (8, 4), (16, 4))     # (GPUs per node, nodes)
ZERO3_OPTIONS = ((True, True), (True, False), (False, False))           # (offload optimizer, offload params)
BUFFER_FACTORS = (1.5,)                 # the estimators' default; one model also at OTHER_FACTOR
OTHER_FACTOR = ("llama3-70b", 1.25)

# Tiny models for model_to_params: untied with no biases, tied with q/k/v biases, fused MoE experts.
TINY_CONFIGS = {
    "llama": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512, "tie_word_embeddings": False,
              "max_position_embeddings": 256},
    "qwen2": {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 96, "tie_word_embeddings": True,
              "max_position_embeddings": 256},
    "qwen3_moe": {"model_type": "qwen3_moe", "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 96,
                  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
                  "num_experts": 8, "num_experts_per_tok": 2, "vocab_size": 128, "tie_word_embeddings": False,
                  "max_position_embeddings": 256, "decoder_sparse_step": 1, "mlp_only_layers": []},
}


def _catalog_inputs() -> list[dict]:
    from sizer.finetune.deepspeed import largest_layer_params
    from sizer.inputs.resolve import get_model

    return [*EXTRA_MODELS] + [{"model": name, "total_params": (spec := get_model(name)).params,
             "largest_layer_params": largest_layer_params(spec)} for name in MODELS]


def _estimates(models: list[dict]) -> list[dict]:
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    rows = []
    for m in models:
        for per_node, nodes in LAYOUTS:
            for factor in BUFFER_FACTORS + ((OTHER_FACTOR[1],) if m["model"] == OTHER_FACTOR[0] else ()):
                base = {"model": m["model"], "total_params": m["total_params"], "gpus_per_node": per_node,
                        "nodes": nodes, "additional_buffer_factor": factor}
                for offload in (True, False):
                    cpu, gpu = estimate_zero2_model_states_mem_needs(m["total_params"], per_node, nodes, offload,
                                                                     factor)
                    rows.append({**base, "stage": 2, "cpu_offload": offload, "cpu_bytes": cpu, "gpu_bytes": gpu})
                for offload, offload_params in ZERO3_OPTIONS:
                    for zero_init in (True, False):
                        cpu, gpu, layer = estimate_zero3_model_states_mem_needs(
                            m["total_params"], m["largest_layer_params"], per_node, nodes, offload, offload_params,
                            zero_init, factor)
                        rows.append({**base, "stage": 3, "largest_layer_params": m["largest_layer_params"],
                                     "cpu_offload": offload, "cpu_offload_params": offload_params,
                                     "zero_init": zero_init, "cpu_bytes": cpu, "gpu_bytes": gpu,
                                     "largest_layer_bytes": layer})
    return rows


def _model_to_params() -> list[dict]:
    import torch
    from deepspeed.runtime.zero.stage3 import model_to_params
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    rows = []
    for name, raw in TINY_CONFIGS.items():
        fields = {k: v for k, v in raw.items() if k != "model_type"}
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(raw["model_type"], **fields))
        total, largest = model_to_params(model)
        rows.append({"name": name, "config": raw, "total_params": total, "largest_layer_params": largest})
    return rows


def _dump(data: dict) -> str:
    """JSON with one estimate per line (diffs stay readable)."""
    head = {k: v for k, v in data.items() if k != "estimates"}
    rows = ",\n  ".join(json.dumps(r, separators=(",", ":")) for r in data["estimates"])
    return json.dumps(head, indent=1)[:-2] + ',\n "estimates": [\n  ' + rows + "\n ]\n}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests/data/finetune/deepspeed_estimates.json")
    args = parser.parse_args()
    import deepspeed
    import transformers

    data = {"deepspeed": deepspeed.__version__, "transformers": transformers.__version__,
            "source": "deepspeed/runtime/zero/stage_1_and_2.py estimate_zero2_model_states_mem_needs, "
                      "deepspeed/runtime/zero/stage3.py estimate_zero3_model_states_mem_needs and model_to_params",
            "estimates": _estimates(_catalog_inputs()), "model_to_params": _model_to_params()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(_dump(data))
    print(f"{len(data['estimates'])} estimates, {len(data['model_to_params'])} models -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
