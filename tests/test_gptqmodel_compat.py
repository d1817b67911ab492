"""sizer's GPTQ checkpoints load in GPTQModel (the maintained GPTQ library behind transformers and
optimum) with logits matching sizer's own loader.

GPTQModel runs in a subprocess: it takes seconds to import, and from the repository root our
`kernels/` folder would shadow the `kernels` package it imports.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
if importlib.util.find_spec("gptqmodel") is None:
    pytest.skip("gptqmodel is not installed (it is in the test extra)", allow_module_level=True)

from sizer.gptq_load import load_gptq  # noqa: E402
from sizer.gptq_run import GptqSettings, run_gptq  # noqa: E402
from sizer.testing import help_text_documents, make_llama  # noqa: E402

GPTQMODEL_LOGITS = """
import json, sys
import numpy as np, torch
from gptqmodel import BACKEND, GPTQModel
folder, ids_file, out_file = sys.argv[1:4]
model = GPTQModel.load(folder, device="cpu", backend=BACKEND.AUTO, dtype=torch.float32)
ids = torch.from_numpy(np.load(ids_file))
with torch.no_grad():
    logits = model.model(input_ids=ids).logits.float().numpy()
np.save(out_file, logits)
kernels = sorted({type(m).__name__ for m in model.model.modules() if "QuantLinear" in type(m).__name__
                  or "Linear" in type(m).__name__ and hasattr(m, "qweight")})
print(json.dumps({"dtype": str(model.model.dtype), "kernels": kernels}))
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_llama(tmp_path_factory.mktemp("src") / "tiny")


@pytest.mark.parametrize("settings", [dict(), dict(act_order=True, group_size=32)], ids=["default", "act-order-g32"])
def test_gptqmodel_logits_match_our_loader(source, tmp_path, settings):
    import numpy as np

    docs = help_text_documents()
    out = tmp_path / "ckpt"
    out.mkdir()
    run_gptq(source, out, GptqSettings(samples=8, seq_len=128, heldout_samples=0, **settings), docs[-300:])
    ids = torch.randint(0, 512, (2, 48), generator=torch.Generator().manual_seed(1))
    np.save(tmp_path / "ids.npy", ids.numpy())
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "GPTQMODEL_CPU_WORKERS": "2"}
    run = subprocess.run([sys.executable, "-c", GPTQMODEL_LOGITS, str(out), str(tmp_path / "ids.npy"),
                          str(tmp_path / "logits.npy")], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    info = json.loads(run.stdout.strip().splitlines()[-1])
    assert info["kernels"], info                                  # GPTQModel's own quantized Linear ran
    theirs = torch.from_numpy(np.load(tmp_path / "logits.npy"))
    with torch.no_grad():
        ours = load_gptq(out)(input_ids=ids).logits.float()
    assert theirs.shape == ours.shape
    assert float((theirs - ours).norm() / ours.norm()) < 1e-3
    assert float((theirs.argmax(-1) == ours.argmax(-1)).float().mean()) > 0.99
