"""MODEL as a Hugging Face repository id (`Qwen/Qwen3-32B`, `org/name@revision`) that is not in the catalog.

Looked up in this order, each step only when the one before has nothing:

1. the local Hugging Face cache (HF_HUB_CACHE / HF_HOME / XDG_CACHE_HOME, the layout huggingface_hub
   writes): a snapshot with config.json and all its *.safetensors files is read offline, headers only;
2. sizer's own cache ($XDG_CACHE_HOME/sizer/hub/ORG/NAME/REVISION/hub.json): what an earlier run read;
3. the Hub itself, unless HF_HUB_OFFLINE is set: config.json, then of every safetensors shard only the
   8-byte header length and the JSON header, with HTTP range requests (no weights are downloaded); the
   result goes to sizer's cache, so the next run needs no network;
4. a snapshot of the Hugging Face cache that holds config.json only: sized from the config.

huggingface_hub (endpoint HF_ENDPOINT, token HF_TOKEN or `hf auth login`) is imported only for step 3.
`--refresh` (estimate, fit) goes to step 3 first. An id the Hub does not know is compared with the
catalog's repository ids and those in the Hugging Face cache ("did you mean").
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

from sizer.catalog import catalog_hub_ids, did_you_mean
from sizer.errors import InputFileError, SizerError, UsageError
from sizer.inputs.safetensors import header_length, header_tensors, parse_header, read_header
from sizer.io import MAX_TEXT_INPUT_BYTES, parse_json, read_json_input, write_atomic
from sizer.spec import CheckpointTensor

TIMEOUT_S = 10                 # per connect / read on the network; a dead network fails within it
CACHE_FORMAT = 1
INDEX_FILE = "model.safetensors.index.json"
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"(?P<repo>{_NAME}/{_NAME})(?:@(?P<revision>[A-Za-z0-9._/-]{{1,200}}))?")
_SHA = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class HubModel:
    """What sizer read of a repository: its config and, when it has safetensors shards, their tensors."""

    repo_id: str
    revision: str                                  # the commit hash where known, else the one asked for
    config: dict
    tensors: tuple[CheckpointTensor, ...] | None   # None: no safetensors read (config only)
    where: str                                     # "Hugging Face Hub", "Hugging Face cache", "sizer cache"

    @property
    def name(self) -> str:
        return self.repo_id.split("/")[1]

    @property
    def label(self) -> str:
        return f"{self.repo_id}@{self.revision[:12]} ({self.where})"


def parse_repo_id(text: str) -> tuple[str, str | None] | None:
    """(repo id, revision or None) when `text` is spelled like a Hub repository id, else None."""
    m = _REPO_ID.fullmatch(text.strip())
    if m is None or ".." in text or "--" in m["repo"]:
        return None
    return m["repo"], m["revision"]


def is_repo_id(text: str) -> bool:
    return parse_repo_id(text) is not None


def hub_model(text: str, *, refresh: bool = False) -> HubModel:
    """The repository `text` names, from the local caches or the Hub (see the module's docstring).
    refresh: ask the Hub first (a branch such as main may have moved since the caches were written)."""
    parsed = parse_repo_id(text)
    if parsed is None:
        raise UsageError(f"{text}: not a Hugging Face repository id (ORG/NAME or ORG/NAME@REVISION)")
    repo_id, revision = parsed
    snapshot = hf_cache_snapshot(repo_id, revision)
    if snapshot is not None and _complete(snapshot) and not refresh:
        return _from_snapshot(repo_id, snapshot)
    cache_file = sizer_cache_dir() / repo_id / quote(revision or "main", safe="") / "hub.json"
    if cache_file.is_file() and not refresh:
        return _read_cache(cache_file)
    if refresh and hub_offline():
        raise UsageError(f"{repo_id}: --refresh reads the Hugging Face Hub again, but HF_HUB_OFFLINE is set")
    if hub_offline():
        reason = "HF_HUB_OFFLINE is set"
    else:
        try:
            model = _fetch(repo_id, revision)
        except _Unreachable as e:
            reason = str(e)
        else:
            _write_cache(cache_file, model)
            return model
    if snapshot is not None and (snapshot / "config.json").is_file():
        return _from_snapshot(repo_id, snapshot)
    raise SizerError(f"{repo_id}: not in the catalog nor in a local cache, and the Hugging Face Hub cannot be read "
                     f"({reason}): connect to the network, pass a local folder, or run "
                     f"`hf download {repo_id} config.json` where the Hub can be reached")


def hub_offline() -> bool:
    """huggingface_hub's own switch (HF_HUB_OFFLINE, or TRANSFORMERS_OFFLINE), read when asked."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


# ---------------------------------------------------------------------------------------------
# The Hugging Face cache (read with the standard library: no huggingface_hub needed offline)


def hf_cache_dir() -> Path:
    """huggingface_hub's cache folder, by its own rules (huggingface_hub.constants.HF_HUB_CACHE)."""
    default_home = os.path.join(os.path.expanduser("~"), ".cache")
    hf_home = os.path.expandvars(os.path.expanduser(
        os.getenv("HF_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", default_home), "huggingface"))))
    legacy = os.getenv("HUGGINGFACE_HUB_CACHE", os.path.join(hf_home, "hub"))
    return Path(os.path.expandvars(os.path.expanduser(os.getenv("HF_HUB_CACHE", legacy))))


