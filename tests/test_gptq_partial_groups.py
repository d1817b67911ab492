"""Linear widths the group size does not divide (hidden 192 = 1.5 x 128, intermediate 352 = 2.75 x 128):
sizer writes GPTQ v1 with a partial last group (ceil(K / g) rows of scales and zeros, g_idx = k // g),
and sizer's loader, transformers (through optimum and GPTQModel) and GPTQModel itself read the same
weights and give the same logits. Sources of which kernels take it: docs/quantize.md."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from sizer.errors import UsageError  # noqa: E402
from sizer.kernels.gptq import dequantize, gptq_quantize, rtn_quantize  # noqa: E402
from sizer.kernels.gptq_pack import dequantize_gptq_v1, pack_gptq_v1  # noqa: E402
from sizer.quantize.load import load_gptq  # noqa: E402
from sizer.quantize.run import GptqSettings, gptq_format, run_gptq  # noqa: E402
from sizer.testing import help_text_documents, make_llama  # noqa: E402

WIDE = dict(hidden_size=192, intermediate_size=352, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=1)

# One process for the other two loaders (GPTQModel takes seconds to import): per checkpoint folder,
# transformers' from_pretrained with the backend GPTQModel picks itself on this CPU ("auto") and with
# its torch kernel, and GPTQModel's own load with both; float16. A loader that raises is recorded.
OTHER_LOADERS = """
import json, sys
import numpy as np, torch, transformers
from gptqmodel import BACKEND, GPTQModel
ids = torch.from_numpy(np.load(sys.argv[1]))
def transformers_load(folder, backend):
    config = transformers.GPTQConfig(bits=4, backend=backend)
    return transformers.AutoModelForCausalLM.from_pretrained(folder, device_map="cpu", dtype=torch.float16,
                                                             quantization_config=config)
def gptqmodel_load(folder, backend):
    return GPTQModel.load(folder, device="cpu", backend=getattr(BACKEND, backend.upper()), dtype=torch.float16).model
info = {}
for folder in sys.argv[2:]:
    for name, load in (("transformers", transformers_load), ("gptqmodel", gptqmodel_load)):
        for backend in ("auto", "torch"):
            key = name + "-" + backend
            model = load(folder, backend)
            if backend == "torch" and name == "gptqmodel":
                np.savez(folder + "/weights.npz", **{n: m.dequantize_weight().float().numpy()
                                                    for n, m in model.named_modules() if hasattr(m, "qweight")})
            info[folder + ":" + key] = type(model.model.layers[0].mlp.down_proj).__name__
            try:
                with torch.no_grad():
                    np.save(folder + "/logits_" + key + ".npy", model(input_ids=ids).logits.float().numpy())
            except RuntimeError as e:
                info[folder + ":" + key] += ": " + str(e).splitlines()[0]
print(json.dumps(info))
"""
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "GPTQMODEL_CPU_WORKERS": "1", "OMP_NUM_THREADS": "1"}


def test_rtn_partial_group_is_the_whole_groups_and_the_rest_quantized_apart():
    w = torch.randn(32, 352, generator=torch.Generator().manual_seed(0))
    q = rtn_quantize(w, 4, 128, sym=False)
    assert tuple(q.scales.shape) == (3, 32) and q.g_idx.tolist() == [k // 128 for k in range(352)]
    whole, rest = rtn_quantize(w[:, :256], 4, 128, sym=False), rtn_quantize(w[:, 256:], 4, -1, sym=False)
    assert torch.equal(q.scales, torch.cat([whole.scales, rest.scales]))
    assert torch.equal(q.zeros, torch.cat([whole.zeros, rest.zeros]))
    assert torch.equal(q.codes, torch.cat([whole.codes, rest.codes], dim=1))


@pytest.mark.parametrize("options", [dict(), dict(act_order=True), dict(act_order=True, static_groups=True)],
                         ids=["plain", "act-order", "static-groups"])
def test_gptq_with_an_identity_hessian_is_rtn_and_packs(options):
    """No correlation between inputs: no error feedback, so GPTQ's groups (partial one included) must be
    round-to-nearest's exactly; the v1 tensors hold ceil(352 / 128) = 3 groups and dequantize back."""
    w = torch.randn(64, 352, generator=torch.Generator().manual_seed(1))
    q = gptq_quantize(w, torch.eye(352), 4, 128, **options)
    r = rtn_quantize(w, 4, 128, sym=True)
    assert torch.equal(dequantize(q), dequantize(r))
    packed = pack_gptq_v1(q.codes, q.zeros, q.scales, q.g_idx, 4)
    assert tuple(packed["scales"].shape) == (3, 64) and tuple(packed["qzeros"].shape) == (3, 8)
    assert torch.equal(dequantize_gptq_v1(packed, 4, 352, 64), dequantize(q))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("partial")
    source = make_llama(root / "src", WIDE)
    docs = help_text_documents()[-300:]
    out = {}
    for group_size in (128, 64):
        folder = root / f"g{group_size}"
        folder.mkdir()
        run_gptq(source, folder, GptqSettings(gptq_format(group_size=group_size), samples=4, seq_len=128,
                                              heldout_samples=0), docs)
        out[group_size] = folder
    return out


