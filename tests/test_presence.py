"""Who is connected: heartbeats with a TTL, status hashes as untrusted text, and a reporter
thread that outlives a Redis that is away."""

from __future__ import annotations

import time

import redis

from pipeline.wire.keys import Keys
from pipeline.wire.presence import (
    BackgroundReporter,
    Presence,
    live_workers,
    new_worker_id,
    read_statuses,
)
from tests.processes import wait_until


def test_a_beat_makes_a_worker_live_with_its_status_and_leave_removes_it(r: redis.Redis, keys: Keys) -> None:
    worker = new_worker_id("player")
    assert worker.startswith("player-")
    presence = Presence(r, keys, "player", worker, ttl_s=5)
    presence.beat(steps=3, ok=True, raw={"steering": 0.5})
    assert live_workers(r, keys, "player") == [worker]
    [status] = read_statuses(r, keys, "player")
    assert status["steps"] == "3" and status["ok"] == "1" and status["raw"] == '{"steering": 0.5}'
    assert status["id"] == worker and 0 < r.ttl(keys.presence("player", worker)) <= 5
    presence.leave()
    assert live_workers(r, keys, "player") == [] and read_statuses(r, keys, "player") == []


def test_forged_presence_and_terminal_escapes_do_not_get_through(r: redis.Redis, keys: Keys) -> None:
    r.set(keys.presence("collector", "forged"), "{}")  # no TTL: not written by a heartbeat
    r.set(keys.presence("collector", "long"), "{}", ex=3600)
    assert live_workers(r, keys, "collector") == []
    presence = Presence(r, keys, "collector", "c1")
    presence.beat(state="\x1b]0;pwned\x07ok" + "x" * 10_000)
    [status] = read_statuses(r, keys, "collector")
    assert status["state"].startswith("]0;pwnedokx") and len(status["state"]) <= 4096  # cut, escapes gone


def test_the_reporter_writes_the_latest_status_and_survives_redis_going_away(r: redis.Redis, keys: Keys) -> None:
    away = redis.Redis(port=1, socket_connect_timeout=0.2)  # nothing listens there
    reporter = BackgroundReporter(Presence(away, keys, "trainer", "t1"), period_s=0.05)
    reporter.update(batches=1)
    time.sleep(0.3)  # beats fail meanwhile: said once, retried
    reporter.presence = Presence(r, keys, "trainer", "t1")  # Redis is back
    reporter.update(batches=7)
    wait_until(lambda: read_statuses(r, keys, "trainer"), 5, "the reporter's beat")
    assert read_statuses(r, keys, "trainer")[0]["batches"] == "7"
    reporter.close()
