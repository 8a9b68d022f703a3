"""`torchrun` data-parallel training: two CPU processes (gloo) train one checkpoint together."""

import os
import subprocess
import sys

from inspector.model.checkpoint import read_manifest
from inspector.engine.engine import load_engine
from trainer.synthetic import make_image


def test_two_process_training_writes_one_valid_checkpoint(synthetic_data, tmp_path):
    from devtools.localstack import free_port

    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         "-m", "trainer.cli", "fit", "--data", str(synthetic_data), "--out", str(out), "--image-size", "32",
         "--epochs", "2", "--device", "cpu", "--no-progress", "--max-train-images", "32", "--batch-size", "4",
         "--no-precision-thresholds"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [line for line in proc.stdout.splitlines() if line.startswith("{")] == [proc.stdout.strip().splitlines()[-1]]
    m = read_manifest(out)
    assert m.training["processes"] == 2
    assert [h["epoch"] for h in m.training["history"]] == [1, 2]
    # 28 training images, 4 per process per step, 2 processes: 3 steps of 8 images each epoch
    assert m.training["batch_size"] == 4
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.safetensors"]
    (r,) = load_engine(out, "cpu").infer([make_image(None, size=64, seed=0, index=3)[0]])
    assert r.score > 0