def test_checkpoint_stores_ceil_groups(checkpoints):
    from safetensors import safe_open

    with safe_open(str(checkpoints[128] / "model.safetensors"), "pt") as f:
        down = "model.layers.0.mlp.down_proj."
        assert tuple(f.get_tensor(down + "scales").shape) == (3, 192)            # 352 = 2 x 128 + 96
        assert f.get_tensor(down + "g_idx").tolist() == [k // 128 for k in range(352)]
        assert tuple(f.get_tensor("model.layers.0.self_attn.q_proj.scales").shape) == (2, 192)   # 192 = 128 + 64
    with safe_open(str(checkpoints[64] / "model.safetensors"), "pt") as f:
        assert tuple(f.get_tensor("model.layers.0.mlp.down_proj.scales").shape) == (6, 192)   # 352 = 5 x 64 + 32
        assert tuple(f.get_tensor("model.layers.0.self_attn.q_proj.scales").shape) == (3, 192)


def test_int4_kernel_refuses_in_one_line(checkpoints):
    with pytest.raises(UsageError, match="not a multiple of the group size 128: torch's int4 kernel takes whole "
                                         "groups only, not a partial last group of 64"):
        load_gptq(checkpoints[128], kernel="int4")


@pytest.mark.skipif(importlib.util.find_spec("gptqmodel") is None or importlib.util.find_spec("optimum") is None,
                    reason="gptqmodel and optimum are in the test extra")
def test_three_loaders_agree(checkpoints, tmp_path):
    import numpy as np

    ids = torch.randint(0, 512, (2, 40), generator=torch.Generator().manual_seed(2))
    np.save(tmp_path / "ids.npy", ids.numpy())
    folders = [str(checkpoints[g]) for g in (128, 64)]
    run = subprocess.run([sys.executable, "-c", OTHER_LOADERS, str(tmp_path / "ids.npy"), *folders], cwd=tmp_path,
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    kernels = json.loads(run.stdout.strip().splitlines()[-1])
    for folder in folders:
        # GPTQModel 7.6 picks TorchAtenLinear on CPU (for transformers too): it claims to pad partial groups
        # (SUPPORTS_AUTO_PADDING) but torch's int4 op refuses them at the first forward
        for key in ("transformers-auto", "gptqmodel-auto"):
            assert kernels[f"{folder}:{key}"].startswith("TorchAtenLinear: _weight_int4pack_mm_cpu: expect K to be "
                                                         "divisible by qGroupSize"), kernels
        ours = load_gptq(folder, dtype=torch.float16)
        theirs = np.load(f"{folder}/weights.npz")
        assert len(theirs.files) == 7
        for name in theirs.files:                       # the same weights, bit for bit in float16
            mine = ours.get_submodule(name).dequantized(torch.float32).to(torch.float16).t().float().numpy()
            assert np.array_equal(theirs[name], mine), (folder, name)
        with torch.no_grad():
            reference = ours(input_ids=ids).logits.float()
        for key in ("transformers-torch", "gptqmodel-torch"):
            assert kernels[f"{folder}:{key}"] == "TorchLinear", kernels
            logits = torch.from_numpy(np.load(f"{folder}/logits_{key}.npy"))
            assert float((logits - reference).norm() / reference.norm()) < 0.01, (folder, key)
