"""vLLM loads and runs sizer's GPTQ checkpoints, and refuses exactly the ones sizer's pre-flight says
it will (sizer.quantize.plan.vllm_support), on vLLM's CPU build.

vLLM cannot share the test environment: its CPU build pins transformers below 5.20. Set
SIZER_VLLM_PYTHON to an interpreter that has it (see benchmarks/vllm_compat.py for the three set-up
commands); without it these tests skip. The comparison itself lives in benchmarks/vllm_compat.py,
which records the same rows under benchmarks/results/.
"""

import os
import tempfile
from pathlib import Path

import pytest

from conftest import benchmark_module

pytest.importorskip("torch")
pytest.importorskip("transformers")
VLLM_PYTHON = os.environ.get("SIZER_VLLM_PYTHON")
if not VLLM_PYTHON:
    pytest.skip("SIZER_VLLM_PYTHON is not set (an interpreter with vLLM's CPU build; see "
                "benchmarks/vllm_compat.py)", allow_module_level=True)

# vLLM 0.32's own words when it refuses a checkpoint sizer wrote
REFUSALS = {
    "4bit-g32-act-order": "GPTQ group activation ordering (desc_act=True) is no longer supported",
    "4bit-g64-asym": "Unsupported quantization config: bits=4, sym=False",
    "8bit-g128": "Marlin does not support weight_bits = uint8b128",
}


@pytest.fixture(scope="module")
def compat():
    return benchmark_module("vllm_compat")


@pytest.fixture(scope="module")
def rows(compat):
    from sizer.testing import make_llama

    with tempfile.TemporaryDirectory() as tmp:
        source = make_llama(Path(tmp) / "source")
        yield {name: compat.check_variant(VLLM_PYTHON, source, Path(tmp), name, "bfloat16")
               for name in compat.VARIANTS}


def test_vllm_runs_what_sizer_says_it_runs(rows):
    assert {name: row["status"] for name, row in rows.items()} == {
        name: "ok" if row["sizer_predicts_load"] else "refused" for name, row in rows.items()}
    assert {name for name, row in rows.items() if row["status"] == "ok"} == {"4bit-g128", "4bit-g32-act-order-static"}


@pytest.mark.parametrize("name", ["4bit-g128", "4bit-g32-act-order-static"])
def test_vllm_generates_what_sizer_computes(rows, name):
    """Greedy decoding in vLLM picks the tokens sizer's loader picks, prefill and every decode step,
    with log-probabilities equal to bf16 rounding."""
    row = rows[name]
    assert row["vllm_kernel"] == "CPUWNA16LinearKernel"
    assert row["steps_compared"] == 16 and row["greedy_tokens_matching"] == 16
    assert row["max_abs_logprob_diff"] < 0.05


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_vllm_refusals_are_the_ones_sizer_warns_of(rows, name):
    assert REFUSALS[name] in rows[name]["detail"]
