"""Episodes handed to one collector through a list only it may pop: no rq on untrusted machines.

rq's protocol trusts every worker: the worker registry, the pub/sub `shutdown` command,
`rq:suspended` and job hashes that rq decodes (and follows webhooks of) before any guard.
A collector holding rq's keys could stop other workers, pause the evaluator or make an
honest collector run a forged job. So the server pushes each episode spec (plain JSON)
onto the collector's own `Keys.jobs(collector)` list, with a TTL, and the collector pops
from that list alone: a machine can at worst feed itself bad jobs, and a spec that does
not parse is logged and skipped, never run.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
import structlog

from pipeline.errors import GameError, NotReadyError, SampleError
from pipeline.games.base import Environment
from pipeline.wire.keys import Keys
from pipeline.wire.redis_conn import CONNECTION_ERRORS, Backoff

log = structlog.get_logger(__name__)
#: How long a pop waits before the loop looks at its stop flag again.
POP_WAIT_S = 1.0
MAX_SPEC_BYTES = 4096
MAX_EPISODE_S = 86400.0  # the config schema's bound on `[collection] episode_s`
_EPISODE = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode as the server chose it: its id, environment and length in game seconds."""

    episode: str
    environment: Environment
    episode_s: float

    def to_json(self) -> str:
        return json.dumps({"episode": self.episode, "environment": self.environment.to_dict(),
                           "episode_s": self.episode_s})

    @classmethod
    def from_json(cls, raw: bytes, max_episode_s: float = MAX_EPISODE_S) -> EpisodeSpec:
        """Parse and bound a spec; SampleError for anything else (it came through Redis)."""
        if len(raw) > MAX_SPEC_BYTES:
            raise SampleError(f"episode spec of {len(raw)} bytes (at most {MAX_SPEC_BYTES})")
        try:
            msg = json.loads(raw)
            episode, env, seconds = msg["episode"], msg["environment"], float(msg["episode_s"])
            if not (isinstance(episode, str) and _EPISODE.fullmatch(episode) and isinstance(env, dict)):
                raise ValueError("episode must be a short id and environment an object")
            if not (math.isfinite(seconds) and 0 < seconds <= max_episode_s):
                raise ValueError(f"episode_s {seconds} outside (0, {max_episode_s}]")
            return cls(episode, Environment.from_dict(env), seconds)
        except (ValueError, TypeError, KeyError) as exc:
            raise SampleError(f"bad episode spec: {exc}") from None


def hand_out(r: redis.Redis | Any, keys: Keys, collector: str, spec: EpisodeSpec, ttl_s: int) -> None:
    """Queue an episode for one collector (`r` may be a pipeline); unclaimed ones expire."""
    r.lpush(keys.jobs(collector), spec.to_json())
    r.expire(keys.jobs(collector), ttl_s)


def take(r: redis.Redis, keys: Keys, collector: str, wait_s: float = POP_WAIT_S) -> bytes | None:
    """The collector's next episode spec, waiting up to `wait_s`; None when there is none."""
    got = r.brpop([keys.jobs(collector)], timeout=wait_s)
    return got[1] if got else None


def work_episodes(r: redis.Redis, keys: Keys, collector: str, run: Callable[[EpisodeSpec], Any],
                  stop: threading.Event, burst: bool = False,
                  max_jobs: int | None = None) -> int:
    """Pop and run episodes until `stop` (or, with `burst`, an empty list; or `max_jobs`);
    returns the episodes run. Redis away is waited out; a bad spec or a failed episode is
    logged and the loop goes on."""
    backoff, done = Backoff(), 0
    while not stop.is_set() and (max_jobs is None or done < max_jobs):
        try:
            raw = take(r, keys, collector)
            backoff.reset()
        except (*CONNECTION_ERRORS, redis.RedisError) as exc:
            delay = backoff.next_delay()
            log.warning("redis_unavailable", what="collector jobs", error=str(exc)[:200], retry_in_s=round(delay, 2))
            stop.wait(delay)
            continue
        if raw is None:
            if burst:
                break
            continue
        try:
            spec = EpisodeSpec.from_json(raw)
        except SampleError as exc:
            log.warning("episode_spec_refused", collector=collector, reason=str(exc)[:300])
            continue
        try:
            run(spec)
        except (GameError, NotReadyError, SampleError, redis.RedisError) as exc:
            log.warning("episode_failed", episode=spec.episode, error=str(exc)[:300])
        except Exception:  # one episode's unforeseen failure must not end the collector
            log.exception("episode_crashed", episode=spec.episode)
        done += 1
    return done
