#!/usr/bin/env bash
# The GPU checks in one script, for the first GPU machine this project gets (one H100 / H200:
# about 8 minutes; each part has its own time limit, so one slow part cannot eat the rest):
#   train_step    the training step on the paper profile: ours against the release's habits,
#                 the SDPA backends (flash, efficient, cuDNN) and torch.compile
#                 (bench/train_step.py, batches 64 and 128)
#   datapath      the data path's rows, the CUDA ones included (nvJPEG batch decoding of packed
#                 shards, NVDEC decoding on the fly: bench/datapath_bench.py)
#   launch_micro  `dvc repro pretrain` on the micro profile in a scratch copy of the project,
#                 through the stage's own launch (launch.nproc_per_node: auto = every GPU, NCCL)
# Without a GPU it runs at micro sizes on the CPU (two gloo processes for the launch; the data
# path bench, whose input is the paper's, is left out there: minutes on a CPU), which is how CI
# proves the script runs.
#     bash bench/gpu_suite.sh [OUT_DIR]          # default bench/results
#     PARTS="train_step datapath" bash bench/gpu_suite.sh
# Writes OUT_DIR/gpu_suite.json (the device named, each part's exit code and seconds, the
# figures' files) and each part's JSON and log under OUT_DIR/gpu_suite/.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench/results}
DETAIL="$OUT/gpu_suite"
mkdir -p "$DETAIL"
export DVC_NO_ANALYTICS=1 TQDM_DISABLE=1
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
if [[ -n "$GPU" ]]; then
  DEVICE=cuda; NPROC=auto
  STEP_ARGS=(--profiles paper --device cuda --configs reference ours ours_sdpa_flash
             ours_sdpa_efficient ours_sdpa_cudnn ours_compile)
  PATH_ARGS=(--videos 8)
  PARTS=${PARTS:-"train_step datapath launch_micro"}
else
  DEVICE=cpu; NPROC=2; GPU="none (CPU: micro sizes)"
  STEP_ARGS=(--profiles micro --device cpu --configs reference ours_fp32 ours ours_compile
             --batches 2 4 --steps 2)
  PATH_ARGS=(--videos 2 --min-seconds 0.5)
  PARTS=${PARTS:-"train_step launch_micro"}
fi
echo "device: $GPU; results in $OUT/gpu_suite.json"
RECORD="$DETAIL/parts.tsv"
: >"$RECORD"
status=0
part() {  # part NAME SECONDS COMMAND...: run under a time limit, record how it ended
  local name=$1 limit=$2; shift 2
  [[ " $PARTS " == *" $name "* ]] || return 0
  local t0=$SECONDS
  timeout "$limit" "$@" >"$DETAIL/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >>"$RECORD"
  echo "$name: exit $rc in $((SECONDS - t0)) s (log: $DETAIL/$name.log)"
  [[ $rc -eq 0 ]] || status=1
}

part train_step 240 python bench/train_step.py "${STEP_ARGS[@]}" --out "$DETAIL/train_step.json"
part datapath 120 python bench/datapath_bench.py "${PATH_ARGS[@]}" --out "$DETAIL/datapath.json"

launch_micro() {
  local scratch
  scratch=$(mktemp -d)
  git ls-files -z | xargs -0 -I{} cp --parents {} "$scratch"
  cd "$scratch" || return 1
  python - "$NPROC" <<'PY'
import sys
import yaml
params = yaml.safe_load(open("params.yaml"))
nproc = sys.argv[1]
params.update(profile="micro", launch={"nproc_per_node": nproc if nproc == "auto" else int(nproc)})
yaml.safe_dump(params, open("params.yaml", "w"), sort_keys=False)
PY
  git init -q && python -m dvc init -q && python -m dvc repro pretrain
  local rc=$?
  cp metrics/details/pretrain.json "$OLDPWD/$DETAIL/launch_micro_pretrain.json" 2>/dev/null
  cd "$OLDPWD" && rm -rf "$scratch"
  return $rc
}
[[ " $PARTS " == *" launch_micro "* ]] && part launch_micro 300 bash -c "$(declare -f launch_micro); NPROC=$NPROC DETAIL=$DETAIL launch_micro"

python - "$OUT" "$GPU" "$DEVICE" "$RECORD" <<'PY'
import json, sys
from pathlib import Path
out, gpu, device, record = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
detail = out / "gpu_suite"
parts = {}
for line in record.read_text().splitlines():
    name, rc, seconds = line.split("\t")
    parts[name] = {"exit": int(rc), "seconds": int(seconds)}
files = {p.stem: str(p) for p in detail.glob("*.json")}
summary = {"gpu": gpu, "device": device, "parts": parts, "files": files}
run = detail / "launch_micro_pretrain.json"  # the stage records its process count
if run.exists():
    summary["launch_processes"] = json.loads(run.read_text()).get("processes")
(out / "gpu_suite.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary))
PY
exit $status
