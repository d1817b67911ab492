"""sizer.finetune.speed: FLOPs per token by method (exact, from a small config by hand), the
memory-bound terms against real bitsandbytes tensors, monotonicity of the step time, and the
published throughput records (schema, and the fitted MFUs the module uses)."""

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from sizer.catalog import gpu_entries
from sizer.families import spec_from_config
from sizer.finetune.setup import FinetuneSetup
from sizer.finetune.speed import (ARCHITECTURE_EFFICIENCY, MFU, StepTime, attention_forward_flops, dequantize_bytes, flops_per_token,
                                  keys_per_query, step_time)
from sizer.finetune.speed_records import (REQUIRED, fitted_architecture_efficiency, fitted_mfu, record_setup,
                                          record_spec)

RECORDS = Path(__file__).parent / "data" / "finetune" / "published_speed.json"

# A llama of hidden 64, 2 layers, 4 query heads of 16, 2 KV heads, MLP 128, vocab 256.
H, L, NH, NKV, HD, FF, V = 64, 2, 4, 2, 16, 128, 256
LLAMA = {"model_type": "llama", "hidden_size": H, "intermediate_size": FF, "num_hidden_layers": L,
         "num_attention_heads": NH, "num_key_value_heads": NKV, "vocab_size": V, "max_position_embeddings": 64,
         "tie_word_embeddings": False}
# (in, out) of every decoder Linear: q, k, v, o, gate, up, down
LINEARS = [(H, NH * HD), (H, NKV * HD), (H, NKV * HD), (NH * HD, H), (H, FF), (H, FF), (FF, H)]
S = 16


def spec(**overrides):
    return spec_from_config({**LLAMA, **overrides}, "tiny", "test")


def hand_counts(seq_len=S, rank=0):
    layer_mm = 2 * L * sum(i * o for i, o in LINEARS)
    head = 2 * V * H
    attention = L * 2 * NH * (HD + HD) * (seq_len + 1) / 2       # QK^T and PV over (s+1)/2 keys on average
    adapters = L * 2 * rank * sum(i + o for i, o in LINEARS)
    return layer_mm, head, attention, adapters


def test_full_finetuning_flops_exact():
    layer_mm, head, attention, _ = hand_counts()
    f = flops_per_token(spec(), FinetuneSetup(method="full", seq_len=S, gradient_checkpointing=False))
    assert f.forward == layer_mm + head + attention
    assert f.backward == 2 * (layer_mm + head) + 2.5 * attention
    assert f.recompute == 0


def test_lora_flops_exact_with_checkpointing():
    layer_mm, head, attention, adapters = hand_counts(rank=4)
    f = flops_per_token(spec(), FinetuneSetup(method="lora", lora_rank=4, seq_len=S, gradient_checkpointing=True))
    assert f.forward == layer_mm + head + attention + adapters
    assert f.backward == (layer_mm + head) + 2.5 * attention + 2 * adapters     # frozen base: input gradients only
    assert f.recompute == layer_mm + attention + adapters                       # the head is not checkpointed


def test_tied_head_still_multiplies():
    untied = flops_per_token(spec(), FinetuneSetup(method="full", seq_len=S, gradient_checkpointing=False))
    tied = flops_per_token(spec(tie_word_embeddings=True), FinetuneSetup(method="full", seq_len=S,
                                                                         gradient_checkpointing=False))
    assert tied.total == untied.total


def test_moe_counts_active_experts_only():
    moe = spec_from_config({**LLAMA, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2},
                           "tiny-moe", "test")
    layer_mm = 2 * L * (sum(i * o for i, o in LINEARS[:4]) + 4 * H + 2 * 3 * H * FF)   # router + 2 of 4 experts
    f = flops_per_token(moe, FinetuneSetup(method="full", seq_len=S, gradient_checkpointing=False))
    assert f.forward == layer_mm + 2 * V * H + hand_counts()[2]


def test_causal_window_keys_match_a_brute_force_mask():
    for seq_len, window in [(8, 3), (8, 8), (5, 9), (100, 7)]:
        attended = sum(min(i + 1, window) for i in range(seq_len))
        assert keys_per_query(seq_len, window) == pytest.approx(attended / seq_len)
    assert keys_per_query(10, None) == sum(range(1, 11)) / 10


def test_eager_attention_computes_the_whole_square():
    s = spec()
    assert attention_forward_flops(s, S, "eager") == L * 2 * NH * 2 * HD * S
    assert attention_forward_flops(s, S, "sdpa") == L * 2 * NH * 2 * HD * (S + 1) / 2


