"""The model and GPU catalogs in `sizer.data`: loaded lazily, once; lookup by name, alias, hub id.

Model entries (sizer/data/models/*.json) hold a Hugging Face config.json under "config", so a catalog
model and a user's own config.json go through the same normalizer. GPU entries (sizer/data/gpus.json)
hold memory in bytes, bandwidth in GB/s, dense tensor TFLOP/s and an indicative price.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sizer.errors import UsageError


def data_dir() -> Path:
    import sizer.data

    return Path(sizer.data.__file__).parent


def _key(name: str) -> str:
    return name.strip().lower()


@dataclass(frozen=True)
class CatalogModel:
    name: str
    hf_id: str
    aliases: tuple[str, ...]
    source: str
    config: dict
    params: int | None
    quantized: tuple[dict, ...] = ()     # the official quantized checkpoints: {precision, as, hf_id, source}
    released: str | None = None          # first public release, "YYYY-MM-DD" or "YYYY-MM" (release_month)
    released_source: str = ""            # where that date is stated


_RELEASED = re.compile(r"(\d{4})-(\d{2})(?:-(\d{2}))?")


def release_month(released: str | None) -> int | None:
    """A release date ("YYYY-MM-DD" or "YYYY-MM") as a month count (year * 12 + month - 1), None when
    absent; a malformed or impossible date is refused (ValueError)."""
    if released is None:
        return None
    import datetime

    m = _RELEASED.fullmatch(released) if isinstance(released, str) else None
    if not m:
        raise ValueError(f"release date {released!r}: expected YYYY-MM-DD or YYYY-MM")
    year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
    try:
        datetime.date(year, month, day)  # refuses month 13, February 30
    except ValueError as e:
        raise ValueError(f"release date {released!r}: {e}") from None
    return year * 12 + month - 1


@lru_cache(maxsize=1)
def model_entries() -> dict[str, CatalogModel]:
    """Canonical name -> entry, in name order."""
    entries = {}
    for path in sorted((data_dir() / "models").glob("*.json")):
        raw = json.loads(path.read_text())
        entries[raw["name"]] = CatalogModel(raw["name"], raw.get("hf_id", ""), tuple(raw.get("aliases", ())),
                                            raw.get("source", ""), raw["config"], raw.get("params"),
                                            tuple(raw.get("quantized", ())), raw.get("released"),
                                            raw.get("released_source", ""))
    return dict(sorted(entries.items(), key=lambda kv: kv[0].lower()))


@lru_cache(maxsize=1)
def _model_index() -> dict[str, str]:
    """Every accepted spelling (lower-case) -> canonical name."""
    index: dict[str, str] = {}
    for name, entry in model_entries().items():
        for spelling in (name, entry.hf_id, *entry.aliases):
            if spelling:
                index.setdefault(_key(spelling), name)
                index.setdefault(_key(spelling.split("/")[-1]), name)
    return index


def did_you_mean(name: str, candidates: list[str], n: int = 3) -> str:
    """"; did you mean A, B?" for the candidates closest to `name` (compared in lower case), or ""."""
    by_key = {}
    for candidate in candidates:
        by_key.setdefault(_key(candidate), candidate)
    close = difflib.get_close_matches(_key(name), list(by_key), n=n, cutoff=0.5)
    return f"; did you mean {', '.join(by_key[k] for k in close)}?" if close else ""


def catalog_hub_ids() -> list[str]:
    """The Hugging Face repository ids of the catalog's models."""
    return sorted(entry.hf_id for entry in model_entries().values() if entry.hf_id)


def find_model(name: str) -> CatalogModel | None:
    canonical = _model_index().get(_key(name))
    return model_entries()[canonical] if canonical else None


def get_catalog_model(name: str) -> CatalogModel:
    entry = find_model(name)
    if entry is None:
        raise UsageError(f"unknown model {name!r}{did_you_mean(name, list(_model_index()))} "
                         "(see `sizer models`, or pass a config.json, a safetensors folder or a .gguf file)")
    return entry


