#!/usr/bin/env bash
# One-shot GPU measurement for a session that is lent a device machine (issue 2 / issue 4 GPU targets).
# Prepare here first (the device has torch/transformers/peft/accelerate but not diffusers):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 importlib_metadata
# Then run this script through the device tool with carry=[".whl"] and a timeout that leaves room for a rerun.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH="/tmp/site:$PWD/src" || exit 1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
out="${OUT:-/tmp/out}"; mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
# Eager, then compiled in the same run (ratio compiled / eager roofline), paper architecture, random weights, bf16.
python3 -m synerdetect.cli bench components --preset paper --device cuda --compile --out "$out/bench_paper.jsonl" 2>&1 | tail -40
