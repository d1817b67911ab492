"""The folders of `sizer quantize`: the source model folder it reads, and the output it writes atomically.

Outputs are written to a temporary folder beside the output and renamed at the end, so an
interrupted run leaves no half-written checkpoint under the output name; an existing output is
replaced only with `force`, and folders left by killed runs are removed by the next run.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from glob import escape as glob_escape
from pathlib import Path

from sizer.errors import InputFileError, SizerError, UsageError
from sizer.io import current_umask

PARTIAL = ".partial"          # suffix of an output being written: .<name>.<pid>.<random>.partial


@contextmanager
def atomic_output_dir(output: Path, force: bool):
    """Yield a temporary folder beside `output`; on success it becomes `output` (replacing an
    existing folder only with `force`), with the permissions the umask gives a new folder; on any
    failure, SIGTERM and SIGHUP included (handled as Ctrl-C), it is removed and `output` is untouched.
    Folders a killed run left (SIGKILL) are removed first."""
    check_output_dir(output, force)
    remove_stale_partials(output)
    with _signals_as_interrupt():
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.{os.getpid()}.", suffix=PARTIAL, dir=output.parent))
        except OSError as e:
            raise SizerError(f"{output}: cannot write in {output.parent} ({e.strerror})") from None
        try:
            yield tmp
            tmp.chmod(0o777 & ~current_umask())
            if output.exists():
                old = output.with_name(f".{output.name}.old-{os.getpid()}")
                output.rename(old)
                tmp.rename(output)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(output)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def check_output_dir(output: str | Path, force: bool) -> Path:
    """The output folder, refused before any work when it cannot be written as asked."""
    output = Path(output).expanduser()
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise UsageError(f"{output}: not a folder (a file, link or pipe): sizer quantize does not replace it")
    if output.exists() and not force:
        raise UsageError(f"{output}: already exists (use --force to replace it)")
    if not output.parent.is_dir():
        raise UsageError(f"{output}: folder {output.parent} does not exist")
    return output


def remove_stale_partials(output: Path) -> list[Path]:
    """Remove the temporary folders of `output` whose run is gone (its process id in the name no
    longer runs); return them."""
    removed = []
    for folder in output.parent.glob(f".{glob_escape(output.name)}.*{PARTIAL}"):
        pid = folder.name[len(output.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _running(int(pid)) and folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # alive, another user's
        pass
    return True


# Signals that end a run with its cleanup: `kill` (SIGTERM), Ctrl-C (SIGINT), a closed terminal (SIGHUP).
CLEANUP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@contextmanager
def _signals_as_interrupt():
    """CLEANUP_SIGNALS raise KeyboardInterrupt here, once: the first one unwinds the run, and any
    that follow (a second `kill`, Ctrl-C pressed twice) are ignored so they cannot cut the removal
    of the partial folder short. Main thread only (Python delivers signals there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        for other in CLEANUP_SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {signum: signal.signal(signum, interrupt) for signum in CLEANUP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def model_folder(path: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise UsageError(f"{path}: sizer quantize needs a model folder (config.json and *.safetensors)")
    if not (folder / "config.json").is_file():
        raise InputFileError(f"{folder}: no config.json in this folder")
    if not any(folder.glob("*.safetensors")):
        raise InputFileError(f"{folder}: no *.safetensors weights in this folder")
    return folder


def has_weights(ref: str) -> bool:
    folder = Path(ref).expanduser()
    return folder.is_dir() and any(folder.glob("*.safetensors"))
