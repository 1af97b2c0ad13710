"""The active config in Redis: versions go up only on change, and never pair with another JSON."""

from __future__ import annotations

import threading

import redis

from pipeline.config import load_config
from pipeline.wire.config_store import fetch_config, publish_config
from pipeline.wire.keys import Keys


def test_version_goes_up_only_when_the_config_changes(r: redis.Redis, keys: Keys) -> None:
    cfg = load_config()
    assert fetch_config(r, keys) is None
    assert publish_config(r, keys, cfg) == 1
    assert publish_config(r, keys, cfg) == 1
    other = cfg.model_copy(update={"run": cfg.run.model_copy(update={"name": "other"})})
    assert publish_config(r, keys, other) == 2
    fetched, version = fetch_config(r, keys)
    assert (fetched.run.name, version) == ("other", 2)


def test_a_reader_never_pairs_a_version_with_another_config(r: redis.Redis, keys: Keys) -> None:
    """Publishing alternates two configs while a reader polls: each version it reads must come
    with the JSON published under that version (odd versions name run "a", even ones "b")."""
    cfg = load_config()
    runs = [cfg.model_copy(update={"run": cfg.run.model_copy(update={"name": n})}) for n in ("a", "b")]
    stop, mismatched, reads = threading.Event(), [], [0]

    def read() -> None:
        reader = redis.Redis(connection_pool=r.connection_pool)
        while not stop.is_set():
            got = fetch_config(reader, keys)
            if got is not None:
                reads[0] += 1
                if got[0].run.name != ("a" if got[1] % 2 else "b"):
                    mismatched.append((got[1], got[0].run.name))

    threads = [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(600):
            assert publish_config(r, keys, runs[i % 2]) == i + 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert reads[0] > 100
    assert mismatched == []
