"""Data checks for the GPU catalog in sizer/data/gpus.json (stdlib only)."""

import datetime
import json
import math
import re
from pathlib import Path

import pytest

CATALOG_PATH = Path(__file__).resolve().parents[1] / "sizer" / "data" / "gpus.json"

MIB = 1024 ** 2
GIB = 1024 ** 3

OPTIONAL_KEYS = ("cuda_memory_bytes", "cuda_memory_source", "compute_capability", "compute_capability_source")
ENTRY_KEYS = [
    "name",
    "full_name",
    "aliases",
    "vendor",
    "architecture",
    "memory_gib_marketed",
    "memory_bytes",
    "memory_bytes_source",
    "memory_bandwidth_gbps",
    "dense_tflops",
    "tdp_watts",
    "interconnect",
    "price_per_hour_usd",
    "price_source",
    "price_date",
    "source",
    "node_gpus",
    "node_link",
    "node_link_gbps",
    "fabric_gbits",
    "node_source",
]

TFLOPS_KEYS = {"fp32", "tf32", "bf16", "fp16", "fp8", "int8"}

REQUIRED_GPUS = [
    "H200",
    "H100-SXM",
    "H100-PCIe",
    "H100-NVL",
    "A100-40GB",
    "A100-80GB",
    "L40S",
    "L40",
    "RTX-6000-Ada",
    "RTX-A6000",
    "A10G",
    "L4",
    "T4",
    "V100-16GB",
    "V100-32GB",
    "RTX-3090",
    "RTX-4090",
    "RTX-5090",
    "B200",
    "MI300X",
    "MI250X",
]


def _load():
    with open(CATALOG_PATH, encoding="utf-8") as fh:
        return json.load(fh)


