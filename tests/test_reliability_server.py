"""Fault 2 and bad input over the wire, against a running `charles server` process.

Proves: a server killed (SIGKILL) with entries read but not routed reclaims them on
restart (its own pending at start, a dead consumer's with XAUTOCLAIM): nothing lost,
nothing duplicated in a buffer. And every kind of bad entry injected with XADD gets a
dead-letter entry with a clear reason while the process keeps running, good data keeps
flowing and pickle never runs in the server.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.wire.keys import SERVER_GROUP, Keys, sample_id, set_of_sample
from pipeline.wire.local_redis import RedisServer
from tests.factories import TEST_COLLECTOR, publish_entry, sample_set, stored_rows
from tests.faults import (
    RELIABILITY_CONFIG,
    FaultRoles,
    bad_entries,
    server_drained,
    unique_prefix,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow
OUTPUT = "steering"


def test_server_killed_with_pending_entries_reclaims_them(redis_server: RedisServer, tmp_path: Path) -> None:
    keys = Keys(unique_prefix("server-kill"))
    r = redis_server.client()
    cfg = load_config(RELIABILITY_CONFIG, overrides={"buffers": {"capacity": 100_000, "stream_maxlen": 100_000}})
    config = write_config(tmp_path / "big_buffers.toml", cfg)
    roles = FaultRoles(redis_server.url, keys.prefix, tmp_path)
    stream = keys.stream(OUTPUT, TEST_COLLECTOR)
    rng = random.Random(9)
    added: dict[str, int] = {}

    def inject(n: int) -> None:
        pipe = r.pipeline(transaction=False)
        sets = [sample_set(cfg, OUTPUT, rng.randint(1, 4), seed=rng.randrange(1000)) for _ in range(n)]
        for s in sets:
            publish_entry(pipe, keys, OUTPUT, s.entry())
        pipe.execute()
        for s in sets:
            added[s.set_id] = len(s)

    pending_at_kill = []
    try:
        roles.start("server", "server", "--config", str(config))
        wait_for(lambda: r.exists(keys.config), 30, "the server to set up", roles)
        for _ in range(4):  # kill it mid-routing, at random moments
            before = r.scard(keys.buffer(OUTPUT))
            inject(300)
            wait_for(lambda b=before: r.scard(keys.buffer(OUTPUT)) > b, 30, "routing to start", roles, poll=0.005)
            time.sleep(rng.uniform(0.0, 0.05))
            roles.kill("server")
            pending_at_kill.append(r.xpending(stream, SERVER_GROUP)["pending"])
            roles.start("server", "server", "--config", str(config))
        # and certainly: entries this consumer read before dying, and a dead consumer's, idle 2 min
        roles.kill("server")
        inject(20)
        r.xreadgroup(SERVER_GROUP, "server-1", {stream: ">"}, count=5)
        stale = [e for e, _ in r.xreadgroup(SERVER_GROUP, "server-9", {stream: ">"}, count=5)[0][1]]
        r.xclaim(stream, SERVER_GROUP, "server-9", 0, stale, idle=120_000)
        assert r.xpending(stream, SERVER_GROUP)["pending"] >= 10
        roles.start("server", "server", "--config", str(config))
        wait_for(lambda: server_drained(r, keys), 60, "every entry to be routed", roles)
        assert roles.alive("server")
        assert roles.events("server", "reclaimed_own_pending") and roles.events("server", "reclaimed_abandoned")
        assert roles.stop("server") == 0
    finally:
        roles.stop_all()
    per_entry = Counter(set_of_sample(i) for i in r.smembers(keys.buffer(OUTPUT)))
    assert set(per_entry) == set(added), "an entry was lost" if set(added) - set(per_entry) else "unknown entries"
    assert per_entry == Counter(added), "a set reached the buffer partly or twice"
    assert stored_rows(r, keys, OUTPUT) == sum(added.values())  # no orphan payloads
    assert int(r.hget(keys.counters, f"sets_routed:{OUTPUT}")) == len(added)  # counted exactly once
    assert r.xlen(keys.deadletter) == 0
    print(f"FIGURES {len(added)} sets, pending at the 4 random kills: {pending_at_kill}")


def test_bad_entries_dead_lettered_while_server_keeps_running(redis_server: RedisServer, tmp_path: Path) -> None:
    keys = Keys(unique_prefix("bad-input"))
    r = redis_server.client()
    cfg = load_config(RELIABILITY_CONFIG, overrides={"buffers": {"capacity": 10_000, "max_message_mb": 0.1}})
    config = write_config(tmp_path / "small_messages.toml", cfg)
    marker = tmp_path / "pickle-ran"
    bad = bad_entries(cfg, OUTPUT, marker)
    roles = FaultRoles(redis_server.url, keys.prefix, tmp_path)
    stream = keys.stream(OUTPUT, TEST_COLLECTOR)
    try:
        roles.start("server", "server", "--config", str(config))
        wait_for(lambda: r.exists(keys.config), 30, "the server to set up", roles)
        first = sample_set(cfg, OUTPUT, 2, seed=1000)  # the server finds the stream, then reads as entries come
        publish_entry(r, keys, OUTPUT, first.entry())
        wait_for(lambda: r.scard(keys.buffer(OUTPUT)) == len(first), 30, "the stream to be found", roles)
        good_rows = len(first)
        expected: dict[str, str] = {}
        for i, (reason, fields) in enumerate(bad):
            expected[publish_entry(r, keys, OUTPUT, fields).decode()] = reason
            good = sample_set(cfg, OUTPUT, 2, seed=i)
            publish_entry(r, keys, OUTPUT, good.entry())
            good_rows += len(good)
        wait_for(lambda: r.xlen(keys.deadletter) >= len(bad) and r.scard(keys.buffer(OUTPUT)) >= good_rows,
                 60, "every entry to be handled", roles)
        letters = {f[b"entry"].decode(): f for _, f in r.xrange(keys.deadletter)}
        assert set(letters) == set(expected)
        for entry, reason in expected.items():
            got = letters[entry][b"reason"].decode()
            assert reason in got, f"entry {entry}: expected a reason with {reason!r}, got {got!r}"
            assert letters[entry][b"stream"].decode() == stream
        assert r.scard(keys.buffer(OUTPUT)) == good_rows  # good data flowed around the bad
        # still alive and routing
        late = sample_set(cfg, OUTPUT, 3, seed=99)
        publish_entry(r, keys, OUTPUT, late.entry())
        wait_for(lambda: r.sismember(keys.buffer(OUTPUT), sample_id(TEST_COLLECTOR, late.set_id, 2)), 30, "a late good set to be routed", roles)
        assert r.xpending(stream, SERVER_GROUP)["pending"] == 0
        assert int(r.hget(keys.counters, "deadlettered")) == len(bad)
        assert roles.alive("server") and roles.stop("server") == 0
    finally:
        roles.stop_all()
    assert not marker.exists(), "pickle ran inside the server"
    assert len(roles.events("server", "entry_rejected")) == len(bad)  # each said so in the log too


def test_poison_pending_entry_and_foreign_row_type_never_stop_the_server(redis_server: RedisServer, tmp_path: Path) -> None:
    """A manifest that once killed the server outside its checks (`r²`), left pending by a
    crash, is dead-lettered on the restart instead of killing it again; a row a collector
    wrote as a hash (WRONGTYPE inside the routing script) is dead-lettered too."""
    keys = Keys(unique_prefix("poison"))
    r = redis_server.client()
    cfg = load_config(RELIABILITY_CONFIG, overrides={"buffers": {"capacity": 10_000}})
    config = write_config(tmp_path / "poison.toml", cfg)
    roles = FaultRoles(redis_server.url, keys.prefix, tmp_path)
    stream = keys.stream(OUTPUT, TEST_COLLECTOR)
    for name in cfg.output_names():
        r.xgroup_create(keys.stream(name, TEST_COLLECTOR), SERVER_GROUP, id="0", mkstream=True)
    good = sample_set(cfg, OUTPUT, 3, seed=1)
    poison = publish_entry(r, keys, OUTPUT, {**good.entry(), "r²": good.entry()["r0"]}).decode()
    r.xreadgroup(SERVER_GROUP, "server-1", {stream: ">"}, count=1)  # read, then the server "crashed"
    assert r.xpending(stream, SERVER_GROUP)["pending"] == 1
    hashed = sample_set(cfg, OUTPUT, 2, seed=2)
    wrong_type = publish_entry(r, keys, OUTPUT, hashed.entry()).decode()
    r.delete(keys.incoming(TEST_COLLECTOR, hashed.set_id, 1))
    r.hset(keys.incoming(TEST_COLLECTOR, hashed.set_id, 1), "x", "y")
    after = sample_set(cfg, OUTPUT, 2, seed=3)
    publish_entry(r, keys, OUTPUT, after.entry())
    try:
        roles.start("server", "server", "--config", str(config))
        wait_for(lambda: r.scard(keys.buffer(OUTPUT)) >= len(after), 30, "the good set to be routed", roles)
        letters = {f[b"entry"].decode(): f[b"reason"].decode() for _, f in r.xrange(keys.deadletter)}
        assert set(letters) == {poison, wrong_type}
        assert "r²" in letters[poison] and "differs from its header" in letters[wrong_type]
        assert r.xpending(stream, SERVER_GROUP)["pending"] == 0
        assert r.scard(keys.buffer(OUTPUT)) == len(after)
        assert roles.alive("server") and roles.stop("server") == 0
    finally:
        roles.stop_all()
