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

OPTIONAL_KEYS = ("cuda_memory_bytes", "cuda_memory_source", "compute_capability", "compute_capability_source",
                 "market", "launch_price_usd", "launch_price_source", "gpu_memory_limit_bytes", "gpu_memory_limit_source")
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
    # data-centre cards added with the machines people own (issue 18)
    "A40",
    "RTX-PRO-6000",
    "GH200-96GB",
    "GH200-144GB",
    "MI325X",
]

# The machines people own (issue 18, item 4): consumer cards 6-32 GB, AMD/Intel desktop cards, every Apple M1-M4
# chip in every memory size Apple sold
REQUIRED_OWNED = [
    "RTX-2080-Ti", "RTX-3060-12GB", "RTX-3070", "RTX-3080-10GB", "RTX-3080-12GB", "RTX-4060", "RTX-4060-Ti-8GB",
    "RTX-4060-Ti-16GB", "RTX-4070", "RTX-4070-Ti-Super", "RTX-4080", "RTX-5060-Ti-16GB", "RTX-5070", "RTX-5080",
    "RX-7900-XTX", "RX-7900-XT", "RX-6800-XT", "Arc-A770-16GB", "Arc-B580",
]
APPLE_SIZES_GB = {
    "M1": [8, 16], "M1-Pro": [16, 32], "M1-Max": [32, 64], "M1-Ultra": [64, 128],
    "M2": [8, 16, 24], "M2-Pro": [16, 32], "M2-Max": [32, 64, 96], "M2-Ultra": [64, 128, 192],
    "M3": [8, 16, 24], "M3-Pro": [18, 36], "M3-Max": [36, 48, 64, 96, 128], "M3-Ultra": [96, 256, 512],
    "M4": [16, 24, 32], "M4-Pro": [24, 48, 64], "M4-Max": [36, 48, 64, 128],
}
REQUIRED_APPLE = [f"{chip}-{gb}GB" for chip, sizes in APPLE_SIZES_GB.items() for gb in sizes]


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


@pytest.mark.parametrize("name", REQUIRED_GPUS + REQUIRED_OWNED + REQUIRED_APPLE)
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
    assert gpu["vendor"] in {"nvidia", "amd", "intel", "apple"}
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
    if gpu["node_gpus"] == 1:       # one GPU per machine (a Mac): no link inside it
        assert gpu["node_link"] == "none" and gpu["node_link_gbps"] is None
    else:
        assert gpu["node_link"] in {"nvlink", "pcie", "infinity-fabric"}
        assert _is_number(gpu["node_link_gbps"]) and 1 <= gpu["node_link_gbps"] <= 2000
    assert _is_number(gpu["fabric_gbits"]) and 1 <= gpu["fabric_gbits"] <= 10000
    assert gpu["node_source"].strip()
    if gpu["vendor"] == "apple":    # Apple publishes no power per chip
        assert gpu["tdp_watts"] is None
    else:
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


# ---------------------------------------------------------------------------------------------
# The machines people own (issue 18, item 4)

OWNED = [g for g in GPUS if g.get("market") in {"consumer", "apple"}]
APPLE = [g for g in GPUS if g["vendor"] == "apple"]


@pytest.mark.parametrize("gpu", OWNED, ids=lambda g: g["name"])
def test_owned_entries_are_complete_and_sourced(gpu):
    """Cards and Macs people buy: a market, a launch price with its source (null only where the vendor published
    none), a spec source naming a vendor page or whitepaper, memory and bandwidth in range for the class."""
    assert gpu["market"] in {"consumer", "apple"}
    assert gpu["market"] == ("apple" if gpu["vendor"] == "apple" else "consumer")
    if gpu["vendor"] != "apple":
        assert gpu["launch_price_source"].strip()
        assert gpu["launch_price_usd"] is None or 100 <= gpu["launch_price_usd"] <= 3000
        assert 6 <= gpu["memory_gib_marketed"] <= 32
        assert 200 <= gpu["memory_bandwidth_gbps"] <= 2000
    assert re.search(r"https?://|whitepaper|datasheet|data sheet|specifications|tech specs", gpu["source"]), gpu["source"]


@pytest.mark.parametrize("gpu", [g for g in GPUS if g.get("market") == "consumer" and g["vendor"] == "nvidia"],
                         ids=lambda g: g["name"])
def test_geforce_tensor_rates_are_fp32_accumulate(gpu):
    """GeForce tensor rates with FP32 accumulate, as multiples of the shader FP32 rate (NVIDIA's whitepaper
    appendices; rounding of the published figures aside): Ampere GA10x, Ada, Blackwell: bf16/fp16 2x, fp8 4x
    (Ada on), int8 8x; Turing (TU102, 64 FP32 lanes per SM): fp16 4x, int8 16x, no bf16."""
    t = gpu["dense_tflops"]
    turing = gpu["architecture"] == "turing"
    assert t["fp16"] == pytest.approx((4 if turing else 2) * t["fp32"], rel=0.01)
    assert t["bf16"] is None if turing else t["bf16"] == t["fp16"]
    if t["fp8"] is not None:
        assert t["fp8"] == pytest.approx(4 * t["fp32"], rel=0.01)
    assert t["int8"] == pytest.approx((16 if turing else 8) * t["fp32"], rel=0.02)


