"""Add or refresh a catalog entry from a config file, its parameter count checked against transformers.

    python tools/catalog_entry.py CONFIG.json --name NAME --hf-id ORG/NAME --source TEXT \\
        --released YYYY-MM-DD --released-source TEXT \\
        [--alias A ...] [--published TEXT] [--source-kind TEXT] [--slug SLUG] [--force] [--data-dir DIR]
    python tools/catalog_entry.py --check [--data-dir DIR]

The first form writes DIR/<slug>.json (DIR: sizer/data/models by default; slug: the name in lower
case, or the file an entry of that name already has) in the catalog's entry format (name, hf_id,
aliases, source, published_params, released (the first public release, YYYY-MM-DD or YYYY-MM) and
released_source (where that date is stated; both kept on refresh when not given), params, quantized
(the official quantized checkpoints, named by hand and kept on refresh), config: the config file verbatim), with `params` counted
by transformers on the meta device (`AutoModelForCausalLM.from_config`, shared tensors once) and
checked equal to sizer's own count (`sizer.families.spec_from_config`); it refuses, naming both
numbers, when they differ. It then adds or updates the entry's row in DIR/NEW_MODELS.md. An existing
entry is replaced only with --force. The second form recounts every entry of DIR with transformers
and sizer, checks every entry's release date and its source, and exits 1 on any mismatch. Needs
torch and transformers.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sizer.catalog import release_month  # noqa: E402
from sizer.errors import SizerError  # noqa: E402
from sizer.io import read_json_input, write_atomic  # noqa: E402

DEFAULT_DATA_DIR = ROOT / "sizer" / "data" / "models"
TABLE_HEADER = "| name | hf_id | params (exact) | published | tied | source kind | notes |"


class ToolError(Exception):
    """One line for stderr, exit 1."""


def transformers_count(config: dict) -> tuple[int, str]:
    """(parameters of the model transformers builds from `config` on the meta device, its version).
    transformers edits the dicts it is given (it standardizes rope_scaling, rewrites a text_config's
    model_type): it gets a copy, so the entry keeps the file verbatim."""
    config = copy.deepcopy(config)
    try:
        import torch
        import transformers
    except ImportError:
        raise ToolError("torch and transformers are needed to count parameters (pip install torch transformers)")
    from sizer.families import TEXT_FAMILY
    from sizer.families.meta import meta_model, transformers_config

    transformers.utils.logging.set_verbosity_error()
    if config.get("model_type") in TEXT_FAMILY and "text_config" not in config:
        # a model_type transformers does not register, whose architecture is another's (Kimi K2 is
        # DeepSeek V3): count the architecture transformers knows, as sizer sizes it
        config = {**config, "model_type": TEXT_FAMILY[config["model_type"]]}
    try:
        model = meta_model(transformers_config(config, transformers), torch, transformers)
    except Exception as e:   # unknown model_type, no causal-LM class, a config the class refuses
        raise ToolError(f"transformers {transformers.__version__} cannot build this config "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return sum(p.numel() for p in model.parameters()), transformers.__version__


def sizer_spec(config: dict, name: str):
    from sizer.families import spec_from_config

    return spec_from_config(json.loads(json.dumps(config)), name, f"catalog entry {name}")


def entries(data_dir: Path) -> dict[Path, dict]:
    out = {}
    for path in sorted(data_dir.glob("*.json")):
        try:
            out[path] = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ToolError(f"{path}: not valid JSON ({e})") from None
    return out


def slug_of(name: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.strip().lower()).strip("-.")
    if not slug:
        raise ToolError(f"cannot make a file name of {name!r}: pass --slug")
    return slug


def spellings(entry: dict) -> set[str]:
    """The lower-case spellings sizer.catalog indexes an entry under."""
    out = set()
    for s in (entry.get("name", ""), entry.get("hf_id", ""), *entry.get("aliases", ())):
        if s:
            out |= {s.strip().lower(), s.strip().lower().split("/")[-1]}
    return out


def target_path(args, existing: dict[Path, dict]) -> Path:
    same = [p for p, e in existing.items() if e.get("name") == args.name]
    path = same[0] if same and not args.slug else args.data_dir / f"{slug_of(args.slug or args.name)}.json"
    if path.exists() and not args.force:
        raise ToolError(f"{path}: an entry exists (use --force to refresh it)")
    return path


def check_spellings(entry: dict, path: Path, existing: dict[Path, dict]) -> None:
    mine = spellings(entry)
    for other_path, other in existing.items():
        if other_path == path:
            continue
        clash = sorted(mine & spellings(other))
        if clash:
            raise ToolError(f"{', '.join(clash)} already names {other.get('name')!r} ({other_path.name}): "
                            "choose other aliases")


def release_problem(entry: dict) -> str | None:
    """Why an entry's `released` / `released_source` are not usable, or None."""
    released, source = entry.get("released"), entry.get("released_source")
    if not released:
        return "no release date (released: YYYY-MM-DD or YYYY-MM)"
    try:
        release_month(released)
    except ValueError as e:
        return str(e)
    if not isinstance(source, str) or not source.strip():
        return f"release date {released} has no released_source (where the date is stated)"
    return None


