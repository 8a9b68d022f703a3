"""Who may change what the workers run: Ed25519-signed model updates.

A manifest hash proves that a checkpoint is intact, not who made it, and the hash travels in the
same control-topic record as the location. So the trainer signs a *release statement*: the model
name, the version, the manifest's sha256, whether it is a deliberate rollback, and when it was
issued (integer epoch ms). The statement rides in the ``ModelUpdate`` and is kept beside the
checkpoint as ``signature.json`` (so a worker can check ``INSPECTOR_CHECKPOINT`` at start-up too).

Workers trust public keys given as ``ed25519:<base64 of the 32 raw bytes>`` (what ``trainer
keygen`` prints) or as files holding such lines or a PEM public key; several at once, so a key
can be rotated without a gap. The key id is the first 16 hex digits of the sha256 of the raw
public key. The location is not signed: it depends on where a volume is mounted, and the worker
confines it to its models directory and checks the signed manifest hash against what it finds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from inspector.contracts.wire import ModelSignature, ModelUpdate

if TYPE_CHECKING:
    from inspector.model.checkpoint import Manifest

SIGNATURE_FILE = "signature.json"
DOMAIN = "inspector.model-update.v1"
KEY_PREFIX = "ed25519:"


class SignatureError(ValueError):
    """A statement is unsigned, signed by a key that is not trusted, or does not verify."""

    reason = "signature"


# ---------------------------------------------------------------------------------------------- keys

def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_entry(public_key: Ed25519PublicKey) -> str:
    """The one-line form of a public key that ``INSPECTOR_MODEL_TRUSTED_KEYS`` takes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode()


