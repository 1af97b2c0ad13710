"""What every long-running process needs: signals, waiting for Redis and for the config, its CPU priority."""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
from pathlib import Path
from types import FrameType

import redis
import structlog

from pipeline.config import Config
from pipeline.wire.keys import Keys
from pipeline.wire.redis_conn import retry_forever

log = structlog.get_logger(__name__)
#: A role still running this long after its stop signal prints every thread's stack to stderr:
#: the log then says where it was stuck before supervisord's SIGKILL (`ROLE_STOP_WAIT_S`, 20 s).
STUCK_REPORT_S = 10.0


def install_signal_handlers(stop: threading.Event, stuck_report_s: float = STUCK_REPORT_S) -> None:
    """First SIGTERM/SIGINT: finish the current step and exit cleanly (still running after
    `stuck_report_s`: every thread's stack goes to stderr). Second: exit now."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("forced_exit", signal=signum)
            os._exit(130)
        log.info("stopping", signal=signum)
        faulthandler.dump_traceback_later(stuck_report_s)  # a watchdog thread of C: it never delays the exit
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def wait_for_config(r: redis.Redis, keys: Keys, stop: threading.Event, poll_s: float = 1.0) -> tuple[Config, int] | None:
    """Acquire the active config from Redis, waiting (with backoff) for Redis and the server."""
    from pipeline.wire.config_store import fetch_config

    announced = False
    while not stop.is_set():
        fetched = retry_forever(lambda: fetch_config(r, keys), "config", stop)
        if fetched is not None:
            log.info("config_acquired", version=fetched[1], run=fetched[0].run.name)
            return fetched
        if stop.is_set():
            return None
        if not announced:
            log.info("waiting_for_config", hint="start `charles server --config FILE`")
            announced = True
        stop.wait(poll_s)
    return None


def lower_priority(nice: int) -> int:
    """Every thread of this process to at least `nice`; returns the main thread's nice.
    Linux keeps a nice per thread and `os.nice` sets only the caller's, so threads started
    before (a heartbeat, a runtime's pool) would keep the old one; threads started after
    inherit their creator's. Never raises a priority: an unprivileged process could not
    lower its nice again."""
    tasks = Path("/proc/self/task")
    for tid in [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [0]:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))
        except ProcessLookupError:  # the thread ended meanwhile
            pass
    return os.getpriority(os.PRIO_PROCESS, os.getpid())
