"""`trainer fit | evaluate | calibrate | collect | refresh`. Each prints one JSON object as its last line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from inspector.model.geometry import parse_size
from inspector.support.logs import configure_logging


def _tile_arg(value: str) -> int | str | None:
    if value in ("off", "none", "0"):
        return None
    if value == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"--tile: expected a size in px, auto or off, got {value!r}") from None


def _memory_weight_arg(value: str) -> float | str:
    if value == "auto":
        return value
    try:
        share = float(value)
    except ValueError:
        share = -1.0
    if not 0.0 <= share <= 1.0:
        raise SystemExit(f"--memory-weight: expected auto or a share between 0 and 1, got {value!r}")
    return share


def _fit(args: argparse.Namespace) -> int:
    from .fit import FitConfig, fit

    cfg = FitConfig(
        data=args.data, out=args.out, method=args.method, variant=args.variant, teacher=args.teacher,
        teacher_weights=args.teacher_weights, image_size=args.image_size, epochs=args.epochs,
        input_size=parse_size(args.input_size) if args.input_size else None, resize=args.resize,
        tile=_tile_arg(args.tile), overlap=args.overlap, zoom=args.zoom,
        max_tiles=args.max_tiles or None,
        selection=args.selection, synthetic_train=args.synthetic_train,
        batch_size=args.batch_size, lr=args.lr, betas=(args.beta1, args.beta2), loss=args.loss, seed=args.seed,
        val_fraction=args.val_fraction, target_frr=args.target_frr, calibration=args.calibration,
        precision_thresholds=args.precision_thresholds,
        score_mode=args.score_mode, topk_fraction=args.topk_fraction, memory_bank=args.memory_bank,
        coreset_fraction=args.coreset_fraction, memory_weight=_memory_weight_arg(args.memory_weight),
        norm_map=args.norm_map,
        global_gaussian=args.global_gaussian,
        global_neighbours=args.global_neighbours, contrast_map=args.contrast_map,
        contrast_lines=args.contrast_lines, edge_equalise=args.edge_equalise,
        device=args.device,
        amp=not args.no_amp, cache_teacher=args.cache_teacher, name=args.name, resume=args.resume,
        init_from=args.init_from, progress=not args.no_progress, max_train_images=args.max_train_images,
    )
    summary = fit(cfg)
    if "checkpoint" in summary:  # under torchrun only rank 0 writes and reports
        print(json.dumps(summary))
    return 0


def _fit_default(name: str):
    from dataclasses import fields

    from .fit import FitConfig

    return next(f.default for f in fields(FitConfig) if f.name == name)


def _evaluate(args: argparse.Namespace) -> int:
    from inspector.engine.options import EngineOptions

    from .evaluate import evaluate

    options = EngineOptions(backend=args.backend, precision=args.precision)
    print(json.dumps(evaluate(args.checkpoint, args.data, args.report, args.device, args.batch_size, options=options)))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    import structlog

    from .precision import calibrate_checkpoint

    m = calibrate_checkpoint(args.checkpoint, args.data, args.out, structlog.get_logger("trainer.calibrate"),
                             device=args.device)
    print(json.dumps({"checkpoint": str(args.out), "version": m.version, "parent_version": m.parent_version,
                      "threshold": m.threshold,
                      "precision_thresholds": {k: v.threshold for k, v in m.precision_points.items()}}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trainer", description="Train and evaluate anomaly-detection checkpoints.")
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-json", action="store_true", help="structlog JSON lines instead of console output")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="train students on normal images and write a checkpoint")
    f.add_argument("--data", type=Path, required=True, help="MVTec-layout folder (only train/good is read)")
    f.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    f.add_argument("--method", choices=["rd", "dskd"], default="rd")
    f.add_argument("--variant", choices=["dual", "dual_no_df", "forward", "rd"], default="dual", help="DSKD ablation")
    f.add_argument("--teacher", default="efficientnet_lite0")
    f.add_argument("--teacher-weights", type=Path, default=None, help="explicit teacher weight file")
    f.add_argument("--image-size", type=int, default=256,
                   help="input side of a square model; with --resize pad, the input's area is about its square")
    f.add_argument("--input-size", default=None, metavar="WxH",
                   help="model input width x height, multiples of 32 (default: the training images' median "
                        "aspect ratio at about --image-size squared pixels)")
    f.add_argument("--resize", choices=["pad", "stretch"], default="pad",
                   help="pad: scale each frame without distortion and mirror it into the rest of the input; "
                        "stretch: resize to the input whatever the frame's shape (models before aspect support)")
    f.add_argument("--tile", default="auto", metavar="SIZE|auto|off",
                   help="cut full-resolution frames into SIZE x SIZE tiles (a multiple of 32) for training and "
                        "serving; auto: tiles of --image-size when the median training frame has at least 64x "
                        "the input's pixels (line-camera frames, not object photos); off: whole frames")
    f.add_argument("--overlap", type=int, default=None, metavar="PX",
                   help="frame pixels shared by neighbouring tiles (default: an eighth of a tile's window)")
    f.add_argument("--zoom", type=int, default=1, metavar="N",
                   help="tiled models: cut windows of SIZE/N frame pixels and enlarge each N times to the "
                        "input, so defects a few pixels wide span N^2 times the feature cells (N^2 times "
                        "the tiles a frame)")
    f.add_argument("--max-tiles", type=int, default=_fit_default("max_tiles"), metavar="N",
                   help="tiled models: train on at most N tiles, a seeded sample of all the frames' tile positions "
                        "when there are more (bounds the fit's memory: about 1.5 MB a 256 px tile); validation "
                        "tiles at most N/4; 0: every tile")
    f.add_argument("--epochs", type=int, default=200)
    f.add_argument("--synthetic-train", type=float, default=_fit_default("synthetic_train"), metavar="SHARE",
                   help="share of each training batch given synthetic anomalies, with the clean image's teacher "
                        "features as the target, so the students learn not to reproduce anomalies (0: off)")
    f.add_argument("--selection", choices=["synthetic", "loss"], default="synthetic",
                   help="which epoch is kept: synthetic = the one whose students' map best separates the "
                        "validation normals from copies with synthetic anomalies painted on (trainer.anomalies); "
                        "loss = the lowest validation loss on normals")
    f.add_argument("--batch-size", type=int, default=16)
    f.add_argument("--lr", type=float, default=0.005)
    f.add_argument("--beta1", type=float, default=0.5)
    f.add_argument("--beta2", type=float, default=0.999)
    f.add_argument("--loss", choices=["map", "pixel"], default="map")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--val-fraction", type=float, default=0.1)
    f.add_argument("--target-frr", type=float, default=0.005, help="false-reject rate the threshold is set for")
    f.add_argument("--calibration", choices=["auto", "empirical", "gumbel"], default="auto",
                   help="how the threshold is read off the validation normals: the empirical quantile, the "
                        "quantile of a fitted Gumbel law (few normals), or auto: empirical once n x target-frr "
                        ">= 10, else gumbel")
    f.add_argument("--precision-thresholds", action=argparse.BooleanOptionalAction, default=True,
                   help="also calibrate a threshold on the validation normals as scored in each reduced precision "
                        "a worker may pick and this machine can run (OpenVINO bf16 on a CPU with native bf16, "
                        "torch bf16 on a GPU): a bf16 map's maximum sits higher than fp32's, so the fp32 "
                        "threshold would reject more good parts than --target-frr there")
    f.add_argument("--edge-equalise", action=argparse.BooleanOptionalAction, default=True,
                   help="equalise the map near each frame's edge to the interior's normal variation, measured on "
                        "the validation normals in 4 px bands up to 32 px in (damping only): a normal part's map "
                        "varies most at its edges, where its maximum, the image score, lands most often "
                        "(whole-frame models; tiled ones are not equalised)")
    f.add_argument("--score-mode", choices=["max", "topk"], default="max",
                   help="image score: the map's maximum, or the mean of its top --topk-fraction of pixels")
    f.add_argument("--topk-fraction", type=float, default=_fit_default("topk_fraction"))
    f.add_argument("--memory-bank", action=argparse.BooleanOptionalAction, default=True,
                   help="fuse a PatchCore-style memory bank of the teacher's stride-16 patches (a map; "
                        "nearest-neighbour distance to a coreset of the training patches)")
    f.add_argument("--coreset-fraction", type=float, default=_fit_default("coreset_fraction"),
                   help="share of the training patches kept in the memory bank (at most 8192 rows)")
    f.add_argument("--memory-weight", default="auto", metavar="auto|SHARE",
                   help="the memory map's share of the heatmap (the students' map has the rest); auto: the "
                        "share, in steps of 0.1, that best separates synthetic anomalies painted on the "
                        "validation normals from the clean ones (image and pixel AUROC), recorded in the "
                        "manifest; the equal mix 0.5 stays unless another share is better by more than 0.005")
    f.add_argument("--norm-map", choices=["auto", "on", "off"], default="auto",
                   help="let the students' part of the heatmap also read the ratio of their features' norms to "
                        "the teacher's (|log ratio| per position and scale, averaged half and half with the "
                        "cosine map): the cosine sees where a feature's direction departs from normal, not "
                        "its magnitude (brightness and contrast changes). auto: kept only if it separates "
                        "synthetic anomalies painted on the validation normals better by more than 0.005, "
                        "recorded in the manifest; off: the cosine map alone, as before")
    f.add_argument("--global-gaussian", action=argparse.BooleanOptionalAction, default=True,
                   help="fuse the Mahalanobis distance of each image's pooled teacher statistics (channel "
                        "means and standard deviations) to the normals' Gaussian: sees global and "
                        "low-contrast changes that the cosine maps cannot")
    f.add_argument("--global-neighbours", type=int, default=_fit_default("global_neighbours"), metavar="K",
                   help="judge that distance against the normals that look like the image: divide it by the "
                        "mean distance of the image's K nearest training normals (in the Gaussian's whitened "
                        "space; the statistics of at most 4096 of them are kept in the checkpoint, 1.4 KB each "
                        "with lite0). Where the normals are a mixture (lighting set-ups, batches), an image's "
                        "distance and its neighbours' move together with its mode, a defect moves only the "
                        "image's. 0: the plain distance")
    f.add_argument("--contrast-map", action=argparse.BooleanOptionalAction, default=False,
                   help="fuse a local-contrast map at the input's own resolution (matched filters for small "
                        "spots and thin lines on the image minus its local background, each over its level on "
                        "the training normals), by the larger of it and the other maps at each pixel: for "
                        "defects a few pixels across that the teacher's stride-4 features cannot resolve, "
                        "mainly on tiled full-resolution frames (see README)")
    f.add_argument("--contrast-lines", choices=["whitened", "plain"], default=_fit_default("contrast_lines"),
                   help="the contrast map's line filters: whitened (each line shape divided by the power "
                        "spectrum of the training normals' surface, the matched filter for a line in that "
                        "grain: it finds 1 px scratches the plain shapes lose in the grain) or plain (the "
                        "shapes themselves, as before)")
    f.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
    f.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")
    f.add_argument("--cache-teacher", choices=["auto", "yes", "no"], default="auto")
    f.add_argument("--name", default=None, help="model name (default: the data folder's name)")
    f.add_argument("--resume", action="store_true", help="continue from OUT/train-state")
    f.add_argument("--init-from", type=Path, default=None, help="warm-start from this checkpoint")
    f.add_argument("--max-train-images", type=int, default=None)
    f.add_argument("--no-progress", action="store_true")
    f.set_defaults(func=_fit)

    e = sub.add_parser("evaluate", help="image/pixel AUROC and AUPRO on a labelled folder")
    e.add_argument("--checkpoint", type=Path, required=True)
    e.add_argument("--data", type=Path, required=True)
    e.add_argument("--report", type=Path, default=None, help="folder for metrics.json, ROC curves and heatmaps")
    e.add_argument("--device", default=None)
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--backend", choices=["auto", "torch", "onnx", "openvino"], default="auto",
                   help="how the engine runs the model (auto: as a worker on this machine would)")
    e.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: as a worker here would; the threshold is the one calibrated for that precision, "
                        "where the checkpoint has one (the report's threshold_calibrated_in says)")
    e.set_defaults(func=_evaluate)

    c = sub.add_parser("calibrate", help="copy a checkpoint with thresholds for the reduced precisions this "
                                         "machine can run, calibrated on the normals it was fitted on")
    c.add_argument("--checkpoint", type=Path, required=True)
    c.add_argument("--data", type=Path, required=True, help="the MVTec-layout folder it was fitted on")
    c.add_argument("--out", type=Path, required=True, help="where the calibrated copy (a new version) is written")
    c.add_argument("--device", default=None, help="where torch bf16 is calibrated (default: the GPU if any)")
    c.set_defaults(func=_calibrate)

    from . import commands  # collect, refresh

    commands.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, json_logs=args.log_json)
    try:
        return args.func(args)
    except Exception as exc:  # one clear line for the operator and the scheduler
        from inspector.model.checkpoint import CheckpointError
        from inspector.model.nets.teachers import TeacherWeightsError
        from .data import DatasetError

        if isinstance(exc, (CheckpointError, TeacherWeightsError, DatasetError, ValueError, FileNotFoundError)):
            print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
