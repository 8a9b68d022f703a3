"""`trainer collect` / `trainer refresh` against a real Apache Kafka broker, with a real worker.

Small and fast: 64 px model (trained once per module, on one thread), synthetic
128 px frames, 2-3 epochs per refresh. The labelled set for AUROC/AUPRO is the session's
synthetic data set. Trainer runs are subprocesses (``python -m trainer.commands``) where exit codes,
kills or concurrency matter, in-process otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

kafka = pytest.importorskip("kafka")

from kafka import KafkaProducer  # noqa: E402
from kafka.admin import KafkaAdminClient, NewTopic  # noqa: E402

from inspector.contracts.reasons import GateReason  # noqa: E402
from inspector.contracts.wire import ModelUpdate, Verdict  # noqa: E402
from inspector.model.checkpoint import read_manifest, read_weights  # noqa: E402
from inspector.model.repository import LOCK, SCRATCH_PREFIX, ModelRepository  # noqa: E402
from tests.integration.harness import Reader, Worker, send_frame  # noqa: E402
from trainer.store import ModelStore  # noqa: E402
from trainer.synthetic import make_frame  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

REPO = Path(__file__).resolve().parents[2]
TRAINER = [sys.executable, "-m", "trainer.commands"]
MODEL = "parts"  # the tiny checkpoint's name


def normal_frame(i: int) -> bytes:
    return make_frame(None, size=128, seed=0, index=5000 + i, fmt="png")


class Setup:
    def __init__(self, tmp: Path, bootstrap: str, eval_dir: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.tmp = tmp
        self.bootstrap = bootstrap
        self.normal = f"frames.normal-{tag}"
        self.frames = f"frames-{tag}"
        self.verdicts = f"verdicts-{tag}"
        self.dlq = f"dlq-{tag}"
        self.models = f"models-{tag}"
        self.store = tmp / "store"
        self.ckpts = tmp / "checkpoints"
        from inspector.model.signing import generate_key_pair

        self.keys = generate_key_pair(tmp / "keys")  # the trainer signs, the workers trust the public key
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_topics([NewTopic(self.normal, 2, 1), NewTopic(self.frames, 1, 1), NewTopic(self.verdicts, 1, 1),
                                 NewTopic(self.dlq, 1, 1),
                                 NewTopic(self.models, 1, 1, topic_configs={"cleanup.policy": "compact"})])
        finally:
            admin.close()
        self.env = {
            "TRAINER_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TRAINER_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "TRAINER_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
            "TRAINER_NORMAL_TOPIC": self.normal,
            "TRAINER_GROUP_ID": f"collect-{tag}",
            "TRAINER_MODELS_TOPIC": self.models,
            "TRAINER_STORE_DIR": str(self.store),
            "TRAINER_CHECKPOINTS_DIR": str(self.ckpts),
            "TRAINER_DEFAULT_MODEL": MODEL,
            "TRAINER_MIN_IMAGES": "20",
            "TRAINER_VAL_FRACTION": "0.2",
            "TRAINER_EPOCHS": "2",
            "TRAINER_DEVICE": "cpu",
            "TRAINER_EVAL_DIR": str(eval_dir),
            "TRAINER_SIGNING_KEY": self.keys["private_key"],
            # six held-out normals make the score position coarse: a wide margin here (FRR margins are never
            # below one image of the set, so the default FRR margin is fine)
            "TRAINER_MAX_NORMAL_SCORE_SHIFT": "2.0",
            "TRAINER_MAX_AUROC_DROP": "0.05",
            "TRAINER_MAX_AUPRO_DROP": "0.08",
        }

    def settings(self, **overrides):
        from trainer.settings import TrainerSettings

        old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            s = TrainerSettings()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return s.model_copy(update=overrides)

    @property
    def repo(self) -> ModelRepository:
        return ModelRepository(self.ckpts)

    @property
    def model_dir(self) -> Path:
        return self.repo.model_dir(MODEL)

    def live_version(self) -> str:
        return self.repo.live(MODEL).name

    def fill_store(self, frames: list[bytes]) -> None:
        with ModelStore(self.store, MODEL) as store:
            for i, data in enumerate(frames):
                store.add(data, camera="cam-1", line="line-1", captured_at=1_700_000_000_000 + i * 60_000)

    def trainer(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen(  # noqa: S603
            [*TRAINER, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                 "OMP_NUM_THREADS": "1", **self.env, **(env or {})})

    def run(self, *args: str, timeout: float = 90, env: dict[str, str] | None = None) -> tuple[int, dict, str]:
        p = self.trainer(*args, env=env)
        out, err = p.communicate(timeout=timeout)
        return p.returncode, last_json(out, err), err

    def control_updates(self) -> list[ModelUpdate]:
        r = Reader(self.bootstrap, self.models)
        try:
            recs = _drain(r)
        finally:
            r.close()
        return [ModelUpdate.from_bytes(x.value) for x in recs]


def _drain(reader: Reader, quiet_s: float = 1.5) -> list:
    last, n = time.monotonic(), -1
    while time.monotonic() - last < quiet_s:
        for recs in reader.consumer.poll(timeout_ms=200).values():
            reader.records.extend(recs)
        if len(reader.records) != n:
            n, last = len(reader.records), time.monotonic()
    return reader.records


def last_json(out: str, err: str = "") -> dict:
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    assert lines, f"no output; stderr:\n{err[-3000:]}"
    return json.loads(lines[-1])


def assert_only_complete_checkpoints(model_dir: Path) -> list[str]:
    """Every visible version folder is a whole, verifiable checkpoint; live points to one of them.
    (Walks the folder itself: the repository's own listing skips what is not a checkpoint.)"""
    versions = []
    for p in sorted(model_dir.iterdir()):
        if p.name.startswith(".") or not p.is_dir() or p.is_symlink():
            continue
        m = read_manifest(p)  # raises on a half checkpoint
        read_weights(p, m)  # weights hash checked
        assert m.version == p.name
        versions.append(p.name)
    live = ModelRepository(model_dir.parent).live(model_dir.name)
    assert live is not None and live.name in versions
    assert [p.name for p in ModelRepository(model_dir.parent).versions(model_dir.name)] == versions
    return versions


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """In-process training on one thread: a second intra-op thread on busy cores only spins."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def first_live(tmp_path_factory, synthetic_data, one_torch_thread) -> Path:
    """The first live version: a real 64 px RD checkpoint of model 'parts' (like conftest's tiny one)."""
    from trainer.fit import FitConfig, fit

    out = tmp_path_factory.mktemp("first-live") / "v1"
    fit(FitConfig(precision_thresholds=False,
                  data=synthetic_data, out=out, method="rd", teacher="efficientnet_lite0", image_size=64,
                  epochs=12, seed=0, progress=False, name=MODEL))
    return out


@pytest.fixture()
def setup(tmp_path, kafka_bootstrap, synthetic_data, first_live) -> Setup:
    """Topics, folders, trainer settings; the first checkpoint adopted as the live version (and announced)."""
    from trainer.refresh import adopt

    s = Setup(tmp_path, kafka_bootstrap, synthetic_data)
    summary = adopt(s.settings(), MODEL, first_live)
    assert summary["outcome"] == "adopted" and s.live_version() == read_manifest(first_live).version
    return s


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------


def test_collect_then_refresh_rolls_out_to_a_running_worker(setup, redis_url):
    """Normal frames through the topic → store → refresh promotes a warm-started v2 with its lineage →
    the running worker (started on v1) serves v2 without a restart."""
    s = setup
    v1 = s.live_version()
    worker = Worker(s.tmp, {
        "INSPECTOR_KAFKA_BOOTSTRAP_SERVERS": s.bootstrap, "INSPECTOR_REDIS_URL": redis_url,
        "INSPECTOR_CHECKPOINT": str(s.repo.live_link(MODEL)), "INSPECTOR_FRAMES_TOPIC": s.frames,
        "INSPECTOR_VERDICTS_TOPIC": s.verdicts, "INSPECTOR_DLQ_TOPIC": s.dlq, "INSPECTOR_MODELS_TOPIC": s.models,
        "INSPECTOR_GROUP_ID": f"workers-{uuid.uuid4().hex[:6]}", "INSPECTOR_MODELS_DIR": str(s.ckpts),
        "INSPECTOR_MODEL_TRUSTED_KEYS": s.keys["public_key"],
    }, "w-refresh").start()
    try:
        producer = KafkaProducer(bootstrap_servers=s.bootstrap, acks="all", linger_ms=0)
        try:
            for i in range(30):
                send_frame(producer, s.normal, normal_frame(i), camera=f"cam-{i % 2}", model=MODEL)
            send_frame(producer, s.normal, b"\x89PNG\r\n\x1a\nbroken", camera="cam-0", model=MODEL)
        finally:
            producer.close(timeout=5)
        rc, collected, err = s.run("collect", "--idle-timeout", "3", timeout=60)
        assert rc == 0, err[-3000:]
        assert (collected["stored"], collected["rejected"], collected["consumed"]) == (30, 1, 31), collected
        assert collected["models"][MODEL]["images"] == 30

        rc, summary, err = s.run("refresh", "--model", MODEL, timeout=120)
        assert rc == 0, (summary, err[-3000:])
        assert summary["outcome"] == "promoted" and summary["live_version"] == v1
        v2 = summary["promoted_version"]
        assert s.live_version() == v2 != v1
        m = read_manifest(s.model_dir / v2)
        assert m.parent_version == v1 and m.name == MODEL and m.data_fingerprint
        assert m.training["refresh"]["store_images"] == 30 and m.metrics["refresh"]["candidate"]["labelled"]["image_auroc"]
        assert assert_only_complete_checkpoints(s.model_dir) == sorted([v1, v2])
        updates = s.control_updates()
        assert [u.version for u in updates] == [v1, v2]
        assert updates[-1].checkpoint == str((s.model_dir / v2).resolve())
        assert {u.signature.key_id for u in updates} == {s.keys["key_id"]} and not any(u.rollback for u in updates)
        assert (s.model_dir / v2 / "signature.json").is_file()

        worker.wait_ready()
        deadline = time.monotonic() + 60
        while worker.metric("inspector_model_info", model=MODEL, version=v2) < 1:
            assert time.monotonic() < deadline, f"worker never loaded {v2}:\n{worker.logs()[-3000:]}"
            time.sleep(0.3)
        producer = KafkaProducer(bootstrap_servers=s.bootstrap, acks="all", linger_ms=0)
        try:
            for i in range(3):
                send_frame(producer, s.frames, normal_frame(100 + i), camera="cam-0", frame_id=f"after-{i}")
        finally:
            producer.close(timeout=5)
        reader = Reader(s.bootstrap, s.verdicts)
        try:
            recs = reader.read(lambda r: len(r) >= 3, 60, "verdicts")
        finally:
            reader.close()
        verdicts = [Verdict.from_bytes(r.value) for r in recs]
        assert {v.model_version for v in verdicts} == {v2}
        assert all(v.model == MODEL and v.verdict in ("ok", "defect") for v in verdicts)

        # back to v1: the trainer marks and signs the update as a rollback, and the worker takes it
        rc, back, err = s.run("refresh", "--model", MODEL, "--adopt", str(s.model_dir / v1), timeout=60)
        assert rc == 0 and back["outcome"] == "adopted", (back, err[-2000:])
        assert back["rollback"] is True and back["signed_by"] == s.keys["key_id"] and s.live_version() == v1
        assert worker.wait_metric("inspector_model_info", 1, timeout=60, model=MODEL, version=v1) == 1, \
            worker.logs()[-3000:]
        assert worker.metric("inspector_model_refused_total") == 0
    finally:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.stop()


def test_collect_stores_duplicates_once_and_commits_after_storing(setup):
    s = setup
    producer = KafkaProducer(bootstrap_servers=s.bootstrap, acks="all", linger_ms=0)
    try:
        for rep in range(2):
            for i in range(8):
                send_frame(producer, s.normal, normal_frame(i), camera="cam-1", frame_id=f"f{i}-{rep}")
        send_frame(producer, s.normal, b"not an image at all", camera="cam-1")
        send_frame(producer, s.normal, normal_frame(99), camera="cam-1", model="../escape")
    finally:
        producer.close(timeout=5)
    rc, summary, err = s.run("collect", "--max-frames", "18", "--idle-timeout", "5", timeout=60)
    assert rc == 0, err[-3000:]
    assert summary["consumed"] == 18 and summary["stopped_by"] == "max_frames"
    assert (summary["stored"], summary["duplicates"], summary["rejected"]) == (8, 8, 2), summary
    assert summary["rejected_by_reason"] == {"unsupported_type": 1, "bad_model_name": 1}
    assert sum(summary["committed"].values()) == 18
    with ModelStore(s.store, MODEL) as store:
        assert store.count() == 8
        files = [p for p in store.objects.rglob("*") if p.is_file()]
        assert len(files) == 8
        assert {i.camera for i in store.images()} == {"cam-1"}
    rejected = [json.loads(p.read_text()) for p in (s.store / MODEL / "rejected").glob("*.json")]
    assert sorted(r["reason"] for r in rejected) == ["bad_model_name", "unsupported_type"]
    assert not (s.store / "..").joinpath("escape").exists()
    # offsets were committed: a second run finds nothing new
    rc, again, err = s.run("collect", "--idle-timeout", "2", timeout=60)
    assert rc == 0 and again["consumed"] == 0, (again, err[-2000:])


def test_candidate_trained_on_corrupted_data_is_refused(setup):
    """Defective parts confirmed as 'normal' by mistake: the candidate's threshold is calibrated on them and
    lets defects through on the labelled set; the gate refuses, the live model stays and is not re-announced.
    (The held-out normals come from the same polluted store, so only the labelled set can show this.)"""
    from trainer.refresh import EXIT_NOT_PROMOTED, refresh

    s = setup
    v1 = s.live_version()
    s.fill_store([make_frame(("scratch", "spot")[i % 2], size=128, seed=0, index=7000 + i) for i in range(30)])
    code, summary = refresh(s.settings(), MODEL)
    assert code == EXIT_NOT_PROMOTED and summary["outcome"] == "not_promoted", summary
    codes = {GateReason(g["code"]) for g in summary["gate"]}  # every code is a known one
    assert codes & {GateReason.LABELLED_RECALL_DROP, GateReason.LABELLED_THRESHOLD_LOOSENED}, summary["gate"]
    assert [g["message"] for g in summary["gate"]] == summary["reasons"]  # the sentences, for people
    assert s.live_version() == v1
    assert assert_only_complete_checkpoints(s.model_dir) == [v1]  # the candidate was not kept
    assert [u.version for u in s.control_updates()] == [v1]
    history = s.repo.history(MODEL)
    assert history[-1]["outcome"] == "not_promoted" and history[-1]["reasons"] == summary["reasons"]
    assert history[-1]["gate"] == summary["gate"]


def test_too_few_images_is_refused_with_a_clear_message(setup):
    s = setup
    v1 = s.live_version()
    s.fill_store([normal_frame(i) for i in range(5)])
    rc, summary, err = s.run("refresh", "--model", MODEL, "--min-images", "20", timeout=60)
    assert rc == 10, (summary, err[-2000:])
    assert summary["outcome"] == "not_promoted" and summary["exit_code"] == 10
    assert [g["code"] for g in summary["gate"]] == [GateReason.TOO_FEW_IMAGES] and summary["images"] == {"store": 5}
    assert summary["reasons"] == [summary["gate"][0]["message"]] and "5 < min_images 20" in summary["reasons"][0]
    assert s.live_version() == v1 and assert_only_complete_checkpoints(s.model_dir) == [v1]


def _kill_when(proc: subprocess.Popen, needle: str, timeout: float) -> bool:
    """SIGKILL ``proc`` as soon as ``needle`` appears in its stderr; False if it exited first."""
    found = threading.Event()

    def watch() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            if needle in line:
                proc.send_signal(signal.SIGKILL)
                found.set()
                return

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    t.join(timeout)
    if not found.is_set() and proc.poll() is None:
        proc.kill()
    proc.wait(10)
    return found.is_set()


# Runs `trainer refresh` with safetensors' writer wrapped so that the process SIGKILLs itself right after
# the promoted checkpoint's weights are written and before its manifest exists: a kill mid-write,
# deterministically, with no test hook in the product code.
KILL_DURING_PROMOTION = """
import os, signal, sys
import safetensors.torch as st
from inspector.model.repository import SCRATCH_PREFIX
_save = st.save_file
def save_file(tensors, filename, *a, **k):
    _save(tensors, filename, *a, **k)
    if SCRATCH_PREFIX not in str(filename):  # not the candidate or the fit's resume state: the promoted copy
        os.kill(os.getpid(), signal.SIGKILL)
st.save_file = save_file
from trainer.commands import main
sys.exit(main(sys.argv[1:]))
"""


def test_refresh_killed_mid_write_leaves_no_half_checkpoint(setup):
    s = setup
    v1 = s.live_version()
    s.fill_store([normal_frame(i) for i in range(30)])
    # 1) killed during training (the fit writes its resume state every epoch)
    p = s.trainer("refresh", "--model", MODEL, "--epochs", "50")
    assert _kill_when(p, '"event": "epoch"', 90), "refresh never reached an epoch"
    assert p.returncode == -signal.SIGKILL
    assert any(x.name.startswith(SCRATCH_PREFIX) for x in s.model_dir.iterdir())  # its scratch is left behind...
    assert s.live_version() == v1 and assert_only_complete_checkpoints(s.model_dir) == [v1]
    # 2) killed while writing the promoted checkpoint: a half-written temp folder, never a visible version
    p = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", KILL_DURING_PROMOTION, "refresh", "--model", MODEL], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **s.env})
    out, err = p.communicate(timeout=120)
    assert p.returncode == -signal.SIGKILL, err[-3000:]
    assert '"event": "promotion_start"' in err
    half = [x for x in s.model_dir.iterdir() if x.name.startswith(".") and ".tmp-" in x.name and x.is_dir()]
    assert half and (half[0] / "model.safetensors").exists() and not (half[0] / "manifest.json").exists()
    assert s.live_version() == v1 and assert_only_complete_checkpoints(s.model_dir) == [v1]
    assert [u.version for u in s.control_updates()] == [v1]
    # 3) the next run cleans up and succeeds
    rc, summary, err = s.run("refresh", "--model", MODEL, timeout=120)
    assert rc == 0, (summary, err[-3000:])
    assert not [x for x in s.model_dir.iterdir() if x.name.startswith(".")]  # ...and is cleaned up
    v2 = summary["promoted_version"]
    assert s.live_version() == v2 and assert_only_complete_checkpoints(s.model_dir) == sorted([v1, v2])
    assert [u.version for u in s.control_updates()] == [v1, v2]


def test_two_concurrent_refreshes_promote_at_most_once(setup):
    s = setup
    v1 = s.live_version()
    s.fill_store([normal_frame(i) for i in range(30)])
    procs = [s.trainer("refresh", "--model", MODEL, "--epochs", "3") for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        results.append((p.returncode, last_json(out, err), err))
    codes = sorted(r[0] for r in results)
    assert codes == [0, 11], [(c, j, e[-1500:]) for c, j, e in results]
    busy = next(j for c, j, _ in results if c == 11)
    assert busy["outcome"] == "busy" and LOCK in busy["reasons"][0]
    versions = assert_only_complete_checkpoints(s.model_dir)
    assert len(versions) == 2 and v1 in versions
    assert [u.version for u in s.control_updates()][0] == v1 and len(s.control_updates()) == 2