CATALOG = _load()
GPUS = CATALOG["gpus"]
BY_NAME = {g["name"]: g for g in GPUS}


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_iso_date(text):
    """Accept YYYY-MM-DD or YYYY-MM; return a date or raise ValueError."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return datetime.date.fromisoformat(text)
    if re.fullmatch(r"\d{4}-\d{2}", text):
        return datetime.date.fromisoformat(text + "-01")
    raise ValueError(f"not an ISO date: {text!r}")


def _resolve(key):
    key = key.lower()
    for g in GPUS:
        if g["name"].lower() == key or key in g["aliases"]:
            return g["name"]
    return None


def test_top_level_shape():
    assert CATALOG["schema"] == 1
    assert isinstance(CATALOG["notes"], str) and CATALOG["notes"].strip()
    assert isinstance(GPUS, list) and len(GPUS) >= len(REQUIRED_GPUS)


@pytest.mark.parametrize("name", REQUIRED_GPUS)
def test_required_gpu_present(name):
    assert name in BY_NAME, f"missing required GPU {name}"


@pytest.mark.parametrize("gpu", GPUS, ids=lambda g: g.get("name", "?"))
def test_entry_keys_and_types(gpu):
    assert [k for k in gpu if k not in OPTIONAL_KEYS] == ENTRY_KEYS
    if "cuda_memory_bytes" in gpu:   # a measured CUDA total: below the driver's total, with its source
        assert isinstance(gpu["cuda_memory_bytes"], int) and 0.98 * gpu["memory_bytes"] < gpu["cuda_memory_bytes"] < gpu["memory_bytes"]
        assert gpu["cuda_memory_source"].strip()

    assert isinstance(gpu["name"], str) and gpu["name"] and " " not in gpu["name"]
    assert isinstance(gpu["full_name"], str) and gpu["full_name"].strip()
    assert isinstance(gpu["aliases"], list) and gpu["aliases"]
    for alias in gpu["aliases"]:
        assert isinstance(alias, str) and alias.strip()
        assert alias == alias.lower(), f"alias not lower-case: {alias!r}"
    assert gpu["vendor"] in {"nvidia", "amd"}
    assert isinstance(gpu["architecture"], str) and gpu["architecture"].strip()

    assert _is_number(gpu["memory_gib_marketed"]) and gpu["memory_gib_marketed"] > 0
    assert type(gpu["memory_bytes"]) is int and gpu["memory_bytes"] > 0
    assert isinstance(gpu["memory_bytes_source"], str) and gpu["memory_bytes_source"].strip()
    assert _is_number(gpu["memory_bandwidth_gbps"]) and gpu["memory_bandwidth_gbps"] > 0

    tflops = gpu["dense_tflops"]
    assert isinstance(tflops, dict) and set(tflops) == TFLOPS_KEYS
    assert tflops["fp32"] is not None
    for fmt, value in tflops.items():
        assert value is None or (_is_number(value) and value > 0), (fmt, value)

    assert type(gpu["node_gpus"]) is int and 1 <= gpu["node_gpus"] <= 72
    assert gpu["node_link"] in {"nvlink", "pcie", "infinity-fabric"}
    assert _is_number(gpu["node_link_gbps"]) and 1 <= gpu["node_link_gbps"] <= 2000
    assert _is_number(gpu["fabric_gbits"]) and 1 <= gpu["fabric_gbits"] <= 10000
    assert gpu["node_source"].strip()
    assert _is_number(gpu["tdp_watts"]) and gpu["tdp_watts"] > 0
    assert isinstance(gpu["interconnect"], str) and gpu["interconnect"].strip()

    price = gpu["price_per_hour_usd"]
    assert price is None or (_is_number(price) and price > 0)
    assert isinstance(gpu["price_source"], str) and gpu["price_source"].strip()
    if price is not None:
        assert isinstance(gpu["price_date"], str)
    if gpu["price_date"] is not None:
        _parse_iso_date(gpu["price_date"])

    assert isinstance(gpu["source"], str) and gpu["source"].strip()


def test_names_and_aliases_unique_across_catalog():
    owner = {}
    for gpu in GPUS:
        for key in {gpu["name"].lower(), *gpu["aliases"]}:
            key = key.lower()
            assert owner.setdefault(key, gpu["name"]) == gpu["name"], (
                f"{key!r} used by both {owner[key]} and {gpu['name']}"
            )


@pytest.mark.parametrize("gpu", GPUS, ids=lambda g: g["name"])
def test_precision_ordering(gpu):
    t = gpu["dense_tflops"]
    if t["bf16"] is not None and t["fp8"] is not None:
        assert t["bf16"] <= t["fp8"]
    if t["fp8"] is not None and t["int8"] is not None:
        assert t["fp8"] <= t["int8"] * 1.01


@pytest.mark.parametrize("gpu", GPUS, ids=lambda g: g["name"])
def test_memory_bytes_close_to_marketed(gpu):
    marketed_bytes = gpu["memory_gib_marketed"] * GIB
    assert 0.9 * marketed_bytes <= gpu["memory_bytes"] <= 1.1 * marketed_bytes


@pytest.mark.parametrize("gpu", [g for g in GPUS if g["price_date"] is not None], ids=lambda g: g["name"])
def test_price_date_is_iso(gpu):
    parsed = _parse_iso_date(gpu["price_date"])
    assert datetime.date(2020, 1, 1) <= parsed <= datetime.date(2100, 1, 1)


def test_key_memory_figures():
    # Driver-reported totals (nvidia-smi MiB x 1048576).
    assert BY_NAME["H100-SXM"]["memory_bytes"] == 81559 * MIB
    assert BY_NAME["A100-80GB"]["memory_bytes"] == 81920 * MIB


def test_h100_bandwidth_per_form_factor():
    assert BY_NAME["H100-SXM"]["memory_bandwidth_gbps"] == 3350
    assert BY_NAME["H100-PCIe"]["memory_bandwidth_gbps"] == 2000
    assert BY_NAME["H100-NVL"]["memory_bandwidth_gbps"] == 3900


def test_plain_h100_alias_maps_to_sxm():
    assert _resolve("H100") == "H100-SXM"


def test_no_fp8_on_pre_ada_parts():
    for name in ["A100-40GB", "A100-80GB", "V100-16GB", "V100-32GB", "T4", "RTX-3090", "RTX-A6000", "MI250X"]:
        assert BY_NAME[name]["dense_tflops"]["fp8"] is None, name


# NVIDIA's CUDA GPUs page (https://developer.nvidia.com/cuda-gpus), by architecture
CAPABILITY_BY_ARCHITECTURE = {"volta": {"7.0"}, "turing": {"7.5"}, "ampere": {"8.0", "8.6"}, "ada": {"8.9"},
                              "hopper": {"9.0"}, "blackwell": {"10.0", "12.0"}}


@pytest.mark.parametrize("gpu", GPUS, ids=lambda g: g.get("name", "?"))
def test_nvidia_entries_carry_their_compute_capability(gpu):
    """Engines decide kernels by compute capability (FP8 >= 8.9, Marlin >= 7.5): every NVIDIA entry has it, sourced."""
    if gpu["vendor"] != "nvidia":
        assert "compute_capability" not in gpu
        return
    assert re.fullmatch(r"\d+\.\d", gpu["compute_capability"])
    assert gpu["compute_capability"] in CAPABILITY_BY_ARCHITECTURE[gpu["architecture"]]
    assert "developer.nvidia.com/cuda-gpus" in gpu["compute_capability_source"]


def test_key_compute_capabilities():
    expected = {"H100-SXM": "9.0", "A100-80GB": "8.0", "RTX-3090": "8.6", "RTX-4090": "8.9", "L4": "8.9", "T4": "7.5",
                "V100-32GB": "7.0", "B200": "10.0", "RTX-5090": "12.0"}
    assert {name: BY_NAME[name]["compute_capability"] for name in expected} == expected
    # FP8 tensor cores (a dense fp8 rate) exactly from 8.9 on
    for gpu in GPUS:
        if gpu["vendor"] == "nvidia":
            has_fp8 = tuple(map(int, gpu["compute_capability"].split("."))) >= (8, 9)
            assert (gpu["dense_tflops"]["fp8"] is not None) == has_fp8, gpu["name"]
