"""MODEL as a Hugging Face repository id, read from a local HTTP server that answers the way the Hub
does (HF_ENDPOINT): model info, resolve/<revision>/<file> with a redirect for LFS files and Range
requests, RepoNotFound, GatedRepo. Every run is a fresh `python -m sizer` in its own environment (the
Hub's settings are read when huggingface_hub is imported)."""

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sizer.inputs.hub import hf_cache_dir, parse_repo_id

from conftest import ROOT

np = pytest.importorskip("numpy")
save_file = pytest.importorskip("safetensors.numpy").save_file

TINY = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 128,
        "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 512, "max_position_embeddings": 1024, "tie_word_embeddings": False,
        "torch_dtype": "float16"}
SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_test_token"


def tiny_llama_tensors() -> dict:
    h, kv, ff, v = 128, 64, 256, 512
    t = {"model.embed_tokens.weight": (v, h), "lm_head.weight": (v, h), "model.norm.weight": (h,)}
    for i in range(2):
        p = f"model.layers.{i}."
        t |= {p + "self_attn.q_proj.weight": (h, h), p + "self_attn.k_proj.weight": (kv, h),
              p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, h),
              p + "mlp.gate_proj.weight": (ff, h), p + "mlp.up_proj.weight": (ff, h),
              p + "mlp.down_proj.weight": (h, ff), p + "input_layernorm.weight": (h,),
              p + "post_attention_layernorm.weight": (h,)}
    return {name: np.zeros(shape, dtype=np.float16) for name, shape in t.items()}


