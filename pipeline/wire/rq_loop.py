"""The loop around an rq worker that a role must survive: Redis going away, and rq giving up.

`Worker.work()` returns when Redis fails under it, when it logged an error it would not
retry, or when it was asked to stop. A collector or evaluator then builds a new worker
with the same name after a backoff (after a Redis restart its old registration may still
be there, alive in rq's eyes: it is retired first, or rq would refuse the name) until its
burst, its job budget, or a stop request ends it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import redis
import structlog
from rq import Worker

from pipeline.wire.redis_conn import CONNECTION_ERRORS, Backoff

log = structlog.get_logger(__name__)


def bounded_unsubscribe(worker: Worker, wait_s: float = 1.0) -> None:
    """rq's `unsubscribe` without its unbounded join of the pubsub thread.

    After Redis went away, redis-py's pubsub thread waits up to rq's `sleep_time` (60 s) for
    a resubscription before it looks at its stop flag, and rq joins it without a timeout:
    a collector told to stop (Ctrl-C) within a minute of a Redis restart hung until it was
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


def work_until_done(make_worker: Callable[[], Worker], connection: redis.Redis, what: str, burst: bool = False,
                    max_jobs: int | None = None) -> int:
    """Run workers from `make_worker()` until done; returns the jobs they finished or failed."""
    backoff = Backoff()
    done = 0
    while True:
        try:
            worker = make_worker()
            worker.unsubscribe = functools.partial(bounded_unsubscribe, worker)  # type: ignore[method-assign]
            if connection.exists(worker.key) and not connection.hexists(worker.key, "death"):
                worker.register_death()  # our own previous worker, left registered when Redis went away
            worker.work(burst=burst, max_jobs=None if max_jobs is None else max_jobs - done, logging_level="WARNING")
            done += worker.successful_job_count + worker.failed_job_count
            if burst or (max_jobs is not None and done >= max_jobs) or worker._shutdown_requested_date:
                return done
            if worker.successful_job_count:
                backoff.reset()
            delay = backoff.next_delay()  # rq quit on an error it logged: never spin
            log.warning("rq_worker_restarting", what=what, retry_in_s=round(delay, 2))
            time.sleep(delay)
        except CONNECTION_ERRORS as exc:
            delay = backoff.next_delay()
            log.warning("redis_unavailable", what=what, error=str(exc), retry_in_s=round(delay, 2))
            time.sleep(delay)
