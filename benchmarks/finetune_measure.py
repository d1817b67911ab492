"""The fine-tuning CPU campaign: real training steps (transformers 5.25 + PEFT 0.22, the Trainer's
default fused AdamW) on scaled-down models of three families, measured with the allocation-event
meter and compared with sizer.finetune's prediction per component.

Families: Llama (GQA, untied head), Qwen2 (GQA, tied embeddings, biased q/k/v), Qwen3 (GQA, q/k
norms); full fine-tuning and LoRA (all-linear, a q,v subset, dropout 0.05), QLoRA (nf4 with double
quantization on bitsandbytes' CPU backend); checkpointing on and off; two sequence lengths;
micro-batches 1 and 2. Writes benchmarks/results/finetune_measure.csv (one record per point, the
machine and versions in each) and prints measured vs predicted with the median and worst error per
component.

Run: python benchmarks/finetune_measure.py [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import median

RESULTS = Path(__file__).resolve().parent / "results"

LLAMA = dict(model_type="llama", hidden_size=256, intermediate_size=688, num_hidden_layers=3, num_attention_heads=8,
             num_key_value_heads=2, head_dim=32, vocab_size=4096, max_position_embeddings=1024)
QWEN2 = dict(model_type="qwen2", hidden_size=192, intermediate_size=512, num_hidden_layers=2, num_attention_heads=6,
             num_key_value_heads=2, vocab_size=8192, max_position_embeddings=1024, tie_word_embeddings=True)
QWEN3 = dict(model_type="qwen3", hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, head_dim=32, vocab_size=2048, max_position_embeddings=1024,
             tie_word_embeddings=True)
MODELS = {"llama-gqa": LLAMA, "qwen2-tied": QWEN2, "qwen3-qknorm": QWEN3}

# (model, method, seq_len, micro-batch, checkpointing, extra keyword arguments)
POINTS = [
    ("llama-gqa", "lora", 128, 1, False, {}),
    ("llama-gqa", "lora", 128, 2, True, {}),
    ("llama-gqa", "lora", 256, 1, True, {}),
    ("llama-gqa", "full", 128, 1, False, {}),
    ("llama-gqa", "full", 256, 2, True, {}),
    ("llama-gqa", "lora", 128, 1, True, {"lora_targets": "q,v"}),
    ("qwen2-tied", "lora", 256, 1, False, {}),
    ("qwen2-tied", "lora", 128, 1, True, {}),
    ("qwen2-tied", "full", 128, 2, False, {}),
    ("qwen2-tied", "full", 256, 1, True, {}),
    ("qwen3-qknorm", "lora", 256, 2, True, {}),
    ("qwen3-qknorm", "full", 256, 1, False, {}),
    ("qwen3-qknorm", "lora", 128, 1, False, {"lora_dropout": 0.05}),
    ("qwen3-qknorm", "full", 128, 2, True, {"optimizer": "sgd"}),
    ("llama-gqa", "lora", 256, 2, True, {"lora_dropout": 0.05}),
    ("llama-gqa", "qlora", 128, 1, True, {}),
    ("qwen2-tied", "qlora", 128, 1, False, {}),
    ("llama-gqa", "lora", 128, 1, False, {"attention": "eager"}),
    ("llama-gqa", "full", 128, 2, True, {"attention": "eager"}),
]
QUICK = [0, 1, 3, 4, 7, 9]
# Full-size points for a GPU (`--full-size`, 80 GB): catalog models at the sequence lengths people train at
FULL_SIZE = [
    ("llama3.1-8b", "qlora", 2048, 1, True, {}),
    ("llama3.1-8b", "lora", 2048, 2, True, {}),
    ("llama3.1-8b", "lora", 1024, 1, False, {"lora_dropout": 0.05}),
    ("qwen2.5-1.5b", "full", 2048, 1, True, {}),
    ("qwen2.5-1.5b", "lora", 4096, 1, True, {}),
    ("qwen3-4b", "qlora", 4096, 2, True, {}),
]
COMPONENTS = ("weights", "gradients", "optimizer_states", "saved", "forward_peak", "backward_peak", "step_peak", "peak")


def run(points, device: str = "cpu") -> list:
    from sizer.inputs.resolve import get_config
    from sizer.measure.finetune import measure_finetune

    records = []
    for model, method, seq, batch, ckpt, extra in points:
        config = MODELS[model] if model in MODELS else dict(get_config(model)[0])
        r = measure_finetune(config, method, seq, batch, ckpt, lora_rank=16, name=model, device=device, **extra)
        records.append(r)
        print(f"{model:13s} {method:5s} seq {seq:4d} mb {batch} ckpt {'on ' if ckpt else 'off'} "
              f"peak {r.peak:>10d} pred {r.pred_peak:>10d} ({100 * r.error('peak'):+.2f}%)", flush=True)
    return records


def summary(records) -> str:
    lines = [f"{'component':18s} {'median |err|':>12s} {'worst err':>10s}  (predicted - measured) / measured"]
    for c in COMPONENTS:
        errs = [r.error(c) for r in records]
        worst = max(errs, key=abs)
        lines.append(f"{c:18s} {100 * median(abs(e) for e in errs):11.2f}% {100 * worst:+9.2f}%")
    return "\n".join(lines)


def main() -> None:
    from sizer.measure.finetune import render

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="six points (about a minute)")
    parser.add_argument("--out", type=Path, default=RESULTS / "finetune_measure.csv")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--full-size", action="store_true", help="catalog models at full size (a GPU of 80 GB)")
    args = parser.parse_args()
    points = FULL_SIZE if args.full_size else [POINTS[i] for i in QUICK] if args.quick else POINTS
    records = run(points, args.device)
    args.out.write_text(render(records, "csv"), encoding="utf-8")
    print(render(records))
    print(summary(records))


if __name__ == "__main__":
    main()
