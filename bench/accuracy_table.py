"""Print a markdown table (and JSON) of the runs written by bench/magnetic_tile.sh."""

import json
import sys
from pathlib import Path


def main(root: str) -> None:
    rows = []
    for run in sorted(Path(root).iterdir()):
        if not (run / "eval.json").is_file():
            continue
        fit = json.loads((run / "fit.json").read_text())
        ev = json.loads((run / "eval.json").read_text())
        rows.append({"run": run.name, "image_auroc": ev["image_auroc"], "pixel_auroc": ev["pixel_auroc"],
                     "aupro": ev["aupro"], "frr@thr": ev["false_reject_rate"], "recall@thr": ev["defect_recall"],
                     "best_epoch": fit["best_epoch"], "train_s": fit["train_seconds"], "eval_img_s": ev["images_per_s"]})
    print("| run | image AUROC | pixel AUROC | AUPRO | FRR at thr | recall at thr | best epoch | train s | eval img/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['aupro']:.3f} | {r['frr@thr']:.3f} "
              f"| {r['recall@thr']:.3f} | {r['best_epoch']} | {r['train_s']:.0f} | {r['eval_img_s']:.1f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/magnetic_tile")