@pytest.mark.parametrize("gpu", APPLE, ids=lambda g: g["name"])
def test_apple_entries(gpu):
    """One entry per chip and memory size: memory_bytes is hw.memsize (the marketed GB as GiB exactly), the GPU's
    default wired share 2/3 up to 32 GiB and 3/4 above (in 16 KiB pages), FP16 at the FP32 rate, no FP8/INT8, name = chip + size."""
    gb = gpu["memory_gib_marketed"]
    assert gpu["memory_bytes"] == gb * GIB
    share = (2, 3) if gb <= 32 else (3, 4)
    pages = -(-gpu["memory_bytes"] * share[0] // (share[1] * 16384))     # rounded up to 16 KiB pages
    assert gpu["gpu_memory_limit_bytes"] == pages * 16384
    assert gpu["gpu_memory_limit_source"].strip()
    t = gpu["dense_tflops"]
    assert t["fp16"] == t["bf16"] == t["fp32"] and t["fp8"] is None and t["int8"] is None
    assert gpu["name"].endswith(f"-{gb}GB") and gpu["architecture"] == "apple-" + gpu["name"].split("-")[0].lower()
    assert gpu["node_gpus"] == 1 and gpu["fabric_gbits"] in {40, 80}


def test_apple_bandwidth_by_chip_variant():
    """Memory bandwidth follows the chip and, for M3 Max and M4 Max, the GPU bin each memory size is sold with
    (Apple tech specs: M3 Max 30-core 300 GB/s with 36/96 GB, 40-core 400 GB/s with 48/64/128 GB; M4 Max 410 / 546)."""
    bw = {g["name"]: g["memory_bandwidth_gbps"] for g in APPLE}
    assert [bw[f"M3-Max-{gb}GB"] for gb in (36, 48, 64, 96, 128)] == [300, 400, 400, 300, 400]
    assert [bw[f"M4-Max-{gb}GB"] for gb in (36, 48, 64, 128)] == [410, 546, 546, 546]
    assert (bw["M1-8GB"], bw["M2-16GB"], bw["M3-Pro-18GB"], bw["M4-Pro-48GB"], bw["M3-Ultra-512GB"]) == (68.25, 100, 150, 273, 819)
    assert bw["M1-Ultra-128GB"] == bw["M2-Ultra-192GB"] == 800


def test_data_centre_additions():
    assert BY_NAME["A40"]["memory_bytes"] == 46068 * MIB            # nvidia-smi, ECC on
    assert BY_NAME["GH200-144GB"]["memory_bytes"] == 146831 * MIB   # nvidia-smi, driver 580
    assert BY_NAME["RTX-PRO-6000"]["memory_bytes"] == 97887 * MIB
    assert (BY_NAME["GH200-96GB"]["memory_bandwidth_gbps"], BY_NAME["GH200-144GB"]["memory_bandwidth_gbps"]) == (4000, 4900)
    assert BY_NAME["MI325X"]["dense_tflops"] == BY_NAME["MI300X"]["dense_tflops"]     # same CDNA3 compute
    assert BY_NAME["GH200-96GB"]["dense_tflops"] == BY_NAME["H100-SXM"]["dense_tflops"]
    assert BY_NAME["RX-7900-XTX"]["memory_bytes"] == 25753026560                  # rocm-smi


HOST = CATALOG["host_memory"]


@pytest.mark.parametrize("row", HOST, ids=lambda r: r["name"])
def test_host_memory_rows(row):
    """Peak bandwidth = MT/s x 8 bytes per 64-bit channel x channels, in GB/s; every row sourced."""
    assert set(row) == {"name", "memory_type", "mt_per_s", "channels", "bandwidth_gbps", "examples", "source"}
    assert row["bandwidth_gbps"] == round(row["mt_per_s"] * 8 * row["channels"] / 1000, 1)
    assert row["memory_type"] in {"ddr4", "ddr5", "lpddr5x"} and row["source"].strip() and row["examples"].strip()
    assert row["name"].upper().startswith(row["memory_type"].upper() + "-" + str(row["mt_per_s"]))


def test_host_memory_known_figures():
    by = {r["name"]: r["bandwidth_gbps"] for r in HOST}
    assert by["DDR4-3200-2ch"] == 51.2 and by["DDR5-5600-2ch"] == 89.6
    assert by["DDR5-4800-12ch"] == 460.8 and by["DDR4-3200-8ch"] == 204.8
