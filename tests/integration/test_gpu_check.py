"""bench/gpu_check.sh --dry-run: the one-call GPU check works end to end on the CPU (CI has no
GPU), so that the day a GPU is lent it runs the first time. Its figures mean nothing here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]


def test_gpu_check_dry_run_measures_every_model_config_and_the_service(tmp_path, kafka_bootstrap, redis_url):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(["bash", str(REPO / "bench/gpu_check.sh"), "--dry-run", "--out", str(tmp_path),  # noqa: S603,S607
                           "--bootstrap", kafka_bootstrap, "--redis-url", redis_url],
                          capture_output=True, text=True, timeout=380, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "DRY RUN" in proc.stdout
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["dry_run"] is True and result["ceilings_gflop_s"]["fp32"] > 0
    rows = result["engine"]
    assert not [r for r in rows if "error" in r], rows
    seen = {(r["method"], r["teacher"], r["config"], r["batch"]) for r in rows}
    assert len(seen) == 4 * 2 * 2  # RD/DSKD x two teachers each, fp32/bf16, batch 1 and 2
    assert all(r["images_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0 and r["gflop_per_image"] > 0 for r in rows)
    assert {r["teacher_weights"] for r in rows if r["teacher"] == "wide_resnet50_2"} == {"random (speed only)"}
    assert "[random teacher: speed only]" in proc.stdout
    service = result["service"]
    assert "error" not in service and "skipped" not in service, service
