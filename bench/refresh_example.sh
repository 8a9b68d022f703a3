#!/usr/bin/env bash
# Worked example of keeping a model current, on magnetic_tile (README "Keeping the model current").
# v1 trains on 400 of the 762 normal images; the other 362 arrive later as confirmed-normal frames
# on the topic; `trainer refresh` warm-starts from v1, gates the candidate and rolls it out.
# Usage: bash bench/refresh_example.sh [V1_EPOCHS] [REFRESH_EPOCHS] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
V1_EPOCHS=${1:-12}; REFRESH_EPOCHS=${2:-6}; OUT=${3:-runs/refresh_example}
MT=$(realpath "${DATA:-../shared/datasets/magnetic_tile}")
rm -rf "$OUT"; mkdir -p "$OUT/part-a/train/good" "$OUT/part-b"
ls "$MT/train/good" | sort | head -n 400  | while read -r f; do ln -s "$MT/train/good/$f" "$OUT/part-a/train/good/$f"; done
ls "$MT/train/good" | sort | tail -n +401 | while read -r f; do ln -s "$MT/train/good/$f" "$OUT/part-b/$f"; done

export INSPECTOR_LOCAL_SERVICES_DIR="$PWD/$OUT/services"
eval "$(deploy/local/services start --kafka-port 0 --redis-port 0)"
trap 'deploy/local/services stop >/dev/null' EXIT

trainer fit --data "$OUT/part-a" --out "$OUT/v1" --name magnetic_tile --image-size 256 --epochs "$V1_EPOCHS" --no-progress | tail -n 1 > "$OUT/fit-v1.json"
trainer evaluate --checkpoint "$OUT/v1" --data "$MT" --report "$OUT/report-v1" | tail -n 1 > "$OUT/eval-v1.json"

export TRAINER_KAFKA_BOOTSTRAP_SERVERS=$INSPECTOR_KAFKA_BOOTSTRAP_SERVERS TRAINER_STORE_DIR="$PWD/$OUT/store" \
       TRAINER_CHECKPOINTS_DIR="$PWD/$OUT/models" TRAINER_DEFAULT_MODEL=magnetic_tile \
       TRAINER_EVAL_DIR="$MT" TRAINER_EPOCHS=$REFRESH_EPOCHS TRAINER_IMAGE_SIZE=256
trainer refresh --model magnetic_tile --adopt "$OUT/v1" | tail -n 1 > "$OUT/adopt.json"
trainer collect --import "$OUT/part-a/train/good" --model magnetic_tile | tail -n 1 > "$OUT/import.json"
python -m devtools publish "$OUT/part-b" --bootstrap "$INSPECTOR_KAFKA_BOOTSTRAP_SERVERS" --topic frames.normal \
    --model magnetic_tile --camera-id cam-1 --line-id line-1 | tail -n 1 > "$OUT/publish.json"
trainer --log-json collect --idle-timeout 15 | tail -n 1 > "$OUT/collect.json"
set +e
trainer --log-json refresh --model magnetic_tile | tail -n 1 > "$OUT/refresh.json"; echo "refresh exit $?" | tee "$OUT/refresh.exit"
set -e
trainer evaluate --checkpoint "$OUT/models/magnetic_tile/live" --data "$MT" --report "$OUT/report-live" | tail -n 1 > "$OUT/eval-live.json"
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
v1, live = json.loads((out / "eval-v1.json").read_text()), json.loads((out / "eval-live.json").read_text())
print("| | version | image AUROC | pixel AUROC | AUPRO | FRR (test good) |\n|---|---|---|---|---|---|")
for name, r in (("v1 (400 normals)", v1), ("live after refresh", live)):
    print(f"| {name} | {r['version']} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['aupro']:.3f} | {r['false_reject_rate']:.3f} |")
print((out / "refresh.json").read_text())
PY
