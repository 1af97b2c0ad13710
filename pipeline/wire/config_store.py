"""The active config in Redis: the server publishes it, every other role fetches it."""

from __future__ import annotations

import time

import redis

from pipeline.config import Config
from pipeline.wire.keys import Keys


def publish_config(r: redis.Redis, keys: Keys, config: Config) -> int:
    """Store the active config; its version goes up only when the config changes.

    The new version and its JSON are written in one transaction, so a reader never pairs
    one with the other's predecessor; WATCH makes two servers publishing at once retry."""
    text = config.to_json()
    sha = config.sha256()

    def publish(pipe: redis.client.Pipeline) -> int:
        current, version = pipe.hmget(keys.config, ["sha256", "version"])
        if current is not None and current.decode() == sha:
            return int(version or 0)
        pipe.multi()
        pipe.hincrby(keys.config, "version", 1)
        pipe.hset(keys.config, mapping={"json": text, "sha256": sha, "updated": time.time()})
        return int(version or 0) + 1

    return int(r.transaction(publish, keys.config, value_from_callable=True))


def fetch_config(r: redis.Redis, keys: Keys) -> tuple[Config, int] | None:
    """The active config and its version, or None before a server has published one."""
    raw = r.hmget(keys.config, ["json", "version"])
    if raw[0] is None:
        return None
    return Config.from_json(raw[0].decode(), source=keys.config), int(raw[1] or 0)
