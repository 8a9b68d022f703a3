"""Only the trainer decides what the workers run: real `inspector serve` processes and the real
broker, attacked through the control topic.

Each refused update is counted in ``inspector_model_refused_total{reason}``, and frames streamed
throughout keep getting verdicts from the live version.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kafka import KafkaProducer

from inspector.contracts.control import publish_update
from inspector.model.signing import public_key_entry
from tests.integration.harness import (
    Stream,
    have_frames,
    jpeg,
    manifest_name,
    send_frame,
    tally,
    verdicts_of,
)
from tests.releases import release_copy, signed_update

pytestmark = pytest.mark.timeout(300)


def entries(*keys: Ed25519PrivateKey) -> str:
    return ",".join(public_key_entry(k.public_key()) for k in keys)


def test_only_trusted_signed_updates_inside_the_models_directory_change_the_model(
        workers, names, reader, tiny_checkpoint, kafka_bootstrap, tmp_path):
    """Forged (unknown key), unsigned, outside the models directory (absolute, '..', a symlink out),
    replayed, older without a rollback mark: each refused while v1 → v2 (key A) → v3 (key B:
    rotation) → signed rollback to v2 go through. A worker restarted with key A removed keeps v2
    and refuses what A signs."""
    a, b, forger = (Ed25519PrivateKey.generate() for _ in range(3))
    models = tmp_path / "models"
    name = manifest_name(tiny_checkpoint)
    home = models / name
    v1 = release_copy(tiny_checkpoint, home / "v1", "v1", age_s=-60)
    v2 = release_copy(tiny_checkpoint, home / "v2", "v2", age_s=-30)
    v3 = release_copy(tiny_checkpoint, home / "v3", "v3")
    forged = release_copy(tiny_checkpoint, home / "evil-forged", "evil-forged", age_s=600)
    unsigned = release_copy(tiny_checkpoint, home / "evil-unsigned", "evil-unsigned", age_s=600)
    outside = release_copy(tiny_checkpoint, tmp_path / "outside" / "evil-outside", "evil-outside", age_s=600)
    (home / "evil-link").symlink_to(outside)
    signed_update(v1, a)  # the starting checkpoint's statement, as `trainer refresh --adopt` keeps it

    w = workers("sig-1", INSPECTOR_MODELS_DIR=str(models), INSPECTOR_CHECKPOINT=str(v1),
                INSPECTOR_MODEL_TRUSTED_KEYS=entries(a, b))
    w.wait_ready()
    code, body = w.get("/readyz")
    assert code == 200 and "warning" not in body
    assert w.metric("inspector_model_trusted_keys") == 2
    assert w.metric("inspector_model_info", model=name, version="v1") == 1

    def outside_as(location):
        return lambda: signed_update(outside, a, keep=False).model_copy(update={"checkpoint": location})

    u2 = {}

    def first_v2():
        u2["update"] = signed_update(v2, a)
        return u2["update"]

    steps = [  # (what, update factory, refusal reason or None, version served afterwards)
        ("forged: unknown key", lambda: signed_update(forged, forger, keep=False), "signature", "v1"),
        ("unsigned", lambda: signed_update(unsigned, None), "signature", "v1"),
        ("absolute path outside", outside_as(str(outside)), "location", "v1"),
        ("'..' out of the models directory", outside_as(f"{name}/../../outside/evil-outside"), "location", "v1"),
        ("a symlink out", outside_as(f"{name}/evil-link"), "location", "v1"),
        ("v2 signed by key A", first_v2, None, "v2"),
        ("v3 signed by key B (rotation)", lambda: signed_update(v3, b), None, "v3"),
        ("v2's update replayed", lambda: u2["update"], "replay", "v3"),
        ("v2 again, older and not a rollback", lambda: signed_update(v2, b, keep=False), "rollback", "v3"),
        ("signed rollback to v2", lambda: signed_update(v2, b, rollback=True), None, "v2"),
    ]
    stream = Stream(kafka_bootstrap, names.frames, "sig", rate=8).start()
    ctrl = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    refusals = Counter()
    try:
        for what, make, reason, serving in steps:
            time.sleep(0.005)  # each update is issued after the one before
            publish_update(ctrl, names.models, make())
            if reason is None:
                assert w.wait_metric("inspector_model_info", 1, timeout=60, model=name, version=serving) == 1, what
            else:
                refusals[reason] += 1
                total = sum(refusals.values())
                assert w.wait_metric("inspector_model_refused_total", total, model=name) == total, what
                assert w.metric("inspector_model_refused_total", model=name, reason=reason) == refusals[reason], what
            assert w.metric("inspector_model_info", model=name, version=serving) == 1, what
            assert w.metric("inspector_model_info", model=name) == 1, what  # one version at a time
    finally:
        sent = stream.stop()
        ctrl.close()
    recs = reader(names.verdicts).read(have_frames(set(sent)), 90, "a verdict for every frame")
    t = tally("test_only_trusted_signed_updates_inside_the_models_directory_change_the_model", sent, recs)
    assert t["lost"] == 0 and t["duplicates"] == 0
    served = {v.model_version for v in verdicts_of(recs)}
    assert served <= {"v1", "v2", "v3"} and "v1" in served, served
    refused = [json.loads(x) for x in w.logs().splitlines() if '"model_refused"' in x]
    assert [e["reason"] for e in refused] == [r for _, _, r, _ in steps if r]
    assert [e["serving"] for e in refused] == [s for _, _, r, s in steps if r]
    assert w.stop() == 0

    # key A removed: a restarted worker takes the newest acceptable update (the rollback, signed by B)
    # and refuses anything A signs from now on
    v4 = release_copy(tiny_checkpoint, home / "v4", "v4", age_s=60)
    w2 = workers("sig-2", INSPECTOR_MODELS_DIR=str(models), INSPECTOR_CHECKPOINT=str(v1),
                 INSPECTOR_MODEL_TRUSTED_KEYS=entries(b))
    w2.wait_ready()
    assert w2.metric("inspector_model_info", model=name, version="v2") == 1
    ctrl = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        publish_update(ctrl, names.models, signed_update(v4, a))
        assert w2.wait_metric("inspector_model_refused_total", 1, model=name, reason="signature") == 1
        send_frame(producer, names.frames, jpeg(3), camera="cam-z", frame_id="after-removal")
    finally:
        ctrl.close()
        producer.close()
    recs = reader(names.verdicts).read(have_frames({"after-removal"}), 60, "verdict after the key's removal")
    assert [v.model_version for v in verdicts_of(recs) if v.frame_id == "after-removal"] == ["v2"]
    assert w2.stop() == 0
    for worker in (w, w2):  # alone in its group, each joined once: no second rebalance after the start
        events = [json.loads(x)["event"] for x in worker.logs().splitlines() if x.startswith("{")]
        assert events.count("partitions_assigned") == 1, (worker.name, events)


def test_an_unsigned_starting_checkpoint_is_refused_when_keys_are_configured(workers, tiny_checkpoint):
    """INSPECTOR_CHECKPOINT without a signature, keys configured, nothing on the control topic: the
    worker refuses it with reason `signature` and exits 2 (no model), rather than serve it."""
    key = Ed25519PrivateKey.generate()
    w = workers("sig-start", INSPECTOR_MODEL_TRUSTED_KEYS=entries(key))
    assert w.proc.wait(90) == 2
    events = [json.loads(x) for x in w.logs().splitlines() if x.startswith("{")]
    refused = [e for e in events if e.get("event") == "starting_checkpoint_refused"]
    assert refused and refused[0]["reason"] == "signature" and "signature.json" in refused[0]["detail"]
    assert any(e.get("event") == "no_model" for e in events)
