"""The machines people own: loose GPU names, the ambiguity message, and `--gpus local` detection from recorded
tool outputs (tests/data/local_machines/README.md says where each came from)."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import sizer.env.hardware as hardware
from sizer.catalog import get_gpu, gpu_entries, host_memory_entries, loose_key
from sizer.cli import cli
from sizer.errors import UsageError
from sizer.gpuspec import apple_gpu_wired_limit_bytes, local_spec, parse_gpus, usable_memory_bytes
from sizer.plan.recommend import rentable_gpus

DATA = Path(__file__).parent / "data" / "local_machines"
GIB = 1 << 30
MIB = 1 << 20


def fixture(name: str) -> str:
    return (DATA / name).read_text()


# ---------------------------------------------------------------------------------------------
# Names

@pytest.mark.parametrize("name", list(gpu_entries()))
def test_every_entry_resolves_by_its_name_and_spellings(name):
    """Each spelling of each entry, written loosely, means that entry and no other (so no two entries share a
    loose spelling)."""
    gpu = gpu_entries()[name]
    for spelling in (name, name.lower(), name.replace("-", " "), name.upper().replace("-", ""), gpu.full_name,
                     *gpu.aliases):
        assert get_gpu(spelling).name == name, spelling


@pytest.mark.parametrize("spelling, name", [
    ("4090", "RTX-4090"), ("rtx4090", "RTX-4090"), ("RTX 4090", "RTX-4090"), ("NVIDIA GeForce RTX 4090", "RTX-4090"),
    ("geforce-rtx-4090", "RTX-4090"), ("m3-max-64gb", "M3-Max-64GB"), ("M3 Max 64GB", "M3-Max-64GB"),
    ("Apple M3 Max 64 GB", "M3-Max-64GB"), ("m3max64gb", "M3-Max-64GB"), ("M2 Ultra 192GiB", "M2-Ultra-192GB"),
    ("7900xtx", "RX-7900-XTX"), ("RX 7900 XTX", "RX-7900-XTX"), ("AMD Radeon RX 7900 XTX", "RX-7900-XTX"),
    ("7900 xt", "RX-7900-XT"), ("a770", "Arc-A770-16GB"), ("Intel Arc A770", "Arc-A770-16GB"),
    ("Intel(R) Arc(TM) A770 Graphics", "Arc-A770-16GB"), ("b580", "Arc-B580"), ("4070 Ti Super", "RTX-4070-Ti-Super"),
    ("rtx 4060 ti 16gb", "RTX-4060-Ti-16GB"), ("3060", "RTX-3060-12GB"), ("rtx-5060-ti", "RTX-5060-Ti-16GB"),
    ("2080ti", "RTX-2080-Ti"), ("rtx pro 6000", "RTX-PRO-6000"),
    ("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "RTX-PRO-6000"), ("nvidia gh200 480gb", "GH200-96GB"),
    ("NVIDIA GH200 144G HBM3e", "GH200-144GB"), ("Instinct MI325X", "MI325X"),
    # the catalog's earlier names keep resolving as before
    ("h100", "H100-SXM"), ("NVIDIA H100 80GB HBM3", "H100-SXM"), ("a100", "A100-80GB"), ("RTX A6000", "RTX-A6000"),
    ("RTX 6000 Ada", "RTX-6000-Ada"), ("L40", "L40"), ("l40s", "L40S"), ("A10", "A10"), ("v100", "V100-16GB"),
])
def test_loose_spellings(spelling, name):
    assert get_gpu(spelling).name == name


def test_loose_key_drops_case_separators_and_vendor_words():
    assert loose_key("NVIDIA GeForce RTX 4090") == loose_key("rtx-4090") == loose_key("4090") == "4090"
    assert loose_key("Apple M3 Max 64 GiB") == "m3max64gb"
    assert loose_key("AMD Radeon RX 7900 XTX") == "7900xtx"


def test_3080_means_the_original_10gb_card():
    """NVIDIA sold 'RTX 3080' (10 GB, 2020) and later an 'RTX 3080 12GB': the plain name is the 10 GB one."""
    assert get_gpu("3080").name == "RTX-3080-10GB"
    assert get_gpu("RTX 3080 12GB").name == "RTX-3080-12GB"


@pytest.mark.parametrize("spelling, choices", [
    ("m3 max", ["M3-Max-36GB", "M3-Max-48GB", "M3-Max-64GB", "M3-Max-96GB", "M3-Max-128GB"]),
    ("m3max", ["M3-Max-36GB", "M3-Max-48GB", "M3-Max-64GB", "M3-Max-96GB", "M3-Max-128GB"]),
    ("Apple M4", ["M4-16GB", "M4-24GB", "M4-32GB"]),
    ("4060 ti", ["RTX-4060-Ti-8GB", "RTX-4060-Ti-16GB"]),
    ("gh200", ["GH200-96GB", "GH200-144GB"]),
    ("M3 Max 32GB", ["M3-Max-36GB", "M3-Max-48GB", "M3-Max-64GB", "M3-Max-96GB", "M3-Max-128GB"]),  # not a size sold
])
def test_a_name_without_its_memory_size_lists_the_choices_in_one_line(spelling, choices):
    with pytest.raises(UsageError) as e:
        get_gpu(spelling)
    message = str(e.value)
    assert "\n" not in message and f"{', '.join(choices)};" in message


def test_unknown_name_still_suggests():
    with pytest.raises(UsageError, match="unknown GPU 'rtx 9090'.*did you mean"):
        get_gpu("rtx 9090")


@pytest.mark.parametrize("text, label", [
    ("7900xtx", "RX-7900-XTX"), ("2x7900xtx", "2xRX-7900-XTX"), ("2x4090", "2xRTX-4090"), ("2x RTX 3090", "2xRTX-3090"),
    ("M3-Max-64GB", "M3-Max-64GB"), ("2xm2 ultra 192gb", "2xM2-Ultra-192GB"), ("2x8xH100", "2x8xH100-SXM"),
    ("48GB", "48GB"),
])
def test_gpus_option_reads_names_that_start_with_digits_and_x(text, label):
    assert parse_gpus(text).label == label


def test_gpus_option_ambiguous_and_bad_counts():
    with pytest.raises(UsageError, match="RTX-4060-Ti-8GB, RTX-4060-Ti-16GB"):
        parse_gpus("2x4060 ti")
    with pytest.raises(UsageError, match="between 1 and"):
        parse_gpus("0x7900xtx")


def test_apple_plans_with_the_gpu_wired_share():
    assert usable_memory_bytes(get_gpu("M3-Max-64GB")) == 48 * GIB
    assert usable_memory_bytes(get_gpu("M1-16GB")) == 11453251584           # 2/3 of 16 GiB in 16 KiB pages
    # the logged recommendedMaxWorkingSetSize the rule reproduces (llama.cpp prints bytes / 1e6 as "MB")
    for gib, logged_mb in ((16, 11453.25), (32, 22906.50), (36, 28991.03), (64, 51539.61)):
        assert round(apple_gpu_wired_limit_bytes(gib * GIB) / 1e6, 2) == logged_mb


def test_recommend_ranks_only_rentable_gpus():
    names = {g.name for g in rentable_gpus()}
    assert {"RTX-4090", "RTX-3090", "H100-SXM", "MI300X", "A40", "MI325X"} <= names
    assert not any(n.startswith(("M1", "M2", "M3", "M4")) for n in names)
    assert "RTX-4060" not in names and "RX-7900-XTX" not in names


def test_host_memory_table_is_loaded():
    rows = host_memory_entries()
    assert rows["DDR5-5600-2ch"].bandwidth_gbps == 89.6 and rows["DDR5-4800-12ch"].channels == 12


# ---------------------------------------------------------------------------------------------
# Parsing recorded tool outputs

def test_nvidia_smi_csv():
    gpus = hardware.parse_nvidia_smi_csv(fixture("nvidia-smi-2x-rtx4090.csv"))
    assert [(g.index, g.name, g.memory_bytes, g.driver) for g in gpus] == [
        (0, "NVIDIA GeForce RTX 4090", 24564 * MIB, "550.127.05"), (1, "NVIDIA GeForce RTX 4090", 24564 * MIB, "550.127.05")]
    assert gpus[0].memory_free_bytes == 24082 * MIB and gpus[0].vendor == "nvidia"
    # the two-column form (name, memory.total) that other tools query
    assert hardware.parse_nvidia_smi_csv("NVIDIA A40, 46068\n")[0].memory_bytes == 46068 * MIB
    assert hardware.parse_nvidia_smi_csv("No devices were found\n") == []


def test_rocm_smi_json_drops_the_integrated_gpu():
    gpus = hardware.parse_rocm_smi_json(fixture("rocm-smi-rx7900xtx.json"))
    assert [(g.name, g.memory_bytes) for g in gpus] == [("Radeon RX 7900 XTX", 25753026560), ("Raphael", 2 * GIB)]
    assert gpus[0].memory_free_bytes == 25753026560 - 15960199168 and gpus[0].vendor == "amd"
    assert [g.name for g in hardware.without_integrated(gpus)] == ["Radeon RX 7900 XTX"]
    assert hardware.parse_rocm_smi_json("not json") == [] and hardware.parse_rocm_smi_json("[]") == []


def test_rocm_smi_pci_ids_name_is_told_apart_by_memory():
    [gpu] = hardware.parse_rocm_smi_json(fixture("rocm-smi-navi31-pciids.json"))
    assert local_spec(gpu).name == "RX-7900-XTX"


def test_apple_sysctl():
    mac = hardware.parse_apple_sysctl(fixture("sysctl-apple-m1pro-16gb.txt"))
    assert (mac.name, mac.memory_bytes, mac.vendor, mac.unified, mac.gpu_limit_bytes) == (
        "Apple M1 Pro", 16 * GIB, "apple", True, None)
    raised = hardware.parse_apple_sysctl(fixture("sysctl-apple-m2max-64gb.txt"), fixture("sysctl-apple-m2max-64gb-wired.txt"))
    assert raised.gpu_limit_bytes == 59392 * MIB
    default = hardware.parse_apple_sysctl(fixture("sysctl-apple-m5max-128gb.txt"), fixture("sysctl-apple-m5max-128gb-wired.txt"))
    assert default.gpu_limit_bytes is None                      # iogpu.wired_limit_mb=0: the macOS default
    assert hardware.parse_apple_sysctl(fixture("sysctl-intel-mac.txt")) is None


def test_meminfo_total():
    assert hardware.parse_meminfo_total(fixture("proc-meminfo-cpu-only.txt")) == 24683772 * 1024


# ---------------------------------------------------------------------------------------------
# --gpus local end to end, with the tools answering from the fixtures

def fake_machine(monkeypatch, system="Linux", outputs=None):
    """This machine as one with `outputs` (command -> fixture file), and no NVML."""
    outputs = outputs or {}

    def run_tool(argv, timeout_s=hardware.TOOL_TIMEOUT_S):
        name = outputs.get(" ".join(argv))
        return fixture(name) if name else None

    monkeypatch.setattr(hardware, "run_tool", run_tool)
    monkeypatch.setattr(hardware, "_nvml_gpus", lambda: ([], ""))
    monkeypatch.setattr(hardware.platform, "system", lambda: system)


def test_local_nvidia_through_nvidia_smi(monkeypatch):
    fake_machine(monkeypatch, outputs={" ".join(hardware.NVIDIA_SMI): "nvidia-smi-2x-rtx4090.csv"})
    selection = parse_gpus("local")
    assert selection.label == "2xRTX-4090" and selection.gpu.memory_bytes == 24564 * MIB
    assert "driver 550.127.05" in selection.gpu.full_name


def test_local_amd_through_rocm_smi(monkeypatch):
    fake_machine(monkeypatch, outputs={" ".join(hardware.ROCM_SMI): "rocm-smi-rx7900xtx.json"})
    selection = parse_gpus("local")
    assert selection.label == "1xRX-7900-XTX" and selection.gpu.memory_bytes == 25753026560


def test_local_mac_default_and_raised_wired_limit(monkeypatch):
    fake_machine(monkeypatch, "Darwin", {" ".join(hardware.APPLE_SYSCTL): "sysctl-apple-m2max-64gb.txt"})
    mac = parse_gpus("local").gpu
    assert mac.name == "M2-Max-64GB" and usable_memory_bytes(mac) == 48 * GIB     # 51539.61 MB as logged on an M2 Max
    assert "the macOS default; raise it with sudo sysctl iogpu.wired_limit_mb=N" in mac.full_name
    fake_machine(monkeypatch, "Darwin", {" ".join(hardware.APPLE_SYSCTL): "sysctl-apple-m2max-64gb.txt",
                                         " ".join(hardware.APPLE_WIRED_LIMIT): "sysctl-apple-m2max-64gb-wired.txt"})
    assert usable_memory_bytes(parse_gpus("local").gpu) == 59392 * MIB


def test_local_mac_not_in_the_catalog(monkeypatch):
    fake_machine(monkeypatch, "Darwin", {" ".join(hardware.APPLE_SYSCTL): "sysctl-apple-m5max-128gb.txt",
                                         " ".join(hardware.APPLE_WIRED_LIMIT): "sysctl-apple-m5max-128gb-wired.txt"})
    gpu = parse_gpus("local").gpu
    assert gpu.name == "128GB" and gpu.vendor == "apple" and usable_memory_bytes(gpu) == 96 * GIB


def test_cpu_only_machine_says_so_in_one_line(monkeypatch):
    fake_machine(monkeypatch)
    monkeypatch.setattr(hardware, "system_ram_bytes", lambda: 24683772 * 1024)
    monkeypatch.setattr(hardware, "cpu_model_name", lambda: "AMD EPYC")
    found, reason = hardware.local_gpus()
    assert found == [] and reason == (
        "no local GPUs found: CPU-only (AMD EPYC, 23.5 GiB RAM); no NVIDIA GPU (NVML, nvidia-smi), no AMD GPU "
        "(rocm-smi), not Apple Silicon")
    r = CliRunner().invoke(cli, ["gpus"])
    assert r.exit_code == 0 and r.output.rstrip().splitlines()[-1] == reason
    r = CliRunner().invoke(cli, ["fit", "llama3-8b", "--gpus", "local"])
    assert r.exit_code == 2 and "CPU-only (AMD EPYC, 23.5 GiB RAM)" in r.output


def test_gpus_lists_what_it_found(monkeypatch):
    fake_machine(monkeypatch, "Darwin", {" ".join(hardware.APPLE_SYSCTL): "sysctl-apple-m1pro-16gb.txt"})
    r = CliRunner().invoke(cli, ["gpus", "--format", "json"])
    [row] = json.loads(r.output)["local"]
    assert (row["name"], row["vendor"], row["catalog"], row["usable_memory_bytes"]) == (
        "Apple M1 Pro", "apple", "M1-Pro-16GB", 11453251584)
