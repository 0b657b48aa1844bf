#!/usr/bin/env bash
# The GPU benchmark on an offline machine with PyTorch and CUDA, from a checkout that carries
# .offline/ (benchmarks/offline/bundle.sh, run where pip works):
#   benchmarks/offline/run.sh RESULTS_DIR [PARTS] [more python -m ccexp.bench arguments]
# PARTS: training (default), or e.g. generation,memory. The random 7B model is built once into
# $CCEXP_CACHE_DIR (default /tmp/ccexp-cache, 14.5 GB), so a second call on the same machine
# starts at once. Writes RESULTS_DIR/bench-<parts>.json and the GPU's nvidia-smi line.
set -euo pipefail
results=$(realpath -m -- "${1:?usage: benchmarks/offline/run.sh RESULTS_DIR [PARTS] [bench arguments]}")
shift
parts=training
if [ $# -gt 0 ] && [[ $1 != -* && $1 != *=* ]]; then  # not an option or an override: the parts
  parts=$1
  shift
fi
cd "$(dirname "$0")/../.."
[ -d .offline/wheels ] && [ -f .offline/tokenizer/tokenizer.json ] ||
  { echo "run.sh: no .offline/ bundle in $PWD: run benchmarks/offline/bundle.sh where pip works, and copy it along" >&2; exit 2; }
site=${CCEXP_OFFLINE_SITE:-/tmp/ccexp-site}
python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .offline/wheels/*.whl
# Each bundled package must import beside the machine's (transformers 5.25 needs huggingface_hub
# >= 2.4, the GPU image of 2026-11 has 1.33); one that does not gives way to the machine's copy.
python3 benchmarks/offline/site_check.py "$site" run.sh
export PYTHONPATH="$site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export CCEXP_CACHE_DIR=${CCEXP_CACHE_DIR:-/tmp/ccexp-cache}
mkdir -p "$results"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$results/gpu.txt"
fi
# Later options win (e.g. --model tiny --device cpu: a check of the bundle on any machine).
exec python3 -m ccexp.bench --device cuda --model mistral_7b_random --method qlora \
  --parts "$parts" --json "$results/bench-${parts//,/-}.json" "$@" "model.path=$PWD/.offline/tokenizer"