def add_entry(args) -> int:
    config = read_json_input(args.config, "config file")
    if not isinstance(config, dict):
        raise ToolError(f"{args.config}: a config.json must hold a JSON object")
    existing = entries(args.data_dir)
    path = target_path(args, existing)
    old = existing.get(path, {})
    problem = release_problem({"released": args.released or old.get("released"),
                               "released_source": args.released_source or old.get("released_source")})
    if problem:       # before the count: refuse early, as the entry will be refused anyway
        raise ToolError(f"{args.name}: {problem}; give --released and --released-source")
    counted, version = transformers_count(config)
    spec = sizer_spec(config, args.name)
    if spec.params != counted:
        raise ToolError(f"{args.name}: transformers {version} counts {counted:,} parameters, sizer {spec.params:,}: "
                        "fix the family normalizer (or the config) before adding the entry")
    entry = {"name": args.name, "hf_id": args.hf_id,
             "aliases": args.alias if args.alias is not None else old.get("aliases", []),
             "source": f"{args.source}; check by construction: transformers {version} "
                       f"{type_name(config)} on the meta device = {counted:,} parameters"}
    published = args.published or old.get("published_params")
    if published:
        entry["published_params"] = published
    entry["released"] = args.released or old.get("released")
    entry["released_source"] = args.released_source or old.get("released_source")
    entry["params"] = counted
    if old.get("quantized"):                 # the official quantized checkpoints named by hand stay
        entry["quantized"] = old["quantized"]
    entry["config"] = config
    check_spellings(entry, path, existing)
    write_atomic(path, json.dumps(entry, indent=1) + "\n", force=True)
    ship_meta_count(config, args.data_dir.parent / "meta_counts")
    update_table(args.data_dir / "NEW_MODELS.md", table_row(entry, spec, args.source_kind))
    print(f"{path}: {args.name}, {counted:,} parameters (transformers {version} = sizer)")
    return 0


def ship_meta_count(config: dict, folder: Path) -> None:
    """A family sizer sizes through transformers' count: ship the count with the entry, so the catalog
    needs no torch (sizer.families.meta.load_cached reads it)."""
    from sizer.families import FAMILIES, TEXT_FAMILY
    from sizer.families.meta import cache_path, config_hash

    if config.get("model_type") in FAMILIES or config.get("model_type") in TEXT_FAMILY:
        return
    record = cache_path(config)
    if record.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / f"{config_hash(config)}.json", record.read_text(), force=True)


def type_name(config: dict) -> str:
    arch = config.get("architectures")
    return arch[0] if isinstance(arch, list) and arch and isinstance(arch[0], str) else str(config.get("model_type"))


