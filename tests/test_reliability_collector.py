"""Fault 4: a collector killed (SIGKILL) in the middle of an episode.

Proves: the server keeps handing out episodes, on its own job list, to a new collector
meanwhile; the dead collector's waiting episode expires with its list; and no partial
sample set reaches a buffer (a set is one MULTI: rows and manifest whole or absent).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from pipeline.config import load_config
from pipeline.wire.keys import Keys, set_of_sample
from pipeline.wire.local_redis import RedisServer
from pipeline.wire.manifest import EntryView, check_entry
from pipeline.wire.schema import SampleSchema
from tests.factories import stored_rows
from tests.faults import (
    RELIABILITY_CONFIG,
    FaultRoles,
    server_drained,
    status,
    unique_prefix,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow


def test_collector_killed_mid_job(redis_server: RedisServer, tmp_path: Path) -> None:
    keys = Keys(unique_prefix("collector-kill"))
    r = redis_server.client()
    # keep every routed set in the streams (to check them) and never fill up (so episodes keep coming)
    cfg = load_config(RELIABILITY_CONFIG, overrides={"buffers": {"stream_keep": 100_000, "capacity": 100_000}})
    config = write_config(tmp_path / "keep_streams.toml", cfg)
    roles = FaultRoles(redis_server.url, keys.prefix, tmp_path)
    try:
        roles.start("server", "server", "--config", str(config))
        roles.start("collector", "collector")

        def mid_episode() -> list[dict[str, str]]:
            return [s for s in status(r, keys, "collector") if s.get("state") == "collecting"
                    and int(s.get("published", 0)) > 0]

        busy = wait_for(mid_episode, 90, "the collector to be mid-episode", roles)
        victim = busy[0]["id"]
        assert roles.kill("collector") == -9
        t_kill = time.monotonic()
        roles.start("collector2", "collector")  # the replacement gets its own episodes at once
        wait_for(lambda: any(s["id"] != victim and s.get("state") == "collecting"
                             for s in status(r, keys, "collector")), 60, "the new collector to get an episode", roles)
        started_after_s = round(time.monotonic() - t_kill, 1)
        wait_for(lambda: any(s["id"] != victim and int(s.get("episodes", 0)) >= 1
                             for s in status(r, keys, "collector")), 90, "the new collector to finish an episode", roles)
        print(f"FIGURES a new collector was collecting {started_after_s}s after the kill")
        assert r.ttl(keys.jobs(victim)) <= cfg.collection.job_timeout_s  # its waiting episode expires
        # balancing may drop a short episode's every steering round: collect until each output has sets
        wait_for(lambda: all(r.scard(keys.buffer(o)) for o in cfg.output_names()), 120,
                 "every output to have routed sets", roles)
        assert roles.stop("collector2") == 0
        wait_for(lambda: server_drained(r, keys), 60, "the server to route every set", roles)
        assert roles.stop("server") == 0
    finally:
        roles.stop_all()
    assert_no_partial_sets(r, keys, SampleSchema.from_config(cfg), cfg.output_names())


def assert_no_partial_sets(r: redis.Redis, keys: Keys, schema: SampleSchema, outputs: list[str]) -> None:
    """Every entry in the streams is a whole, valid set; every routed set is in its buffer whole."""
    assert r.xlen(keys.deadletter) == 0, r.xrange(keys.deadletter)
    for output in outputs:
        sizes = {}
        streams = [k for k in r.scan_iter(match=keys.streams_of("*"), _type="stream") if keys.stream_parts(k)[1] == output]
        for _entry_id, fields in (e for stream in streams for e in r.xrange(stream)):
            head = check_entry(EntryView.of_manifest(fields), schema, outputs)
            sizes[head.set_id] = head.n
        per_entry = Counter(set_of_sample(i) for i in r.smembers(keys.buffer(output)))
        assert per_entry, f"nothing was routed into {output}"
        checked = [s for s in per_entry if s in sizes]  # the server trims routed sets beyond stream_keep
        assert checked, f"no routed set of {output} is left in its stream to compare with"
        for set_id in checked:
            rows = per_entry[set_id]
            assert rows == sizes[set_id], f"{output}: set {set_id} has {rows} of its {sizes[set_id]} samples"
        assert stored_rows(r, keys, output) == r.scard(keys.buffer(output))
