"""The one structlog configuration: the worker, the trainer, the CLIs and the dev tools."""

from __future__ import annotations

import logging
import sys

import structlog


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written (not when logging was configured), so a
    replaced stream (a test's capture, a daemon's redirect) is never written after it closed."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "info", json_logs: bool = False) -> None:
    """structlog key-value events on stderr, so stdout stays machine-readable (JSON results, export lines).

    ``json_logs``: one JSON object a line (the worker, the trainer under a scheduler); otherwise
    console lines for a person. The stdlib loggers (kafka-python) go to the same stream at WARNING
    and above."""
    lvl = logging.getLevelName(level.upper())
    lvl = lvl if isinstance(lvl, int) else logging.INFO
    logging.basicConfig(stream=_CurrentStderr(), level=max(lvl, logging.WARNING),
                        format="%(name)s %(levelname)s %(message)s")
    processors: list = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json_logs:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=False,
    )