def table_row(entry: dict, spec, source_kind: str) -> str:
    notes = []
    if spec.is_moe:
        notes.append(f"MoE {spec.n_experts} experts top-{spec.n_experts_active}; "
                     f"active {spec.active_params / 1e9:.2f}B")
    if any("not modelled by sizer" in n for n in spec.notes):
        notes.append("family not modelled: sizer uses transformers' count")
    cells = [entry["name"], entry["hf_id"], f"{entry['params']:,}", entry.get("published_params", ""),
             "yes" if spec.tied_embeddings else "no", source_kind, "; ".join(notes)]
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def update_table(path: Path, row: str) -> None:
    """Replace the row of the same name in the table of NEW_MODELS.md, or append it to the table."""
    name = row.split("|")[1].strip()
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else [
        "# Models added", "", TABLE_HEADER, "|---|---|---:|---|:-:|---|---|"]
    rows = [i for i, line in enumerate(lines) if line.startswith("| ") and i > 0 and lines[i - 1].startswith("|")]
    same = [i for i in rows if lines[i].split("|")[1].strip() == name]
    if same:
        lines[same[0]] = row
    else:
        header = next((i for i, line in enumerate(lines) if line.startswith(TABLE_HEADER[:20])), None)
        if header is None:
            lines += ["", TABLE_HEADER, "|---|---|---:|---|:-:|---|---|"]
            header = len(lines) - 2
        end = header + 2
        while end < len(lines) and lines[end].startswith("|"):
            end += 1
        lines.insert(end, row)
    write_atomic(path, "\n".join(lines) + "\n", force=True)


def check(data_dir: Path) -> int:
    """Recount every entry: transformers, sizer and the recorded `params` must agree."""
    bad = 0
    found = entries(data_dir)
    for path, entry in found.items():
        name = entry.get("name", path.stem)
        problem = release_problem(entry)
        if problem:
            print(f"{path.name}: {name}: {problem}")
            bad += 1
            continue
        try:
            counted, version = transformers_count(entry["config"])
            mine = sizer_spec(entry["config"], name).params
        except (ToolError, SizerError) as e:
            print(f"{path.name}: {e}")
            bad += 1
            continue
        recorded = entry.get("params")
        if not (counted == mine == recorded):
            print(f"{path.name}: {name}: recorded {recorded if recorded is None else format(recorded, ',')}, "
                  f"transformers {version} {counted:,}, sizer {mine:,}")
            bad += 1
    print(f"{len(found) - bad} of {len(found)} entries agree with transformers and sizer and have a dated release")
    return 1 if bad else 0


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="catalog_entry.py", description=__doc__.split("\n")[0])
    p.add_argument("config", nargs="?", type=Path, help="the model's config.json")
    p.add_argument("--name", help="catalog name (as the hub repository names it)")
    p.add_argument("--hf-id", help="hub id, ORG/NAME")
    p.add_argument("--source", help="where the config comes from (URL and revision)")
    p.add_argument("--alias", action="append", help="another accepted spelling (repeatable)")
    p.add_argument("--published", help="the published parameter count and where it is stated")
    p.add_argument("--released", help="the first public release: YYYY-MM-DD, or YYYY-MM when the day is unknown")
    p.add_argument("--released-source", help="where that date is stated (announcement, model card, hub page, paper)")
    p.add_argument("--source-kind", default="verbatim copy", help="the NEW_MODELS.md 'source kind' cell")
    p.add_argument("--slug", help="file name without .json (default: the name in lower case)")
    p.add_argument("--force", action="store_true", help="replace an existing entry")
    p.add_argument("--check", action="store_true", help="recount every entry and exit 1 on a mismatch")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the folder of the entries")
    args = p.parse_args(argv)
    if not args.data_dir.is_dir():
        p.error(f"{args.data_dir}: no such folder")
    if not args.check:
        missing = [f for f in ("config", "name", "hf_id", "source") if not getattr(args, f)]
        if missing:
            p.error(f"missing {', '.join('CONFIG' if m == 'config' else '--' + m.replace('_', '-') for m in missing)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return check(args.data_dir) if args.check else add_entry(args)
    except (ToolError, SizerError) as e:
        print(f"catalog_entry.py: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