def _parse_entry(entry: str, origin: str) -> Ed25519PublicKey:
    if not entry.startswith(KEY_PREFIX):
        raise ValueError(f"{origin}: a trusted key is 'ed25519:<base64>' (as `trainer keygen` prints) "
                         f"or a file holding one; got {entry[:24]!r}")
    try:
        raw = base64.b64decode(entry[len(KEY_PREFIX):], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{origin}: the key after 'ed25519:' is not base64") from exc
    if len(raw) != 32:
        raise ValueError(f"{origin}: an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def _keys_from_file(path: Path) -> list[Ed25519PublicKey]:
    data = path.read_bytes()
    if b"-----BEGIN PUBLIC KEY-----" in data:
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
        return [key]
    if b"PRIVATE KEY" in data:
        raise ValueError(f"{path}: is a private key; workers need only the public key (the .pub file)")
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines()]
    keys = [_parse_entry(ln, str(path)) for ln in lines if ln and not ln.startswith("#")]
    if not keys:
        raise ValueError(f"{path}: holds no key")
    return keys


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys whose signatures a worker accepts, by key id."""

    keys: dict[str, Ed25519PublicKey]

    @classmethod
    def parse(cls, spec: str | Iterable[str] | None) -> TrustedKeys:
        """Comma- or newline-separated entries, each ``ed25519:<base64>`` or a file path."""
        items = spec.replace("\n", ",").split(",") if isinstance(spec, str) else list(spec or ())
        keys: dict[str, Ed25519PublicKey] = {}
        for item in (i.strip() for i in items):
            if not item:
                continue
            if item.startswith(KEY_PREFIX):
                found = [_parse_entry(item, "INSPECTOR_MODEL_TRUSTED_KEYS")]
            else:
                path = Path(item)
                if not path.is_file():
                    raise ValueError(f"INSPECTOR_MODEL_TRUSTED_KEYS: {item!r} is neither 'ed25519:<base64>' "
                                     "nor a readable file")
                found = _keys_from_file(path)
            for key in found:
                keys[key_id(key)] = key
        return cls(keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def ids(self) -> list[str]:
        return sorted(self.keys)


def generate_key_pair(out_dir: str | Path, name: str = "model-signing") -> dict[str, str]:
    """Write ``NAME.key`` (PKCS#8 PEM, mode 0600) and ``NAME.pub`` (the trusted-key line).

    Refuses to overwrite either file: a lost private key cannot be recovered, a replaced one
    silently breaks every worker that trusts the old one."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / f"{name}.key", out / f"{name}.pub"
    for p in (private_path, public_path):
        if p.exists():
            raise FileExistsError(f"{p} exists; choose another --out or --name (keys are never overwritten)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    entry = public_key_entry(key.public_key())
    public_path.write_text(f"# Ed25519 key {key_id(key.public_key())}: trust it with INSPECTOR_MODEL_TRUSTED_KEYS\n"
                           f"{entry}\n")
    return {"private_key": str(private_path), "public_key": str(public_path),
            "key_id": key_id(key.public_key()), "trusted_key": entry}


def load_private_key(pem: bytes, origin: str = "signing key") -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        # never echo the bytes: they are a secret
        raise ValueError(f"{origin}: not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{origin}: not an Ed25519 private key ({type(key).__name__})")
    return key


# ---------------------------------------------------------------------------------------------- statements

def payload(update: ModelUpdate) -> bytes:
    """The bytes that are signed: canonical JSON of what the update asks a worker to do."""
    if update.published_at is None:
        raise SignatureError("a signed update needs published_at (the time it was issued)")
    doc = {"domain": DOMAIN, "name": update.name, "version": update.version,
           "manifest_sha256": update.manifest_sha256, "rollback": bool(update.rollback),
           "published_at": int(update.published_at)}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def sign(update: ModelUpdate, key: Ed25519PrivateKey) -> ModelUpdate:
    """``update`` with its issue time made whole milliseconds, signed by ``key``."""
    update = update.model_copy(update={"published_at": float(int(update.published_at or 0))})
    value = key.sign(payload(update))
    return update.model_copy(update={"signature": ModelSignature(
        key_id=key_id(key.public_key()), value=base64.b64encode(value).decode())})


def verify(update: ModelUpdate, trusted: TrustedKeys) -> str:
    """The id of the trusted key that signed ``update``; SignatureError says why not."""
    sig = update.signature
    if sig is None:
        raise SignatureError(f"{update.name}/{update.version} is not signed and trusted keys are configured")
    key = trusted.keys.get(sig.key_id)
    if key is None:
        raise SignatureError(f"{update.name}/{update.version} is signed by key {sig.key_id}, which is not "
                             f"trusted (trusted: {', '.join(trusted.ids()) or 'none'})")
    try:
        key.verify(base64.b64decode(sig.value, validate=True), payload(update))
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        raise SignatureError(f"{update.name}/{update.version}: the signature of key {sig.key_id} does not "
                             "match the statement (altered after signing, or forged)") from exc
    return sig.key_id


def write_statement(ckpt_dir: str | Path, update: ModelUpdate) -> Path:
    """Keep the signed statement beside the checkpoint (atomically; replaces an older one)."""
    from inspector.support.durable import write_bytes_atomic

    path = Path(ckpt_dir) / SIGNATURE_FILE
    write_bytes_atomic(path, update.model_copy(update={"checkpoint": "."}).model_dump_json(indent=2).encode())
    return path


def read_statement(ckpt_dir: str | Path) -> ModelUpdate | None:
    """The statement kept beside a checkpoint, or None when it has none."""
    path = Path(ckpt_dir) / SIGNATURE_FILE
    if not path.is_file():
        return None
    if path.stat().st_size > 64 * 1024:
        raise SignatureError(f"{path}: larger than 64 KiB")
    try:
        return ModelUpdate.from_bytes(path.read_bytes())
    except ValueError as exc:
        raise SignatureError(f"{path}: not a signed statement: {str(exc)[:200]}") from exc


def statement_matches(statement: ModelUpdate, manifest: Manifest, manifest_sha256: str) -> None:
    """A statement kept beside a checkpoint must describe that very checkpoint."""
    if (statement.name, statement.version, statement.manifest_sha256) != (manifest.name, manifest.version,
                                                                            manifest_sha256):
        raise SignatureError(f"{SIGNATURE_FILE} describes {statement.name}/{statement.version} "
                             f"(manifest {statement.manifest_sha256[:12]}), not this checkpoint "
                             f"{manifest.name}/{manifest.version} (manifest {manifest_sha256[:12]})")
