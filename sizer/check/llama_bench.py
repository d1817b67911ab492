"""Rows of the markdown table llama-bench prints, read into numbers.

    | model          |       size |     params | backend    | ngl | test  |            t/s |
    | llama 7B Q4_0  |   3.56 GiB |     6.74 B | CUDA       |  99 | pp512 | 4035.47 ± 157.68 |

The columns depend on the options given (`threads`, `n_batch`, `n_ubatch`, `fa`, `type_k`, `mmap`,
...), so a row is read against its table's header row. The test names the work: `pp512` is a
prompt of 512 tokens, `tg128` 128 generated tokens, `pp4096+tg128` both, `pp512@d4096` a prompt
after 4096 tokens already in the cache; llama-bench before ~b1700 printed `pp 512` / `tg 128`.
Sizes are printed in GiB or MiB (x 2**30, x 2**20), parameters in B or M (kept in billions). The speed is the mean
and standard deviation over the repetitions; one published table has its "±" turned into "_" by a
lost encoding, read the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

UNIT_BYTES = {"GiB": 2**30, "MiB": 2**20, "KiB": 2**10}
PARAM_BILLIONS = {"B": Decimal(1), "M": Decimal("0.001"), "K": Decimal("0.000001")}
SIZE = re.compile(r"^(?P<value>\d+(?:\.\d+)?) (?P<unit>GiB|MiB|KiB)$")
PARAMS = re.compile(r"^(?P<value>\d+(?:\.\d+)?) (?P<unit>[BMK])$")
SPEED = re.compile(r"^(?P<mean>\d+(?:\.\d+)?)(?: (?:±|_|\+-) (?P<std>\d+(?:\.\d+)?))?$")
TEST = re.compile(r"^(?:pp ?(?P<prompt>\d+))?\+?(?:tg ?(?P<gen>\d+))?(?:@d(?P<depth>\d+))?$")
INT_COLUMNS = ("ngl", "threads", "n_batch", "n_ubatch", "fa", "mmap", "nkvo", "n_gpu_layers")
MODEL_QUANT = re.compile(r"^(?P<arch>\S+) (?P<size_label>\S+) (?P<quant>.+)$")


class BenchRowError(ValueError):
    """A line that is not a llama-bench row of the given header."""


@dataclass(frozen=True)
class BenchTest:
    """What a llama-bench test runs: prompt tokens, generated tokens, tokens already in the cache."""

    n_prompt: int
    n_gen: int
    depth: int = 0


@dataclass(frozen=True)
class BenchRow:
    model: str                       # as printed: "llama 7B Q4_0", "qwen2 14B Q4_K - Medium"
    size_bytes: int
    params_billions: float           # parameters in billions ("6.74 B" -> 6.74, "999.89 M" -> 0.99989)
    backend: str
    test: str                        # as printed: "pp512", "tg 128", "pp4096+tg128"
    tokens_per_s: float
    tokens_per_s_std: float | None
    options: dict[str, int | str] = field(default_factory=dict)   # ngl, threads, fa, n_ubatch, type_k, ...

    @property
    def quant(self) -> str | None:
        """The quantization part of the model description ("Q4_K - Medium" of "llama 7B Q4_K - Medium")."""
        m = MODEL_QUANT.match(self.model)
        return m["quant"] if m else None

    @property
    def run(self) -> BenchTest:
        return parse_test(self.test)


def split_cells(line: str) -> list[str]:
    """The cells of a markdown table row, stripped (`| a | b |` -> ["a", "b"])."""
    text = line.strip()
    if not (text.startswith("|") and text.endswith("|")):
        raise BenchRowError(f"not a table row: {line!r}")
    return [cell.strip() for cell in text[1:-1].split("|")]


def parse_header(line: str) -> list[str]:
    columns = split_cells(line)
    for required in ("model", "size", "params", "backend", "test", "t/s"):
        if required not in columns:
            raise BenchRowError(f"not a llama-bench header (no {required!r} column): {line!r}")
    return columns


def parse_size_bytes(text: str) -> int:
    m = SIZE.match(text)
    if not m:
        raise BenchRowError(f"not a size: {text!r}")
    return int((Decimal(m["value"]) * UNIT_BYTES[m["unit"]]).to_integral_value(rounding=ROUND_HALF_EVEN))


def parse_params_billions(text: str) -> float:
    m = PARAMS.match(text)
    if not m:
        raise BenchRowError(f"not a parameter count: {text!r}")
    return float(Decimal(m["value"]) * PARAM_BILLIONS[m["unit"]])


def parse_test(text: str) -> BenchTest:
    m = TEST.match(text)
    if not m or not (m["prompt"] or m["gen"]):
        raise BenchRowError(f"not a llama-bench test: {text!r}")
    return BenchTest(int(m["prompt"] or 0), int(m["gen"] or 0), int(m["depth"] or 0))


def parse_speed(text: str) -> tuple[float, float | None]:
    m = SPEED.match(text)
    if not m:
        raise BenchRowError(f"not a speed: {text!r}")
    return float(m["mean"]), (float(m["std"]) if m["std"] else None)


def parse_row(header: list[str], line: str) -> BenchRow:
    cells = split_cells(line)
    if len(cells) != len(header):
        raise BenchRowError(f"{len(cells)} cells for {len(header)} columns: {line!r}")
    row = dict(zip(header, cells))
    mean, std = parse_speed(row.pop("t/s"))
    parse_test(row["test"])
    options: dict[str, int | str] = {}
    for column in header:
        if column in ("model", "size", "params", "backend", "test", "t/s"):
            continue
        value = row[column]
        options[column] = int(value) if column in INT_COLUMNS and value.isdigit() else value
    return BenchRow(model=row["model"], size_bytes=parse_size_bytes(row["size"]),
                    params_billions=parse_params_billions(row["params"]), backend=row["backend"], test=row["test"],
                    tokens_per_s=mean, tokens_per_s_std=std, options=options)