# ---------------------------------------------------------------------------------------------
# GPUs


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model. Memory in bytes as the driver reports it; bandwidth in GB/s (10^9 B/s);
    dense tensor throughput in TFLOP/s (TOP/s for int8); price in USD per GPU-hour."""

    name: str
    full_name: str
    aliases: tuple[str, ...]
    vendor: str
    architecture: str
    memory_gib_marketed: float
    memory_bytes: int
    memory_bandwidth_gbps: float
    dense_tflops: dict
    tdp_watts: int | None
    interconnect: str
    price_per_hour_usd: float | None
    price_source: str
    price_date: str
    source: str
    cuda_memory_bytes: int | None = None    # what CUDA reports as total (cudaMemGetInfo), where measured
    cuda_memory_source: str = ""
    compute_capability: str | None = None   # NVIDIA's "major.minor" (CUDA GPUs page); None: not NVIDIA or unknown
    compute_capability_source: str = ""
    node_gpus: int = 8                      # the most GPUs of this kind in one node (server)
    node_link: str = ""                     # how GPUs talk inside a node: nvlink, pcie, infinity-fabric
    node_link_gbps: float | None = None     # that link's bandwidth per GPU, GB/s each way
    fabric_gbits: float | None = None       # the network between nodes, Gb/s per node (as NICs are sold)
    node_source: str = ""
    market: str = "datacenter"              # consumer, apple: cards and Macs people buy rather than rent
    launch_price_usd: float | None = None   # the vendor's launch price (machines people own)
    gpu_memory_limit_bytes: int | None = None   # unified memory (Apple): the share the GPU may wire by default

    @property
    def owned(self) -> bool:
        """A card or Mac people buy (no hourly listing expected), as opposed to a datacenter GPU."""
        return self.market != "datacenter"

    @property
    def capability(self) -> tuple[int, int] | None:
        """The compute capability as (major, minor), what engines compare against; None when unknown."""
        if not self.compute_capability:
            return None
        major, _, minor = self.compute_capability.partition(".")
        return int(major), int(minor or 0)


@lru_cache(maxsize=1)
def gpu_entries() -> dict[str, GpuSpec]:
    raw = json.loads((data_dir() / "gpus.json").read_text())
    fields = GpuSpec.__dataclass_fields__
    gpus = {}
    for entry in raw["gpus"]:
        values = {k: entry[k] for k in fields if k in entry}
        values["aliases"] = tuple(entry.get("aliases", ()))
        gpus[entry["name"]] = GpuSpec(**values)
    return gpus


# Loose GPU names: "RTX 4090", "rtx4090", "NVIDIA GeForce RTX 4090", "4090", "M3 Max 64GB", "7900xtx", "a770"
# all reduce to one key: lower case, vendor and brand words dropped, then only letters and digits kept.
_BRAND_WORDS = re.compile(r"\b(?:nvidia|geforce|tesla|amd|radeon|instinct|intel|apple|graphics|gpu)\b|\(r\)|\(tm\)")
_SERIES_PREFIX = re.compile(r"\b(?:rtx|rx|arc)[\s_-]*(?=[a-z]?\d|pro)")
_TRAILING_MEMORY = re.compile(r"[\s_-]+\d+\s*(?:gb|gib|g)\s*$", re.IGNORECASE)


def loose_key(name: str) -> str:
    """`name` reduced to what tells GPUs apart: "NVIDIA GeForce RTX 4090" -> "4090", "M3 Max 64 GB" -> "m3max64gb"."""
    text = _BRAND_WORDS.sub(" ", name.strip().lower())
    text = _SERIES_PREFIX.sub("", text)
    text = re.sub(r"[^a-z0-9]+", "", text.replace("gib", "gb"))
    return text


def _family_key(spelling: str) -> str:
    """The loose key of `spelling` without a memory size at its end ("M3-Max-64GB" -> "m3max", "M1 8GB" -> "m1"):
    names one product sold in several sizes."""
    return loose_key(_TRAILING_MEMORY.sub("", spelling))


@lru_cache(maxsize=1)
def _gpu_index() -> dict[str, str]:
    """Every spelling of the catalog (lower case, as written) -> canonical name."""
    index: dict[str, str] = {}
    for name, gpu in gpu_entries().items():
        for spelling in (name, gpu.full_name, *gpu.aliases):
            index.setdefault(_key(spelling), name)
    return index


@lru_cache(maxsize=1)
def _gpu_loose_index() -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """(loose key -> the entries spelled so, family key -> the entries of that product in every memory size)."""
    loose: dict[str, list[str]] = {}
    family: dict[str, list[str]] = {}
    for spelling, name in _gpu_index().items():
        key = loose_key(spelling)
        if key and name not in loose.setdefault(key, []):
            loose[key].append(name)
        fam = _family_key(spelling)
        if fam and fam != key and name not in family.setdefault(fam, []):
            family[fam].append(name)
    return ({k: tuple(v) for k, v in loose.items()}, {k: tuple(v) for k, v in family.items()})


def gpu_candidates(name: str) -> tuple[str, ...]:
    """The catalog entries `name` may mean: one for a name that resolves, several for a product sold in
    several memory sizes ("m3 max", "4060 ti"), none for an unknown name."""
    canonical = _gpu_index().get(_key(name))
    if canonical:
        return (canonical,)
    key = loose_key(name)
    loose, family = _gpu_loose_index()
    return loose.get(key) or family.get(key) or family.get(_family_key(name)) or ()


def get_gpu(name: str) -> GpuSpec:
    """A GPU by catalog name or alias, spelled loosely (case, spaces, hyphens and vendor words do not
    matter), with "did you mean" when unknown and the choices when the name fits several entries."""
    found = gpu_candidates(name)
    if len(found) == 1:
        return gpu_entries()[found[0]]
    if found:
        sizes = sorted(found, key=lambda n: (gpu_entries()[n].memory_bytes, n))
        raise UsageError(f"GPU {name!r} fits several catalog entries, one per memory size: {', '.join(sizes)}; "
                         f"name one, e.g. {sizes[-1]}")
    raise UsageError(f"unknown GPU {name!r}{did_you_mean(name, list(_gpu_index()))} (see `sizer gpus`)")


# ---------------------------------------------------------------------------------------------
# Host memory: CPU-only runs read weights from system RAM


@dataclass(frozen=True)
class HostMemory:
    """Peak bandwidth of one DDR generation and channel count (gpus.json "host_memory")."""

    name: str
    memory_type: str
    mt_per_s: int            # transfers per second, millions (DDR5-5600: 5600)
    channels: int            # 64-bit channels (per socket)
    bandwidth_gbps: float    # peak, GB/s (10^9 B/s)
    examples: str
    source: str


@lru_cache(maxsize=1)
def host_memory_entries() -> dict[str, HostMemory]:
    raw = json.loads((data_dir() / "gpus.json").read_text())
    return {row["name"]: HostMemory(**row) for row in raw.get("host_memory", ())}