def hf_cache_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The cached snapshot folder of `repo_id` at `revision` (a branch, tag or commit hash), if any."""
    repo = hf_cache_dir() / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / (revision or "main")
    try:
        sha = ref.read_text(encoding="utf-8").strip() if ref.is_file() else (revision or "")
    except (OSError, UnicodeDecodeError):
        return None
    snapshot = repo / "snapshots" / sha
    if not _SHA.fullmatch(sha) or not snapshot.is_dir():
        return None
    return snapshot


def cached_repo_ids() -> list[str]:
    """The model repositories the local Hugging Face cache holds (`models--ORG--NAME` folders)."""
    try:
        folders = [p.name for p in hf_cache_dir().iterdir()]
    except OSError:
        return []
    return sorted(name[len("models--"):].replace("--", "/", 1) for name in folders if name.startswith("models--"))


def known_repo_ids() -> list[str]:
    """Repository ids a typo is compared with: the catalog's and those in the local Hugging Face cache."""
    return sorted({*catalog_hub_ids(), *cached_repo_ids()})


def _shard_names(snapshot: Path) -> list[str] | None:
    """The shards a snapshot's index lists, or None without an index."""
    index = snapshot / INDEX_FILE
    if not index.is_file():
        return None
    return _index_shards(read_json_input(index, "safetensors index"), str(index))


