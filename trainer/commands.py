"""`trainer collect`, `trainer refresh` and `trainer keygen`: argparse parsers for the trainer CLI.

``register(subparsers)`` adds both (trainer/cli.py calls it). Settings come from the environment
(``TRAINER_*``, see trainer/settings.py); options given on the command line override them. Each
command prints one JSON summary as its last stdout line; logs go to stderr.
``python -m trainer.commands collect|refresh|keygen ...`` runs them on their own (JSON logs).

Exit codes of ``refresh``: 0 promoted, 10 not promoted (gate: the summary's ``gate`` lists
``inspector.contracts.reasons.GateReason`` codes), 11 busy (lock held), 2 failed.
``collect``: 0 done, 2 failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main", "register"]


def _settings(args: argparse.Namespace, mapping: dict[str, str]) -> Any:
    from .settings import TrainerSettings

    overrides = {field: getattr(args, attr) for attr, field in mapping.items() if getattr(args, attr, None) is not None}
    base = TrainerSettings()
    return TrainerSettings.model_validate({**base.model_dump(), **overrides}) if overrides else base


def _print(summary: dict[str, Any]) -> None:
    sys.stdout.flush()
    print(json.dumps(summary, default=str), flush=True)


_COMMON = {"bootstrap": "kafka_bootstrap_servers", "store_dir": "store_dir"}


def _collect(args: argparse.Namespace) -> int:
    from .collect import collect, import_folder, install_stop_signals

    try:
        settings = _settings(args, {**_COMMON, "topic": "normal_topic", "group_id": "group_id", "model": "default_model"})
        if args.import_dir is not None:
            summary = import_folder(settings, settings.default_model, args.import_dir, camera=args.camera_id,
                                    line=args.line_id)
        else:
            stop = threading.Event()
            install_stop_signals(stop)
            summary = collect(settings, max_frames=args.max_frames, idle_timeout_s=args.idle_timeout, stop=stop)
    except Exception as exc:  # noqa: BLE001 - one clear line for the scheduler
        _print({"command": "collect", "outcome": "failed", "error": type(exc).__name__, "message": str(exc)[:2000]})
        return 2
    _print({**summary, "outcome": "done"})
    return 0


def _refresh(args: argparse.Namespace) -> int:
    from .refresh import EXIT_BUSY, EXIT_FAILED, Busy, adopt, refresh

    try:
        settings = _settings(args, {
            **_COMMON, "checkpoints_dir": "checkpoints_dir", "eval_dir": "eval_dir", "epochs": "epochs",
            "min_images": "min_images", "models_topic": "models_topic", "device": "device",
            "lock_timeout": "lock_timeout_s", "image_size": "image_size", "signing_key": "signing_key"})
        if args.adopt is not None:
            summary = adopt(settings, args.model, args.adopt)
            code = 0
        else:
            code, summary = refresh(settings, args.model, from_scratch=args.from_scratch)
    except Busy as exc:
        summary, code = {"command": "refresh", "model": args.model, "outcome": "busy", "reasons": [str(exc)]}, EXIT_BUSY
    except Exception as exc:  # noqa: BLE001
        summary = {"command": "refresh", "model": args.model, "outcome": "failed", "error": type(exc).__name__,
                   "message": str(exc)[:2000]}
        code = EXIT_FAILED
    _print({**summary, "exit_code": code})
    return code


def _keygen(args: argparse.Namespace) -> int:
    from inspector.model.signing import generate_key_pair

    try:
        out = generate_key_pair(args.out, args.name)
    except (OSError, ValueError) as exc:
        _print({"command": "keygen", "outcome": "failed", "error": type(exc).__name__, "message": str(exc)[:500]})
        return 2
    _print({"command": "keygen", "outcome": "done", **out,
            "next": "trainer: TRAINER_SIGNING_KEY=<private_key> (a secret); workers: "
                    "INSPECTOR_MODEL_TRUSTED_KEYS=<trusted_key or public_key path>"})
    return 0


def register(subparsers: Any) -> None:
    """Add `collect`, `refresh` and `keygen` to the trainer CLI's subparsers."""
    c = subparsers.add_parser(
        "collect", help="store confirmed-normal frames from Kafka (or a folder) for later refreshes",
        description="Consume the confirmed-normal topic into the per-model normal-image store "
                    "(TRAINER_STORE_DIR). Prints a JSON summary last.")
    c.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default $TRAINER_KAFKA_BOOTSTRAP_SERVERS)")
    c.add_argument("--topic", default=None, help="confirmed-normal topic (default $TRAINER_NORMAL_TOPIC or frames.normal)")
    c.add_argument("--group-id", default=None, help="consumer group (default $TRAINER_GROUP_ID)")
    c.add_argument("--store-dir", type=Path, default=None, help="normal-image store (default $TRAINER_STORE_DIR)")
    c.add_argument("--model", default=None,
                   help="model of frames without a `model` header; with --import, the model to import into")
    c.add_argument("--max-frames", type=int, default=None, help="stop after this many records")
    c.add_argument("--idle-timeout", type=float, default=None, help="stop after this many seconds without a record")
    c.add_argument("--import", dest="import_dir", type=Path, default=None, help="import a folder of images instead")
    c.add_argument("--camera-id", default="import", help="camera recorded for imported images")
    c.add_argument("--line-id", default=None, help="line recorded for imported images")
    c.set_defaults(func=_collect)

    r = subparsers.add_parser(
        "refresh", help="retrain a model from its normal-image store, gate it, promote and announce it",
        description="Exit codes: 0 promoted, 10 not promoted (gate; the summary's `gate` lists codes and why), 11 busy (another "
                    "refresh of the model runs), 2 failed. Prints a JSON summary last.")
    r.add_argument("--model", required=True, help="model name (the `model` header the workers route on)")
    r.add_argument("--from-scratch", action="store_true", help="do not warm-start from the live checkpoint")
    r.add_argument("--adopt", type=Path, default=None,
                   help="make this existing checkpoint the live version and announce it (first deployment, rollback: "
                        "an update to a checkpoint older than the newest one is marked and signed as a rollback)")
    r.add_argument("--signing-key", type=Path, default=None,
                   help="Ed25519 private key that signs the update (default $TRAINER_SIGNING_KEY)")
    r.add_argument("--checkpoints-dir", type=Path, default=None, help="default $TRAINER_CHECKPOINTS_DIR")
    r.add_argument("--store-dir", type=Path, default=None, help="default $TRAINER_STORE_DIR")
    r.add_argument("--eval-dir", type=Path, default=None, help="labelled MVTec-layout folder for AUROC/AUPRO")
    r.add_argument("--epochs", type=int, default=None)
    r.add_argument("--image-size", type=int, default=None, help="only used when no live checkpoint exists")
    r.add_argument("--min-images", type=int, default=None)
    r.add_argument("--bootstrap", default=None)
    r.add_argument("--models-topic", default=None, help="workers' control topic (default inspector.models)")
    r.add_argument("--device", default=None)
    r.add_argument("--lock-timeout", type=float, default=None, help="seconds to wait for a running refresh")
    r.set_defaults(func=_refresh)

    k = subparsers.add_parser(
        "keygen", help="write an Ed25519 key pair that signs model updates",
        description="Writes OUT/NAME.key (private, mode 0600: give it to the trainer only, as a secret) and "
                    "OUT/NAME.pub (the line workers trust). Never overwrites a key. Prints a JSON summary "
                    "(never the private key).")
    k.add_argument("--out", type=Path, required=True, help="directory for the two files")
    k.add_argument("--name", default="model-signing", help="file name stem (default model-signing)")
    k.set_defaults(func=_keygen)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trainer", description="Collect normal images and refresh checkpoints.")
    p.add_argument("--log-level", default="info")
    sub = p.add_subparsers(dest="command", required=True)
    register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from inspector.support.logs import configure_logging

    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, json_logs=True)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
