"""Who is connected: heartbeat keys with a TTL, and status hashes the consoles read."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from typing import Any

import redis
import structlog

from pipeline.wire.keys import Keys
from pipeline.wire.redis_conn import CONNECTION_ERRORS, Backoff

log = structlog.get_logger(__name__)

HEARTBEAT_TTL_S = 15


def new_worker_id(role: str) -> str:
    """A readable id that stays unique across machines: role-host-pid-random (it names keys:
    only [A-Za-z0-9_-], so it can never act as a glob in an ACL pattern)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname().split(".")[0][:20])
    return f"{role}-{host}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


#: Redis users shared by every process of their role on the Redis host (`charles init`).
SHARED_USERS = ("default", "server", "trainer", "collector", "player")


def worker_id_for(r: redis.Redis, role: str, stop: threading.Event) -> str | None:
    """This process's worker id: the user name for a per-machine user (its ACL covers only
    keys under that name), else a new unique id. Waits for Redis to answer; None when
    `stop` is set first."""
    backoff = Backoff()
    while True:
        try:
            user = r.acl_whoami()
            break
        except (*CONNECTION_ERRORS, redis.RedisError) as exc:
            delay = backoff.next_delay()
            log.warning("redis_unavailable", what="whoami", error=str(exc)[:200], retry_in_s=round(delay, 2))
            if stop.wait(delay):
                return None
    name = user.decode() if isinstance(user, bytes) else str(user)
    return new_worker_id(role) if name in SHARED_USERS else name


class Presence:
    """Heartbeat and status of one worker; every call may raise a Redis connection error."""

    def __init__(self, r: redis.Redis, keys: Keys, role: str, worker_id: str, ttl_s: int = HEARTBEAT_TTL_S) -> None:
        self.r = r
        self.keys = keys
        self.role = role
        self.worker_id = worker_id
        self.ttl_s = ttl_s
        self.started = time.time()

    @property
    def status_key(self) -> str:
        return self.keys.status(self.role, self.worker_id)

    def beat(self, **status: Any) -> None:
        """Refresh presence and write status fields (values JSON-encoded where not scalar)."""
        fields = {k: _scalar(v) for k, v in status.items()}
        fields.update(id=self.worker_id, heartbeat=time.time(), started=self.started)
        pipe = self.r.pipeline(transaction=False)
        pipe.set(self.keys.presence(self.role, self.worker_id), json.dumps({"at": time.time()}), ex=self.ttl_s)
        pipe.hset(self.status_key, mapping=fields)
        pipe.expire(self.status_key, self.ttl_s * 4)
        pipe.execute()

    def leave(self) -> None:
        self.r.delete(self.keys.presence(self.role, self.worker_id), self.status_key)


def _scalar(value: Any) -> str | int | float:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float | str):
        return value
    return json.dumps(value)


def live_workers(r: redis.Redis, keys: Keys, role: str, max_ttl_s: int = HEARTBEAT_TTL_S) -> list[str]:
    """Ids of workers of a role whose heartbeat has not expired. A key without a TTL, or
    with one longer than a heartbeat's, was not written by `Presence.beat`: a machine with
    the role's credentials forged it (e.g. to make the server queue a job per fake), and
    it is not counted."""
    prefix = keys.presence(role, "")
    found = list(r.scan_iter(match=keys.presence_pattern(role), count=500))
    pipe = r.pipeline(transaction=False)
    for key in found:
        pipe.pttl(key)
    ttls = pipe.execute() if found else []
    return sorted(k.decode()[len(prefix):] for k, ttl in zip(found, ttls, strict=True)
                  if 0 < int(ttl) <= max_ttl_s * 1000)


#: C0 and C1 control characters (ESC and OSC sequences included): a status value is shown
#: on terminals and web pages, and any holder of the role's credentials may write one
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_STATUS_VALUE = 4096


def read_statuses(r: redis.Redis, keys: Keys, role: str) -> list[dict[str, str]]:
    """Status hashes of the live workers of a role, decoded to str, without control
    characters and cut to `MAX_STATUS_VALUE` characters (they are untrusted input)."""
    out = []
    for worker_id in live_workers(r, keys, role):
        raw = r.hgetall(keys.status(role, worker_id))
        if raw:
            out.append({_clean(k): _clean(v) for k, v in raw.items()})
    return out


def _clean(value: bytes) -> str:
    return _CONTROL.sub("", value[:MAX_STATUS_VALUE].decode(errors="replace"))


class BackgroundReporter:
    """Writes a loop's latest status from a thread, so a slow or absent Redis never stalls the loop."""

    def __init__(self, presence: Presence, period_s: float = 0.5) -> None:
        self.presence = presence
        self.period_s = period_s
        self._latest: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-reporter", daemon=True)
        self._thread.start()

    def update(self, **status: Any) -> None:
        with self._lock:
            self._latest = status

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self.period_s):
            with self._lock:
                status = self._latest
            if status is None:
                continue
            failing = beat_or_report(lambda s=status: self.presence.beat(**s), failing)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


def beat_or_report(beat: Any, failing: bool) -> bool:
    """Run one heartbeat; on any Redis error (away, or refusing writes past maxmemory) say so
    once and return True, so the caller's thread lives on and the next beat retries."""
    try:
        beat()
    except redis.RedisError as exc:
        if not failing:
            log.warning("heartbeat_failed", error=str(exc)[:200], retrying=True)
        return True
    if failing:
        log.info("heartbeat_resumed")
    return False

