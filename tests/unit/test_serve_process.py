"""devtools.workers.ServeProcess: spawn, wait for /readyz, SIGTERM then SIGKILL, SIGKILL, restart.

A stand-in for `inspector serve` (a few lines of http.server on $INSPECTOR_HTTP_PORT) keeps these
tests free of Kafka and of model loading; the real worker runs under the helper in the integration
tests and the demo.
"""

from __future__ import annotations

import signal
import sys

import pytest

from devtools import workers
from devtools.workers import ServeProcess, WorkerNotReady

FAKE_SERVE = r"""
import http.server, os, signal, sys
mode = os.environ.get("FAKE_MODE", "ok")
print("fake worker starting", mode, flush=True)
if mode == "crash":
    print("boom: no model", flush=True)
    sys.exit(2)
if mode == "stubborn":
    signal.signal(signal.SIGTERM, lambda *_: print("SIGTERM ignored", flush=True))
else:
    signal.signal(signal.SIGTERM, lambda *_: (print("stopping", flush=True), os._exit(0)))

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(503 if mode == "never-ready" else 200)
        self.end_headers()
        self.wfile.write(b"ready")

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(os.environ["INSPECTOR_HTTP_PORT"])), Handler).serve_forever()
"""


@pytest.fixture(autouse=True)
def fake_serve(monkeypatch):
    monkeypatch.setattr(workers, "SERVE_COMMAND", (sys.executable, "-c", FAKE_SERVE))


def test_ready_then_sigterm_stops_it_with_its_exit_status(tmp_path):
    with ServeProcess(tmp_path / "w.log", {"FAKE_MODE": "ok"}) as w:
        took = w.wait_ready(30)
        assert took >= 0 and w.running and w.pid is not None
        assert w.get("/readyz") == (200, "ready")
        assert w.env["INSPECTOR_HTTP_PORT"] == str(w.port)
    assert not w.running and w.pid is None
    assert w.proc is not None and w.proc.returncode == 0 and not w.killed_after_grace
    assert "stopping" in w.logs() and w.name == "w"


def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    w = ServeProcess(tmp_path / "w.log", {"FAKE_MODE": "stubborn"}, name="stubborn").start()
    w.wait_ready(30)
    assert w.stop(grace=0.5) == -signal.SIGKILL
    assert w.killed_after_grace
    assert "SIGTERM ignored" in w.logs()


def test_exit_before_ready_fails_with_the_log_tail(tmp_path):
    w = ServeProcess(tmp_path / "w.log", {"FAKE_MODE": "crash"}).start()
    with pytest.raises(WorkerNotReady, match="exited with 2") as err:
        w.wait_ready(30)
    assert "boom: no model" in str(err.value)
    assert w.stop() == 2


def test_never_ready_times_out_with_the_log_tail(tmp_path):
    w = ServeProcess(tmp_path / "w.log", {"FAKE_MODE": "never-ready"}).start()
    try:
        with pytest.raises(WorkerNotReady, match="not ready after 1 s") as err:
            w.wait_ready(1)
        assert "fake worker starting never-ready" in str(err.value)
        assert w.get("/readyz")[0] == 503 and not w.ready()
    finally:
        w.stop()


def test_sigkill_then_restart_on_the_same_port_and_log(tmp_path):
    w = ServeProcess(tmp_path / "w.log", {"FAKE_MODE": "ok"}).start()
    w.wait_ready(30)
    port = w.port
    assert w.kill() == -signal.SIGKILL and not w.running
    w.start().wait_ready(30)
    assert w.port == port and w.logs().count("fake worker starting") == 2  # appended
    assert w.stop() == 0


def test_start_twice_is_refused_and_unstarted_stop_is_none(tmp_path):
    w = ServeProcess(tmp_path / "w.log", {"FAKE_MODE": "ok"})
    assert w.stop() is None and w.kill() is None
    w.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            w.start()
    finally:
        w.stop()
