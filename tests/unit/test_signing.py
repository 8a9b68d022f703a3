"""Signed model updates: keys, statements, confined locations, the order updates may follow, and
a worker's rollout refusing what it must (real engines, no broker)."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from inspector.model.checkpoint import read_manifest
from inspector.runtime.observability import Metrics
from inspector.model.repository import ModelRepository
from inspector.runtime.rollout import ModelRegistry, Release, Rollout, ordering_refusal
from inspector.runtime.settings import Settings
from inspector.model.signing import (
    SignatureError,
    TrustedKeys,
    generate_key_pair,
    key_id,
    load_private_key,
    public_key_entry,
    sign,
    verify,
)
from inspector.verify import verify_checkpoint
from tests.releases import release_copy, signed_update


@pytest.fixture(scope="module")
def keys():
    return [Ed25519PrivateKey.generate() for _ in range(3)]


def trust(*private):
    return TrustedKeys.parse(",".join(public_key_entry(k.public_key()) for k in private))


# ------------------------------------------------------------------------------------------ keys

def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path):
    out = generate_key_pair(tmp_path / "keys")
    priv, pub = tmp_path / "keys" / "model-signing.key", tmp_path / "keys" / "model-signing.pub"
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    key = load_private_key(priv.read_bytes())
    assert key_id(key.public_key()) == out["key_id"] and out["trusted_key"] == public_key_entry(key.public_key())
    assert "PRIVATE" not in json.dumps(out)  # the summary never carries the private key
    assert TrustedKeys.parse(str(pub)).ids() == [out["key_id"]]
    before = priv.read_bytes()
    with pytest.raises(FileExistsError):
        generate_key_pair(tmp_path / "keys")
    assert priv.read_bytes() == before


def test_trusted_keys_from_lines_files_and_pem_several_at_once(tmp_path, keys):
    a, b, c = keys
    pem = tmp_path / "c.pem"
    pem.write_bytes(c.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    lines = tmp_path / "b.pub"
    lines.write_text(f"# rotated in 2026\n{public_key_entry(b.public_key())}\n")
    t = TrustedKeys.parse(f"{public_key_entry(a.public_key())}, {lines},{pem}")
    assert t.ids() == sorted(key_id(k.public_key()) for k in keys)
    assert not TrustedKeys.parse("") and not TrustedKeys.parse(" , ")


@pytest.mark.parametrize("spec, match", [
    ("ed25519:!!notbase64", "not base64"),
    ("ed25519:AAAA", "32 bytes"),
    ("rsa:AAAA", "neither"),
    ("/nonexistent/key.pub", "neither"),
])
def test_bad_trusted_keys_are_named(spec, match):
    with pytest.raises(ValueError, match=match):
        TrustedKeys.parse(spec)


def test_a_private_key_given_as_trusted_is_refused_without_echoing_it(tmp_path):
    out = generate_key_pair(tmp_path)
    with pytest.raises(ValueError, match="private key") as err:
        TrustedKeys.parse(out["private_key"])
    assert "BEGIN" not in str(err.value)


def test_signing_key_from_settings_file_or_secret_never_logged(tmp_path, monkeypatch):
    from trainer.settings import TrainerSettings

    out = generate_key_pair(tmp_path)
    pem = open(out["private_key"]).read()
    monkeypatch.setenv("TRAINER_SIGNING_KEY_PEM", pem)
    s = TrainerSettings()
    assert key_id(s.signing_private_key().public_key()) == out["key_id"]
    assert "PRIVATE" not in repr(s) and "PRIVATE" not in s.model_dump_json()
    monkeypatch.delenv("TRAINER_SIGNING_KEY_PEM")
    assert TrainerSettings().signing_private_key() is None
    assert key_id(TrainerSettings(signing_key=out["private_key"]).signing_private_key().public_key()) == out["key_id"]
    bad = tmp_path / "bad.key"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="not an unencrypted PEM") as err:
        TrainerSettings(signing_key=bad).signing_private_key()
    assert "c2VjcmV0" not in str(err.value)


# ------------------------------------------------------------------------------------------ statements

def test_a_signature_covers_every_field_a_worker_acts_on(tiny_checkpoint, keys):
    a, b, _ = keys
    update = signed_update(tiny_checkpoint, a, keep=False)
    assert verify(update, trust(a)) == key_id(a.public_key())
    assert verify(update, trust(b, a)) == key_id(a.public_key())  # one of several trusted keys
    for field, value in (("name", "other"), ("version", "v-forged"), ("manifest_sha256", "0" * 64),
                         ("rollback", True), ("published_at", update.published_at + 1)):
        with pytest.raises(SignatureError, match="does not match"):
            verify(update.model_copy(update={field: value}), trust(a))
    # the location is not signed (it depends on the mount); the worker confines it instead
    assert verify(update.model_copy(update={"checkpoint": "elsewhere"}), trust(a))


def test_unsigned_unknown_key_and_garbage_signatures_are_refused(tiny_checkpoint, keys):
    a, b, _ = keys
    update = signed_update(tiny_checkpoint, a, keep=False)
    with pytest.raises(SignatureError, match="not trusted"):
        verify(update, trust(b))
    with pytest.raises(SignatureError, match="not signed"):
        verify(update.model_copy(update={"signature": None}), trust(a))
    forged = update.model_copy(update={"signature": update.signature.model_copy(update={"value": "AAAA"})})
    with pytest.raises(SignatureError, match="does not match"):
        verify(forged, trust(a))
    # a statement signed by an attacker's key claiming a trusted key's id
    mine = sign(update, b)
    with pytest.raises(SignatureError, match="does not match"):
        verify(mine.model_copy(update={"signature": mine.signature.model_copy(
            update={"key_id": update.signature.key_id})}), trust(a))


# ------------------------------------------------------------------------------------------ locations

def test_locations_are_confined_to_the_models_directory(tmp_path):
    root = tmp_path / "models"
    (root / "m" / "v1").mkdir(parents=True)
    outside = tmp_path / "elsewhere" / "v1"
    outside.mkdir(parents=True)
    (root / "m" / "live").symlink_to("v1")
    (root / "m" / "escape").symlink_to(outside)
    inside = (root / "m" / "v1").resolve()
    repo = ModelRepository(root)
    for ok in ("m/v1", str(root / "m" / "v1"), f"file://{root}/m/v1", "m/live", "m/../m/v1"):
        assert repo.resolve(ok) == inside, ok
    for bad in (str(outside), f"file://{outside}", "../elsewhere/v1", "m/../../elsewhere/v1", "m/escape",
                "/etc", "m/v1/../../..", ""):
        with pytest.raises(ValueError):
            repo.resolve(bad)
    with pytest.raises(ValueError, match="scheme"):
        repo.resolve("https://example.invalid/m/v1")


# ------------------------------------------------------------------------------------------ order

def test_order_replays_and_rollbacks(tiny_checkpoint, tmp_path):
    old = read_manifest(release_copy(tiny_checkpoint, tmp_path / "old", "v1", age_s=-60))
    new = read_manifest(release_copy(tiny_checkpoint, tmp_path / "new", "v2"))
    live = Release.of(new, published_at=2000.0)
    upd = signed_update(tmp_path / "old", None)
    assert ordering_refusal(None, upd, old) is None
    newer = read_manifest(release_copy(tiny_checkpoint, tmp_path / "newer", "v3", age_s=60))
    # an update issued no later than the live one's: a replay, whatever it names (even a newer
    # checkpoint, even marked as a rollback)
    for manifest, at in ((old, 1999.0), (newer, 2000.0), (old, 1.0)):
        stale = upd.model_copy(update={"published_at": at, "version": manifest.version, "rollback": True})
        assert ordering_refusal(live, stale, manifest).reason == "replay"
    fresh = upd.model_copy(update={"published_at": 3000.0})
    assert ordering_refusal(live, fresh, old).reason == "rollback"
    assert ordering_refusal(live, fresh.model_copy(update={"rollback": True}), old) is None
    assert ordering_refusal(live, fresh.model_copy(update={"version": "v3"}), newer) is None
    # the live version itself is never refused, and unknown issue times are not compared
    assert ordering_refusal(live, upd.model_copy(update={"version": "v2", "published_at": 1.0}), new) is None
    unknown = Release(new.version, new.created(), None)
    assert ordering_refusal(unknown, fresh.model_copy(update={"published_at": 1.0, "rollback": True}), old) is None


# ------------------------------------------------------------------------------------------ rollout

def _rollout(models, trusted, checkpoint=None):
    metrics = Metrics()
    s = Settings(models_dir=models, checkpoint=checkpoint, engine_backend="torch", model_warmup_batches=0,
                 max_batch=1, device="cpu")
    return Rollout(s, ModelRegistry(metrics), metrics, load_engine_cpu, trusted), metrics


def load_engine_cpu(*args, **kwargs):
    from inspector.engine.engine import load_engine

    return load_engine(*args, **kwargs)


def refused(metrics, model, reason):
    return metrics.model_refused.labels(model, reason)._value.get()


def test_rollout_refuses_unsigned_forged_outside_replayed_and_unmarked_older(tiny_checkpoint, tmp_path, keys):
    a, b, forger = keys
    models = tmp_path / "models"
    name = read_manifest(tiny_checkpoint).name
    v1 = release_copy(tiny_checkpoint, models / name / "v1", "v1", age_s=-60)
    v2 = release_copy(tiny_checkpoint, models / name / "v2", "v2")
    out = release_copy(tiny_checkpoint, tmp_path / "outside", "v9", age_s=60)
    ro, metrics = _rollout(models, trust(a, b), checkpoint=v1)

    # start-up: an unsigned INSPECTOR_CHECKPOINT is refused with keys configured
    ro.load_starting_checkpoint()
    assert ro.registry.names() == [] and refused(metrics, "checkpoint", "signature") == 1
    u1 = signed_update(v1, a)
    ro.load_starting_checkpoint()
    assert ro.registry.versions() == {name: "v1"}

    time.sleep(0.002)
    assert not ro.apply(signed_update(v2, None))  # unsigned
    assert not ro.apply(signed_update(v2, forger, keep=False))  # unknown key
    assert refused(metrics, name, "signature") == 2
    assert not ro.apply(signed_update(out, a, keep=False))  # signed, but outside the models directory
    assert refused(metrics, name, "location") == 1
    u2 = signed_update(v2, b)  # the second trusted key (rotation)
    assert ro.apply(u2) and ro.registry.versions() == {name: "v2"}
    time.sleep(0.002)
    assert not ro.apply(u1.model_copy(update={"checkpoint": str(v1)}))  # v1's own update, replayed
    assert refused(metrics, name, "replay") == 1
    assert not ro.apply(signed_update(v1, a, keep=False))  # a fresh statement, but older and no rollback
    assert refused(metrics, name, "rollback") == 1
    assert ro.registry.versions() == {name: "v2"}
    time.sleep(0.002)
    assert ro.apply(signed_update(v1, a, rollback=True, keep=False))  # a signed rollback
    assert ro.registry.versions() == {name: "v1"}
    time.sleep(0.002)
    assert not ro.apply(u2)  # the update it rolled back from cannot be replayed over it
    assert refused(metrics, name, "replay") == 2 and ro.registry.versions() == {name: "v1"}


def test_without_keys_updates_still_follow_the_order_and_the_models_directory(tiny_checkpoint, tmp_path):
    models = tmp_path / "models"
    name = read_manifest(tiny_checkpoint).name
    v1 = release_copy(tiny_checkpoint, models / name / "v1", "v1", age_s=-60)
    v2 = release_copy(tiny_checkpoint, models / name / "v2", "v2")
    ro, metrics = _rollout(models, TrustedKeys({}))
    first = signed_update(v2, None)
    assert ro.apply(first)
    time.sleep(0.002)
    assert not ro.apply(signed_update(v1, None))
    assert refused(metrics, name, "rollback") == 1
    outside = release_copy(tiny_checkpoint, tmp_path / "out", "v3", age_s=60)
    assert not ro.apply(signed_update(outside, None))
    assert refused(metrics, name, "location") == 1 and ro.registry.versions() == {name: "v2"}


def test_a_starting_worker_prefers_the_trainers_newer_record_to_a_replay_left_on_the_topic(
        tiny_checkpoint, tmp_path, keys):
    """Compaction keeps only the last record per model: after a replay of v1's update that is the
    topic's only record. The trainer's published.json (v2, signed, newer) wins at start-up."""
    a = keys[0]
    models = tmp_path / "models"
    name = read_manifest(tiny_checkpoint).name
    v1 = release_copy(tiny_checkpoint, models / name / "v1", "v1", age_s=-60)
    v2 = release_copy(tiny_checkpoint, models / name / "v2", "v2")
    old = signed_update(v1, a)
    time.sleep(0.002)
    new = signed_update(v2, a)
    ro, metrics = _rollout(models, trust(a))
    ro.repository.write_published(new, "elsewhere")
    ro.install_newest({name: [(old.published_at, 7, old)]})  # a record of another topic is ignored
    assert ro.registry.versions() == {name: "v1"}

    ro, metrics = _rollout(models, trust(a))
    ro.repository.write_published(new, ro.settings.models_topic)
    ro.install_newest({name: [(old.published_at, 7, old)]})
    assert ro.registry.versions() == {name: "v2"}
    ro.apply(old)  # and the replay, seen again, is refused
    assert refused(metrics, name, "replay") == 1 and ro.registry.versions() == {name: "v2"}

    # a forged record in the models volume is no better than a forged record on the topic
    ro, metrics = _rollout(models, trust(a))
    forged = sign(new, keys[2])
    ro.repository.write_published(forged, ro.settings.models_topic)
    ro.install_newest({name: [(old.published_at, 7, old)]})
    assert ro.registry.versions() == {name: "v1"} and refused(metrics, name, "signature") == 1


# ------------------------------------------------------------------------------------------ inspector verify

def test_verify_reports_intact_signed_and_why_not(tiny_checkpoint, tmp_path, keys):
    a, b, _ = keys
    ck = release_copy(tiny_checkpoint, tmp_path / "ck", "v1")
    r = verify_checkpoint(ck, trust(a))
    assert r["intact"] and not r["accepted"] and r["problems"][0]["reason"] == "signature"
    signed_update(ck, a)
    r = verify_checkpoint(ck, trust(a))
    assert r["accepted"] and r["signature"]["signed_by"] == key_id(a.public_key())
    r = verify_checkpoint(ck, trust(b))
    assert not r["accepted"] and "not trusted" in r["problems"][0]["detail"]
    assert verify_checkpoint(ck, TrustedKeys({}))["accepted"]  # nothing to check against: intact is enough
    other = release_copy(tiny_checkpoint, tmp_path / "other", "v2")
    (other / "signature.json").write_bytes((ck / "signature.json").read_bytes())  # a statement moved over
    r = verify_checkpoint(other, trust(a))
    assert not r["accepted"] and "describes" in r["problems"][0]["detail"]
    w = ck / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-8] + bytes(8))
    r = verify_checkpoint(ck, trust(a))
    assert not r["intact"] and [p["reason"] for p in r["problems"]] == ["weights_hash"]


def test_verify_cli_exit_codes(tiny_checkpoint, tmp_path, keys, capsys):
    from inspector.cli import main

    a, _, _ = keys
    ck = release_copy(tiny_checkpoint, tmp_path / "ck", "v1")
    signed_update(ck, a)
    assert main(["verify", str(ck), "--trusted-keys", public_key_entry(a.public_key())]) == 0
    assert json.loads(capsys.readouterr().out)["accepted"]
    assert main(["verify", str(ck), "--trusted-keys", public_key_entry(Ed25519PrivateKey.generate().public_key())]) == 1
    capsys.readouterr()
    assert main(["verify", str(ck), "--trusted-keys", "ed25519:nope"]) == 2
