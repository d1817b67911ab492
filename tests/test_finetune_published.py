"""The published fine-tuning measurements (tests/data/finetune/published.json) and their benchmark:
every record carries its source, quote and settings, resolves to a model sizer knows and plans
without error; the benchmark's summary runs. No accuracy is asserted here: the targets live in
benchmarks/finetune_published.py."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from sizer.errors import UsageError
from sizer.finetune.frameworks import FRAMEWORKS, framework_for, get_framework
from sizer.finetune.params import TrainedParams
from sizer.finetune.setup import FinetuneSetup
from sizer.finetune.states import gradient_bytes

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("finetune_published", ROOT / "benchmarks" / "finetune_published.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)

RECORDS = bench.load_records()
SETTINGS = ("method", "lora_rank", "lora_targets", "quant", "optimizer", "precision", "gradient_checkpointing",
            "micro_batch_size", "seq_len", "packing", "attention", "sharding")
UNITS = {"peak_memory": ("GB", "GiB", "bytes"), "max_seq_len": ("tokens",)}


def test_at_least_twenty_records_in_two_halves():
    assert len(RECORDS) >= 20
    assert {r["split"] for r in RECORDS} == {"in-repo", "held-out"}


def test_ids_are_unique():
    ids = [r["id"] for r in RECORDS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r["id"])
def test_record_schema(record):
    assert record["source"]["url"].startswith("https://")
    assert record["source"]["quote"].strip()
    assert all(key in record["settings"] for key in SETTINGS)
    measured = record["measured"]
    assert measured["unit"] in UNITS[measured["kind"]]
    assert measured["value"] > 0 and measured["what"].strip()
    assert record["framework"] and record["modelled_as"] in FRAMEWORKS
    assert all(isinstance(k, str) and v.strip() for k, v in record["assumed"].items())
    assert isinstance(record["not_modelled"], list)


def test_a_split_holds_whole_sources():
    """Held-out means a source not looked at while modelling: no source on both sides."""
    split_of: dict[str, set[str]] = {}
    for r in RECORDS:
        split_of.setdefault(r["source_id"], set()).add(r["split"])
    assert all(len(splits) == 1 for splits in split_of.values())


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r["id"])
def test_record_resolves_and_predicts(record):
    predicted, parts = bench.predict(record)
    assert math.isfinite(predicted) and predicted > 0
    assert parts["weights"] > 0


def test_benchmark_summary_runs(tmp_path, capsys):
    out = tmp_path / "published.csv"
    assert bench.main(["--out", str(out), "--split", "held-out"]) == 0
    lines = out.read_text().strip().splitlines()
    assert len(lines) == 1 + sum(r["split"] == "held-out" for r in RECORDS)
    assert "median |error|" in capsys.readouterr().out


def test_setup_overrides_reach_the_framework_profile():
    plain = FinetuneSetup(framework="torchtune")
    assert framework_for(plain) == get_framework("torchtune")
    chunked = framework_for(FinetuneSetup(framework="torchtune", loss_chunks=1, activation_offload=True))
    assert (chunked.loss_chunks, chunked.checkpoint_offload) == (1, True)


def test_optimizer_in_backward_keeps_one_gradient_at_a_time():
    p = TrainedParams(trainable=8 * 16 + 300, trainable_bytes=0, param_bytes=2, frozen_bytes=0,
                      trainable_shapes=((8, 16), (300,)), largest_layer_params=300)
    assert gradient_bytes(p) == (128 + 300) * 2
    assert gradient_bytes(p, in_backward=True) == 300 * 2


@pytest.mark.parametrize("fields", [{"loss_chunks": -1}, {"optimizer_in_backward": True, "gradient_accumulation_steps": 4}])
def test_setup_refuses_impossible_overrides(fields):
    with pytest.raises(UsageError):
        FinetuneSetup(**fields)
