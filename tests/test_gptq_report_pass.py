"""The error report's held-out Hessians come from the held-out samples' one pass through the quantized
layer (no stopped pass per group), narrow groups are solved on one thread, and the compute-dtype
choice skips the slow bfloat16 measurement where a small race already loses. Checked against
independent computations, not the implementation."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from sizer.kernels.gptq import output_relative_error  # noqa: E402
from sizer.quantize import compute  # noqa: E402
from sizer.quantize.load import load_gptq  # noqa: E402
from sizer.quantize.run import GptqSettings, gptq_format, run_gptq  # noqa: E402
from sizer.quantize.text import token_windows, tokenize_documents  # noqa: E402
from sizer.testing import help_text_documents, make_llama  # noqa: E402

SAMPLES, SEQ_LEN, HELDOUT = 4, 64, 2


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    config = dict(hidden_size=128, intermediate_size=320, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=1024)
    return make_llama(tmp_path_factory.mktemp("src") / "llama", config=config, dtype="float32")


@pytest.fixture(scope="module")
def docs():
    return help_text_documents()[-200:]


def quantize(source, folder, docs, heldout):
    settings = GptqSettings(gptq_format(4, 64), samples=SAMPLES, seq_len=SEQ_LEN, heldout_samples=heldout,
                            compute_dtype="float32")
    folder.mkdir()
    return run_gptq(source, folder, settings, docs)


def linear_inputs(model, windows):
    """Every decoder Linear's inputs over the windows, from the model's own forward."""
    seen, handles = {}, []
    for name, module in model.named_modules():
        if ".layers." in name and hasattr(module, "in_features") and not list(module.children()):
            handles.append(module.register_forward_pre_hook(
                lambda m, args, name=name: seen.setdefault(name, []).append(args[0].reshape(-1, args[0].shape[-1]))))
    with torch.no_grad():
        for w in windows:
            model(input_ids=torch.tensor([w]))
    for h in handles:
        h.remove()
    return {name: torch.cat(xs) for name, xs in seen.items()}


@pytest.fixture(scope="module")
def with_heldout(source, docs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("q")
    return folder / "q", quantize(source, folder / "q", docs, HELDOUT)


def test_heldout_errors_are_those_of_the_quantized_model_on_heldout_text(source, docs, with_heldout):
    folder, result = with_heldout
    tok = transformers.AutoTokenizer.from_pretrained(source)
    held = token_windows(tokenize_documents(tok, docs), SEQ_LEN, SAMPLES, HELDOUT)[1]
    quantized = load_gptq(folder)
    inputs = linear_inputs(quantized, held)     # sequential GPTQ: the quantized model is the quantized path
    original = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    assert len(result.linears) == 14
    for line in result.linears:
        name = f"model.layers.{line.layer}.{line.name}"
        dequantized = quantized.get_submodule(name).dequantized(torch.float32)
        expected = output_relative_error(original.get_submodule(name).weight, dequantized, inputs[name])
        assert line.error_inputs == "held-out"
        assert line.gptq_error == pytest.approx(expected, rel=1e-3)


def test_heldout_text_and_thread_count_change_no_quantized_byte(source, docs, with_heldout, tmp_path):
    """Held-out text never touches quantization; groups this narrow are solved on one thread, so
    the caller's thread count does not either (and it is given back)."""
    folder, with_held = with_heldout
    threads = torch.get_num_threads()
    torch.set_num_threads(3 if threads == 1 else 1)
    try:
        without = quantize(source, tmp_path / "b", docs, 0)
        assert torch.get_num_threads() == (3 if threads == 1 else 1)
    finally:
        torch.set_num_threads(threads)
    a = safetensors_torch.load_file(str(next(folder.glob("*.safetensors"))))
    b = safetensors_torch.load_file(str(next((tmp_path / "b").glob("*.safetensors"))))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert {line.error_inputs for line in without.linears} == {"calibration"}
    assert with_held.perplexity_after > 0 and without.perplexity_after is None


def fake_gflops(speeds, calls):
    def measure(device, dtype="float32", n=1024, repeats=4):
        calls.append((dtype, n))
        return speeds[dtype, n]
    return measure


def test_bfloat16_race_is_real():
    assert compute.measure_matmul_gflops("cpu", "float32", 64, repeats=1) > 0


def test_slow_bfloat16_is_not_measured_in_full(monkeypatch):
    calls = []
    monkeypatch.setattr(compute, "measure_matmul_gflops",
                        fake_gflops({("float32", 1024): 60.0, ("float32", 256): 30.0, ("bfloat16", 256): 3.0}, calls))
    assert compute.choose_compute_dtype("cpu", "auto") == ("float32", 60.0, 60.0)
    assert ("bfloat16", 1024) not in calls
    assert calls.count(("bfloat16", 256)) == calls.count(("float32", 256)) == 3     # raced in alternation


def test_fast_bfloat16_is_measured_and_chosen(monkeypatch):
    calls = []
    monkeypatch.setattr(compute, "measure_matmul_gflops", fake_gflops(
        {("float32", 1024): 60.0, ("float32", 256): 30.0, ("bfloat16", 256): 40.0, ("bfloat16", 1024): 250.0}, calls))
    assert compute.choose_compute_dtype("cpu", "auto") == ("bfloat16", 250.0, 60.0)
    calls.clear()
    assert compute.choose_compute_dtype("cpu", "bf16")[0] == "bfloat16" and ("bfloat16", 256) not in calls
