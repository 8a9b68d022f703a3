#!/usr/bin/env bash
# Accuracy table on magnetic_tile (256 px, efficientnet_lite0 teacher): RD, DSKD and its ablations.
# Usage: [FIT_ARGS="--resize stretch ..."] bash bench/magnetic_tile.sh [EPOCHS] [OUT_DIR] [RUNS...]
# Each run: trainer fit (its defaults: students + patch memory + global Gaussian, fitted threshold)
# (RUN-students: without signals, as before them) → trainer evaluate (report folder with metrics.json, ROC, heatmaps) → bench/signal_ablation.py
# (every part and rule of the fused model scored side by side: OUT/RUN/ablation.md).
set -euo pipefail
EPOCHS=${1:-25}
OUT=${2:-runs/magnetic_tile}
shift 2 2>/dev/null || true
RUNS=${*:-"rd dskd"}
DATA=${DATA:-"$(cd "$(dirname "$0")/.." && pwd)/../shared/datasets/magnetic_tile"}
[ -d "$DATA" ] || { echo "magnetic_tile not found at $DATA (set DATA=...)" >&2; exit 2; }
mkdir -p "$OUT"
for run in $RUNS; do
  base=${run%-students}  # RUN-students: the students' map alone, empirical threshold (the model before signals)
  case $base in
    rd) args=(--method rd) ;;
    rd-pixel) args=(--method rd --loss pixel) ;;
    dskd) args=(--method dskd) ;;
    dskd-*) args=(--method dskd --variant "${base#dskd-}") ;;
    *) echo "unknown run $run" >&2; exit 2 ;;
  esac
  [ "$base" = "$run" ] || args+=(--no-memory-bank --no-global-gaussian --calibration empirical)
  mkdir -p "$OUT/$run"; start=$(date +%s)
  # shellcheck disable=SC2086  # FIT_ARGS: extra `trainer fit` options for an ablation row, word-split on purpose
  trainer fit --data "$DATA" --out "$OUT/$run/checkpoint" --epochs "$EPOCHS" --no-progress "${args[@]}" ${FIT_ARGS:-} \
      | tail -n 1 > "$OUT/$run/fit.json"
  trainer evaluate --checkpoint "$OUT/$run/checkpoint" --data "$DATA" --report "$OUT/$run/report" | tail -n 1 > "$OUT/$run/eval.json"
  if python -c "import json,sys; sys.exit(json.load(open('$OUT/$run/checkpoint/manifest.json')).get('signals') is None)"; then
    python "$(dirname "$0")/signal_ablation.py" --checkpoint "$OUT/$run/checkpoint" --data "$DATA" \
        --out "$OUT/$run/ablation.json" | sed -n '/^$/,$p' > "$OUT/$run/ablation.md"
  fi
  echo "$run done in $(( $(date +%s) - start )) s"
done
python "$(dirname "$0")/accuracy_table.py" "$OUT"
