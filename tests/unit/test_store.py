"""The normal-image store: dedupe, durable writes, time-spread retention, folder import."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from inspector.contracts.decode import DecodeError
from trainer.store import ModelStore, NormalStore, check_model_name, choose_evictions
from trainer.synthetic import make_frame

DAY = 86_400_000


def frame(i: int, fmt: str = "png") -> bytes:
    return make_frame(None, size=32, seed=1, index=i, fmt=fmt)


def test_duplicates_are_stored_once(tmp_path):
    with ModelStore(tmp_path, "parts") as store:
        a = store.add(frame(0), camera="cam-1", line="l1", captured_at=1_700_000_000_000,
                      source_topic="frames.normal", source_partition=0, source_offset=5)
        b = store.add(frame(0), camera="cam-2", source_offset=6)
        c = store.add(frame(1, "jpeg"), camera="cam-1")
        assert (a.status, b.status, c.status) == ("stored", "duplicate", "stored")
        assert a.sha == b.sha == hashlib.sha256(frame(0)).hexdigest()
        assert store.count() == 2
        assert a.path == tmp_path / "parts" / "objects" / a.sha[:2] / f"{a.sha}.png"
        assert c.path.suffix == ".jpg" and a.path.read_bytes() == frame(0)
        first = {i.sha: i for i in store.images()}[a.sha]
        assert (first.camera, first.line, first.captured_at, first.source_offset) == ("cam-1", "l1", 1_700_000_000_000, 5)
        assert (first.width, first.height) == (32, 32)
    files = [p for p in (tmp_path / "parts" / "objects").rglob("*") if p.is_file()]
    assert len(files) == 2


def test_undecodable_bytes_are_refused_and_can_be_set_aside(tmp_path):
    with ModelStore(tmp_path, "parts") as store:
        with pytest.raises(DecodeError) as err:
            store.add(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
        assert store.count() == 0
        path = store.reject(b"garbage", err.value.reason, err.value.message, {"offset": 3})
        assert path is not None and path.exists() and path.with_suffix(".bin").read_bytes() == b"garbage"
        assert err.value.reason in path.read_text()


def test_crash_during_write_leaves_no_half_file_in_the_index(tmp_path, monkeypatch):
    store = ModelStore(tmp_path, "parts")
    data = frame(3)
    real_replace = os.replace

    def crash(*a, **k):  # the process "dies" after the temp file was written, before the rename
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.add(data)
    monkeypatch.setattr(os, "replace", real_replace)
    assert store.count() == 0
    assert not [p for p in store.objects.rglob("*") if p.is_file()]
    store.close()

    # a crash that left a partial temp file behind: reopening cleans it, the index never named it
    stale = tmp_path / "parts" / "tmp" / "x.png.part"
    stale.write_bytes(data[:10])
    young = tmp_path / "parts" / "tmp" / "y.png.part"  # may be another process's write in progress
    young.write_bytes(data[:10])
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    store = ModelStore(tmp_path, "parts")
    assert not stale.exists() and young.exists() and store.count() == 0
    # every indexed image is complete after a successful write
    res = store.add(data)
    assert res.status == "stored" and store.count() == 1
    assert hashlib.sha256(res.path.read_bytes()).hexdigest() == res.sha
    store.close()


def test_crash_between_rename_and_index_commit_is_harmless(tmp_path, monkeypatch):
    store = ModelStore(tmp_path, "parts")

    def crash(self, row):
        raise OSError("simulated crash before the index commit")

    monkeypatch.setattr(ModelStore, "_index_insert", crash)
    with pytest.raises(OSError):
        store.add(frame(4))
    monkeypatch.undo()
    assert store.count() == 0  # the orphan file is not in the index
    assert store.add(frame(4)).status == "stored"  # and a retry stores it properly
    assert store.count() == 1
    store.close()


def test_retention_keeps_a_time_spread_sample():
    # 10 days of steady traffic (10 a day), then a burst of 300 frames on day 10
    items = [(f"d{d}-{k}", d * DAY + k * DAY / 10) for d in range(10) for k in range(10)]
    items += [(f"burst-{k}", 10 * DAY + k * 1000) for k in range(300)]
    evict = set(choose_evictions(items, len(items) - 60, buckets=11))
    kept = [(k, t) for k, t in items if k not in evict]
    assert len(kept) == 60
    days = {int(t // DAY) for _, t in kept}
    assert days == set(range(11)), days  # every day still represented
    assert sum(k.startswith("burst") for k, _ in kept) <= 10  # the burst did not take over
    # newest-only retention would have kept nothing older than the burst
    assert min(t for _, t in kept) == 0


def test_store_bound_evicts_by_time_spread(tmp_path):
    with ModelStore(tmp_path, "parts", max_images=20, buckets=4) as store:
        for i in range(20):
            store.add(frame(i), captured_at=1_700_000_000_000 + i * DAY)
        for i in range(20, 40):  # a burst within one hour
            store.add(frame(i), captured_at=1_700_000_000_000 + 19 * DAY + (i - 19) * 60_000)
        evicted = store.enforce_bound()
        assert len(evicted) == 20 and store.count() == 20
        kept_days = {(i.time_ms - 1_700_000_000_000) // DAY for i in store.images()}
        assert 0 in kept_days and len(kept_days) >= 10
        on_disk = [p for p in store.objects.rglob("*") if p.is_file()]
        assert len(on_disk) == 20


def test_byte_bound(tmp_path):
    with ModelStore(tmp_path, "parts", max_images=100, max_bytes=10_000) as store:
        for i in range(12):
            store.add(frame(i), captured_at=1_700_000_000_000 + i * DAY)
        store.enforce_bound()
        assert store.total_bytes() <= 10_000 and store.count() >= 1


def test_import_folder(tmp_path):
    src = tmp_path / "src" / "sub"
    src.mkdir(parents=True)
    for i in range(5):
        (src / f"{i}.png").write_bytes(frame(i))
    (src / "copy.png").write_bytes(frame(0))
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    (src / "notes.txt").write_text("not an image")
    stores = NormalStore(tmp_path / "store")
    summary = stores.model("parts").import_folder(tmp_path / "src", camera="lab")
    assert summary["files"] == 7 and summary["stored"] == 5 and summary["duplicates"] == 1
    assert summary["rejected"] == 1 and summary["images"] == 5
    assert len(list((tmp_path / "store" / "parts" / "rejected").glob("*.json"))) == 1
    again = stores.model("parts").import_folder(tmp_path / "src")
    assert again["stored"] == 0 and again["duplicates"] == 6
    stores.close()


@pytest.mark.parametrize("name", ["", "..", "../x", "a/b", "-x", "x" * 200, "a b"])
def test_bad_model_names_are_refused(name):
    with pytest.raises(ValueError):
        check_model_name(name)


def test_good_model_name():
    assert check_model_name("magnetic_tile-v2.1") == "magnetic_tile-v2.1"


def _lab(scores, labels, thr):
    import numpy as np

    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    return {"image_auroc": 0.8, "aupro": 0.6, "false_reject_rate": float(np.mean(scores[~labels] >= thr)),
            "defect_recall": float(np.mean(scores[labels] >= thr)), "n_good": int((~labels).sum()),
            "good_median_position": 0.0, "_scores": scores, "_labels": labels}


def test_gate_compares_recall_at_the_live_models_operating_point():
    """A candidate with a stricter threshold but the same ranking is not a regression; a worse ranking is."""
    import numpy as np

    from inspector.contracts.reasons import GateReason
    from trainer.refresh import gate
    from trainer.settings import TrainerSettings

    def codes(found):
        assert all(f.message for f in found), found
        return [f.code for f in found]

    rng = np.random.default_rng(0)
    good, bad = rng.normal(0, 1, 200), rng.normal(2, 1, 200)
    scores, labels = np.r_[good, bad], np.r_[np.zeros(200), np.ones(200)]
    hold = {"false_reject_rate": 0.0, "median_position": 0.0, "score_stats": {"n": 100}}
    live = _lab(scores, labels, thr=1.0)  # over-tight: ~16 % false rejects, high recall
    stricter = _lab(scores, labels, thr=3.0)  # same ranking, few false rejects, low recall
    found, deltas = gate(TrainerSettings(), hold, hold, stricter, live, 0.005)
    assert codes(found) == [], found
    assert deltas["labelled_recall_drop"] > 0.3 and abs(deltas["labelled_recall_drop_at_live_frr"]) < 0.05
    worse_scores = np.r_[good, rng.normal(0.3, 1, 200)]  # defects look normal to it
    worse = _lab(worse_scores, labels, thr=3.0)
    found, _ = gate(TrainerSettings(), hold, hold, worse, live, 0.005)
    assert codes(found) == [GateReason.LABELLED_RECALL_DROP], found
    # Same ranking, but the threshold rose with no fewer false rejects (defects among the "normals").
    tight_live = _lab(scores, labels, thr=3.5)
    raised = _lab(scores, labels, thr=5.0)
    tight_live["defect_recall"], raised["defect_recall"] = 0.9, 0.3
    found, _ = gate(TrainerSettings(), hold, hold, raised, tight_live, 0.005)
    assert codes(found) == [GateReason.LABELLED_THRESHOLD_LOOSENED], found


def test_gate_names_each_finding_by_its_code():
    """Held-out normals and the store's size: each refusal carries its GateReason and a sentence."""
    from inspector.contracts.reasons import GateReason
    from trainer.refresh import enough_images, gate
    from trainer.settings import TrainerSettings

    s = TrainerSettings()
    assert enough_images("m", 200, 200) == []
    [few] = enough_images("m", 5, 200)
    assert few.code == GateReason.TOO_FEW_IMAGES and "5 < min_images 200" in few.message
    live = {"false_reject_rate": 0.0, "median_position": 0.0, "score_stats": {"n": 100}}
    worse = {"false_reject_rate": 0.2, "median_position": 0.9, "score_stats": {"n": 100}}
    found, deltas = gate(s, worse, live, None, None, 0.005)
    assert [f.code for f in found] == [GateReason.HOLDOUT_FRR_WORSE, GateReason.HOLDOUT_SCORES_SHIFTED]
    assert deltas == {"holdout_frr_increase": 0.2, "holdout_normal_score_shift": 0.9}
    found, _ = gate(s, worse, None, None, None, 0.005)  # the first model: against its own target
    assert [f.code for f in found] == [GateReason.HOLDOUT_FRR_OVER_TARGET]
    assert gate(s, live, live, None, None, 0.005)[0] == []
    lab = {"image_auroc": 0.9, "aupro": 0.8, "false_reject_rate": 0.0, "defect_recall": 0.9, "n_good": 100,
           "good_median_position": 0.0}
    bad = {"image_auroc": 0.8, "aupro": 0.6, "false_reject_rate": 0.1, "defect_recall": 0.9, "n_good": 100,
           "good_median_position": 0.5}
    found, _ = gate(s, live, live, bad, lab, 0.005)
    assert [f.code for f in found] == [GateReason.LABELLED_IMAGE_AUROC_DROP, GateReason.LABELLED_AUPRO_DROP,
                                       GateReason.LABELLED_FRR_WORSE, GateReason.LABELLED_SCORES_SHIFTED]
    assert all(f.model_dump(mode="json").keys() == {"code", "message"} for f in found)
