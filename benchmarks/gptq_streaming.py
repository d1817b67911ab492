"""Streaming demo: GPTQ a checkpoint larger than the memory that is free while it runs.

1. Writes a synthetic Llama checkpoint (random bf16 weights, tokenizer trained on CPython's help text)
   shard by shard, so building it never holds more than one layer.
2. Optionally starts a "balloon" process that allocates and touches memory until only
   --leave-free-gib remains available (there is no swap here, so that memory is truly gone).
3. Runs `sizer quantize --method gptq` in a fresh process and records the checkpoint size, the memory
   available when it started, its peak resident set (VmHWM), and sizer's own estimates.

Result: one CSV row appended to benchmarks/results/gptq_streaming.csv, with the machine named.
Usage: python benchmarks/gptq_streaming.py [--layers 160 --hidden 1024 --intermediate 2816 --leave-free-gib 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "gptq_streaming.csv"
COLUMNS = ("timestamp", "machine", "cpu_count", "torch", "layers", "hidden_size", "intermediate_size", "vocab_size",
           "checkpoint_bytes", "mem_available_at_start_bytes", "peak_rss_bytes", "estimated_peak_bytes",
           "seconds", "run_seconds", "estimated_seconds", "samples", "seq_len", "bits", "group_size", "perplexity_before",
           "perplexity_after", "output_bytes")


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def write_checkpoint(folder: Path, layers: int, hidden: int, intermediate: int, vocab: int, heads: int,
                     kv_heads: int, shard_bytes: int = 1 << 30) -> int:
    """A Llama checkpoint written one tensor at a time; returns its tensor bytes."""
    import torch

    from sizer.testing import help_text_documents, train_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(help_text_documents(), vocab)
    tokenizer.save_pretrained(folder)
    vocab = len(tokenizer)
    head_dim = hidden // heads
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": intermediate, "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv_heads, "vocab_size": vocab, "max_position_embeddings": 4096,
              "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu",
              "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    generator = torch.Generator().manual_seed(0)

    def tensor(*shape, scale=0.02):
        return (torch.randn(*shape, generator=generator) * scale).to(torch.bfloat16)

    def layer_tensors(i):
        p = f"model.layers.{i}"
        kv = kv_heads * head_dim
        return {f"{p}.self_attn.q_proj.weight": tensor(hidden, hidden), f"{p}.self_attn.k_proj.weight": tensor(kv, hidden),
                f"{p}.self_attn.v_proj.weight": tensor(kv, hidden), f"{p}.self_attn.o_proj.weight": tensor(hidden, hidden),
                f"{p}.mlp.gate_proj.weight": tensor(intermediate, hidden),
                f"{p}.mlp.up_proj.weight": tensor(intermediate, hidden),
                f"{p}.mlp.down_proj.weight": tensor(hidden, intermediate),
                f"{p}.input_layernorm.weight": torch.ones(hidden, dtype=torch.bfloat16),
                f"{p}.post_attention_layernorm.weight": torch.ones(hidden, dtype=torch.bfloat16)}

    from sizer.quantize.shards import ShardWriter

    writer = ShardWriter(folder, shard_bytes)       # one tensor in memory at a time
    total = 0

    def add(name, t):
        nonlocal total
        writer.add(name, t)
        total += t.numel() * t.element_size()

    add("model.embed_tokens.weight", tensor(vocab, hidden))
    for i in range(layers):
        for name, t in layer_tensors(i).items():
            add(name, t)
    add("model.norm.weight", torch.ones(hidden, dtype=torch.bfloat16))
    add("lm_head.weight", tensor(vocab, hidden))
    writer.close()
    return total


BALLOON = """
import sys, time, numpy as np
blocks = []
target = int(sys.argv[1])
chunk = 256 * 2**20
while sum(b.nbytes for b in blocks) + chunk <= target:
    blocks.append(np.ones(chunk, dtype=np.uint8))
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
"""


def start_balloon(leave_free: int, hold_seconds: float):
    take = mem_available() - leave_free
    if take <= 0:
        return None
    proc = subprocess.Popen([sys.executable, "-c", BALLOON, str(take), str(hold_seconds)], stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError("the balloon process did not start")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=160)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--intermediate", type=int, default=2816)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--leave-free-gib", type=float, default=None,
                        help="Start a balloon so that only this much memory is available during the run.")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sizer-streaming"))
    parser.add_argument("--keep", action="store_true", help="Keep the synthetic checkpoint and the output.")
    args = parser.parse_args()

    source, output = args.work / "source", args.work / "quantized"
    shutil.rmtree(args.work, ignore_errors=True)
    checkpoint_bytes = write_checkpoint(source, args.layers, args.hidden, args.intermediate, args.vocab, args.heads,
                                        args.kv_heads)
    from sizer.testing import help_text_documents, write_calibration_file

    calibration = write_calibration_file(args.work / "calibration.txt", help_text_documents())
    balloon = start_balloon(int(args.leave_free_gib * 2**30), 24 * 3600) if args.leave_free_gib is not None else None
    try:
        available = mem_available()
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "sizer", "quantize", str(source), "--method", "gptq",
                              "--calibration-text", str(calibration), "--samples", str(args.samples), "--seq-len",
                              str(args.seq_len), "--heldout-samples", "2", "--device", "cpu", "--output", str(output),
                              "--format", "json"], stdout=subprocess.PIPE, text=True)   # progress on stderr
        seconds = time.perf_counter() - start
    finally:
        if balloon is not None:
            balloon.kill()
            balloon.wait()
    if run.returncode != 0:
        sys.exit("sizer quantize failed (its message is above)")
    result = json.loads(run.stdout)
    import torch

    from sizer.env.hardware import cpu_name

    row = {"timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "machine": cpu_name(), "cpu_count": os.cpu_count(),
           "torch": torch.__version__, "layers": args.layers, "hidden_size": args.hidden,
           "intermediate_size": args.intermediate, "vocab_size": args.vocab, "checkpoint_bytes": checkpoint_bytes,
           "mem_available_at_start_bytes": available, "peak_rss_bytes": result["peak_rss_bytes"],
           "estimated_peak_bytes": result["estimate"]["peak_bytes"], "seconds": round(seconds, 1),
           "run_seconds": round(result["seconds"], 1),
           "estimated_seconds": round(result["estimate"]["seconds"], 1), "samples": args.samples,
           "seq_len": args.seq_len, "bits": 4, "group_size": 128, "perplexity_before": result["perplexity_before"],
           "perplexity_after": result["perplexity_after"], "output_bytes": result["bytes_written"]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    new = not RESULTS.exists()
    with RESULTS.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)
    print(json.dumps(row, indent=2))
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
