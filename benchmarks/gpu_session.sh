#!/usr/bin/env bash
# The GPU checks of issues 4 and 5 in few device calls (the device tool lends an H100 or H200 to some
# tasks: 15 minutes of device time per task, starts included, at most 10 minutes per call, the
# machine bare at each start). In that budget: first call `campaign` (issue 4's error table in one
# call: --core), then at once, while the machine is still warm (30 s), `check` (the CUDA tests and
# the int4 kernel's timings). `gptq` and the full grid (`campaign A`, `campaign B`) need later tasks.
#
# Here, once per machine (needs pip's index; ~16 min on 2 cores, most of it building GPTQModel's
# wheel from its sdist, so start it first):   bash benchmarks/gpu_session.sh wheels
#   puts bitsandbytes (only its CUDA 13 and CPU libraries: 8 MB instead of 43) under .whl/site,
#   transformers' wheel (the version the CPU campaign and the activation model were read from; the
#   device image has an older one) under .whl/tf, and GPTQModel with its missing dependencies under
#   .whl/gq and .whl/sdist (about 28 MB in all), which .gitignore keeps out of git; name `.whl` in
#   each call's `carry`.
# On the device, one stage per call, results under $OUT (they come back with the reply):
#   bash benchmarks/gpu_session.sh campaign           # ~9 min: --core, 10 models, stops before 500 s (timeout_s 600)
#   bash benchmarks/gpu_session.sh check              # ~3 min: CUDA tests, solver and int4 kernel timings, 8B bf16/int8 measured
#   bash benchmarks/gpu_session.sh gptq               # sizer vs GPTQModel on the GPU (8 x 4096 synthetic Llama)
#   bash benchmarks/gpu_session.sh campaign A         # the full grid, models of part A, stops before 500 s
#   bash benchmarks/gpu_session.sh campaign B
#   bash benchmarks/gpu_session.sh finetune           # ~5 min: issue 19's training steps on CUDA, scaled and full size
# Back here: copy the CSVs from the replies' files_at into benchmarks/results/ and run
#   python benchmarks/measure_campaign.py --merge benchmarks/results/measure_cuda.core.csv
#   (or the parts: ... --merge benchmarks/results/measure_cuda.A.csv benchmarks/results/measure_cuda.B.csv)
# `python benchmarks/measure_campaign.py --device cuda --core --plan` (or --full) prints the points and times.
#
# The device image has python3 3.12 with torch (cu130), transformers, accelerate, safetensors,
# tokenizers, click, tabulate, numpy, hypothesis, pytest and nvidia-ml-py; nothing can be fetched.
set -euo pipefail
cd "$(dirname "$0")/.."

PART_A="Llama-3.1-8B,falcon-7b,Mistral-7B-v0.1,gemma-2-9b,Qwen3-30B-A3B"
PART_B="gemma-3-1b-it,Qwen3-4B,Phi-3.5-mini-instruct,Llama-2-7b-hf,gpt-oss-20b"
BNB_VERSION=0.50.2
TRANSFORMERS_VERSION=5.24.0
PEFT_VERSION=0.22.0

