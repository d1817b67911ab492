"""Common hardware claims about open models, checked by sizer; writes docs/claims.md.

Each claim (docs/reference/claims.md) is evaluated with sizer's own API; whether sizer agrees is
decided from the numbers by the rule stated in each function, so the table follows the calculator
when it changes. Run: python benchmarks/claims.py [--check]  (--check: fail if the doc is stale).
GB in the claims is read as 10^9 bytes (how articles compute 2 bytes x 7B = 14 GB); sizer's own
figures are printed in GiB (2^30 bytes) as everywhere else, with GB beside where the claim uses GB.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sizer import estimate, get_model
from sizer.calc.weights import weight_bytes
from sizer.plan.fit import fit
from sizer.quant import get_precision

DOC = Path(__file__).resolve().parents[1] / "docs" / "claims.md"
GB, GiB = 1e9, 2**30


def weights(model: str, precision: str) -> int:
    return weight_bytes(get_model(model), get_precision(precision))


def close(value: float, claimed: float, tolerance: float = 0.1) -> bool:
    return abs(value - claimed) <= tolerance * claimed


def option(model, gpus, precision, engine="llamacpp", context_length=4096, batch_size=1):
    # llama.cpp only warns when n_ctx exceeds n_ctx_train (phi-2: 2,048), so the claim plans it as llama.cpp runs it;
    # the claims are about the model on the GPU: every layer there (-ngl 999; --fit would move layers to system RAM)
    options = {"llamacpp_settings": {"n_gpu_layers": "999"}} if engine == "llamacpp" else {}
    return fit(model, gpus, engine=engine, precision=precision, context_length=context_length,
               batch_size=batch_size, suggestions=False, allow_long_context=True, **options).options[0]


def claim_1():
    w = weights("llama-2-7b", "fp16")
    load = estimate("llama-2-7b", "fp16", context_length=1)
    loaded = load.weights_bytes + load.overhead_bytes
    agrees = close(w / GB, 14)
    return ("fits the claim" if agrees else "differs",
            f"Llama-2-7B fp16 weights {w / GB:.1f} GB ({w / GiB:.2f} GiB); with the CUDA context and workspace "
            f"{loaded / GB:.1f} GB", "yes" if agrees else "no",
            "2 bytes x 6.74 B parameters; loading adds the CUDA context (about 0.5 GiB) before any KV cache")


def claim_2_or_7(four_bit_claim_gb: float = 35):
    bf16 = weights("llama3-70b", "bf16")
    fours = {p: weights("llama3-70b", p) for p in ("nf4", "gptq-4bit-g128", "awq-4bit-g128", "Q4_K_M")}
    low, high = min(fours.values()), max(fours.values())
    first = close(bf16 / GB, 140, 0.05)
    second = close(low / GB, four_bit_claim_gb, 0.05)
    detail = ", ".join(f"{p} {b / GB:.1f} GB" for p, b in fours.items())
    return ("16-bit right; 4-bit too low", f"bf16 weights {bf16 / GB:.1f} GB; 4-bit weights {detail}",
            "partly" if first and not second else ("yes" if first and second else "no"),
            f"4-bit formats keep scales/zeros (4.13-4.5 bits per weight) and the 128k-row embedding and lm_head "
            f"in 16-bit ({2 * 128256 * 8192 * 2 / GB:.1f} GB): {low / GB:.0f}-{high / GB:.0f} GB, not "
            f"{four_bit_claim_gb:.0f}; the KV cache and runtime come on top")


def claim_3():
    full = option("llama-2-70b", "2x48GB", "fp16", engine="transformers")
    four = option("llama-2-70b", "1x48GB", "nf4", engine="transformers")
    q4 = option("llama-2-70b", "1x48GB", "Q4_K_M")
    first_ok, second_ok = full.verdict != "does-not-fit", four.verdict != "does-not-fit"
    return (f"fp16 on 2x48GB: {full.verdict}; 4-bit on 1x48GB: nf4 {four.verdict}, Q4_K_M {q4.verdict}",
            f"fp16 needs {full.fullest.total / GiB:.1f} GiB per GPU of {full.fullest.capacity / GiB:.1f}; nf4 "
            f"{four.fullest.total / GiB:.1f} GiB, Q4_K_M {q4.fullest.total / GiB:.1f} GiB at 4,096 tokens",
            "partly" if second_ok and not first_ok else ("yes" if first_ok and second_ok else "no"),
            "full precision is 138 GB of weights, more than 2 x 48 GB; 4-bit weights are about 36 GiB")


def claim_4():
    rows = {gpus: option("llama-2-13b", gpus, "Q4_K_M") for gpus in ("1x8GB", "1x12GB", "1x16GB")}
    short = option("llama-2-13b", "1x8GB", "Q4_K_M", context_length=1024)
    ok16 = rows["1x16GB"].verdict != "does-not-fit"
    ok8 = rows["1x8GB"].verdict != "does-not-fit"
    return (", ".join(f"{g.removeprefix('1x')}: {o.verdict}" for g, o in rows.items()) + " (Q4_K_M, 4,096 tokens)",
            f"Q4_K_M needs {rows['1x8GB'].fullest.total / GiB:.1f} GiB at 4,096 tokens (MHA KV cache: "
            f"{rows['1x8GB'].fullest.kv_cache / GiB:.1f} GiB); 8 GB at 1,024 tokens: {short.verdict}",
            "yes" if ok8 and ok16 else ("partly" if ok16 else "no"),
            f"4-bit weights are {rows['1x8GB'].fullest.weights / GiB:.1f} GiB and Llama 2 13B has no GQA (0.8 MB of "
            "KV cache per token); with the CUDA context and llama.cpp's compute buffer, the smallest card that holds "
            f"4,096 tokens is {next((g.removeprefix('1x') for g, o in rows.items() if o.verdict != 'does-not-fit'), 'none')}")


def claim_5():
    q4 = option("mistral-7b", "1x4GB", "Q4_K_M", context_length=2048)
    q2 = option("mistral-7b", "1x4GB", "Q2_K", context_length=2048)
    consumer = option("mistral-7b", "1xRTX-4090", "Q4_K_M", context_length=8192)
    ok = q2.verdict != "does-not-fit" or q4.verdict != "does-not-fit"
    return (f"4 GB: Q4_K_M {q4.verdict}, Q2_K {q2.verdict}; RTX 4090 Q4_K_M: {consumer.verdict}",
            f"Q4_K_M weights {q4.fullest.weights / GiB:.2f} GiB, Q2_K {q2.fullest.weights / GiB:.2f} GiB on the GPU "
            f"(embedding in host memory), all layers offloaded", "partly" if not ok else "yes",
            "a consumer GPU is fine; 4 GB holds Q2_K-class weights at best once the CUDA context, the KV cache and "
            "llama.cpp's compute buffer are counted (less with -ngl below all layers)")


def claim_6():
    claimed = {"mixtral": 94, "falcon-40b": 80, "llama-2-7b": 14, "llama3-70b": 140}
    got = {m: weights(m, "bf16") / GB for m in claimed}
    agree = all(close(got[m], c) for m, c in claimed.items())
    return ("all four within 10 % (16-bit weights)" if agree else "some differ",
            "; ".join(f"{get_model(m).name} {got[m]:.1f} GB" for m in claimed), "yes" if agree else "partly",
            "2 bytes per parameter of the weights alone; serving adds KV cache, activations and runtime")


def claim_8():
    seven = option("llama-2-7b", "1xRTX-4090", "Q4_K_M")
    thirteen = option("llama-2-13b", "1xRTX-4090", "Q4_K_M")
    seventy = option("llama-2-70b", "1xA100-80GB", "Q4_K_M")
    rates = [o.throughput.decode_tokens_per_s for o in (seven, thirteen, seventy)]
    claimed = [100, 50, 20]
    within = [r is not None and 0.5 * c <= r <= 2 * c for r, c in zip(rates, claimed)]
    return ("same order of magnitude" if all(within) else "differs",
            f"llama.cpp Q4_K_M, one sequence: 7B on RTX 4090 {rates[0]:.0f} tok/s, 13B {rates[1]:.0f} tok/s; "
            f"70B on A100 80GB {rates[2]:.0f} tok/s", "yes" if all(within) else "partly",
            "decode is memory-bound: bandwidth x efficiency / bytes read per token; in 16-bit the rates are "
            "about 3.5x lower")


def claim_9():
    spec = get_model("mixtral")
    agree = close(spec.active_params / 1e9, 12.9, 0.01) and close(spec.params / 1e9, 47, 0.02)
    return ("exact", f"{spec.active_params:,} active of {spec.params:,}", "yes" if agree else "no",
            "2 of 8 experts per layer plus every non-expert tensor")


def claim_10():
    counts = {}
    for m in ("falcon-180b", "bloom", "mpt-30b", "codellama-34b"):
        o = fit(m, "H100", engine="vllm", precision="bf16", context_length=2048, suggestions=False).options[0]
        counts[m] = o.gpu_count
    agree = counts["falcon-180b"] > 2 and counts["bloom"] > 2 and counts["mpt-30b"] <= 2 and counts["codellama-34b"] <= 2
    return ("agrees" if agree else "differs",
            "fewest H100 80GB (vLLM, bf16, 2,048 tokens): " + ", ".join(f"{get_model(m).name} {n}" for m, n in counts.items()),
            "yes" if agree else "no", "176-180 B parameters are 350+ GB in 16-bit; 30-34 B are 60-68 GB")


def claim_11():
    reductions = {}
    for m in ("llama3-8b", "llama3-70b", "mixtral"):
        base = weights(m, "bf16")
        reductions[m] = {p: 1 - weights(m, p) / base for p in ("nf4", "gptq-4bit-g128", "Q4_K_M")}
    values = [v for r in reductions.values() for v in r.values()]
    agree = all(close(v, 0.75, 0.03) for v in values)
    return (f"{min(values):.0%}-{max(values):.0%} in practice",
            "; ".join(f"{get_model(m).name}: " + ", ".join(f"{p} {v:.0%}" for p, v in r.items())
                      for m, r in reductions.items()),
            "yes" if agree else "no",
            "75 % would need every tensor at exactly 4 bits; formats add scales and zeros and keep embeddings, "
            "lm_head (and, with bitsandbytes in transformers 5, MoE experts) in 16-bit")


def claim_12():
    phi = option("phi-2", "1x8GB", "Q4_K_M")
    llama = option("llama3-8b", "1x8GB", "Q4_K_M")
    llama16 = option("llama3-8b", "1x8GB", "fp16")
    agree = phi.verdict != "does-not-fit" and llama.verdict != "does-not-fit"
    return (f"8 GB device: phi-2 Q4_K_M {phi.verdict}, Llama-3-8B Q4_K_M {llama.verdict}, fp16 {llama16.verdict}",
            f"phi-2 Q4_K_M {phi.fullest.total / GiB:.1f} GiB, Llama-3-8B Q4_K_M {llama.fullest.total / GiB:.1f} GiB "
            f"at 4,096 tokens", "yes" if agree else "partly",
            "at 4-bit both fit an 8 GB device with a few thousand tokens of context; not in 16-bit")


CLAIMS = [
    ("A 7B model in 16-bit precision needs about 14 GB of VRAM just to load.", claim_1),
    ("A 70B model needs 140 GB in 16-bit; 4-bit quantization brings Llama 3 70B to about 35 GB.", claim_2_or_7),
    ("Llama 2 70B runs on 2x48GB GPUs in full precision, or on 1x48GB GPU with 4-bit quantization.", claim_3),
    ("Llama 2 13B runs on a single consumer GPU with 8-16 GB of VRAM.", claim_4),
    ("Mistral 7B runs on a single consumer GPU, even one with 4 GB of VRAM when quantized.", claim_5),
    ("Mixtral 8x7B needs about 94 GB of memory; Falcon 40B about 80 GB; Llama 2 7B about 14 GB; Llama 3 70B about 140 GB.", claim_6),
    ("Llama 3 70B requires 140 GB of VRAM; quantization reduces this to 35 GB.", claim_2_or_7),
    ("Llama 2 7B decodes about 100 tokens/s, 13B about 50 tokens/s on a consumer GPU; 70B about 20 tokens/s on a high-end GPU.", claim_8),
    ("Mixtral 8x7B activates only 12.9B parameters per token (of 47B total).", claim_9),
    ("Falcon 180B and BLOOM 176B need multiple high-end GPUs; MPT-30B and CodeLlama 34B need 1-2 high-end GPUs.", claim_10),
    ("Quantization reduces model size by 75 %.", claim_11),
    ("Phi-2 (2.7B) and Llama 3 8B suit edge deployment.", claim_12),
]


def render() -> str:
    lines = ["# Hardware claims about open models, checked by sizer", "",
             "Generated by `python benchmarks/claims.py` from sizer's own numbers (do not edit by hand). "
             "GB = 10^9 bytes as the claims use it; GiB = 2^30 bytes. Unless a row says otherwise: llama.cpp "
             "profile for consumer GPUs and 4-bit GGUF, 4,096 tokens, one sequence.", "",
             "| # | claim | sizer's verdict | numbers | agrees | why |", "|---|---|---|---|---|---|"]
    for i, (claim, check) in enumerate(CLAIMS, 1):
        verdict, numbers, agrees, why = check()
        lines.append(f"| {i} | {claim} | {verdict} | {numbers} | {agrees} | {why} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC} is stale: run python benchmarks/claims.py", file=sys.stderr)
            return 1
        return 0
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
