"""`make demo`: the whole product end to end on this machine, then everything it started is stopped.

local Apache Kafka + Redis (loopback) → train a small model (synthetic parts, or any
MVTec-layout folder with --data) → evaluate it → start a worker → a simulated camera publishes
normal and defective frames → verdicts are printed as they arrive → heatmap overlays are written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np


def say(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def frames_from(data: Path | None, n: int, seed: int) -> list[tuple[bytes, str, str]]:
    """(bytes, content type, truth) for the camera: the test images of an MVTec folder, or new synthetic parts."""
    if data is not None:
        from trainer.data import scan_dataset

        test = scan_dataset(data).test
        pick = [test[i * len(test) // n] for i in range(min(n, len(test)))]
        return [(s.path.read_bytes(), "image/png" if s.path.suffix.lower() == ".png" else "image/jpeg",
                 "good" if s.label == 0 else s.defect_type) for s in pick]
    from trainer.synthetic import make_frame

    kinds = [None, None, "scratch", None, "spot"]
    # PNG like the training images: a model trained on lossless frames sees JPEG artifacts as anomalies.
    return [(make_frame(kinds[i % len(kinds)], size=128, seed=seed, index=10_000 + i, fmt="png"), "image/png",
             kinds[i % len(kinds)] or "good") for i in range(n)]


def sign_for_demo(out: Path) -> str:
    """Sign the demo checkpoint as the trainer would (a key pair of the demo's own, kept in
    OUT/keys); returns the public key file the worker is told to trust."""
    from inspector.model.repository import update_for_checkpoint
    from inspector.model.signing import generate_key_pair, load_private_key, sign, write_statement

    keys = out / "keys"
    if not (keys / "model-signing.key").exists():
        generate_key_pair(keys)
    key = load_private_key((keys / "model-signing.key").read_bytes())
    write_statement(out / "checkpoint", sign(update_for_checkpoint(out / "checkpoint"), key))
    return str(keys / "model-signing.pub")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="inspector-demo", description=__doc__)
    p.add_argument("--data", type=Path, default=None, help="MVTec-layout folder (default: synthetic parts)")
    p.add_argument("--out", type=Path, default=Path("demo-output"))
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--rate", type=float, default=10.0, help="camera frames per second")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--image-size", type=int, default=128)
    args = p.parse_args(argv)

    from devtools.camera import make_producer, publish_frames
    from devtools.localstack import LocalBroker, LocalRedis, ensure_topics
    from inspector.support.logs import configure_logging
    from devtools.tail import VerdictTail, format_verdict
    from devtools.workers import ServeProcess
    from trainer.evaluate import evaluate
    from trainer.fit import FitConfig, fit
    from trainer.report import heatmap_overlay, overlay_grid
    from trainer.synthetic import make_dataset

    configure_logging("warning")
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    started = time.monotonic()
    with LocalBroker(run_dir=out / "services") as broker, LocalRedis(run_dir=out / "services") as redis_srv:
        ensure_topics(broker.bootstrap)  # frames with a 1-hour retention, the compacted control topic, ...
        say(f"local Apache Kafka {broker.bootstrap}, Redis {redis_srv.url} (loopback only)")
        data = args.data
        if data is None:
            data = make_dataset(out / "data", n_train=160, n_test_good=20, n_test_defect=15, size=128, seed=0)
            say(f"synthetic parts written to {data}")
        say(f"training RD (efficientnet_lite0 teacher) at {args.image_size}px for {args.epochs} epochs")
        summary = fit(FitConfig(data=data, out=out / "checkpoint", method="rd", image_size=args.image_size,
                                epochs=args.epochs, val_fraction=0.2, progress=sys.stderr.isatty(),
                                name="demo"))
        print(json.dumps(summary))
        metrics = evaluate(out / "checkpoint", data, out / "report", None)
        say(f"held-out test set: image AUROC {metrics['image_auroc']:.3f}, pixel AUROC {metrics['pixel_auroc']:.3f}, "
            f"AUPRO {metrics['aupro']:.3f} (report in {out / 'report'})")

        trusted = sign_for_demo(out)
        say("checkpoint signed (Ed25519); the worker trusts only that key")
        env = dict(INSPECTOR_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, INSPECTOR_REDIS_URL=redis_srv.url,
                   INSPECTOR_CHECKPOINT=str(out / "checkpoint"),
                   INSPECTOR_MODEL_TRUSTED_KEYS=trusted, INSPECTOR_MODELS_DIR=str(out),
                   INSPECTOR_KAFKA_SESSION_TIMEOUT_MS="6000", INSPECTOR_KAFKA_HEARTBEAT_INTERVAL_MS="1000",
                   INSPECTOR_WORKER_ID="demo-worker", INSPECTOR_MAX_DELAY_MS="50")
        with ServeProcess(out / "worker.log", env, name="demo-worker") as worker:  # SIGTERM on the way out
            worker.wait_ready(120)
            say(f"worker ready (health and metrics on http://127.0.0.1:{worker.port}/metrics)")
            frames = frames_from(args.data, args.frames, seed=0)
            sent: dict[str, tuple[bytes, str]] = {}  # frame id -> (bytes, truth)
            verdicts: dict[str, dict] = {}
            with VerdictTail(broker.bootstrap, "verdicts", from_beginning=True) as tail:
                producer = make_producer(broker.bootstrap)
                say(f"camera publishing {len(frames)} frames at {args.rate:g}/s from two cameras")
                for k, cam in enumerate(("cam-1", "cam-2")):
                    mine = frames[k::2]
                    ids = publish_frames(producer, "frames", [(b, ct) for b, ct, _ in mine], args.rate / 2,
                                         camera_id=cam, line_id="line-1")
                    sent.update({fid: (b, t) for fid, (b, _, t) in zip(ids, mine)})
                producer.close()
                for rec in tail.iter(count=len(sent), timeout=120):
                    if rec.verdict is not None:
                        verdicts[rec.verdict["frame_id"]] = rec.verdict
                        print(format_verdict(rec.verdict), f"truth={sent.get(rec.verdict['frame_id'], (0, '?'))[1]}",
                              flush=True)
            import redis

            cache = redis.Redis.from_url(redis_srv.url)
            (out / "overlays").mkdir()
            tiles, captions = [], []
            for fid, v in verdicts.items():
                png = cache.get(v["heatmap_key"]) if v.get("heatmap_key") else None
                if png is None or fid not in sent:
                    continue
                heat = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED).astype(np.float32)
                data_bytes, truth = sent[fid]
                img = cv2.cvtColor(cv2.imdecode(np.frombuffer(data_bytes, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                overlay = heatmap_overlay(img, heat, vmin=0.0, vmax=255.0)  # PNG scale: 128 = threshold
                cv2.imwrite(str(out / "overlays" / f"{fid}.png"), overlay[..., ::-1])
                tiles.append(overlay)
                captions.append(f"{truth}: {v['verdict']}")
            if tiles:
                overlay_grid(tiles[:16], captions[:16], out / "overlays.png", cols=4, tile_size=(160, 160))
            right = sum((v["verdict"] == "defect") == (sent[f][1] != "good") for f, v in verdicts.items() if f in sent)
            lat = [v["timings"]["published_at"] - v["timings"]["captured_at"] for v in verdicts.values()
                   if v["timings"].get("captured_at")]
            say(f"{len(verdicts)}/{len(sent)} frames got a verdict; {right} match the truth; "
                f"median capture→verdict latency {np.median(lat):.0f} ms" if lat else "no latency data")
    say(f"done in {time.monotonic() - started:.0f} s; every process the demo started is stopped")
    print(f"""
Look at:
  {out / 'overlays.png'}            heatmaps of the streamed frames (more in {out / 'overlays'}/)
  {out / 'report' / 'heatmaps.png'}  evaluation heatmaps with ground-truth contours; ROC curves beside it
  {out / 'checkpoint' / 'manifest.json'}  the model: threshold, score statistics, lineage, hashes
  {out / 'worker.log'}               the worker's structured JSON log
Next: `make test`; `trainer fit --data YOUR_MVTEC_FOLDER ...` (README); `deploy/local/services start` and
`inspector serve` / `python -m devtools publish` / `python -m devtools tail` by hand.""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
