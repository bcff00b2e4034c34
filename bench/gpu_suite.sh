#!/usr/bin/env bash
# The GPU checks, for the first GPU machine this project gets (one H100 / H200, about 8
# minutes; each part has its own time limit so one slow part cannot eat the others):
#   1. the training step on the paper profile: ours against the release's habits, the SDPA
#      backends, torch.compile (bench/train_step.py, paper profile, batches 64 and 128);
#   2. the data path's CUDA rows: nvJPEG batch decoding of packed shards against NVDEC-free
#      decoding on the fly (bench/datapath_bench.py);
#   3. `dvc repro pretrain` on the micro profile through the stage's own launch
#      (launch.nproc_per_node: auto = every visible GPU, NCCL), in a scratch copy of the
#      project; its log and metrics are kept.
# Results: bench/results/gpu_suite/ (JSON, with the GPU's name), and a summary on stdout.
#     bash bench/gpu_suite.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/gpu_suite}
mkdir -p "$OUT"
export DVC_NO_ANALYTICS=1 TQDM_DISABLE=1
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
if [[ -z "$GPU" ]]; then
  echo "error: no NVIDIA GPU visible (nvidia-smi): this suite is for a GPU machine" >&2
  exit 2
fi
echo "GPU: $GPU; results in $OUT"
status=0
part() {  # part NAME SECONDS COMMAND...: run with a time limit, note how it ended
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc in $((SECONDS - t0)) s (log: $OUT/$name.log)"
  [[ $rc -eq 0 ]] || status=1
}

part train_step 240 python bench/train_step.py --profiles paper --device cuda \
  --configs reference ours ours_sdpa_flash ours_sdpa_efficient ours_sdpa_cudnn ours_compile \
  --out "$OUT/train_step_paper.json"
part datapath 120 python bench/datapath_bench.py --videos 8 --out "$OUT/datapath.json"

SCRATCH=$(mktemp -d)
git ls-files -z | xargs -0 -I{} cp --parents {} "$SCRATCH" 2>/dev/null
( cd "$SCRATCH" && git init -q && sed -i 's/^profile: .*/profile: micro/' params.yaml \
  && python -m dvc init -q --no-scm 2>/dev/null; true )
part launch_micro 150 bash -c "cd '$SCRATCH' && python -m dvc repro pretrain"
cp "$SCRATCH/metrics/details/pretrain.json" "$OUT/launch_micro_pretrain.json" 2>/dev/null || true
python - "$OUT" "$GPU" <<'PY'
import json, sys
from pathlib import Path
out, gpu = Path(sys.argv[1]), sys.argv[2]
summary = {"gpu": gpu, "parts": sorted(p.stem for p in out.glob("*.log"))}
run = out / "launch_micro_pretrain.json"  # the stage records its process count
summary["launch_processes"] = json.loads(run.read_text()).get("processes") if run.exists() else None
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary))
PY
rm -rf "$SCRATCH"
exit $status
