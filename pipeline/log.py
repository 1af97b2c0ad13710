"""structlog setup shared by every process: JSON lines, or readable output on a terminal."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure_logging(role: str, level: str | None = None) -> None:
    """Configure structlog and stdlib logging once per process; every event carries `role`."""
    level_name = (level or os.environ.get("CHARLES_LOG_LEVEL", "INFO")).upper()
    lvl = getattr(logging, level_name, logging.INFO)
    pretty = sys.stderr.isatty() and os.environ.get("CHARLES_LOG_JSON") != "1"
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        structlog.dev.ConsoleRenderer() if pretty else structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(role=role, pid=os.getpid())
    logging.basicConfig(level=max(lvl, logging.WARNING), stream=sys.stderr, format="%(name)s %(message)s")
