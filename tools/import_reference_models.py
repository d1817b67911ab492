"""One-off importer: tests/data/reference_models/<name>/config.json -> sizer/data/models/<slug>.json.

Kept in the repository so the catalog entries can be regenerated from the verified reference
configs; the provenance text is taken from SOURCES.md ('kind' and 'primary' lines) and the exact
parameter count from params.md.
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "data" / "reference_models"     # verified configs, with SOURCES.md and params.md
OUT = ROOT / "sizer" / "data" / "models"

# name -> (hub id, slug, aliases)
MODELS = {
    "Llama-2-7b-hf": ("meta-llama/Llama-2-7b-hf", "llama-2-7b", ["llama2-7b", "llama-2-7b", "llama2-7b-hf"]),
    "Llama-2-13b-hf": ("meta-llama/Llama-2-13b-hf", "llama-2-13b", ["llama2-13b", "llama-2-13b"]),
    "Llama-2-70b-hf": ("meta-llama/Llama-2-70b-hf", "llama-2-70b", ["llama2-70b", "llama-2-70b"]),
    "Meta-Llama-3-8B": ("meta-llama/Meta-Llama-3-8B", "llama-3-8b", ["llama3-8b", "llama-3-8b"]),
    "Meta-Llama-3-70B": ("meta-llama/Meta-Llama-3-70B", "llama-3-70b", ["llama3-70b", "llama-3-70b"]),
    "Llama-3.1-405B": ("meta-llama/Llama-3.1-405B", "llama-3.1-405b",
                       ["llama3.1-405b", "llama-3.1-405b", "llama31-405b", "meta-llama/Meta-Llama-3.1-405B"]),
    "Mistral-7B-v0.1": ("mistralai/Mistral-7B-v0.1", "mistral-7b-v0.1", ["mistral-7b", "mistral7b"]),
    "Mixtral-8x7B-v0.1": ("mistralai/Mixtral-8x7B-v0.1", "mixtral-8x7b-v0.1", ["mixtral-8x7b", "mixtral"]),
    "Mistral-Large-Instruct-2407": ("mistralai/Mistral-Large-Instruct-2407", "mistral-large-2407",
                                    ["mistral-large", "mistral-large-2407", "mistral-large-2"]),
    "falcon-7b": ("tiiuae/falcon-7b", "falcon-7b", ["falcon-7b"]),
    "falcon-40b": ("tiiuae/falcon-40b", "falcon-40b", ["falcon-40b"]),
    "falcon-180B": ("tiiuae/falcon-180B", "falcon-180b", ["falcon-180b"]),
    "phi-2": ("microsoft/phi-2", "phi-2", ["phi2", "phi-2"]),
    "Phi-3-mini-4k-instruct": ("microsoft/Phi-3-mini-4k-instruct", "phi-3-mini-4k", ["phi3-mini", "phi-3-mini", "phi-3-mini-4k"]),
    "gemma-2b": ("google/gemma-2b", "gemma-2b", ["gemma-2b", "gemma1-2b"]),
    "gemma-7b": ("google/gemma-7b", "gemma-7b", ["gemma-7b", "gemma1-7b"]),
    "Qwen2.5-7B": ("Qwen/Qwen2.5-7B", "qwen2.5-7b", ["qwen2.5-7b", "qwen25-7b"]),
    "Qwen2.5-72B": ("Qwen/Qwen2.5-72B", "qwen2.5-72b", ["qwen2.5-72b", "qwen25-72b"]),
    "bloom": ("bigscience/bloom", "bloom-176b", ["bloom", "bloom-176b"]),
    "mpt-7b": ("mosaicml/mpt-7b", "mpt-7b", ["mpt-7b"]),
    "mpt-30b": ("mosaicml/mpt-30b", "mpt-30b", ["mpt-30b"]),
    "CodeLlama-34b-hf": ("codellama/CodeLlama-34b-hf", "codellama-34b", ["codellama-34b", "code-llama-34b"]),
    "vicuna-7b-v1.5": ("lmsys/vicuna-7b-v1.5", "vicuna-7b-v1.5", ["vicuna-7b", "vicuna"]),
    "Orca-2-13b": ("microsoft/Orca-2-13b", "orca-2-13b", ["orca2-13b", "orca-2-13b", "orca-2"]),
    "DeepSeek-V3": ("deepseek-ai/DeepSeek-V3", "deepseek-v3", ["deepseek-v3", "deepseek3"]),
}


def sources_by_model(text: str) -> dict[str, str]:
    """The 'kind' and 'primary' bullet lines of each '## <model>' section of SOURCES.md."""
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    out = {}
    for section in sections:
        name, _, body = section.partition("\n")
        lines = [l[2:].strip() for l in body.splitlines() if l.startswith("- kind:") or l.startswith("- primary:")]
        out[name.strip()] = "; ".join(lines)
    return out


def params_by_model(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 2 and re.fullmatch(r"[\d,]+", cells[1]):
            out[cells[0]] = int(cells[1].replace(",", ""))
    return out


def main() -> int:
    sources = sources_by_model((REF / "SOURCES.md").read_text())
    params = params_by_model((REF / "params.md").read_text())
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (hf_id, slug, aliases) in MODELS.items():
        config = json.loads((REF / name / "config.json").read_text())
        entry = {
            "name": name,
            "hf_id": hf_id,
            "aliases": aliases,
            "source": f"sizer tests/data/reference_models/{name}/config.json; " + sources[name],
            "params": params[name],
            "config": config,
        }
        (OUT / f"{slug}.json").write_text(json.dumps(entry, indent=1) + "\n")
    print(f"wrote {len(MODELS)} entries to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
