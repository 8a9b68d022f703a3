"""`inspector verify CKPT`: is a checkpoint intact, who signed it, and would a worker load it.

Reads the manifest, checks the weights against its hash and the signed statement
(``signature.json``) against the manifest and the trusted keys (``--trusted-keys`` or
``INSPECTOR_MODEL_TRUSTED_KEYS``). Nothing is unpickled and no model is built. Prints one JSON
object; exit 0 when a worker with those keys would accept it, 1 when not (``problems`` says why).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from inspector.model.checkpoint import WEIGHTS_FILE, CheckpointError, manifest_sha256, read_manifest
from inspector.support.hashing import sha256_file
from inspector.model.signing import SIGNATURE_FILE, SignatureError, TrustedKeys, read_statement, statement_matches, verify


def verify_checkpoint(ckpt: str | Path, trusted: TrustedKeys) -> dict[str, Any]:
    ckpt = Path(ckpt)
    out: dict[str, Any] = {"checkpoint": str(ckpt), "intact": False, "problems": []}
    problems: list[dict[str, str]] = out["problems"]
    try:
        manifest = read_manifest(ckpt)
    except CheckpointError as exc:
        problems.append({"reason": exc.reason or "invalid", "detail": str(exc)[:500]})
        out["accepted"] = False
        return out
    sha = manifest_sha256(ckpt)
    out.update(name=manifest.name, version=manifest.version, created_at=manifest.created_at, manifest_sha256=sha)
    weights = ckpt / WEIGHTS_FILE
    if not weights.is_file():
        problems.append({"reason": "weights_missing", "detail": f"no {WEIGHTS_FILE}"})
    elif sha256_file(weights) != manifest.weights_sha256:
        problems.append({"reason": "weights_hash", "detail": f"{WEIGHTS_FILE} does not match the manifest's sha256"})
    out["intact"] = not problems

    sig: dict[str, Any] = {"present": False, "trusted_keys": trusted.ids()}
    out["signature"] = sig
    try:
        statement = read_statement(ckpt)
        if statement is not None:
            sig.update(present=True, key_id=statement.signature.key_id if statement.signature else None,
                       rollback=statement.rollback, published_at=statement.published_at and datetime.fromtimestamp(
                           statement.published_at / 1000, timezone.utc).isoformat())
            statement_matches(statement, manifest, sha)
        if trusted:
            if statement is None:
                raise SignatureError(f"no {SIGNATURE_FILE}: the checkpoint is not signed")
            sig["signed_by"] = verify(statement, trusted)
            sig["valid"] = True
        elif statement is not None:
            sig["valid"] = None  # nothing to check it against
            sig["note"] = "no trusted keys given (--trusted-keys or INSPECTOR_MODEL_TRUSTED_KEYS): not checked"
    except SignatureError as exc:
        sig["valid"] = False
        problems.append({"reason": "signature", "detail": str(exc)[:500]})
    out["accepted"] = not problems
    return out


def _main(args: argparse.Namespace) -> int:
    if args.trusted_keys is not None:
        spec = args.trusted_keys
    else:
        from inspector.runtime.settings import Settings

        spec = Settings().model_trusted_keys
    try:
        trusted = TrustedKeys.parse(spec)
    except (OSError, ValueError) as exc:
        print(json.dumps({"checkpoint": str(args.checkpoint), "accepted": False,
                          "problems": [{"reason": "trusted_keys", "detail": str(exc)[:500]}]}))
        return 2
    report = verify_checkpoint(args.checkpoint, trusted)
    print(json.dumps(report, indent=2 if args.pretty else None))
    return 0 if report["accepted"] else 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "verify", help="check a checkpoint's hashes and signature as a worker would",
        description="Exit 0: a worker with these trusted keys would accept it; 1: it would not (see problems); "
                    "2: the keys themselves are unreadable.")
    p.add_argument("checkpoint", type=Path, help="checkpoint directory")
    p.add_argument("--trusted-keys", default=None,
                   help="comma-separated 'ed25519:<base64>' entries or key files (default $INSPECTOR_MODEL_TRUSTED_KEYS)")
    p.add_argument("--pretty", action="store_true", help="indented JSON")
    p.set_defaults(func=_main)
