"""Print markdown tables (and JSON) of the runs written by bench/magnetic_tile.sh: one row per run,
then image AUROC per defect type."""

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
                     "target_frr": ev.get("target_frr"), "calibration": ev.get("calibration", "empirical"),
                     "best_epoch": fit["best_epoch"], "train_s": fit["train_seconds"],
                     "signals_s": fit.get("signals_seconds", 0.0), "eval_img_s": ev["images_per_s"],
                     "per_type": {t: r["image_auroc"] for t, r in ev["per_type"].items()}})
    print("| run | image AUROC | pixel AUROC | AUPRO | false rejects at thr (target) | recall at thr | threshold | "
          "best epoch | train s + signals s | eval img/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        target = f" ({r['target_frr']:.1%})" if r["target_frr"] is not None else ""
        print(f"| {r['run']} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['aupro']:.3f} | "
              f"{r['frr@thr']:.1%}{target} | {r['recall@thr']:.1%} | {r['calibration']} | {r['best_epoch']} | "
              f"{r['train_s']:.0f} + {r['signals_s']:.0f} | {r['eval_img_s']:.1f} |")
    types = sorted({t for r in rows for t in r["per_type"]})
    print("\n| run | " + " | ".join(types) + " |")
    print("|---|" + "---|" * len(types))
    for r in rows:
        print(f"| {r['run']} | " + " | ".join(f"{r['per_type'].get(t, float('nan')):.3f}" for t in types) + " |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/magnetic_tile")
