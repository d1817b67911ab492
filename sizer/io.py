"""Files in and out. In: the text files sizer reads (configs, calibrations, records) only when they
are regular files of a sane size, decoded and parsed into one clear error line otherwise (a FIFO
would block for ever; a 200 MB "config" would take minutes). Out: atomically (a temporary file in
the same folder, then a rename), and never over an existing file without `force`."""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from pathlib import Path

from sizer.errors import InputFileError, SizerError, UsageError

# The largest text input sizer reads: config.json files of released models are under 100 kB (with
# their quantization maps, a few MB); calibration and record files are smaller still.
MAX_TEXT_INPUT_BYTES = 64 * 2**20


def regular_file_size(path: Path, what: str) -> int:
    """The size of `path` in bytes, refusing anything but a regular file (FIFO, socket, device)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such {what}") from None
    except OSError as e:
        raise InputFileError(f"{path}: cannot read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputFileError(f"{path}: is a folder, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise InputFileError(f"{path}: not a regular file (a pipe, socket or device cannot be a {what})")
    return st.st_size


def read_text_input(path: str | os.PathLike, what: str, max_bytes: int = MAX_TEXT_INPUT_BYTES) -> str:
    """A UTF-8 text file `what` ("config file", "record file") that sizer parses."""
    p = Path(path)
    size = regular_file_size(p, what)
    if size > max_bytes:
        raise InputFileError(f"{p}: {size:,} bytes is too large for a {what} (at most {max_bytes:,})")
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(f"{p}: not a {what} (not UTF-8 text)") from None
    except OSError as e:
        raise InputFileError(f"{p}: cannot read ({e.strerror})") from None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def parse_json(text: str, origin: str, what: str, invalid: str = "not valid JSON"):
    """JSON as Python values; NaN, Infinity and nesting deeper than Python's stack are refused
    (`invalid` starts the message)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise InputFileError(f"{origin}: {invalid} (JSON nested too deeply for a {what})") from None
    except ValueError as e:
        raise InputFileError(f"{origin}: {invalid} ({e})") from None


def read_json_input(path: str | os.PathLike, what: str, max_bytes: int = MAX_TEXT_INPUT_BYTES):
    return parse_json(read_text_input(path, what, max_bytes), str(path), what)


def finite_number(value, origin: str, name: str) -> float:
    """A JSON number that is finite (float() of a huge integer overflows)."""
    try:
        number = float(value)
    except (OverflowError, TypeError, ValueError):
        raise InputFileError(f"{origin}: {name} must be a finite number, got {value!r}") from None
    if not math.isfinite(number):
        raise InputFileError(f"{origin}: {name} must be a finite number, got {value!r}")
    return number


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _refuse_target(target: Path, force: bool) -> None:
    """An output path sizer may write: a regular file (replaced only with `force`) or nothing yet."""
    try:
        exists, is_dir, is_link = target.exists(), target.is_dir(), target.is_symlink()
        regular = target.is_file()
    except OSError as e:                         # a name too long for the file system, say
        raise UsageError(f"{str(target)[:80]}: {e.strerror}") from None
    if is_dir:
        raise UsageError(f"{target}: is a folder")
    if is_link or (exists and not regular):
        raise UsageError(f"{target}: not a regular file (a link, pipe or device): sizer does not replace it")
    if exists and not force:
        raise UsageError(f"{target}: already exists (use --force to overwrite)")


def write_atomic(path: str | os.PathLike, text: str, force: bool = False) -> None:
    """`text` into `path` through a temporary file and a rename, with the permissions the umask gives
    a new file (mkstemp's own are 0600)."""
    target = Path(path)
    _refuse_target(target, force)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{target}: folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise SizerError(f"{target}: cannot write in {folder} ({e.strerror})") from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, target)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise SizerError(f"{target}: cannot write ({e.strerror})") from None
