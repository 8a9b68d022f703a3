"""structlog configuration for the command-line tools (the worker configures its own JSON logging)."""

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
    """Log to stderr so that stdout stays machine-readable (JSON results)."""
    lvl = logging.getLevelName(level.upper())
    renderer = structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl if isinstance(lvl, int) else logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=False,
    )