wheels() {
    rm -rf .whl && mkdir -p .whl/site
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_24_x86_64 -d .whl "bitsandbytes==${BNB_VERSION}"
    (cd .whl/site && python3 -m zipfile -e ../bitsandbytes-*.whl . \
        && find bitsandbytes -name 'libbitsandbytes_*.so' ! -name '*_cpu.so' ! -name '*_cuda130.so' \
                ! -name '*_cuda132.so' -delete)
    rm .whl/*.whl
    # peft (pure python, 0.5 MB unpacked) for `finetune`: the device image has none
    python3 -m pip download -q --no-deps --only-binary=:all: -d .whl "peft==${PEFT_VERSION}"
    (cd .whl/site && python3 -m zipfile -e ../peft-*.whl .) && rm .whl/peft-*.whl
    # transformers stays a wheel (13 MB; 60 MB unpacked), installed on the device by setup
    python3 -m pip download -q --no-deps --only-binary=:all: -d .whl/tf "transformers==${TRANSFORMERS_VERSION}"
    # GPTQModel 7.6.0 for the CUDA comparison: pure-python wheels (five of them built here from
    # sdists), torchao's abi3 wheel, and pypcre's sdist (native, no cp312 wheel: built on the device)
    mkdir -p .whl/gq .whl/sdist
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 -d .whl/gq \
        datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 optimum==2.3.0 torchao==0.18.0
    python3 -m pip download -q --no-deps --no-binary=:all: -d .whl/sdist \
        gptqmodel==7.6.0 defuser==0.0.28 device-smi==0.5.7 logbar==0.4.15 tokenicer==0.0.14 pypcre==0.6.4
    for sdist in .whl/sdist/*.tar.gz; do
        case "$sdist" in *pypcre*) continue ;; esac
        python3 -m pip wheel -q --no-deps -w .whl/gq "$sdist"
    done
    find .whl/sdist -name '*.tar.gz' ! -name 'pypcre-*' -delete
    du -sh .whl .whl/*
}

setup() {
    [ -d /tmp/tfsite/transformers ] || python3 -m pip install -q --no-index --no-deps --no-compile \
        --target /tmp/tfsite .whl/tf/*.whl
    export PYTHONPATH="/tmp/tfsite:$PWD/.whl/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    python3 -c 'import sizer' 2>/dev/null \
        || python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c 'import torch, transformers, bitsandbytes; print("torch", torch.__version__, "transformers",
transformers.__version__, "bitsandbytes", bitsandbytes.__version__, "cuda", torch.cuda.is_available())'
}

check() {
    setup
    # every test that needs CUDA, and the measure/GPTQ suites on this stack
    python3 -m pytest -p no:cacheprovider -rfEs -k "cuda or CUDA" tests/test_measure.py tests/test_gptq.py \
        tests/test_quantize_gptq.py tests/test_quant_linear.py 2>&1 | tee "$OUT/check_pytest.log" | tail -15 \
        || echo "some CUDA tests failed (check_pytest.log); the timings below run anyway"
    python3 benchmarks/gptq_rank1_update.py --device cuda --results "$OUT/gptq_rank1_update.csv"
    python3 benchmarks/gptq_int4_kernel.py --device cuda --results "$OUT/gptq_int4_kernel.csv" | tail -12
    # int8 here too: its CUDA temporaries (6 x in, in + 8 x out per row) are read from bitsandbytes'
    # code, never measured, and the campaign's int8 pass is the first its budget drops
    python3 -m sizer measure Llama-3.1-8B --device cuda -p bf16,int8 -c 2048 -b 4 --sweep \
        --record "$OUT/measure_smoke.csv" 2>&1 | tail -12
}

gptq() {
    setup
    # GPTQModel beside it, when it installs here (pypcre must compile against this python)
    local site=/tmp/gqsite
    if [ ! -d "$site/gptqmodel" ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/gq/*.whl \
            && python3 -m pip wheel -q --no-index --no-deps --no-build-isolation -w /tmp/pcre .whl/sdist/pypcre-*.tar.gz \
            && python3 -m pip install -q --no-index --no-deps --target "$site" /tmp/pcre/*.whl || true
    fi
    local tools=sizer
    if PYTHONPATH="$site:$PYTHONPATH" python3 -c 'import gptqmodel' 2>"$OUT/gptqmodel_import.log"; then
        tools=sizer,gptqmodel
        export PYTHONPATH="$site:$PYTHONPATH"
    fi
    echo "GPTQ benchmark tools: $tools"
    python3 benchmarks/bench_gptq.py --device cuda --tools "$tools" --layers 8 --hidden 4096 --intermediate 14336 \
        --vocab 32000 --samples 128 --seq-len 2048 --results "$OUT/gptq_vs_gptqmodel.csv" 2>&1 | tail -8
}

campaign() {
    setup
    local part=${1:-core} grid=(--full --models)
    case "$part" in
        core) grid=(--core) ;;
        A) grid+=("$PART_A") ;;
        B) grid+=("$PART_B") ;;
        *) grid+=("$part") ;;
    esac
    python3 benchmarks/measure_campaign.py --device cuda "${grid[@]}" --budget-s "${BUDGET_S:-500}" \
        --out "$OUT" --tag "$part" 2>&1 | grep -v -E 'Loading weights|it/s\]' | tee "$OUT/campaign_$part.log" | tail -40
}

finetune() {
    setup
    # issue 19's GPU campaign: the CPU campaign's points on CUDA (the allocator's 512-byte blocks, the
    # device's dropout mask and RNG state), then full-size models at real sequence lengths
    python3 benchmarks/finetune_measure.py --device cuda --out "$OUT/finetune_measure_cuda.csv" | tail -12
    python3 benchmarks/finetune_measure.py --device cuda --full-size --out "$OUT/finetune_measure_cuda_full.csv" | tail -12
}

case "${1:-}" in
    wheels) wheels ;;
    finetune) finetune ;;
    check) check ;;
    gptq) gptq ;;
    campaign) campaign "${2:-core}" ;;
    *) sed -n '2,25p' "$0"; exit 2 ;;
esac
