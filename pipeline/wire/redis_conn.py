"""Connecting to the project's Redis and surviving its absence (capped backoff with jitter).

The address and credentials come from the environment (`.env`, loaded by honcho or by
`charles`): CHARLES_REDIS_URL, or CHARLES_REDIS_HOST / _PORT / _USERNAME / _PASSWORD.
A Redis Cluster is named by `cluster=yes` in the URL's query (`redis://:pw@node1:7000/0?
cluster=yes`, any node will do) or CHARLES_REDIS_CLUSTER=yes: `connect` then returns redis-
py's `RedisCluster`, and `keys_from_env` tags the keys for it (`pipeline.wire.keys`).
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import redis
import structlog
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.connection import Encoder, PythonRespSerializer
from redis.retry import Retry

from pipeline.wire.keys import DEFAULT_PREFIX, Keys

DEFAULT_PORT = 6479
#: Errors that mean "Redis is not reachable right now": back off and retry.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    ConnectionError,
    OSError,
)
T = TypeVar("T")
log = structlog.get_logger(__name__)


def redis_url() -> str:
    """The URL this process connects to, built from the environment."""
    url = os.environ.get("CHARLES_REDIS_URL")
    if url:
        return url
    host = os.environ.get("CHARLES_REDIS_HOST", "127.0.0.1")
    port = os.environ.get("CHARLES_REDIS_PORT", str(DEFAULT_PORT))
    user = os.environ.get("CHARLES_REDIS_USERNAME", "")
    password = os.environ.get("CHARLES_REDIS_PASSWORD", "")
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@" if (user or password) else ""
    return f"redis://{auth}{host}:{port}/0"


_YES = ("1", "yes", "true", "on")
#: the URL query parameter that names a cluster (redis-py must not see it)
CLUSTER_PARAM = "cluster"


def is_cluster(url: str | None = None) -> bool:
    """True when the URL (default: this process's) names a Redis Cluster."""
    url = url or redis_url()
    in_query = any(k == CLUSTER_PARAM and v.lower() in _YES for k, v in parse_qsl(urlsplit(url).query))
    return in_query or os.environ.get("CHARLES_REDIS_CLUSTER", "").lower() in _YES


def _without_cluster_param(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != CLUSTER_PARAM]
    return urlunsplit(parts._replace(query=urlencode(query)))


def keys_from_env() -> Keys:
    return Keys(os.environ.get("CHARLES_KEY_PREFIX", DEFAULT_PREFIX), cluster=is_cluster())


#: Client settings for sample sets of megabytes: hiredis would copy every command into one
#: buffer before sending (redis-py's own packer sends large values as they are), and 1 MiB
#: reads take a set in a few system calls instead of dozens.
BULK_TRANSFER: dict[str, Any] = {
    "command_packer": PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode),
    "socket_read_size": 1 << 20,
}


def connect(url: str | None = None) -> redis.Redis:
    """A client with timeouts and health checks; bytes in, bytes out (samples are binary).

    redis-py would retry a failed command 10 times with backoff, blocking the caller for
    seconds; here it retries once at once (a stale pooled connection after a Redis
    restart) and then raises, so each loop applies its own backoff and keeps its pace.
    A command that gets no reply (a network partition drops packets silently) fails after
    CHARLES_REDIS_SOCKET_TIMEOUT seconds (default 30); lower it on flaky links.
    """
    url = url or redis_url()
    tcp = {} if url.startswith("unix://") else {"socket_keepalive": True}  # unix sockets take no keepalive
    options: dict[str, Any] = {
        **BULK_TRANSFER,
        "socket_connect_timeout": 5,
        "socket_timeout": float(os.environ.get("CHARLES_REDIS_SOCKET_TIMEOUT", "30")),
        "health_check_interval": 15,
        "retry": Retry(NoBackoff(), 1),
        **tcp,
    }
    if is_cluster(url):  # duck-types as redis.Redis for every command Charles sends
        return RedisCluster.from_url(_without_cluster_param(url), **options)  # type: ignore[return-value]
    return redis.Redis.from_url(url, **options)


def unreachable(exc: BaseException) -> str:
    """One line for a command that cannot go on without Redis: where it looked, why it failed,
    and where its address and password came from (which .env, or that there was none)."""
    from pipeline import dotenv

    return f"cannot reach Redis at {safe_url(redis_url())}: {exc} ({dotenv.describe()})"


def safe_url(url: str) -> str:
    """The URL with every password hidden, for logs and consoles.

    Both places redis-py takes a password from are redacted: the userinfo
    (`redis://user:PASSWORD@host`) and the query (`redis://host/0?password=PASSWORD`).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    rest, hash_, fragment = rest.partition("#")
    rest, qmark, query = rest.partition("?")
    if "@" in rest:  # the path is a db number: an '@' before the query ends the userinfo
        creds, _, host = rest.rpartition("@")
        rest = f"{creds.split(':', 1)[0]}:***@{host}"
    if query:
        query = "&".join(_redact_param(p) for p in query.split("&"))
    return f"{scheme}{sep}{rest}{qmark}{query}{hash_}{fragment}"


def _redact_param(param: str) -> str:
    name, eq, _ = param.partition("=")
    secret = any(word in unquote(name).lower() for word in ("pass", "secret", "token", "auth"))
    return f"{name}{eq}***" if eq and secret else param


class Backoff:
    """Capped exponential backoff with full jitter; `reset` after a success."""

    def __init__(self, base: float = 0.2, cap: float = 10.0) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0

    def wait_out(self, exc: BaseException, what: str, stop: threading.Event,
                 event: str = "redis_unavailable") -> bool:
        """After a failed call (Redis, a game's bridge): log `event` with the delay before the
        next try and wait it out, or until `stop`; True when stopped. The one way a role waits."""
        delay = self.next_delay()
        log.warning(event, what=what, error=str(exc)[:300], retry_in_s=round(delay, 2))
        return stop.wait(delay)


def retry_forever(
    fn: Callable[[], T],
    what: str,
    stop: threading.Event | None = None,
    backoff: Backoff | None = None,
    on_error: Callable[[BaseException], None] | None = None,
) -> T | None:
    """Call `fn` until it succeeds, sleeping with backoff on Redis connection errors.

    Returns None only when `stop` is set first. Every failure is logged with the delay.
    """
    backoff = backoff or Backoff()
    while True:
        try:
            result = fn()
            if backoff.attempt:
                log.info("redis_reconnected", what=what, attempts=backoff.attempt)
            backoff.reset()
            return result
        except CONNECTION_ERRORS as exc:
            if on_error:
                on_error(exc)
            if backoff.wait_out(exc, what, stop if stop is not None else threading.Event()):
                return None
