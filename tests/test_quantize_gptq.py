"""`sizer quantize --method gptq`: a trained tiny Llama (tokenizer trained here) quantized end to end,
streamed from sharded safetensors, reloaded by sizer's own QuantLinear loader, plus the faults."""

import json
import math
import statistics

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from sizer import estimate, get_model  # noqa: E402
from sizer.cli import cli  # noqa: E402
from sizer.errors import UsageError  # noqa: E402
from sizer.quantize.load import load_gptq
from sizer.quantize.report import LINEAR_COLUMNS
from sizer.quantize.run import GptqSettings, gptq_format, run_gptq
from sizer.quantize.text import read_calibration_text, token_windows, tokenize_documents
from sizer.testing import help_text_documents, make_llama, write_calibration_file  # noqa: E402

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj")
SMALL = ["--samples", "16", "--seq-len", "128", "--heldout-samples", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def docs():
    text = help_text_documents()
    return text[int(len(text) * 0.8):]          # the part of the help text the model never trained on


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Trained for 150 steps so perplexity means something; saved in several shards."""
    return make_llama(tmp_path_factory.mktemp("src") / "tiny-llama", train_steps=150, max_shard_size="300KB")


@pytest.fixture(scope="module")
def calibration(tmp_path_factory, docs):
    return write_calibration_file(tmp_path_factory.mktemp("calib") / "calib.txt", docs)


def heldout_windows(folder, docs, samples=16, seq_len=128, heldout=4):
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    return token_windows(tokenize_documents(tok, docs), seq_len, samples, heldout)[1]


def perplexity(model, windows):
    nll, count = 0.0, 0
    with torch.no_grad():
        for w in windows:
            ids = torch.tensor([w])
            logits = model(input_ids=ids).logits[0, :-1].float()
            nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += len(w) - 1
    return math.exp(nll / count)


def read_all(folder):
    out = {}
    for path in folder.glob("*.safetensors"):
        out.update(safetensors_torch.load_file(str(path)))
    return out


@pytest.fixture(scope="module")
def quantized(tiny, calibration, tmp_path_factory):
    """The CLI run every end-to-end test inspects: 4-bit, group 128, defaults otherwise."""
    folder = tmp_path_factory.mktemp("out")
    out, report = folder / "tiny-gptq", folder / "linears.csv"
    r = CliRunner().invoke(cli, ["quantize", str(tiny), "--method", "gptq", "--calibration-text", str(calibration),
                                 "--output", str(out), "--report", str(report), "--format", "json", *SMALL])
    assert r.exit_code == 0, r.output
    layers = json.loads((tiny / "config.json").read_text())["num_hidden_layers"]
    assert "GPTQ: 100%" in r.stderr and f"{layers}/{layers}" in r.stderr   # tqdm's bar, with its rate and ETA
    return out, report, json.loads(r.stdout)


def test_source_is_sharded(tiny):
    assert len(list(tiny.glob("*.safetensors"))) > 1 and (tiny / "model.safetensors.index.json").exists()


def test_configs_write_every_setting(quantized):
    out, _, result = quantized
    expected = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True,
                "damp_percent": 0.01, "static_groups": False, "true_sequential": True, "checkpoint_format": "gptq"}
    assert json.loads((out / "config.json").read_text())["quantization_config"] == expected
    assert json.loads((out / "quantize_config.json").read_text()) == expected
    assert result["quantization_config"] == expected
    assert (out / "tokenizer.json").exists()


def test_tensors_have_the_gptq_v1_layout(tiny, quantized):
    out, _, _ = quantized
    tensors, source = read_all(out), read_all(tiny)
    for layer in range(2):
        for name in LINEARS:
            prefix = f"model.layers.{layer}.{name}"
            n, k = source[f"{prefix}.weight"].shape
            assert f"{prefix}.weight" not in tensors
            assert tensors[f"{prefix}.qweight"].shape == (k * 4 // 32, n) and tensors[f"{prefix}.qweight"].dtype == torch.int32
            assert tensors[f"{prefix}.qzeros"].shape == (k // 128, n * 4 // 32)
            assert tensors[f"{prefix}.scales"].shape == (k // 128, n) and tensors[f"{prefix}.scales"].dtype == torch.float16
            assert torch.equal(tensors[f"{prefix}.g_idx"], torch.arange(k, dtype=torch.int32) // 128)
            assert bool((tensors[f"{prefix}.qzeros"] == 0x77777777).all())      # symmetric 4-bit: zero 8, stored 7
    kept = [name for name in source if not any(name.endswith(f"{lin}.weight") for lin in LINEARS)]
    assert kept and all(torch.equal(tensors[name], source[name]) for name in kept)   # embeddings, norms, lm_head
    assert estimate(str(tiny), precision="gptq-4bit-g128").weights_bytes == sum(
        t.numel() * t.element_size() for t in tensors.values())                  # the calculator's bytes, exactly
    assert get_model(str(out)).checkpoint.n_bytes == sum(t.numel() * t.element_size() for t in tensors.values())


def test_our_loader_reproduces_the_reported_perplexity(tiny, quantized, calibration):
    out, _, result = quantized
    windows = heldout_windows(tiny, read_calibration_text(str(calibration)))   # the documents the CLI read
    dtype = getattr(torch, result["compute_dtype"])                 # what the run computed in
    model = load_gptq(out, dtype=dtype)
    assert perplexity(model, windows) == pytest.approx(result["perplexity_after"], rel=1e-4)
    original = transformers.AutoModelForCausalLM.from_pretrained(tiny, dtype=dtype)
    assert perplexity(original, windows) == pytest.approx(result["perplexity_before"], rel=1e-4)
    model, original = load_gptq(out), transformers.AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    assert result["perplexity_before"] < 200          # trained: far below the vocabulary's 512
    assert result["perplexity_after"] < result["perplexity_before"] * 1.05
    ids = torch.tensor([windows[0]])
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, original(input_ids=ids).logits
    assert float((a - b).norm() / b.norm()) < 0.1
    generated = model.generate(ids[:, :8], max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 12)


def test_report_gptq_beats_round_to_nearest(quantized):
    _, report, result = quantized
    lines = report.read_text().splitlines()
    assert tuple(lines[0].split(",")) == LINEAR_COLUMNS and len(lines) == 1 + 14
    rows = result["linears"]
    assert [r["linear"] for r in rows[:7]] == list(LINEARS)
    assert {r["error_inputs"] for r in rows} == {"held-out"}
    assert sum(r["gptq_error"] < r["rtn_error"] for r in rows) >= 12           # on text never calibrated on
    assert statistics.mean(r["gptq_error"] for r in rows) < 0.8 * statistics.mean(r["rtn_error"] for r in rows)
    assert result["calibration_tokens"] == 16 * 128 and result["heldout_tokens"] == 4 * 128
    assert result["peak_rss_bytes"] > 0 and result["estimate"]["peak_bytes"] > 0
    assert result["peak_device_bytes"] is None                                 # a CPU run


@pytest.mark.parametrize("settings", [
    dict(bits=2, group_size=32), dict(bits=3, group_size=-1), dict(bits=8, group_size=64),
    dict(bits=4, group_size=32, sym=False), dict(bits=4, group_size=32, act_order=True),
    dict(bits=3, group_size=32, act_order=True, static_groups=True, sym=False),
], ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_every_variant_round_trips_through_the_checkpoint(tiny, docs, tmp_path, settings):
    """What the solver evaluated (perplexity after) is exactly what the packed checkpoint holds."""
    fmt = gptq_format(**settings)
    result = run_gptq(tiny, tmp_path, GptqSettings(fmt, samples=8, seq_len=128, heldout_samples=2), docs)
    model = load_gptq(tmp_path, dtype=getattr(torch, result.compute_dtype))
    assert perplexity(model, heldout_windows(tiny, docs, 8, 128, 2)) == pytest.approx(result.perplexity_after, rel=1e-4)
    if fmt.bits == 4:       # the int4 kernel runs the same weights (act-order through its permutation)
        windows = heldout_windows(tiny, docs, 8, 128, 2)
        exact = [perplexity(load_gptq(tmp_path, dtype=torch.float32, kernel=k), windows) for k in ("reference", "int4")]
        assert exact[1] == pytest.approx(exact[0], rel=1e-6)                   # float32: equal to rounding
        fast = load_gptq(tmp_path, dtype=torch.bfloat16, kernel="int4")
        assert perplexity(fast, windows) == pytest.approx(result.perplexity_after, rel=2e-3)   # bf16 scales
    else:
        with pytest.raises(UsageError, match=f"cannot run on the int4 kernel: the int4 kernel takes 4-bit weights, "
                                             f"not {fmt.bits}-bit"):
            load_gptq(tmp_path, kernel="int4")
    q = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    g_idx = read_all(tmp_path)["model.layers.0.mlp.down_proj.g_idx"]
    permuted = fmt.desc_act and not fmt.static_groups
    assert (not torch.equal(g_idx, torch.sort(g_idx).values)) == permuted
    # desc_act says whether a loader must reorder: static groups quantize in act-order, reorder nothing
    assert (q["bits"], q["group_size"], q["sym"], q["desc_act"], q["static_groups"]) == (
        fmt.bits, fmt.group_size, fmt.sym, permuted, fmt.static_groups)


def test_tied_embeddings(tmp_path, docs):
    src = make_llama(tmp_path / "tied", config={"tie_word_embeddings": True})
    result = run_gptq(src, tmp_path, GptqSettings(samples=4, seq_len=64, heldout_samples=1, compute_dtype="float32"), docs)
    assert result.compute_dtype == "float32"
    assert "lm_head.weight" not in read_all(tmp_path)
    model = load_gptq(tmp_path, dtype=getattr(torch, result.compute_dtype))
    assert perplexity(model, heldout_windows(src, docs, 4, 64, 1)) == pytest.approx(result.perplexity_after, rel=1e-4)


# ---------------------------------------------------------------- refusals and faults

def invoke(*args):
    return CliRunner().invoke(cli, ["quantize", *map(str, args)])


def test_missing_calibration_file(tiny, tmp_path):
    r = invoke(tiny, "--method", "gptq", "--calibration-text", tmp_path / "nope.txt", "--output", tmp_path / "o", *SMALL)
    assert r.exit_code == 2 and "nope.txt: no such file" in r.output and "Traceback" not in r.output
    r = invoke(tiny, "--method", "gptq", "--output", tmp_path / "o", *SMALL)
    assert r.exit_code == 2 and "--method gptq needs --calibration-text FILE" in r.output
    assert not (tmp_path / "o").exists()


def test_dimensions_the_format_cannot_pack(tmp_path, calibration):
    src = make_llama(tmp_path / "odd", config={"intermediate_size": 400})
    r = invoke(src, "--method", "gptq", "--bits", "3", "--group-size", "-1", "--calibration-text", calibration,
               "--output", tmp_path / "o", *SMALL)
    assert r.exit_code == 2
    assert ("cannot write this GPTQ checkpoint: mlp.gate_proj: out_features 400 is not a multiple of 32 (qzeros "
            "pack 32 values per unit) (and 2 more)") in r.output
    r = invoke(src, "--method", "gptq", "--calibration-text", calibration, "--output", tmp_path / "o", *SMALL,
               "--dry-run")    # 400 = 3 x 128 + 16: a partial last group, written with a warning
    assert r.exit_code == 0 and "partial last groups (mlp.down_proj K=400; group size 128)" in r.output


def test_model_without_linear_layers(tmp_path, calibration, quantized):
    src = make_llama(tmp_path / "empty", config={"num_hidden_layers": 0})
    r = invoke(src, "--method", "gptq", "--calibration-text", calibration, "--output", tmp_path / "o", *SMALL)
    assert r.exit_code == 1 and "num_hidden_layers must be at least 1, got 0" in r.output
    r = invoke(quantized[0], "--method", "gptq", "--calibration-text", calibration, "--output", tmp_path / "o", *SMALL)
    assert r.exit_code == 2 and "already quantized (gptq-4bit-g128), so it has no 16-bit Linear weights" in r.output


def test_tensor_parallel_and_option_misuse(tiny, tmp_path, calibration):
    r = invoke(tiny, "--method", "gptq", "--tensor-parallel", "3", "--calibration-text", calibration,
               "--output", tmp_path / "o", *SMALL)
    assert r.exit_code == 2 and "4 attention heads are not divisible by tensor parallel 3" in r.output
    r = invoke(tiny, "--method", "nf4", "--bits", "4", "--output", tmp_path / "o")
    assert r.exit_code == 2 and "--bits applies to --method gptq only" in r.output
    r = invoke(tiny, "--method", "gptq", "--static-groups", "--calibration-text", calibration, "--output", tmp_path / "o")
    assert r.exit_code == 2 and "--static-groups applies with --act-order only" in r.output


def test_dry_run_plans_and_writes_nothing(tiny, tmp_path, calibration):
    r = invoke(tiny, "--method", "gptq", "--act-order", "--tensor-parallel", "2", "--asym", "--dry-run",
               "--group-size", "32",
               "--calibration-text", calibration, "--output", tmp_path / "o", *SMALL)
    assert r.exit_code == 0, r.output
    assert "vLLM 0.32 kernels at tensor parallel 2: none (it will not load the checkpoint)" in r.output
    assert ("warning: vLLM 0.32 will not load this checkpoint: it loads symmetric GPTQ only (--sym); it no longer "
            "runs act-order with groups (desc_act; --static-groups keeps the groups contiguous and loads) "
            "(transformers, GPTQModel and sizer's own loader will)") in r.output
    assert "warning: --act-order with tensor parallel 2" in r.output
    assert "estimate: peak" in r.output
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused(tiny, tmp_path, calibration):
    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    r = invoke(tiny, "--method", "gptq", "--calibration-text", calibration, "--output", out, *SMALL)
    assert r.exit_code == 2 and "already exists (use --force" in r.output
    assert (out / "mine.txt").read_text() == "keep"


def test_interrupted_run_leaves_no_output(tiny, tmp_path, docs):
    from sizer.quantize.gptq import plan_gptq, quantize_gptq

    def interrupt(done, total, seconds):          # Ctrl-C once the first layer is written
        if done == 1:
            raise KeyboardInterrupt

    settings = GptqSettings(samples=4, seq_len=64, heldout_samples=1)
    plan = plan_gptq(str(tiny), settings, str(write_calibration_file(tmp_path / "c.txt", docs)))
    (tmp_path / "work").mkdir()
    with pytest.raises(KeyboardInterrupt):
        quantize_gptq(plan, str(tmp_path / "work" / "out"), on_layer=interrupt)
    assert list((tmp_path / "work").iterdir()) == []            # neither the output nor a temporary folder


def test_truncated_shard_is_one_line(tiny, tmp_path, calibration):
    import shutil

    src = tmp_path / "broken"
    shutil.copytree(tiny, src)
    shard = sorted(src.glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    r = invoke(src, "--method", "gptq", "--calibration-text", calibration, "--output", tmp_path / "o", *SMALL)
    assert r.exit_code == 1 and "truncated safetensors file" in r.output and "Traceback" not in r.output


def test_calibration_shorter_than_one_window(tiny, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("a few words only\n")
    with pytest.raises(UsageError, match="fewer than one --seq-len 128 window"):
        run_gptq(tiny, tmp_path, GptqSettings(samples=4, seq_len=128), ["a few words only"])


def test_measure_runs_our_gptq_checkpoint(quantized):
    """sizer measure loads the checkpoint on QuantLinear: packed bytes counted as weights, exactly
    as predicted; the peak includes the reference path's dequantized weight."""
    out, _, _ = quantized
    r = CliRunner().invoke(cli, ["measure", str(out), "--device", "cpu", "-c", "128,256", "-b", "1,2", "--sweep",
                                 "--format", "json"])
    assert r.exit_code == 0, r.output
    records = json.loads(r.stdout)
    assert {rec["precision"] for rec in records} == {"gptq-4bit-g128"}
    for rec in records:
        assert rec["status"] == "ok"
        assert rec["measured_weights_bytes"] == rec["predicted_weights_bytes"] == get_model(str(out)).checkpoint.n_bytes
        assert rec["measured_kv_cache_bytes"] == rec["predicted_kv_cache_bytes"]
        assert abs(rec["measured_peak_bytes"] / rec["predicted_peak_bytes"] - 1) < 0.10, rec
    r = CliRunner().invoke(cli, ["measure", str(out), "--device", "cpu", "-p", "gptq-8bit-g128"])
    assert r.exit_code == 2 and "the checkpoint in" in r.output and "is gptq-4bit-g128" in r.output


@pytest.mark.parametrize("act_order", [False, True])
def test_measure_on_the_int4_kernel(quantized, tiny, docs, tmp_path, act_order):
    """--gptq-kernel int4: the weights are held in the kernel's layout (bf16 scale and zero pairs, an
    input permutation for act-order), exactly as predicted, and no dequantized copy is held."""
    from sizer.quant import get_precision
    from sizer.quantize.plan import int4_kernel_extra_bytes

    out = quantized[0]
    if act_order:
        out = tmp_path
        run_gptq(tiny, out, GptqSettings(gptq_format(act_order=True), samples=4, seq_len=64, heldout_samples=1), docs)
    r = CliRunner().invoke(cli, ["measure", str(out), "--device", "cpu", "-c", "128,256", "-b", "1,2", "--sweep",
                                 "--gptq-kernel", "int4", "--format", "json"])
    assert r.exit_code == 0, r.output
    spec = get_model(str(out))
    extra = int4_kernel_extra_bytes(spec, get_precision("gptq-4bit-g128"), act_order)
    assert extra != 0
    for rec in json.loads(r.stdout):
        assert rec["status"] == "ok" and rec["kernel"] == "int4"
        assert rec["measured_weights_bytes"] == rec["predicted_weights_bytes"] == spec.checkpoint.n_bytes + extra
        assert rec["measured_kv_cache_bytes"] == rec["predicted_kv_cache_bytes"]
        assert abs(rec["measured_peak_bytes"] / rec["predicted_peak_bytes"] - 1) < 0.10, rec
    r = CliRunner().invoke(cli, ["measure", str(tiny), "--device", "cpu", "--gptq-kernel", "int4"])
    assert r.exit_code == 2 and "--gptq-kernel int4 applies to GPTQ checkpoints" in r.output


def test_shard_writer_streams_valid_safetensors(tmp_path):
    """Tensors go to disk as they come; the shards are valid safetensors (read back by the library and
    by sizer's header check) with a transformers index."""
    from sizer.inputs.safetensors import read_header
    from sizer.quantize.shards import ShardReader, ShardWriter

    tensors = {"a.bf16": torch.randn(33, 7).to(torch.bfloat16), "b.i32": torch.arange(100, dtype=torch.int32),
               "c.f16": torch.randn(5).half(), "d.f32": torch.randn(64, 64), "e.empty": torch.zeros(0)}
    writer = ShardWriter(tmp_path, max_bytes=17_000)        # a, b, c | d, e
    for name, t in tensors.items():
        writer.add(name, t)
    writer.close()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tensors) and len(set(index["weight_map"].values())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-00001-of-00002.safetensors",
                                                          "model-00002-of-00002.safetensors",
                                                          "model.safetensors.index.json"]
    back = read_all(tmp_path)
    assert all(torch.equal(back[n], t) for n, t in tensors.items())
    for path in tmp_path.glob("*.safetensors"):
        read_header(path)
    reader = ShardReader(tmp_path)
    assert all(torch.equal(reader.get(n), t) for n, t in tensors.items())
    assert index["metadata"]["total_size"] == sum(p.stat().st_size for p in tmp_path.glob("*.safetensors"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gptq_on_cuda_matches_the_checkpoint(tiny, docs, tmp_path):
    """The same streamed run on the GPU: the checkpoint it writes reproduces its perplexity."""
    s = GptqSettings(samples=8, seq_len=128, heldout_samples=2, device="cuda")
    result = run_gptq(tiny, tmp_path, s, docs)
    assert result.compute_dtype == "bfloat16"
    model = load_gptq(tmp_path, device="cuda", dtype=torch.bfloat16)
    windows = heldout_windows(tiny, docs, 8, 128, 2)
    nll, count = 0.0, 0
    with torch.no_grad():
        for w in windows:
            ids = torch.tensor([w], device="cuda")
            logits = model(input_ids=ids).logits[0, :-1].float()
            nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += len(w) - 1
    assert math.exp(nll / count) == pytest.approx(result.perplexity_after, rel=1e-3)
    assert result.perplexity_after < result.perplexity_before * 1.1
    assert result.peak_device_bytes > 0


FAMILY_CONFIGS = {
    "qwen3": dict(model_type="qwen3", head_dim=32),
    "mistral-sliding": dict(model_type="mistral", sliding_window=64),
    "gemma2-eager": dict(model_type="gemma2", head_dim=32, sliding_window=64),
    "gemma3-scaled-embedding": dict(model_type="gemma3_text", head_dim=32, sliding_window=64),
    "phi3-fused": dict(model_type="phi3", pad_token_id=0, num_key_value_heads=4),
    "olmo2-qk-norm": dict(model_type="olmo2"),
}


@pytest.mark.parametrize("family", sorted(FAMILY_CONFIGS))
def test_other_families_stream_exactly(family, tmp_path, docs):
    """The streamed 'before' path equals transformers' own model, and sizer's loader reproduces the
    'after' path: the layer-by-layer run is the real model, for families with sliding windows, scaled
    embeddings, fused projections, extra norms and eager-only attention."""
    from sizer.testing import train_tokenizer

    base = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=512, max_position_embeddings=512)
    config = transformers.AutoConfig.for_model(**{**base, **FAMILY_CONFIGS[family]})
    torch.manual_seed(0)
    src = tmp_path / "src"
    transformers.AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained(src)
    tokenizer = train_tokenizer(docs, 512)
    tokenizer.save_pretrained(src)
    out = tmp_path / "out"
    out.mkdir()
    result = run_gptq(src, out, GptqSettings(samples=4, seq_len=128, heldout_samples=2, compute_dtype="float32"),
                      docs)
    windows = token_windows(tokenize_documents(tokenizer, docs), 128, 4, 2)[1]
    original = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    assert perplexity(original, windows) == pytest.approx(result.perplexity_before, rel=1e-5)
    assert perplexity(load_gptq(out), windows) == pytest.approx(result.perplexity_after, rel=1e-5)


def test_dry_run_plans_a_catalog_model_before_download(tmp_path):
    r = invoke("Llama-2-7b-hf", "--method", "gptq", "--dry-run", "--tensor-parallel", "2", "--output", tmp_path / "o")
    assert r.exit_code == 0, r.output
    assert "224 Linear layers (7 per decoder layer)" in r.output and "estimate: peak" in r.output
    r = invoke("Llama-2-7b-hf", "--method", "gptq", "--dry-run", "--tensor-parallel", "8", "--output", tmp_path / "o")
    assert r.exit_code == 2 and "in_features 1376 per GPU at tensor parallel 8" in r.output
    r = invoke("Llama-2-7b-hf", "--method", "gptq", "--calibration-text", "x.txt", "--output", tmp_path / "o")
    assert r.exit_code == 2 and "needs a model folder" in r.output               # a real run needs the weights
    assert list(tmp_path.iterdir()) == []


def test_calibration_text_must_be_text(tmp_path):
    """Binary garbage is refused before any planning, not decoded into replacement characters."""
    from sizer.errors import InputFileError
    from sizer.quantize.text import read_calibration_text

    garbage = tmp_path / "garbage.txt"
    garbage.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(InputFileError, match="not a calibration text \\(not UTF-8 text\\)"):
        read_calibration_text(str(garbage))
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"text\x00\x00\x00more text\n")
    with pytest.raises(InputFileError, match="holds NUL bytes"):
        read_calibration_text(str(nul))
    good = tmp_path / "good.txt"
    good.write_text("first document\n\nsecond document\n")
    assert read_calibration_text(str(good)) == ["first document", "second document"]


