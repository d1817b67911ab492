"""Calibratable constants of the transformers profile, shipped in sizer/data/calibration.json.

`sizer calibrate RECORDS...` fits them from `sizer measure` records and writes a file of the same
shape; `estimate` and `fit` read the shipped default, or `--calibration FILE`.

Model: measured activation peak = activation_scale x predicted + activation_offset_bytes; the
process's device memory adds the CUDA context; decode reaches decode_bandwidth_efficiency of the
memory-bandwidth roofline and prefill prefill_compute_efficiency of the dense tensor throughput.

The vLLM profile's constants (`vllm`, optional) are fitted from `sizer check --record` records of
engine startup logs: the profiling run's peak and the non-torch memory as scales of sizer's
prediction, CUDA-graph memory in bytes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

from sizer.errors import InputFileError
from sizer.io import finite_number, read_json_input


@dataclass(frozen=True)
class VllmCalibration:
    activation_scale: float = 1.0           # measured profiling peak / sizer's
    non_torch_scale: float = 1.0            # measured non-torch memory / sizer's
    cuda_graph_bytes: int | None = None     # None: sizer.plan.engines.VLLM_CUDA_GRAPH_BYTES
    records: int = 0                        # logs it was fitted from
    source: str = ""


@dataclass(frozen=True)
class Calibration:
    cuda_context_bytes: int
    cublas_workspace_bytes: int
    allocator_slack_fraction: float
    activation_scale: float
    activation_offset_bytes: int
    decode_bandwidth_efficiency: float
    prefill_compute_efficiency: float
    source: str = ""
    records: int = 0
    vllm: VllmCalibration | None = None

    def activation_bytes(self, predicted: int) -> int:
        return max(0, int(self.activation_scale * predicted + self.activation_offset_bytes))

    def overhead_parts(self, activation_bytes: int, kv_cache_bytes: int) -> dict[str, int]:
        return {
            "cuda_context": self.cuda_context_bytes,
            "cublas_workspace": self.cublas_workspace_bytes,
            "allocator_slack": int(self.allocator_slack_fraction * (activation_bytes + kv_cache_bytes)),
        }

    def to_json(self) -> str:
        data = asdict(self)
        if self.vllm is None:
            data.pop("vllm")
        return json.dumps(data, indent=2) + "\n"


def load_calibration(path: str | Path) -> Calibration:
    """A calibration file written by `sizer calibrate` (or the shipped sizer/data/calibration.json)."""
    p = Path(path)
    raw = read_json_input(p, "calibration file")
    names = {f.name for f in fields(Calibration)} - {"vllm"}
    required = names - {"source", "records"}
    if not isinstance(raw, dict) or not required <= set(raw):
        missing = sorted(required - set(raw)) if isinstance(raw, dict) else sorted(required)
        raise InputFileError(f"{p}: not a calibration file (missing {', '.join(missing)})")
    values = {k: raw[k] for k in names if k in raw}
    if not all(isinstance(values[k], (int, float)) and not isinstance(values[k], bool) for k in required):
        raise InputFileError(f"{p}: calibration constants must be numbers")
    for k in required:
        finite_number(values[k], str(p), k)          # 1e999 or a 400-digit integer is no constant
    for k in ("cuda_context_bytes", "cublas_workspace_bytes", "activation_offset_bytes"):
        values[k] = int(values[k])
    return Calibration(**values, vllm=_vllm_section(raw.get("vllm"), p))


def _vllm_section(raw, path: Path) -> VllmCalibration | None:
    if raw is None:
        return None
    names = {f.name for f in fields(VllmCalibration)}
    if not isinstance(raw, dict) or set(raw) - names:
        raise InputFileError(f"{path}: the vllm section holds {', '.join(sorted(names))}")
    for k in ("activation_scale", "non_torch_scale", "cuda_graph_bytes"):
        if raw.get(k) is not None:
            finite_number(raw[k], str(path), f"vllm.{k}")
            if not 0 <= raw[k] <= (1 << 40):
                raise InputFileError(f"{path}: vllm.{k} is out of range ({raw[k]})")
    graphs = raw.get("cuda_graph_bytes")
    return VllmCalibration(float(raw.get("activation_scale", 1.0)), float(raw.get("non_torch_scale", 1.0)),
                           None if graphs is None else int(graphs), int(raw.get("records", 0)),
                           str(raw.get("source", "")))


@lru_cache(maxsize=1)
def default_calibration() -> Calibration:
    from sizer.catalog import data_dir

    return load_calibration(data_dir() / "calibration.json")


def resolve(calibration: Calibration | str | Path | None) -> Calibration:
    if calibration is None:
        return default_calibration()
    if isinstance(calibration, Calibration):
        return calibration
    return load_calibration(calibration)
