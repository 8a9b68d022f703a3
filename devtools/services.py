"""Local real services (Apache Kafka + Redis) for dev, tests, CI and the demo.

    deploy/local/services start      # idempotent; prints `export ...` lines on stdout
    deploy/local/services env        # prints the `export ...` lines of the running services
    deploy/local/services status     # exit 0 when both run and answer, 3 otherwise
    deploy/local/services stop       # SIGTERM, wait, SIGKILL; idempotent
    deploy/local/services restart

    eval "$(deploy/local/services start)"

State (pids, ports, logs, the broker's log directory) lives in $INSPECTOR_LOCAL_SERVICES_DIR (default <repo>/.local-services/).
Ports: --kafka-port / $INSPECTOR_LOCAL_KAFKA_PORT (default 19092), --redis-port /
$INSPECTOR_LOCAL_REDIS_PORT (default 16379; the machine's own Redis keeps 6379).
`start` creates the service's topics (frames with a retention, verdicts, frames.dlq,
frames.normal, the compacted inspector.models) where missing.  Everything binds 127.0.0.1 only.  Diagnostics go to stderr so stdout can be eval'ed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import structlog

from inspector.support.durable import write_bytes_atomic
from inspector.support.logs import configure_logging
from devtools.localstack import (
    KAFKA_MAIN_CLASS,
    LOCAL_FRAMES_RETENTION_MS,
    LocalBroker,
    LocalRedis,
    LocalServiceError,
    PortInUseError,
    find_redis_server,
    find_java,
    kafka_jars_dir,
    ensure_topics,
    kafka_ready,
    process_alive,
    redis_ready,
    terminate_process,
)

DEFAULT_KAFKA_PORT = 19092
DEFAULT_REDIS_PORT = 16379
STATE_FILE = "state.json"
EXIT_NOT_RUNNING = 3


def _run_dir(arg: str | None) -> Path:
    raw = arg or os.environ.get("INSPECTOR_LOCAL_SERVICES_DIR") or str(Path(__file__).resolve().parents[1] / ".local-services")
    return Path(raw).expanduser().resolve()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"error: {name}={raw!r} is not an integer") from None


def _load_state(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _save_state(run_dir: Path, state: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(run_dir / STATE_FILE, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())


def _kafka_up(entry: dict | None) -> bool:
    return bool(entry) and process_alive(entry.get("pid"), KAFKA_MAIN_CLASS)


def _redis_up(entry: dict | None) -> bool:
    return bool(entry) and process_alive(entry.get("pid"), "redis-server")


def _exports(state: dict) -> str:
    return (
        f"export INSPECTOR_KAFKA_BOOTSTRAP_SERVERS={state['kafka']['bootstrap']}\n"
        f"export INSPECTOR_REDIS_URL={state['redis']['url']}\n"
    )


def cmd_start(args: argparse.Namespace) -> int:
    log = structlog.get_logger("services")
    run_dir = _run_dir(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = _load_state(run_dir)
    # Fail on a missing binary before starting anything (the message says how to install it).
    if not _kafka_up(state.get("kafka")):
        find_java()
        kafka_jars_dir()
    if not _redis_up(state.get("redis")):
        find_redis_server()

    if _kafka_up(state.get("kafka")):
        log.info("services.kafka.already_running", **state["kafka"])
    else:
        broker = LocalBroker(args.kafka_port, run_dir=run_dir, startup_timeout=args.timeout)
        broker.start()
        created = ensure_topics(broker.bootstrap, frames_retention_ms=args.frames_retention_ms)
        if created:
            log.info("services.kafka.topics_created", topics=created)
        state["kafka"] = {
            "pid": broker.pid,
            "port": broker.port,
            "bootstrap": broker.bootstrap,
            "log": str(broker.log_path),
            "data": str(broker.data_dir),
        }
        _save_state(run_dir, state)

    if _redis_up(state.get("redis")):
        log.info("services.redis.already_running", **state["redis"])
    else:
        redis_srv = LocalRedis(
            args.redis_port,
            run_dir=run_dir,
            maxmemory=args.redis_maxmemory,
            startup_timeout=args.timeout,
        )
        redis_srv.start()
        state["redis"] = {
            "pid": redis_srv.pid,
            "port": redis_srv.port,
            "url": redis_srv.url,
            "pidfile": str(redis_srv.pidfile),
            "log": str(redis_srv.log_path),
            "maxmemory": args.redis_maxmemory,
        }
        _save_state(run_dir, state)

    sys.stdout.write(_exports(state))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    log = structlog.get_logger("services")
    run_dir = _run_dir(args.run_dir)
    state = _load_state(run_dir)
    for name, expect in (("kafka", KAFKA_MAIN_CLASS), ("redis", "redis-server")):
        entry = state.pop(name, None)
        if not entry:
            continue
        pid = entry.get("pid")
        if pid and terminate_process(int(pid), expect=expect, timeout=args.timeout):
            log.info("services.stopped", service=name, pid=pid, port=entry.get("port"))
        else:
            log.info("services.not_running", service=name, pid=pid)
        _save_state(run_dir, state)
    pidfile = (state.get("redis") or {}).get("pidfile")
    if pidfile:
        Path(pidfile).unlink(missing_ok=True)
    if not state:
        (run_dir / STATE_FILE).unlink(missing_ok=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    run_dir = _run_dir(args.run_dir)
    state = _load_state(run_dir)
    ok = True
    kafka = state.get("kafka")
    if _kafka_up(kafka):
        answers = kafka_ready(kafka["bootstrap"], timeout=3.0)
        ok &= answers
        print(
            f"kafka  running  pid={kafka['pid']}  {kafka['bootstrap']}  "
            f"{'answering' if answers else 'NOT ANSWERING'}  log={kafka['log']}"
        )
    else:
        ok = False
        print("kafka  stopped")
    redis_entry = state.get("redis")
    if _redis_up(redis_entry):
        answers = redis_ready(redis_entry["url"], timeout=2.0)
        ok &= answers
        print(
            f"redis  running  pid={redis_entry['pid']}  {redis_entry['url']}  "
            f"{'answering' if answers else 'NOT ANSWERING'}  log={redis_entry['log']}"
        )
    else:
        ok = False
        print("redis  stopped")
    print(f"state  {run_dir}")
    return 0 if ok else EXIT_NOT_RUNNING


def cmd_env(args: argparse.Namespace) -> int:
    state = _load_state(_run_dir(args.run_dir))
    if not (_kafka_up(state.get("kafka")) and _redis_up(state.get("redis"))):
        print("error: local services are not running; run: deploy/local/services start", file=sys.stderr)
        return EXIT_NOT_RUNNING
    sys.stdout.write(_exports(state))
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    cmd_stop(args)
    return cmd_start(args)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--run-dir",
        default=None,
        help="state dir (pids, ports, logs); default $INSPECTOR_LOCAL_SERVICES_DIR or <repo>/.local-services",
    )
    common.add_argument(
        "--kafka-port",
        type=int,
        default=_env_int("INSPECTOR_LOCAL_KAFKA_PORT", DEFAULT_KAFKA_PORT),
        help=f"broker port (default $INSPECTOR_LOCAL_KAFKA_PORT or {DEFAULT_KAFKA_PORT}; 0 = any free)",
    )
    common.add_argument(
        "--redis-port",
        type=int,
        default=_env_int("INSPECTOR_LOCAL_REDIS_PORT", DEFAULT_REDIS_PORT),
        help=f"redis port (default $INSPECTOR_LOCAL_REDIS_PORT or {DEFAULT_REDIS_PORT}; 0 = any free)",
    )
    common.add_argument(
        "--redis-maxmemory",
        default=os.environ.get("INSPECTOR_LOCAL_REDIS_MAXMEMORY", "256mb"),
        help="redis maxmemory (allkeys-lru eviction); default 256mb",
    )
    common.add_argument(
        "--frames-retention-ms",
        type=int,
        default=_env_int("INSPECTOR_LOCAL_FRAMES_RETENTION_MS", LOCAL_FRAMES_RETENTION_MS),
        help="retention of the frames topic when it is created (default 1 hour)",
    )
    common.add_argument("--timeout", type=float, default=60.0, help="start/stop timeout, seconds")
    parser = argparse.ArgumentParser(
        prog="deploy/local/services",
        description="Start/stop a local Apache Kafka (single KRaft node) and redis-server on 127.0.0.1.",
        epilog='Typical use: eval "$(deploy/local/services start)"',
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, text in (
        ("start", cmd_start, "start both (idempotent) and print export lines"),
        ("stop", cmd_stop, "stop both (idempotent)"),
        ("restart", cmd_restart, "stop then start (the broker keeps its topics and offsets)"),
        ("status", cmd_status, "show pids/ports; exit 3 unless both run and answer"),
        ("env", cmd_env, "print export lines for the running services"),
    ):
        sub.add_parser(name, help=text, parents=[common]).set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_logging("info")  # console lines on stderr: stdout stays eval-able
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PortInUseError as exc:
        print(
            f"error: {exc}; choose free ports with --kafka-port/--redis-port or "
            "INSPECTOR_LOCAL_KAFKA_PORT/INSPECTOR_LOCAL_REDIS_PORT",
            file=sys.stderr,
        )
        return 1
    except LocalServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
