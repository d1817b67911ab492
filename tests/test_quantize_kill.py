"""A `kill` (SIGTERM), a closed terminal (SIGHUP) or Ctrl-C (SIGINT) during `sizer quantize` removes
the hidden .partial output folder and exits non-zero; a real `python -m sizer quantize` process is
signalled once its partial folder exists."""

import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from sizer.testing import help_text_documents, make_llama  # noqa: E402


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("src")
    model = make_llama(folder / "tiny", dict(num_hidden_layers=4))
    (folder / "calib.txt").write_text("\n".join(help_text_documents()[-300:]))
    return model


def _wait_for(find, process, timeout_s: float):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and process.poll() is None:
        found = find()
        if found:
            return found
        time.sleep(0.02)
    return []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=["TERM", "HUP", "INT"])
def test_signal_removes_the_partial_folder(source, tmp_path, signum):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "sizer", "quantize", str(source), "--method", "gptq", "--group-size", "32",
               "--calibration-text", str(source.parent / "calib.txt"), "--samples", "64", "--seq-len", "256",
               "--heldout-samples", "8", "-o", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        partial = _wait_for(lambda: list(tmp_path.glob(".out.*.partial")), process, 120)
        assert partial, process.communicate()[1][-2000:]
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode != 0, stderr[-2000:]
    assert not partial[0].exists(), stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [], stderr[-2000:]
