"""`inspector serve` as a child process: spawned with an environment and a log file, waited for
until /readyz answers 200, stopped with SIGTERM (SIGKILL after a grace period) or SIGKILLed.

The one way the demo, the benches (``bench/service_bench.py``, ``bench/soak.py``,
``bench/startup.py``) and the integration tests (``tests/integration/harness.py``) run a worker:

    with ServeProcess(out / "worker.log", {"INSPECTOR_CHECKPOINT": ckpt, ...}) as worker:
        worker.wait_ready(120)
        ...  # frames in, verdicts out; leaving the block stops the worker
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import structlog

from devtools.localstack import free_port

__all__ = ["SERVE_COMMAND", "ServeProcess", "WorkerNotReady"]

SERVE_COMMAND = (sys.executable, "-m", "inspector.cli", "serve")
KILL_WAIT_S = 10.0  # a SIGKILLed process is reaped within this


class WorkerNotReady(RuntimeError):
    """The worker exited, or /readyz did not answer 200 in time; the message ends with its log's tail."""


def _log() -> Any:
    return structlog.get_logger("devtools.workers")


class ServeProcess:
    """One `inspector serve` subprocess.

    ``env`` is laid over this process's environment; ``INSPECTOR_HTTP_PORT`` is set to ``port``
    (a free loopback port unless given), where /readyz is probed. stdout and stderr are appended
    to ``log_path``. ``start()`` may be called again after the process has ended (same port,
    same log)."""

    def __init__(self, log_path: str | os.PathLike[str], env: Mapping[str, str] | None = None, *,
                 port: int | None = None, name: str | None = None, host: str = "127.0.0.1") -> None:
        self.log_path = Path(log_path)
        self.port = free_port() if port is None else port
        self.host = host
        self.name = name or self.log_path.stem
        self.env = {**os.environ, **(env or {}), "INSPECTOR_HTTP_PORT": str(self.port)}
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None  # time.monotonic() of the spawn
        self.killed_after_grace = False  # the last stop() had to SIGKILL
        self._log_file: IO[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> ServeProcess:
        if self.running:
            raise RuntimeError(f"worker {self.name} is already running (pid {self.pid})")
        self._close_log()
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()/kill()
        self.killed_after_grace = False
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(SERVE_COMMAND, env=self.env, stdout=self._log_file,  # noqa: S603
                                     stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, timeout: float = 120.0, every: float = 0.2) -> float:
        """Block until /readyz answers 200; returns the seconds since the spawn. Raises
        :class:`WorkerNotReady` (with the log's tail) when the process exits or ``timeout`` passes."""
        if self.proc is None or self.started_at is None:
            raise RuntimeError(f"worker {self.name} was never started")
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise WorkerNotReady(f"worker {self.name} exited with {self.proc.returncode} before it was ready "
                                     f"(log {self.log_path}):\n{self.log_tail()}")
            if self.ready():
                return time.monotonic() - self.started_at
            if time.monotonic() > deadline:
                raise WorkerNotReady(f"worker {self.name} not ready after {timeout:g} s "
                                     f"(log {self.log_path}):\n{self.log_tail()}")
            time.sleep(every)

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM (the worker drains and commits), SIGKILL when it is still running after
        ``grace`` seconds; returns the exit status (None when never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.killed_after_grace = True
                _log().warning("worker.sigkill", worker=self.name, pid=self.proc.pid, after_s=grace)
                self.proc.kill()
                self.proc.wait(KILL_WAIT_S)
        self._close_log()
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL at once (a crash, for fault tests); returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(KILL_WAIT_S)
        self._close_log()
        return self.proc.returncode

    def __enter__(self) -> ServeProcess:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- looking at it -----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The process id while it runs, else None."""
        return self.proc.pid if self.running and self.proc is not None else None

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, str]:
        """(HTTP status, body) of ``path`` on the worker's port; (0, "") when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.port}{path}", timeout=timeout) as r:  # noqa: S310
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        return self.get("/readyz", timeout=1.0)[0] == 200

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.logs()[-chars:]

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