def write_repo(folder: Path) -> Path:
    """A sharded fp16 checkpoint written by the safetensors package, with its index and config."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(TINY))
    tensors = tiny_llama_tensors()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for shard, members in shards.items():
        save_file({n: tensors[n] for n in members}, str(folder / shard), metadata={"format": "pt"})
        weight_map |= {n: shard for n in members}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "README.md").write_text("# tiny\n")
    return folder


class FakeHub:
    """The Hub's endpoints that huggingface_hub calls, over a folder per repository."""

    def __init__(self, repos: dict[str, Path], gated: frozenset = frozenset()):
        self.repos, self.gated = repos, gated
        self.log: list[tuple[str, str, str | None, int]] = []     # method, path, Range, bytes of body sent
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.answer(self, head=True)

            def do_GET(self):
                hub.answer(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def send(self, req, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
        req.send_response(status)
        for k, v in {"Content-Length": str(len(body)), **(headers or {})}.items():
            req.send_header(k, v)
        req.end_headers()
        if not head:
            req.wfile.write(body)
        self.log.append((req.command, req.path.split("?")[0], req.headers.get("Range"), 0 if head else len(body)))

    def error(self, req, status: int, code: str, head: bool):
        self.send(req, status, json.dumps({"error": code}).encode(), {"X-Error-Code": code,
                                                                     "Content-Type": "application/json"}, head)

    def answer(self, req, head: bool):
        path = req.path.split("?")[0]
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            repo, revision = m[1], m[2]
            if repo not in self.repos:
                return self.error(req, 404, "RepoNotFound", head)
            if revision not in (None, "main", SHA):
                return self.error(req, 404, "RevisionNotFound", head)
            files = sorted(p.name for p in self.repos[repo].iterdir())
            info = {"id": repo, "sha": SHA, "private": False, "gated": "manual" if repo in self.gated else False,
                    "siblings": [{"rfilename": f} for f in files]}
            return self.send(req, 200, json.dumps(info).encode(), {"Content-Type": "application/json"}, head)
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/([^/]+)", path):
            repo, revision, name = m[1], m[2], m[3]
            if repo not in self.repos:
                return self.error(req, 404, "RepoNotFound", head)
            if repo in self.gated and req.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self.error(req, 401, "GatedRepo", head)
            if revision not in ("main", SHA):
                return self.error(req, 404, "RevisionNotFound", head)
            file = self.repos[repo] / name
            if not file.is_file():
                return self.error(req, 404, "EntryNotFound", head)
            data = file.read_bytes()
            meta = {"X-Repo-Commit": SHA, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
            if name.endswith(".safetensors") and not head:       # LFS files: a redirect to the CDN
                return self.send(req, 302, b"", {**meta, "Location": f"/cdn/{repo}/{name}"})
            return self.serve(req, data, meta, head)
        if m := re.fullmatch(r"/cdn/([^/]+/[^/]+)/([^/]+)", path):
            return self.serve(req, (self.repos[m[1]] / m[2]).read_bytes(), {}, head)
        return self.error(req, 404, "NotFound", head)

    def serve(self, req, data: bytes, headers: dict, head: bool):
        rng = req.headers.get("Range")
        if rng and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", rng)):
            first = int(m[1])
            last = min(int(m[2]) if m[2] else len(data) - 1, len(data) - 1)
            return self.send(req, 206, data[first:last + 1],
                             {**headers, "Content-Range": f"bytes {first}-{last}/{len(data)}"}, head)
        return self.send(req, 200, data, headers, head)

    def served(self, name: str) -> list[tuple[str | None, int]]:
        """(Range, bytes) of every GET that sent a body of file `name`."""
        return [(rng, n) for method, path, rng, n in self.log if method == "GET" and path.endswith("/" + name)
                and n > 0]


@pytest.fixture
def hub(tmp_path):
    repo = write_repo(tmp_path / "repos" / "tiny-llama")
    fake = FakeHub({"acme/tiny-llama": repo, "acme/gated-llama": repo}, gated=frozenset({"acme/gated-llama"}))
    yield fake
    fake.stop()


def sizer(tmp_path, *args, endpoint="http://127.0.0.1:9", **env):
    """`python -m sizer ARGS` with the Hub at `endpoint` and every cache under tmp_path."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    base |= {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf-home"), "XDG_CACHE_HOME": str(tmp_path / "xdg"),
             "HF_HUB_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(ROOT), **env}
    return subprocess.run([sys.executable, "-m", "sizer", *args], capture_output=True, text=True, env=base,
                          cwd=ROOT, timeout=120)


def estimate_json(result) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_repo_id_reads_only_config_and_headers(tmp_path, hub):
    local = estimate_json(sizer(tmp_path, "estimate", str(hub.repos["acme/tiny-llama"]), "--format", "json"))
    remote = estimate_json(sizer(tmp_path, "estimate", "acme/tiny-llama", "--format", "json", endpoint=hub.url))
    assert remote["memory"] == local["memory"] and remote["breakdown"] == local["breakdown"]
    assert remote["memory"]["weights"] == sum(a.nbytes for a in tiny_llama_tensors().values())
    assert remote["model"] == "tiny-llama" and remote["precision"] == local["precision"]
    assert remote["details"]["weights_source"] == f"safetensors headers (acme/tiny-llama@{SHA[:12]} (Hugging Face Hub))"
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        data = (hub.repos["acme/tiny-llama"] / shard).read_bytes()
        n = int.from_bytes(data[:8], "little")
        assert hub.served(shard) == [("bytes=0-7", 8), (f"bytes=8-{8 + n - 1}", n)]   # never the weights
        assert 8 + n < len(data) // 10


def test_second_run_is_offline_from_sizer_cache(tmp_path, hub):
    first = estimate_json(sizer(tmp_path, "estimate", "acme/tiny-llama", "--format", "json", endpoint=hub.url))
    cache = tmp_path / "xdg" / "sizer" / "hub" / "acme" / "tiny-llama" / "main" / "hub.json"
    assert cache.is_file() and oct(cache.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())
    hub.stop()
    again = estimate_json(sizer(tmp_path, "estimate", "acme/tiny-llama", "--format", "json", endpoint=hub.url))
    assert again["memory"] == first["memory"]
    assert "sizer cache" in again["details"]["weights_source"]
    offline = estimate_json(sizer(tmp_path, "estimate", "acme/tiny-llama", "--format", "json", HF_HUB_OFFLINE="1"))
    assert offline["memory"] == first["memory"]


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_fit_takes_a_repo_id(tmp_path, hub):
    result = sizer(tmp_path, "fit", "acme/tiny-llama", "--gpus", "1xH100", "--format", "json", endpoint=hub.url)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("env", [{"HF_HUB_OFFLINE": "1"}, {}])
def test_offline_without_a_cached_copy_is_one_line(tmp_path, env):
    result = sizer(tmp_path, "estimate", "acme/tiny-llama", **env)      # nothing listens on port 9
    assert result.returncode == 1 and result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "acme/tiny-llama: not in the catalog nor in a local cache" in line
    assert "`hf download acme/tiny-llama config.json`" in line
    assert ("HF_HUB_OFFLINE is set" in line) == bool(env)


def test_unknown_repository(tmp_path, hub):
    result = sizer(tmp_path, "estimate", "acme/no-such-model", endpoint=hub.url)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: acme/no-such-model: no such repository on the Hugging Face Hub ({hub.url}) and no such local file "
        "or folder (a private repository needs `hf auth login` or HF_TOKEN)"]


def test_refresh_reads_the_hub_again(tmp_path, hub):
    """A branch moves on the Hub: the cached copy answers until --refresh, which also updates the cache."""
    first = estimate_json(sizer(tmp_path, "estimate", "acme/tiny-llama", "--format", "json", endpoint=hub.url))
    config = hub.repos["acme/tiny-llama"] / "config.json"
    config.write_text(json.dumps({**TINY, "max_position_embeddings": 512}))
    cached = estimate_json(sizer(tmp_path, "estimate", "acme/tiny-llama", "--format", "json", endpoint=hub.url))
    assert cached["context_length"] == first["context_length"] == 1024
    fresh = estimate_json(sizer(tmp_path, "estimate", "acme/tiny-llama", "--refresh", "--format", "json",
                                endpoint=hub.url))
    assert fresh["context_length"] == 512 and "Hugging Face Hub" in fresh["details"]["weights_source"]
    hub.stop()
    again = estimate_json(sizer(tmp_path, "estimate", "acme/tiny-llama", "--format", "json", endpoint=hub.url))
    assert again["context_length"] == 512 and "sizer cache" in again["details"]["weights_source"]


def test_refresh_reads_a_catalog_repo_id_from_the_hub(tmp_path, hub):
    """The catalog answers Qwen/Qwen3-8B offline; --refresh asks the Hub, which here does not have it."""
    assert sizer(tmp_path, "estimate", "Qwen/Qwen3-8B", endpoint=hub.url).returncode == 0
    result = sizer(tmp_path, "fit", "Qwen/Qwen3-8B", "--gpus", "H100", "--refresh", endpoint=hub.url)
    assert result.returncode == 2 and "Qwen/Qwen3-8B: no such repository on the Hugging Face Hub" in result.stderr


@pytest.mark.parametrize("args, env, message", [
    (["acme/tiny-llama"], {"HF_HUB_OFFLINE": "1"},
     "acme/tiny-llama: --refresh reads the Hugging Face Hub again, but HF_HUB_OFFLINE is set"),
    (["llama3-8b"], {}, "--refresh applies to a Hugging Face repository id, not 'llama3-8b'"),
])
def test_refresh_refusals_are_one_line(tmp_path, args, env, message):
    result = sizer(tmp_path, "estimate", *args, "--refresh", **env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"Error: {message}"]


def test_a_typo_in_a_repo_id_suggests_known_ones(tmp_path, hub):
    """Compared with the catalog's repository ids and those in the local Hugging Face cache."""
    result = sizer(tmp_path, "estimate", "Qwen/Qwen3-23B", endpoint=hub.url)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.rstrip().endswith("; did you mean Qwen/Qwen3-32B, Qwen/Qwen3-8B, Qwen/Qwen3-4B?")
    hf_download(tmp_path, hub, "config.json")
    result = sizer(tmp_path, "estimate", "acme/tiny-lama", endpoint=hub.url)
    assert result.returncode == 2 and result.stderr.rstrip().endswith("; did you mean acme/tiny-llama?")


def test_unknown_revision(tmp_path, hub):
    result = sizer(tmp_path, "estimate", "acme/tiny-llama@v9", endpoint=hub.url)
    assert result.returncode == 2 and "no revision 'v9'" in result.stderr and len(result.stderr.splitlines()) == 1


def test_gated_repository_needs_a_token(tmp_path, hub):
    result = sizer(tmp_path, "estimate", "acme/gated-llama", endpoint=hub.url)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: acme/gated-llama is gated or private: accept its license on the Hub and log in (`hf auth login`) "
        "or set HF_TOKEN"]
    ok = estimate_json(sizer(tmp_path, "estimate", "acme/gated-llama", "--format", "json", endpoint=hub.url,
                             HF_TOKEN=TOKEN))
    assert ok["memory"]["weights"] == sum(a.nbytes for a in tiny_llama_tensors().values())


def test_revision_pins_the_commit(tmp_path, hub):
    result = estimate_json(sizer(tmp_path, "estimate", f"acme/tiny-llama@{SHA}", "--format", "json",
                                 endpoint=hub.url))
    assert SHA[:12] in result["details"]["weights_source"]
    assert (tmp_path / "xdg" / "sizer" / "hub" / "acme" / "tiny-llama" / SHA / "hub.json").is_file()


def hf_download(tmp_path, hub, *files):
    """huggingface_hub's own download into the Hugging Face cache under tmp_path (what `hf download` does)."""
    code = ("import sys; from huggingface_hub import hf_hub_download\n"
            "for f in sys.argv[1:]: hf_hub_download('acme/tiny-llama', f)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    subprocess.run([sys.executable, "-c", code, *files], env=env, check=True, timeout=120, capture_output=True)


def test_hugging_face_cache_with_weights_is_read_offline(tmp_path, hub):
    hf_download(tmp_path, hub, "config.json", "model.safetensors.index.json",
                "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    hub.stop()
    result = estimate_json(sizer(tmp_path, "estimate", "acme/tiny-llama", "--format", "json", HF_HUB_OFFLINE="1"))
    assert result["memory"]["weights"] == sum(a.nbytes for a in tiny_llama_tensors().values())
    assert "Hugging Face cache" in result["details"]["weights_source"]
    assert not (tmp_path / "xdg" / "sizer").exists()


def test_hugging_face_cache_with_config_only(tmp_path, hub):
    """The offline message's advice: `hf download ORG/NAME config.json`, then sizer sizes from the config."""
    hf_download(tmp_path, hub, "config.json")
    hub.stop()
    result = estimate_json(sizer(tmp_path, "estimate", "acme/tiny-llama", "--format", "json", HF_HUB_OFFLINE="1"))
    assert result["details"]["weights_source"] == "computed from the architecture"
    assert result["params"] == sum(a.size for a in tiny_llama_tensors().values())


def test_hf_cache_dir_follows_huggingface_hub(tmp_path):
    for env in ({}, {"HF_HOME": str(tmp_path / "h")}, {"XDG_CACHE_HOME": str(tmp_path / "x")},
                {"HF_HUB_CACHE": str(tmp_path / "c"), "HF_HOME": str(tmp_path / "h")},
                {"HUGGINGFACE_HUB_CACHE": str(tmp_path / "legacy")}):
        base = {k: v for k, v in os.environ.items()
                if k not in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME")} | env
        code = ("from huggingface_hub import constants; from sizer.inputs.hub import hf_cache_dir; "
                "print(constants.HF_HUB_CACHE == str(hf_cache_dir()))")
        out = subprocess.run([sys.executable, "-c", code], env=base | {"PYTHONPATH": str(ROOT)}, cwd=ROOT,
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "True", env
    assert isinstance(hf_cache_dir(), Path)


@pytest.mark.parametrize("text, parsed", [
    ("Qwen/Qwen3-32B", ("Qwen/Qwen3-32B", None)),
    ("org/name@refs/pr/1", ("org/name", "refs/pr/1")),
    ("org/name@" + SHA, ("org/name", SHA)),
    ("org/../name", None), ("org/name@..", None), ("a/b/c", None), ("llama3-70b", None), ("org/na--me", None),
    ("-org/name", None), ("org/name.", None),
])
def test_repo_id_spelling(text, parsed):
    assert parse_repo_id(text) == parsed


def test_calculator_path_imports_no_hub_client():
    code = ("import sys, sizer.cli, sizer.inputs.resolve; "
            "print(sorted(m for m in ('torch', 'huggingface_hub', 'httpx', 'httpx2', 'requests') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]"


def test_a_hub_that_never_answers_times_out(tmp_path):
    """A server that accepts the connection and never answers: one line after the 10 s read timeout."""
    import socket
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        start = time.monotonic()
        result = sizer(tmp_path, "estimate", "acme/tiny-llama", endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}")
        elapsed = time.monotonic() - start
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "Timeout" in result.stderr and "not in the catalog nor in a local cache" in result.stderr
    assert elapsed < 60


def test_a_corrupt_cache_file_is_one_line(tmp_path):
    cache = tmp_path / "xdg" / "sizer" / "hub" / "acme" / "tiny-llama" / "main" / "hub.json"
    cache.parent.mkdir(parents=True)
    cache.write_text('{"format": 1, "config": "{}"}')
    result = sizer(tmp_path, "estimate", "acme/tiny-llama", HF_HUB_OFFLINE="1")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: {cache}: not a sizer cache file (KeyError: 'shards'); delete it to read the repository again"]