def test_dequantize_bytes_match_bitsandbytes_tensors():
    torch = pytest.importorskip("torch")
    bnb_f = pytest.importorskip("bitsandbytes.functional")
    total = 0
    for i, o in LINEARS:
        q, state = bnb_f.quantize_4bit(torch.randn(o, i, dtype=torch.bfloat16), blocksize=64, quant_type="nf4")
        out = bnb_f.dequantize_4bit(q, state)
        total += L * (q.numel() * q.element_size() + state.absmax.numel() * state.absmax.element_size()
                      + out.numel() * out.element_size())
    modelled = dequantize_bytes(spec(), FinetuneSetup(method="qlora", quant="nf4"))
    assert modelled == pytest.approx(total, rel=0.02)


H100 = gpu_entries()["H100-SXM"]
LLAMA8B = None


def big_spec():
    global LLAMA8B
    if LLAMA8B is None:
        from sizer.inputs.resolve import get_model
        LLAMA8B = get_model("Llama-3.1-8B")
    return LLAMA8B


def test_more_gpus_more_tokens_per_second():
    """Within a node for sharded full fine-tuning (across nodes at one 2,048-token sequence per GPU the
    gathers outrun the compute: FSDP runs are then network-bound), any count for LoRA's DDP."""
    for setup, counts in ((FinetuneSetup(method="lora"), (1, 2, 4, 8, 16, 32)),
                          (FinetuneSetup(method="full", fsdp="full-shard"), (1, 2, 4, 8))):
        rates = [step_time(big_spec(), setup, H100, n).tokens_per_s for n in counts]
        assert rates == sorted(rates) and rates[-1] > rates[0]


def test_checkpointing_quantization_and_full_cost_time():
    base = FinetuneSetup(method="lora", gradient_checkpointing=False)
    t = {name: step_time(big_spec(), s, H100).step_time_s for name, s in {
        "lora": base, "ckpt": replace(base, gradient_checkpointing=True), "qlora": replace(base, method="qlora"),
        "dora": replace(base, method="dora"), "full": replace(base, method="full", optimizer="adamw-8bit")}.items()}
    assert t["ckpt"] > t["lora"] and t["qlora"] > t["lora"] and t["dora"] > t["lora"] and t["full"] > t["lora"]


def test_step_time_outputs():
    st = step_time(big_spec(), FinetuneSetup(method="lora", micro_batch_size=2, gradient_accumulation_steps=4), H100)
    assert st.tokens_per_step == 2 * 2048 * 4
    assert st.step_time_s == pytest.approx(st.compute_s + st.memory_s + st.communication_s)
    assert st.tokens_per_s == pytest.approx(st.tokens_per_step / st.step_time_s)
    assert st.seconds_per_million_tokens == pytest.approx(1e6 / st.tokens_per_s)
    assert st.epoch_s(10**7) == pytest.approx(10 * st.seconds_per_million_tokens)
    assert step_time(big_spec(), FinetuneSetup(), gpu_entries()["T4"]) == StepTime(st.flops_per_token, 2048, None, None)


def test_single_gpu_has_no_communication_and_fabric_costs_more():
    full = FinetuneSetup(method="full", fsdp="full-shard", micro_batch_size=1, seq_len=512)
    assert step_time(big_spec(), full, H100, 1).communication_s == 0
    assert step_time(big_spec(), full, H100, 16).communication_s > step_time(big_spec(), full, H100, 8).communication_s


def records():
    return json.loads(RECORDS.read_text())["records"]


def test_records_schema_and_quotes():
    recs = records()
    assert len(recs) >= 12 and len({r["source"] for r in recs}) >= 3
    assert len({r["id"] for r in recs}) == len(recs)
    for r in recs:
        assert all(r.get(k) is not None for k in REQUIRED), r["id"]
        assert r["url"].startswith("https://") and r["gpu"] in gpu_entries()
        assert bool(r.get("model")) != bool(r.get("config")), r["id"]
        published = r["measured_tokens_per_s_per_gpu"] * r["gpu_count"]
        numbers = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", r["quote"].replace(",", ""))]
        assert any(abs(x - r["measured_tokens_per_s_per_gpu"]) < 0.01 or abs(x - published) < 0.5
                   for x in numbers), r["id"]
        record_setup(r)


def test_records_build_and_fitted_mfu_is_the_modules():
    recs = records()
    for r in recs[:3]:
        assert record_spec(r).params > 0
    assert fitted_mfu(recs) == MFU
    assert fitted_architecture_efficiency(recs) == ARCHITECTURE_EFFICIENCY["hopper"]
