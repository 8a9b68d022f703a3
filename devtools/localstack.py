"""Real local services for development, tests, CI and the demo.

``LocalBroker`` runs Apache Kafka itself (a single KRaft node: broker and controller in one JVM,
its jars resolved once from Maven Central into a cache folder) and ``LocalRedis`` runs a Debian
``redis-server``; both bind 127.0.0.1 only, on a free port (port 0 = pick one) or a given one.
Both are context managers and can be stopped and started again on the *same* port: the broker
keeps its topics and committed offsets across a restart (durable log directory), Redis comes
back empty (tests stop Redis mid-stream and bring it back).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
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
    "ensure_kafka_jars",
    "ensure_topics",
    "find_redis_server",
    "find_java",
    "kafka_cache_dir",
    "kafka_jars_dir",
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

#: Consumer-group timings for tests and dev: a consumer that dies (SIGKILL) loses its partitions
#: to the rest of the group after 6 s instead of kafka-python's default 45 s.
FAST_GROUP_SETTINGS: dict[str, int] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}

#: The Apache Kafka the local broker runs (a pinned version; its jars come from Maven Central).
KAFKA_VERSION = "4.4.0"
KAFKA_SCALA = "2.13"
KAFKA_ARTIFACTS: tuple[tuple[str, str, str], ...] = (
    ("org.apache.kafka", f"kafka_{KAFKA_SCALA}", KAFKA_VERSION),
    # routes the broker's slf4j logging into its log4j2 configuration
    ("org.apache.logging.log4j", "log4j-slf4j-impl", "2.25.5"),
)
KAFKA_MAIN_CLASS = "kafka.Kafka"
KAFKA_STORAGE_TOOL = "kafka.tools.StorageTool"
DEFAULT_BROKER_HEAP = "512m"
MIN_JAVA = 17
JAVA_INSTALL_HINT = (
    "install Java 17+ and Maven: `apt-get install -y openjdk-17-jre-headless maven` (Debian/Ubuntu; "
    "deploy/local/install.sh does it), or point JAVA_HOME at a JDK and INSPECTOR_KAFKA_JARS at a "
    "folder of Kafka's jars"
)
REDIS_INSTALL_HINT = (
    "install Redis: `apt-get install -y redis-server` (Debian/Ubuntu; it does not start a system "
    "service), or point INSPECTOR_REDIS_SERVER_BIN at a redis-server binary"
)


def _log() -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("devtools.localstack")


class LocalServiceError(RuntimeError):
    """A local service could not be started, reached or stopped."""


class MissingBinaryError(LocalServiceError):
    """Java, Maven, Kafka's jars or redis-server are missing; the message says how to get them."""


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