def test_short_calibration_text_is_found_before_planning(tiny, docs, tmp_path):
    """The plan counts the text's windows first: a text too short for --samples is planned (and run)
    with what it holds, and said so up front; one too short for a single window is refused."""
    import transformers

    from sizer.quantize.text import read_calibration_text, tokenize_documents

    short = write_calibration_file(tmp_path / "short.txt", docs[:40])
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny)
    tokens = len(tokenize_documents(tokenizer, read_calibration_text(str(short))))
    windows = tokens // 128
    assert 0 < windows < 128
    r = invoke(tiny, "--method", "gptq", "--calibration-text", short, "--output", tmp_path / "o", "--dry-run",
               "--samples", "128", "--seq-len", "128", "--heldout-samples", "4", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert (f"note: the calibration text holds {windows:,} windows of 128 tokens ({tokens:,} tokens): planned for "
            f"{windows} calibration and 0 held-out windows (asked: 128 and 4)") in r.stderr
    assert f"calibration: {windows} x 128 tokens, 0 held-out windows" in r.stderr
    tiny_text = write_calibration_file(tmp_path / "tiny.txt", ["a few words"])
    r = invoke(tiny, "--method", "gptq", "--calibration-text", tiny_text, "--output", tmp_path / "o", "--dry-run",
               "--seq-len", "128", "--device", "cpu")
    assert r.exit_code == 2 and "fewer than one --seq-len 128 window" in r.output
