"""The models repository: layout, the live pointer, the published record, confinement, versions,
pruning and what killed writers leave behind (no broker, no engine)."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch

from inspector.contracts.wire import ModelUpdate
from inspector.model.checkpoint import CheckpointError, Manifest, manifest_sha256, read_manifest, read_weights
from inspector.model.repository import (
    HISTORY,
    LIVE,
    LOCK,
    PUBLISHED,
    SCRATCH_PREFIX,
    Busy,
    ModelRepository,
    PublishedRecord,
)

MODEL = "part-a"
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def manifest(version: str, age_s: float = 0.0, parent: str | None = None, name: str = MODEL) -> Manifest:
    return Manifest(name=name, version=version, parent_version=parent,
                    created_at=(T0 + timedelta(seconds=age_s)).isoformat(), method="rd", teacher="t",
                    teacher_sha256="0" * 64, image_size=8, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2),
                    threshold=1.0, target_frr=0.01)


def add(repo: ModelRepository, version: str, age_s: float = 0.0, parent: str | None = None) -> Path:
    return repo.write_version(MODEL, {"w": torch.arange(4, dtype=torch.float32) + age_s},
                              manifest(version, age_s, parent))


@pytest.fixture()
def repo(tmp_path) -> ModelRepository:
    return ModelRepository(tmp_path / "models")


def test_layout_versions_are_complete_immutable_and_ordered(repo):
    for i, v in enumerate(["20240103T000000Z-c", "20240101T000000Z-a", "20240102T000000Z-b"]):
        add(repo, v, age_s=i)
    folder = repo.root / MODEL
    assert repo.model_dir(MODEL) == folder and repo.version_dir(MODEL, "v") == folder / "v"
    assert [p.name for p in repo.versions(MODEL)] == ["20240101T000000Z-a", "20240102T000000Z-b", "20240103T000000Z-c"]
    ck = repo.versions(MODEL)[0]
    read_weights(ck, read_manifest(ck))  # whole and verifiable
    with pytest.raises(CheckpointError, match="immutable"):
        add(repo, "20240101T000000Z-a")
    with pytest.raises(CheckpointError, match="does not belong"):
        repo.write_version(MODEL, {"w": torch.zeros(1)}, manifest("x", name="other"))
    # what is not a complete checkpoint is no version: a half-written one, scratch, a folder without manifest
    (folder / ".20240104T000000Z-d.tmp-abc").mkdir()
    (folder / "20240105T000000Z-e").mkdir()
    (folder / f"{SCRATCH_PREFIX}1-2").mkdir()
    assert len(repo.versions(MODEL)) == 3
    assert repo.versions("unknown") == [] and repo.live("unknown") is None
    for bad in ("..", ".hidden", "a/b", "", "x\x00"):
        with pytest.raises(ValueError):
            repo.version_dir(MODEL, bad)
        with pytest.raises(ValueError):
            repo.model_dir(bad)
    with pytest.raises(ValueError):
        repo.version_dir(MODEL, LIVE)


def test_live_pointer_is_a_relative_symlink_swapped_atomically(repo):
    assert repo.live(MODEL) is None
    v1, v2 = add(repo, "v1"), add(repo, "v2", age_s=1)
    repo.set_live(MODEL, "v1")
    link = repo.live_link(MODEL)
    assert link == repo.root / MODEL / LIVE and link.is_symlink() and os.readlink(link) == "v1"
    assert repo.live(MODEL) == v1.resolve()
    repo.set_live(MODEL, "v2")
    assert os.readlink(link) == "v2" and repo.live(MODEL) == v2.resolve()
    assert not [p for p in (repo.root / MODEL).iterdir() if p.name.startswith(".")]  # no temp link left
    with pytest.raises(CheckpointError):
        repo.set_live(MODEL, "v9")  # never a pointer to nothing
    assert repo.live(MODEL) == v2.resolve()
    # the volume moved (another mount point): a relative pointer still resolves
    moved = repo.root.parent / "elsewhere"
    repo.root.rename(moved)
    assert ModelRepository(moved).live(MODEL) == (moved / MODEL / "v2").resolve()
    # a pointer to something that is not a checkpoint is an error, not "no live model"
    (moved / MODEL / "v2" / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        ModelRepository(moved).live(MODEL)


def test_published_record_round_trip_and_topic(repo):
    ck = add(repo, "v1")
    assert repo.published(MODEL) is None and repo.read_published(MODEL, "models") is None
    update = repo.update_for(ck, relative=True)
    assert update.checkpoint == f"{MODEL}/v1" and update.manifest_sha256 == manifest_sha256(ck)
    record = repo.write_published(update, "models")
    assert isinstance(record, PublishedRecord) and record.topic == "models"
    on_disk = json.loads((repo.root / MODEL / PUBLISHED).read_text())
    assert on_disk == {**json.loads(update.to_bytes()), "topic": "models"}  # the update's fields, flat, and the topic
    assert repo.read_published(MODEL, "models") == update
    assert repo.read_published(MODEL, "other-topic") is None
    assert repo.is_published(MODEL, ck, "models") and not repo.is_published(MODEL, ck, "other-topic")
    # a record naming no topic is one of any topic (as written before topics were recorded)
    (repo.root / MODEL / PUBLISHED).write_text(update.model_dump_json())
    assert repo.read_published(MODEL, "other-topic") == update
    assert not repo.is_published(MODEL, ck, "models")  # ...but the trainer republishes to be sure
    # not a record, too large, or a model name that would lead out: none
    (repo.root / MODEL / PUBLISHED).write_text("{not json")
    assert repo.published(MODEL) is None
    (repo.root / MODEL / PUBLISHED).write_text(json.dumps({**json.loads(update.to_bytes()), "pad": "x" * 70_000}))
    assert repo.published(MODEL) is None
    assert repo.read_published("../x", "models") is None
    # a changed checkpoint is not the published one
    repo.write_published(update, "models")
    manifest_path = ck / "manifest.json"
    manifest_path.write_text(manifest_path.read_text() + " ")
    assert not repo.is_published(MODEL, ck, "models")


def test_updates_name_the_checkpoint_and_mark_rollbacks(repo):
    old, new = add(repo, "v1", age_s=0), add(repo, "v2", age_s=60)
    assert repo.update_for(new).checkpoint == str(new.resolve()) and not repo.update_for(new).rollback
    back = repo.update_for(old, relative=True)
    assert back.rollback and back.checkpoint == f"{MODEL}/v1" and back.version == "v1"
    assert isinstance(back, ModelUpdate) and back.signature is None


def test_locations_are_confined_to_the_repository(repo, tmp_path):
    inside = add(repo, "v1").resolve()
    repo.set_live(MODEL, "v1")
    outside = tmp_path / "elsewhere" / "v1"
    outside.mkdir(parents=True)
    (repo.root / MODEL / "escape").symlink_to(outside)
    (repo.root / MODEL / "up").symlink_to("../..")
    for ok in (f"{MODEL}/v1", str(inside), f"file://{inside}", f"{MODEL}/{LIVE}", f"{MODEL}/../{MODEL}/v1"):
        assert repo.resolve(ok) == inside, ok
    for bad in ("..", f"{MODEL}/../../elsewhere/v1", "../elsewhere/v1", str(outside), f"file://{outside}",
                f"{MODEL}/escape", f"{MODEL}/up/elsewhere/v1", "/etc", "", "a\x00b"):
        with pytest.raises(ValueError):
            repo.resolve(bad)
    with pytest.raises(ValueError, match="scheme"):
        repo.resolve("s3://bucket/m/v1")
    with pytest.raises(ValueError):
        repo.location(outside, relative=True)  # the trainer never announces a place outside either


def test_prune_keeps_the_newest_the_live_one_and_its_parent(repo):
    for i in range(6):
        add(repo, f"v{i}", age_s=i, parent=f"v{i - 1}" if i else None)
    repo.set_live(MODEL, "v2")  # rolled back to v2 (parent v1)
    removed = repo.prune(MODEL, keep=2)
    assert sorted(removed) == ["v0", "v3"]
    assert [p.name for p in repo.versions(MODEL)] == ["v1", "v2", "v4", "v5"]
    assert repo.live(MODEL).name == "v2"


def test_lock_scratch_leftovers_and_history(repo):
    folder = repo.model_dir(MODEL)
    with repo.lock(MODEL) as path:
        assert path == folder / LOCK and path.read_text().strip() == str(os.getpid())
        errors: list[BaseException] = []

        def other() -> None:  # flock is per open file: a second open in this process is refused too
            try:
                with repo.lock(MODEL, timeout_s=0.3):
                    pass
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert len(errors) == 1 and isinstance(errors[0], Busy) and LOCK in str(errors[0])
        with repo.scratch(MODEL) as work:
            assert work.parent == folder and work.name.startswith(SCRATCH_PREFIX) and work.is_dir()
            (work / "x").write_text("x")
        assert not work.exists()
    with repo.lock(MODEL):  # released
        pass

    add(repo, "v1")
    repo.set_live(MODEL, "v1")
    leftovers = [f"{SCRATCH_PREFIX}123-abcd", ".v2.tmp-xyz", ".v0.old-1234", ".live.tmp-99", f".{PUBLISHED}.tmp-5"]
    for name in leftovers[:3]:
        (folder / name).mkdir()
        (folder / name / "model.safetensors").write_bytes(b"half")
    os.symlink("v1", folder / leftovers[3])
    (folder / leftovers[4]).write_text("{")
    assert sorted(repo.remove_leftovers(MODEL)) == sorted(leftovers)
    assert sorted(p.name for p in folder.iterdir()) == sorted([LIVE, LOCK, "v1"])
    assert repo.remove_leftovers("never-seen") == []

    repo.append_history(MODEL, {"outcome": "not_promoted", "gate": [{"code": "too_few_images", "message": "m"}]})
    repo.append_history(MODEL, {"outcome": "promoted", "at": T0})
    assert [h["outcome"] for h in repo.history(MODEL)] == ["not_promoted", "promoted"]
    assert repo.history(MODEL)[1]["at"] == str(T0) and (folder / HISTORY).is_file()