def _index_shards(raw, origin: str) -> list[str]:
    weight_map = raw.get("weight_map") if isinstance(raw, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise InputFileError(f"{origin}: not a safetensors index (no weight_map of file names)")
    shards = sorted(set(weight_map.values()))
    if any("/" in s or s.startswith(".") or not s.endswith(".safetensors") for s in shards):
        raise InputFileError(f"{origin}: the weight_map names a file outside the repository's top folder")
    return shards


def _complete(snapshot: Path) -> bool:
    """config.json and every safetensors shard are there (the index's list, or at least one file)."""
    if not (snapshot / "config.json").is_file():
        return False
    shards = _shard_names(snapshot)
    if shards is None:
        return any(snapshot.glob("*.safetensors"))
    return all((snapshot / s).is_file() for s in shards)


def _from_snapshot(repo_id: str, snapshot: Path) -> HubModel:
    config = _config(read_json_input(snapshot / "config.json", "config file"), f"{snapshot}/config.json")
    shards = _shard_names(snapshot)
    paths = [snapshot / s for s in shards] if shards is not None else sorted(snapshot.glob("*.safetensors"))
    if not all(p.is_file() for p in paths):
        paths = []                                    # config only: some shard is missing
    tensors = tuple(t for p in paths for t in header_tensors(read_header(p)))
    return HubModel(repo_id, snapshot.name, config, tensors or None, "Hugging Face cache")


def _config(raw, origin: str) -> dict:
    if not isinstance(raw, dict):
        raise InputFileError(f"{origin}: a config.json must hold a JSON object")
    return raw


# ---------------------------------------------------------------------------------------------
# sizer's cache: one JSON file per repository and revision, with the config and the shards' headers


def sizer_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sizer" / "hub"


def _read_cache(path: Path) -> HubModel:
    raw = read_json_input(path, "sizer cache file")
    try:
        if raw["format"] != CACHE_FORMAT:
            raise ValueError(f"format {raw['format']!r}")
        config = _config(parse_json(raw["config"], f"{path} (config.json)", "config file"), str(path))
        shards = raw["shards"]
        tensors = None
        if shards is not None:
            tensors = tuple(t for s in shards for t in header_tensors(
                parse_header(s["header"].encode("utf-8"), f"{path} ({s['file']})", s["data_bytes"])))
        return HubModel(raw["repo_id"], raw["sha"], config, tensors or None, "sizer cache")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise InputFileError(f"{path}: not a sizer cache file ({e.__class__.__name__}: {e}); delete it to "
                             "read the repository again") from None


def _write_cache(path: Path, model: _FetchedModel) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SizerError(f"{path.parent}: cannot create the cache folder ({e.strerror})") from None
    write_atomic(path, json.dumps(model.cache_record, indent=1) + "\n", force=True)


# ---------------------------------------------------------------------------------------------
# The Hub over HTTP


class _Unreachable(Exception):
    """The Hub could not be asked (no network, DNS, timeout): the caller falls back to the caches."""


@dataclass(frozen=True)
class _FetchedModel(HubModel):
    config_text: str = ""
    shards: tuple[dict, ...] | None = None        # {"file", "data_bytes", "header"} per shard

    @property
    def cache_record(self) -> dict:
        return {"format": CACHE_FORMAT, "repo_id": self.repo_id, "sha": self.revision, "config": self.config_text,
                "shards": None if self.shards is None else list(self.shards)}


def _hub() -> SimpleNamespace:
    """The parts of huggingface_hub sizer uses, imported here only (the calculator path stays light)."""
    try:
        from huggingface_hub import HfApi, constants, errors, hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status
    except ImportError:
        raise UsageError("reading a repository from the Hugging Face Hub needs huggingface_hub "
                         "(pip install 'sizer-llm[hub]'); or pass a local folder with config.json") from None
    return SimpleNamespace(HfApi=HfApi, constants=constants, errors=errors, hf_hub_url=hf_hub_url,
                           build_hf_headers=build_hf_headers, get_session=get_session,
                           hf_raise_for_status=hf_raise_for_status)


def _fetch(repo_id: str, revision: str | None) -> _FetchedModel:
    hf = _hub()
    errors = hf.errors
    try:
        return _fetch_with(hf, repo_id, revision)
    except errors.GatedRepoError:
        raise _gated(repo_id) from None
    except errors.RepositoryNotFoundError:
        raise UsageError(f"{repo_id}: no such repository on the Hugging Face Hub ({hf.constants.ENDPOINT}) and no "
                         "such local file or folder (a private repository needs `hf auth login` or HF_TOKEN)"
                         f"{did_you_mean(repo_id, known_repo_ids())}") from None
    except errors.RevisionNotFoundError:
        raise UsageError(f"{repo_id}: no revision {revision!r} in this repository on the Hugging Face Hub") from None
    except errors.HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status in (401, 403):
            raise _gated(repo_id) from None
        raise SizerError(f"{repo_id}: the Hugging Face Hub answered HTTP {status} ({_first_line(e)})") from None
    except errors.HFValidationError as e:
        raise UsageError(f"{repo_id}: not a valid Hugging Face repository id ({_first_line(e)})") from None


def _gated(repo_id: str) -> SizerError:
    return SizerError(f"{repo_id} is gated or private: accept its license on the Hub and log in "
                      "(`hf auth login`) or set HF_TOKEN")


def _first_line(e: Exception) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else e.__class__.__name__


def _fetch_with(hf, repo_id: str, revision: str | None) -> _FetchedModel:
    try:
        info = hf.HfApi().model_info(repo_id, revision=revision, timeout=TIMEOUT_S)
    except (hf.errors.HfHubHTTPError, hf.errors.HFValidationError):
        raise
    except Exception as e:                       # the transport's errors: refused, DNS, TLS, timeout, offline
        raise _Unreachable(f"{e.__class__.__name__}: {_first_line(e)}") from None
    sha = info.sha or revision or "main"
    files = {s.rfilename for s in info.siblings or ()}
    headers = hf.build_hf_headers()

    def get(filename: str, first: int | None = None, last: int | None = None) -> tuple[bytes, int | None]:
        return _get(hf, hf.hf_hub_url(repo_id, filename, revision=sha), headers, first, last)

    def text(filename: str) -> str:
        return _decode(get(filename)[0], f"{repo_id}/{filename}")

    if "config.json" not in files:
        raise InputFileError(f"{repo_id}: the repository has no config.json (sizer needs the model's config.json; "
                             "for a GGUF repository, download the .gguf file and pass it)")
    config_text = text("config.json")
    config = _config(parse_json(config_text, f"{repo_id}/config.json", "config file"), f"{repo_id}/config.json")
    if INDEX_FILE in files:
        names = _index_shards(parse_json(text(INDEX_FILE), f"{repo_id}/{INDEX_FILE}", "safetensors index"),
                              f"{repo_id}/{INDEX_FILE}")
        missing = [n for n in names if n not in files]
        if missing:
            raise InputFileError(f"{repo_id}/{INDEX_FILE}: names {missing[0]}, which the repository does not hold")
    else:
        names = sorted(f for f in files if f.endswith(".safetensors") and "/" not in f)

    def shard(name: str) -> dict:
        origin = f"{repo_id}/{name}"
        head, total = get(name, 0, 7)
        n = header_length(head, origin, total)
        raw, _ = get(name, 8, 8 + n - 1)
        data_bytes = total - 8 - n if total is not None else None
        parse_header(raw, origin, data_bytes)
        return {"file": name, "data_bytes": data_bytes, "header": _decode(raw, origin)}

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(names)))) as pool:
        shards = tuple(pool.map(shard, names))
    tensors = tuple(t for s in shards for t in header_tensors(json.loads(s["header"])))
    return _FetchedModel(repo_id, sha, config, tensors or None, "Hugging Face Hub", config_text,
                         shards if names else None)