def find_java() -> Path:
    """A Java >= 17 (Kafka 4 needs it): $JAVA_HOME/bin/java, else ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    candidates = [Path(home) / "bin" / "java"] if home else []
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(on_path))
    for java in candidates:
        if not (java.is_file() and os.access(java, os.X_OK)):
            continue
        major = _java_major(java)
        if major is not None and major >= MIN_JAVA:
            return java
    raise MissingBinaryError(f"no Java >= {MIN_JAVA} found (JAVA_HOME or PATH); {JAVA_INSTALL_HINT}")


@functools.lru_cache(maxsize=8)
def _java_major(java: Path) -> int | None:
    try:
        out = subprocess.run(  # noqa: S603 - fixed argv
            [str(java), "-version"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(rb'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def kafka_cache_dir() -> Path:
    """Where the broker's jars are kept: $INSPECTOR_KAFKA_CACHE, else
    ``$XDG_CACHE_HOME/inspector/kafka-<version>`` (``~/.cache/...``)."""
    override = os.environ.get("INSPECTOR_KAFKA_CACHE")
    if override:
        return Path(override).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "inspector" / f"kafka-{KAFKA_VERSION}"


def _kafka_pom() -> str:
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in KAFKA_ARTIFACTS
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>local.inspector</groupId><artifactId>kafka-broker-jars</artifactId>"
        f"<version>{KAFKA_VERSION}</version><packaging>pom</packaging>"
        f"<dependencies>{deps}</dependencies></project>\n"
    )


def ensure_kafka_jars(cache: Path | None = None) -> Path:
    """The folder of Apache Kafka's broker jars (every runtime dependency), resolved from Maven
    Central with ``mvn dependency:copy-dependencies`` the first time and kept in ``cache``.
    Idempotent and quick once done (a stamp names the resolved artifacts)."""
    cache = cache or kafka_cache_dir()
    libs = cache / "libs"
    stamp = cache / "resolved.txt"
    want = " ".join(":".join(a) for a in KAFKA_ARTIFACTS)
    with contextlib.suppress(OSError):
        if stamp.read_text().strip() == want and any(libs.glob(f"kafka_{KAFKA_SCALA}-*.jar")):
            return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise MissingBinaryError(f"Maven (mvn) is needed once to fetch Apache Kafka's jars; {JAVA_INSTALL_HINT}")
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="resolve-", dir=cache))
    try:
        (work / "pom.xml").write_text(_kafka_pom())
        _log().info("localstack.kafka.resolving", version=KAFKA_VERSION, into=str(libs))
        done = subprocess.run(  # noqa: S603 - fixed argv
            [mvn, "-q", "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
             f"-DoutputDirectory={work / 'libs'}", "-DincludeScope=runtime"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0 or not any((work / "libs").glob(f"kafka_{KAFKA_SCALA}-*.jar")):
            raise LocalServiceError(
                f"Maven could not resolve Apache Kafka {KAFKA_VERSION}: "
                f"{(done.stdout + done.stderr).decode(errors='replace')[-2000:]}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        (work / "libs").rename(libs)
        stamp.write_text(want + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return libs


def kafka_jars_dir() -> Path:
    """$INSPECTOR_KAFKA_JARS (a folder of the broker's jars), else :func:`ensure_kafka_jars`."""
    override = os.environ.get("INSPECTOR_KAFKA_JARS")
    if override:
        path = Path(override).expanduser()
        if not any(path.glob(f"kafka_{KAFKA_SCALA}-*.jar")):
            raise MissingBinaryError(
                f"INSPECTOR_KAFKA_JARS={path} holds no kafka_{KAFKA_SCALA}-*.jar; {JAVA_INSTALL_HINT}"
            )
        return path
    return ensure_kafka_jars()


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
    from kafka.admin import KafkaAdminClient  # local import: keeps `import devtools.localstack` light

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

    def _require_free(self, port: int, what: str = "") -> None:
        if not port_is_free(port):
            raise PortInUseError(
                f"cannot start {self.kind}: {what}127.0.0.1:{port} is already in use by another "
                "process (pick another port)"
            )

    def _claim_port(self) -> int:
        if self._port is None:
            self._port = free_port()
        self._require_free(self._port)
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
    """A single-node Apache Kafka (KRaft: broker and controller in one JVM) on 127.0.0.1.

    The log directory lives in ``run_dir`` and survives ``stop()``/``start()`` (and a SIGKILL:
    Kafka recovers its logs on the next start), so a restart keeps topics and committed
    offsets.  The first ``start()`` formats it; later starts reuse it with the same ports.

    >>> with LocalBroker() as broker:          # doctest: +SKIP
    ...     KafkaProducer(bootstrap_servers=broker.bootstrap)
    """

    kind = "kafka"

    def __init__(
        self,
        port: int = 0,
        *,
        run_dir: str | os.PathLike[str] | None = None,
        jars: str | os.PathLike[str] | None = None,
        heap: str = DEFAULT_BROKER_HEAP,
        startup_timeout: float = 60.0,
    ) -> None:
        super().__init__(port, run_dir, startup_timeout)
        self._jars = Path(jars) if jars is not None else None
        self.heap = heap
        self._controller_port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None

    # -- where things are --------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` for ``bootstrap_servers``."""
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._pid if self.is_running() else None

    @property
    def log_path(self) -> Path:
        """The broker's own log (log4j) plus the JVM's stdout/stderr."""
        return self.run_dir / "kafka.log"

    @property
    def data_dir(self) -> Path:
        """``log.dirs``: topics, committed offsets and the KRaft metadata log."""
        return self.run_dir / "kafka-data"

    @property
    def jars(self) -> Path:
        if self._jars is None:
            self._jars = kafka_jars_dir()
        return self._jars

    def is_running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return process_alive(self._pid, KAFKA_MAIN_CLASS)

    # -- configuration -----------------------------------------------------------------------
    def _ports_file(self) -> Path:
        return self.run_dir / "kafka-ports.json"

    def _settle_ports(self) -> None:
        """Reuse the ports a formatted log dir was made with (the controller's address is part
        of the KRaft quorum); pick free ones the first time."""
        saved: dict[str, int] = {}
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads(self._ports_file().read_text())
        if self._port is None and saved.get("port"):
            self._port = int(saved["port"])
        if self._controller_port is None:
            self._controller_port = int(saved.get("controller_port") or 0) or None
        self._claim_port()
        if self._controller_port is None:
            self._controller_port = free_port()
        self._require_free(self._controller_port, "its controller port ")
        self._ports_file().write_text(
            json.dumps({"port": self._port, "controller_port": self._controller_port}) + "\n"
        )

    def properties(self) -> dict[str, str]:
        """``server.properties`` of the node: fit for tests and development, not production
        (replication factor 1, no initial rebalance delay, fast retention checks)."""
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{self._controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self._controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # the same frame size limit as docker-compose.yml's broker
            "message.max.bytes": str(64 * 1024 * 1024),
            "replica.fetch.max.bytes": str(64 * 1024 * 1024),
            "log.retention.hours": "24",
            "log.retention.check.interval.ms": "5000",
            "log.segment.delete.delay.ms": "1000",
            "num.network.threads": "2",
            "num.io.threads": "4",
        }

    def _write_config(self) -> Path:
        props = self.run_dir / "server.properties"
        props.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        log4j = self.run_dir / "log4j2.properties"
        log4j.write_text(
            "status = warn\n"
            "appender.out.type = Console\n"
            "appender.out.name = OUT\n"
            "appender.out.layout.type = PatternLayout\n"
            "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRefs = out\n"
            "rootLogger.appenderRef.out.ref = OUT\n"
            # the controller's and the log cleaner's chatter
            "logger.kafka.name = kafka\nlogger.kafka.level = WARN\n"
            "logger.apache.name = org.apache.kafka\nlogger.apache.level = WARN\n"
            "logger.state.name = state.change.logger\nlogger.state.level = WARN\n"
            "logger.started.name = kafka.server.KafkaRaftServer\nlogger.started.level = INFO\n"
        )
        return props

    def java_command(self, main: str, *args: str) -> list[str]:
        return [
            str(find_java()),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.run_dir / 'log4j2.properties'}",
            "-cp",
            f"{self.jars}/*",
            main,
            *args,
        ]

    def _format_once(self, props: Path) -> None:
        if (self.data_dir / "meta.properties").is_file():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        done = subprocess.run(  # noqa: S603 - fixed argv
            self.java_command(
                KAFKA_STORAGE_TOOL, "format", "--ignore-formatted", f"--cluster-id={cluster_id}", "--config", str(props)
            ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise LocalServiceError(
                f"formatting the Kafka log directory {self.data_dir} failed: "
                f"{(done.stdout + done.stderr).decode(errors='replace')[-2000:]}"
            )

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LocalBroker:
        """Start (no-op when already running) and wait until it answers a metadata request."""
        if self.is_running():
            return self
        find_java()  # raises MissingBinaryError before touching ports
        self.jars  # noqa: B018 - resolves (or names how to resolve) the broker's jars
        self._settle_ports()
        props = self._write_config()
        self._format_once(props)
        with open(self.log_path, "ab") as log_file:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv
                self.java_command(KAFKA_MAIN_CLASS, str(props)),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # survives the terminal's Ctrl-C; detached for the CLI
            )
        self._pid = self._proc.pid
        try:
            wait_for_kafka(self.bootstrap, self.startup_timeout, alive=self.is_running)
        except LocalServiceError as exc:
            self.stop(timeout=5.0)
            raise LocalServiceError(f"{exc}; broker log:\n{_tail(self.log_path)}") from exc
        _log().info("localstack.kafka.started", bootstrap=self.bootstrap, pid=self._pid)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a controlled shutdown that flushes the logs), wait ``timeout`` s, SIGKILL.
        Topics and committed offsets stay in :attr:`data_dir`."""
        if self._pid is None:
            return
        stopped = terminate_process(self._pid, expect=KAFKA_MAIN_CLASS, timeout=timeout, popen=self._proc)
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


# --------------------------------------------------------------------------------------------
# the service's topics


#: How long the local broker keeps frames by default (dev and demo; production sets its own in
#: docker-compose.yml / the cluster): an hour, in 10-minute segments so that retention can apply.
LOCAL_FRAMES_RETENTION_MS = 3_600_000


def ensure_topics(
    bootstrap: str,
    *,
    frames: str = "frames",
    verdicts: str = "verdicts",
    dlq: str = "frames.dlq",
    normal: str = "frames.normal",
    models: str = "inspector.models",
    partitions: int = 4,
    frames_retention_ms: int = LOCAL_FRAMES_RETENTION_MS,
    frames_segment_ms: int | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create the service's topics where missing, configured like docker-compose.yml's: frames
    with a retention (deleted segment by segment: ``segment.ms`` defaults to a sixth of it),
    the compacted control topic, 64 MiB records.  Returns the names it created."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    big = {"max.message.bytes": str(64 * 1024 * 1024)}
    segment = frames_segment_ms if frames_segment_ms is not None else max(frames_retention_ms // 6, 1000)
    wanted = [
        NewTopic(frames, partitions, 1, topic_configs={
            **big, "retention.ms": str(frames_retention_ms), "segment.ms": str(segment)}),
        NewTopic(verdicts, partitions, 1, topic_configs={"retention.ms": str(7 * 86_400_000)}),
        NewTopic(dlq, 1, 1, topic_configs={**big, "retention.ms": str(7 * 86_400_000)}),
        NewTopic(normal, 1, 1, topic_configs={**big, "retention.ms": str(7 * 86_400_000)}),
        NewTopic(models, 1, 1, topic_configs={"cleanup.policy": "compact"}),
    ]
    ms = int(timeout * 1000)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="inspector-localstack-topics",
                             request_timeout_ms=ms)
    try:
        existing = set(admin.list_topics())
        todo = [t for t in wanted if t.name not in existing]
        if todo:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(todo, timeout_ms=ms)
        return [t.name for t in todo]
    finally:
        admin.close()
