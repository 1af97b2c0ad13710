"""`work_until_done`: a role's rq worker comes back under its own name after Redis kept its
old registration (a kill -9 restart with AOF), which rq alone refuses."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from pipeline.wire.keys import Keys
from pipeline.wire.local_redis import free_port
from pipeline.wire.rq_loop import work_until_done


def test_a_stale_registration_of_the_same_name_is_retired(r: redis.Redis, keys: Keys) -> None:
    name = f"evaluator-{keys.prefix.strip(':')}"

    def make_worker() -> SimpleWorker:
        return SimpleWorker([keys.queue("q")], connection=r, name=name, serializer=JSONSerializer)

    make_worker().register_birth()  # the worker of before the restart, never marked dead
    with pytest.raises(ValueError, match="active worker named"):
        make_worker().work(burst=True)  # what a plain restart loop would hit
    assert work_until_done(make_worker, r, "evaluator", burst=True) == 0
    assert r.hexists(f"rq:worker:{name}", "death")  # this run ended cleanly, registered as such


DEAD = redis.Redis(port=free_port(), socket_connect_timeout=0.2)  # nothing listens there


def _unreachable_worker() -> SimpleWorker:
    return SimpleWorker(["q"], connection=DEAD, name="collector-unreachable", serializer=JSONSerializer)


def test_stop_ends_the_loop_while_redis_is_away() -> None:
    """It had no stop: with Redis away it slept through backoffs until the process was killed."""
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    start = time.monotonic()
    assert work_until_done(_unreachable_worker, DEAD, "collector", stop=stop) == 0
    assert time.monotonic() - start < 5.0


def test_a_signal_between_workers_ends_the_loop() -> None:
    """SIGTERM during the backoff (no rq handler installed then) stops the loop cleanly."""
    previous = signal.getsignal(signal.SIGTERM)
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    try:
        start = time.monotonic()
        assert work_until_done(_unreachable_worker, DEAD, "collector") == 0
        assert time.monotonic() - start < 5.0
    finally:
        signal.signal(signal.SIGTERM, previous)