def _decode(raw: bytes, origin: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(f"{origin}: not UTF-8 text") from None


def _get(hf, url: str, headers: dict, first: int | None, last: int | None) -> tuple[bytes, int | None]:
    """Bytes first..last of a file with a Range request (the whole file, at most MAX_TEXT_INPUT_BYTES, when
    no range is given) and the file's size when the server tells it. A server that ignores Range is read
    only as far as needed, then dropped."""
    ranged = first is not None and last is not None
    skip, want = (first, last - first + 1) if ranged else (0, MAX_TEXT_INPUT_BYTES + 1)
    extra = {"Range": f"bytes={first}-{last}"} if ranged else {}
    try:
        with hf.get_session().stream("GET", url, headers={**headers, **extra}, timeout=TIMEOUT_S,
                                     follow_redirects=True) as r:
            if r.status_code >= 400:
                r.read()
                hf.hf_raise_for_status(r)
            if r.status_code == 206:
                skip = 0
            chunks, n = [], 0
            for chunk in r.iter_bytes():
                chunks.append(chunk)
                n += len(chunk)
                if n >= skip + want:
                    break
            status, total = r.status_code, _total_size(r.headers, r.status_code)
    except hf.errors.HfHubHTTPError:
        raise
    except Exception as e:                       # the transport's errors, as in _fetch_with
        raise _Unreachable(f"{e.__class__.__name__}: {_first_line(e)}") from None
    if status not in (200, 206):
        raise SizerError(f"{url}: unexpected HTTP {status} from the Hugging Face Hub")
    body = b"".join(chunks)[skip:skip + want]
    if ranged and len(body) < want:
        raise InputFileError(f"{url}: the Hub sent {len(body)} of the {want} bytes asked for (truncated file?)")
    if not ranged and len(body) > MAX_TEXT_INPUT_BYTES:
        raise InputFileError(f"{url}: larger than {MAX_TEXT_INPUT_BYTES:,} bytes, too large for a config file")
    return body, total


def _total_size(headers, status: int) -> int | None:
    """The file's size: after the slash of Content-Range (206), or Content-Length (200)."""
    if status == 206:
        m = re.fullmatch(r"bytes \d+-\d+/(\d+)", headers.get("content-range", "").strip())
        return int(m[1]) if m else None
    length = headers.get("content-length", "")
    return int(length) if length.isdigit() else None
