"""The loop around an rq worker that a role must survive: Redis going away, and rq giving up.

`Worker.work()` returns when Redis fails under it, when it logged an error it would not
retry, or when it was asked to stop. The evaluator then builds a new worker
with the same name after a backoff (after a Redis restart its old registration may still
be there, alive in rq's eyes: it is retired first, or rq would refuse the name) until its
burst, its job budget, or a stop request ends it.
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable
from types import FrameType

import redis
import structlog
from redis.cluster import RedisCluster
from rq import Worker

from pipeline.errors import ConfigError
from pipeline.wire.redis_conn import CONNECTION_ERRORS, Backoff

log = structlog.get_logger(__name__)


def bounded_unsubscribe(worker: Worker, wait_s: float = 1.0) -> None:
    """rq's `unsubscribe` without its unbounded join of the pubsub thread.

    After Redis went away, redis-py's pubsub thread waits up to rq's `sleep_time` (60 s) for
    a resubscription before it looks at its stop flag, and rq joins it without a timeout:
    a worker told to stop (Ctrl-C) within a minute of a Redis restart hung until it was
    killed, and work_until_done could not build the next worker meanwhile. The thread is a
    daemon; it ends by itself once its wait is over.
    """
    thread, pubsub = worker.pubsub_thread, worker.pubsub
    if thread is None or pubsub is None:
        return
    try:
        pubsub.unsubscribe()
    except CONNECTION_ERRORS:
        pass
    try:
        thread.stop(timeout=wait_s)
    except TypeError:  # redis-py < 6: stop() takes no timeout and does not join
        thread.stop()
        thread.join(wait_s)
    pubsub.close()


SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stopping_worker(worker: Worker, stop: threading.Event) -> None:
    """rq installs `worker.request_stop` as its signal handler when `work()` starts: wrap it
    so a signal also sets `stop`, without reading rq's private shutdown state."""
    request_stop = worker.request_stop

    def request_stop_and_set(signum: int, frame: FrameType | None) -> None:
        stop.set()
        request_stop(signum, frame)

    worker.request_stop = request_stop_and_set  # type: ignore[method-assign]


def work_until_done(make_worker: Callable[[], Worker], connection: redis.Redis, what: str,
                    stop: threading.Event | None = None, burst: bool = False, max_jobs: int | None = None) -> int:
    """Run workers from `make_worker()` until done (burst, job budget, a signal or `stop`);
    returns the jobs they finished or failed."""
    if isinstance(connection, RedisCluster):  # rq's Worker wants one server's connection pool
        raise ConfigError(f"the {what} is an rq worker, and rq cannot work on a Redis Cluster (its worker needs "
                          "one redis-server; rq/rq#1942): point it at a plain redis-server")
    stop = stop if stop is not None else threading.Event()
    main = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS} if main else {}
    backoff = Backoff()
    done = 0
    try:
        while not stop.is_set():
            for sig in previous:  # outside rq's work() no rq handler runs: a signal just sets stop
                signal.signal(sig, lambda *_: stop.set())
            try:
                worker = make_worker()
                worker.unsubscribe = functools.partial(bounded_unsubscribe, worker)  # type: ignore[method-assign]
                _stopping_worker(worker, stop)
                if connection.exists(worker.key) and not connection.hexists(worker.key, "death"):
                    worker.register_death()  # our own previous worker, left registered when Redis went away
                worker.work(burst=burst, max_jobs=None if max_jobs is None else max_jobs - done,
                            logging_level="WARNING")
                done += worker.successful_job_count + worker.failed_job_count
                if burst or (max_jobs is not None and done >= max_jobs) or stop.is_set():
                    return done
                if worker.successful_job_count:
                    backoff.reset()
                delay = backoff.next_delay()  # rq quit on an error it logged: never spin
                log.warning("rq_worker_restarting", what=what, retry_in_s=round(delay, 2))
            except CONNECTION_ERRORS as exc:
                delay = backoff.next_delay()
                log.warning("redis_unavailable", what=what, error=str(exc), retry_in_s=round(delay, 2))
            stop.wait(delay)
        return done
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
