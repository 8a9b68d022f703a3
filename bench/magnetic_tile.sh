#!/usr/bin/env bash
# Accuracy table on magnetic_tile (256 px, efficientnet_lite0 teacher): RD, DSKD and its ablations.
# Usage: bash bench/magnetic_tile.sh [EPOCHS] [OUT_DIR] [RUNS...]
# Each run: trainer fit → trainer evaluate (report folder with metrics.json, ROC, heatmaps).
set -euo pipefail
EPOCHS=${1:-25}
OUT=${2:-runs/magnetic_tile}
shift 2 2>/dev/null || true
RUNS=${*:-"rd dskd-dual dskd-dual_no_df dskd-forward rd-pixel"}
DATA=${DATA:-"$(cd "$(dirname "$0")/.." && pwd)/../shared/datasets/magnetic_tile"}
[ -d "$DATA" ] || { echo "magnetic_tile not found at $DATA (set DATA=...)" >&2; exit 2; }
mkdir -p "$OUT"
for run in $RUNS; do
  case $run in
    rd) args=(--method rd) ;;
    rd-pixel) args=(--method rd --loss pixel) ;;
    dskd-*) args=(--method dskd --variant "${run#dskd-}") ;;
    *) echo "unknown run $run" >&2; exit 2 ;;
  esac
  mkdir -p "$OUT/$run"; start=$(date +%s)
  trainer fit --data "$DATA" --out "$OUT/$run/checkpoint" --teacher efficientnet_lite0 --image-size 256 \
      --epochs "$EPOCHS" --seed 0 --no-progress "${args[@]}" | tail -n 1 > "$OUT/$run/fit.json"
  trainer evaluate --checkpoint "$OUT/$run/checkpoint" --data "$DATA" --report "$OUT/$run/report" | tail -n 1 > "$OUT/$run/eval.json"
  echo "$run done in $(( $(date +%s) - start )) s"
done
python "$(dirname "$0")/accuracy_table.py" "$OUT"
