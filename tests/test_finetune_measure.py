"""`sizer measure --finetune`: real training steps (transformers + PEFT, fused AdamW) on tiny models,
measured with the allocation-event meter, against sizer.finetune's prediction: weights, gradients and
optimizer states exact, the step's peak within 2 %."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

from sizer.measure.finetune import measure_finetune, render  # noqa: E402

LLAMA = dict(model_type="llama", hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=32, vocab_size=2048, max_position_embeddings=512)
QWEN2_TIED = dict(model_type="qwen2", hidden_size=128, intermediate_size=320, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, vocab_size=1536, max_position_embeddings=512,
                  tie_word_embeddings=True)
QWEN3 = dict(model_type="qwen3", hidden_size=96, intermediate_size=256, num_hidden_layers=2, num_attention_heads=3,
             num_key_value_heads=1, head_dim=32, vocab_size=1024, max_position_embeddings=512, tie_word_embeddings=True)

POINTS = {
    "llama-lora-nockpt": (LLAMA, "lora", 96, 1, False, {}),
    "llama-lora-ckpt-mb2": (LLAMA, "lora", 64, 2, True, {}),
    "qwen2-tied-full-ckpt": (QWEN2_TIED, "full", 96, 1, True, {}),
    "qwen2-tied-full-nockpt-mb2": (QWEN2_TIED, "full", 64, 2, False, {}),
    "qwen3-lora-dropout": (QWEN3, "lora", 64, 1, False, {"lora_dropout": 0.05}),
    "llama-lora-ckpt-dropout": (LLAMA, "lora", 32, 2, True, {"lora_dropout": 0.1}),
    "llama-qlora-ckpt": (LLAMA, "qlora", 64, 1, True, {}),      # bitsandbytes' CPU backend, nf4 + double quant
    "llama-lora-eager": (LLAMA, "lora", 64, 1, False, {"attention": "eager"}),    # scores, float32 softmax kept
}


@pytest.fixture(scope="module", params=sorted(POINTS))
def record(request):
    config, method, seq, batch, ckpt, extra = POINTS[request.param]
    if method == "qlora":
        pytest.importorskip("bitsandbytes")
    return measure_finetune(config, method, seq, batch, ckpt, lora_rank=8, **extra)


def test_states_exact(record):
    r = record
    assert r.pred_weights == r.weights
    assert r.pred_trainable == r.trainable
    assert r.pred_gradients == r.gradients == r.trainable      # one gradient per trained parameter, its dtype
    assert r.pred_optimizer_states == r.optimizer_states
    # AdamW: exp_avg and exp_avg_sq like the parameter, plus a float32 step per tensor
    assert r.optimizer_states - 2 * r.trainable > 0
    assert (r.optimizer_states - 2 * r.trainable) % 4 == 0


def test_peak_within_two_percent(record):
    for component in ("saved", "forward_peak", "backward_peak", "peak"):
        assert abs(record.error(component)) < 0.02, (component, getattr(record, component),
                                                     getattr(record, "pred_" + component))


def test_frozen_base_keeps_less_than_full():
    """A frozen nn.Linear keeps no input for a weight gradient: the LoRA run's saved tensors per
    token are below full fine-tuning's only by what the base Linears and norms would keep, and
    the measured difference has the predicted sign and size."""
    lora = measure_finetune(QWEN3, "lora", 64, 1, False, lora_rank=8)
    full = measure_finetune(QWEN3, "full", 64, 1, False, lora_rank=8)
    assert abs((lora.saved - full.saved) - (lora.pred_saved - full.pred_saved)) <= 0.01 * full.saved


def test_sgd_keeps_no_state():
    r = measure_finetune(LLAMA, "lora", 32, 1, True, lora_rank=4, optimizer="sgd")
    assert r.optimizer_states == r.pred_optimizer_states == 0
    assert abs(r.error("peak")) < 0.02


def test_render_formats(record):
    import csv
    import io
    import json

    from sizer.measure.finetune import FINETUNE_RECORD_COLUMNS

    table = render([record])
    peak_row = next(line for line in table.splitlines() if line.startswith("peak "))
    assert f"{record.peak:,}" in peak_row and f"{record.pred_peak:,}" in peak_row
    assert "sizes in bytes" in table
    rows = list(csv.DictReader(io.StringIO(render([record], "csv"))))
    assert tuple(rows[0]) == FINETUNE_RECORD_COLUMNS and int(rows[0]["peak"]) == record.peak
    assert json.loads(render([record], "json"))[0]["pred_peak"] == record.pred_peak


def test_measure_finetune_from_the_command_line_scales_the_model_down():
    """`sizer measure MODEL --finetune METHOD`: a catalog model scaled down (2 layers, width 256,
    vocabulary 8192, its own architecture), two real steps, states exact and peak within 2 %."""
    import json

    from click.testing import CliRunner

    from sizer.cli import cli

    r = CliRunner().invoke(cli, ["measure", "llama3-8b", "--finetune", "lora", "-c", "64", "-b", "2",
                                 "--lora-rank", "4", "--format", "json"])
    assert r.exit_code == 0, r.output
    record = json.loads(r.output[r.output.index("["):])[0]
    assert record["model"] == "llama3-8b (scaled down)" and record["family"] == "llama"
    assert (record["seq_len"], record["micro_batch_size"], record["lora_rank"]) == (64, 2, 4)
    for name in ("weights", "trainable", "gradients", "optimizer_states"):
        assert record[name] == record["pred_" + name], name
    assert abs(record["pred_peak"] - record["peak"]) <= 0.02 * record["peak"]
    bad = CliRunner().invoke(cli, ["measure", "llama3-8b", "--finetune", "lora", "--sweep"])
    assert bad.exit_code == 2 and "--finetune measures one point: --sweep and --record do not apply" in bad.output
