"""Buffers: the 90% gate at its exact edge, equal shares, draw-and-delete, and the replay
limit (samples_per_insert): draws never outrun the ratio, a batch never repeats a sample,
two trainers share one limit, the oldest samples are evicted, deadlocking settings are refused."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
from collections import Counter

import pytest
import redis

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.serve.buffers import DRAWN, FILLING, LIMITED, Buffers
from pipeline.serve.replay import ReplayLimit, split_batch, start_threshold
from pipeline.wire.keys import Keys, sample_id
from tests.factories import stored_rows


def fill(buffers: Buffers, output: str, n: int, start: int = 0) -> None:
    """n rows, each its own bytes, through the routing script (as the server routes a set)."""
    buffers.insert(output, f"{output}-{start}", [f"{output}-{i}".encode() for i in range(start, start + n)])


def test_threshold_and_split() -> None:
    assert start_threshold(1000, 0.9) == 900
    assert start_threshold(25000, 0.9) == 22500
    assert start_threshold(10, 0.95) == 10
    assert split_batch(32, ["a", "b"]) == [16, 16]
    assert split_batch(7, ["a", "b", "c"]) == [3, 2, 2]


def test_gate_exact_edge(r: redis.Redis, keys: Keys) -> None:
    b = Buffers(r, keys, ["a", "b"], capacity=10, start_fraction=0.9)
    fill(b, "a", 10)
    fill(b, "b", 8)
    assert b.draw(2).state == FILLING  # b holds 8 < 9
    assert b.fills() == {"a": 10, "b": 8}  # nothing was taken from a either
    fill(b, "b", 1, start=8)
    drawn = b.draw(2)
    assert drawn.state == DRAWN and len(drawn.rows["a"]) == 1 and len(drawn.rows["b"]) == 1
    assert b.fills() == {"a": 9, "b": 8}
    assert b.draw(2).state == FILLING  # b fell below the gate: the trainer waits


def test_one_sample_per_insert_deletes_on_draw_and_never_repeats(r: redis.Redis, keys: Keys) -> None:
    b = Buffers(r, keys, ["a", "b"], capacity=100, start_fraction=0.0, limit=ReplayLimit(1.0))
    fill(b, "a", 50)
    fill(b, "b", 50)
    seen: list[bytes] = []
    while True:
        drawn = b.draw(10)
        assert drawn.state == DRAWN
        rows = drawn.rows["a"] + drawn.rows["b"]
        if not rows:
            break
        assert len(drawn.rows["a"]) == len(drawn.rows["b"]) == 5
        seen += rows
    assert len(seen) == 100 and len(set(seen)) == 100
    assert stored_rows(r, keys, "a") == 0 and r.scard(keys.buffer("a")) == 0
    assert r.zcard(keys.buffer_order("a")) == 0  # the eviction order forgets drawn samples too
    assert not list(r.scan_iter(match=keys.drawn("*") + "*"))  # the trainer deleted what it fetched


def test_draws_never_outrun_the_ratio(r: redis.Redis, keys: Keys) -> None:
    """Interleaved inserts and greedy draws: at every point drawn <= spi x inserted, and a
    trainer that keeps drawing stays within the tolerance of the ratio."""
    spi, tolerance, share = 3.0, 40, 8
    b = Buffers(r, keys, ["a"], capacity=1000, start_fraction=0.0, limit=ReplayLimit(spi, tolerance))
    inserted = drawn = 0
    for step in range(30):
        n = 1 + (step * 7) % 11
        fill(b, "a", n, start=inserted)
        inserted += n
        while (got := b.draw(share)).state == DRAWN:
            assert len(got.rows["a"]) == share
            drawn += share
            assert drawn <= spi * inserted
        assert got.state == LIMITED
        assert spi * inserted - drawn < share + tolerance  # not held back beyond the band
    stats = b.replay_stats()["a"]
    assert stats["drawn"] == drawn and stats["inserted"] == inserted
    assert drawn / inserted > spi * 0.8  # the trainer got close to the ratio
    assert b.fills()["a"] == inserted  # samples stay: they are drawn again


def test_no_sample_twice_in_a_batch(r: redis.Redis, keys: Keys) -> None:
    b = Buffers(r, keys, ["a", "b"], capacity=16, start_fraction=1.0, limit=ReplayLimit(50.0, 10_000))
    fill(b, "a", 16)
    fill(b, "b", 16)
    for _ in range(50):  # 16 samples x 50 draws each = the tokens of 16 inserts
        got = b.draw(32)  # every sample of both buffers, in random order
        assert got.state == DRAWN
        assert sorted(got.rows["a"]) == sorted(f"a-{i}".encode() for i in range(16))
        assert len(set(got.rows["b"])) == 16
    assert b.draw(32).state == LIMITED


def test_collectors_ahead_evict_the_oldest(r: redis.Redis, keys: Keys) -> None:
    b = Buffers(r, keys, ["a"], capacity=10, start_fraction=0.0, limit=ReplayLimit(4.0, 10))
    fill(b, "a", 6)
    fill(b, "a", 9, start=6)
    assert b.fills()["a"] == 10
    rows = set(b.rows("a"))
    assert rows == {f"a-{i}".encode() for i in range(5, 15)}  # the five oldest left, with their rows
    assert stored_rows(r, keys, "a") == 10
    stats = b.replay_stats()["a"]
    assert stats["evicted"] == 5 and stats["inserted"] == 15
    assert stats["tokens"] == 10  # capped at the tolerance: collectors ahead bank nothing more


def _greedy_trainer(url: str, prefix: str, start: multiprocessing.synchronize.Barrier,
                    out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    b = Buffers(redis.Redis.from_url(url), Keys(prefix), ["a", "b"], capacity=500, start_fraction=0.0,
                limit=ReplayLimit(20.0, 100_000))
    drawn: Counter[str] = Counter()
    start.wait(30)
    while (got := b.draw(8)).state == DRAWN:
        drawn.update({name: len(rows) for name, rows in got.rows.items()})
    out.put(dict(drawn))


def test_two_trainers_share_one_limit(redis_server, r: redis.Redis, keys: Keys) -> None:  # type: ignore[no-untyped-def]
    b = Buffers(r, keys, ["a", "b"], capacity=500, start_fraction=0.0, limit=ReplayLimit(20.0, 100_000))
    fill(b, "a", 300)
    fill(b, "b", 300)
    ctx = multiprocessing.get_context("spawn")
    out, start = ctx.Queue(), ctx.Barrier(2)
    trainers = [ctx.Process(target=_greedy_trainer, args=(redis_server.url, keys.prefix, start, out)) for _ in range(2)]
    for p in trainers:
        p.start()
    results = [out.get(timeout=60) for _ in trainers]
    for p in trainers:
        p.join(30)
    # both drew, and together exactly what the limit allows: 20 x 300 per buffer, not more
    assert all(res.get("a", 0) > 0 for res in results)
    assert sum(res["a"] for res in results) == sum(res["b"] for res in results) == 6000
    assert b.draw(8).state == LIMITED


@pytest.mark.parametrize(("buffers", "trainer", "reason"), [
    ({"samples_per_insert": 2.0, "capacity": 10}, {"batch_size": 64}, "the 32 samples of a batch share"),
    ({"samples_per_insert": 4.0, "ratio_tolerance": 3}, {"batch_size": 32}, "below one batch share"),
    ({"samples_per_insert": 1.5, "ratio_tolerance": 15}, {"batch_size": 32}, "below one batch share"),
    ({"samples_per_insert": 4.0, "capacity": 100, "start_fraction": 0.1}, {"batch_size": 64},
     "the 32 samples of a batch share"),
])
def test_settings_that_could_deadlock_are_refused(buffers: dict, trainer: dict, reason: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match="the trainer could never draw") as err:
        load_config(overrides={"buffers": buffers, "trainer": trainer})
    assert reason in str(err.value)


def test_data_wanted_until_full_then_while_the_trainer_spends_its_bank(r: redis.Redis, keys: Keys) -> None:
    b = Buffers(r, keys, ["a"], capacity=10, start_fraction=0.0, limit=ReplayLimit(4.0, 20))
    fill(b, "a", 9)
    assert b.wants_data()  # below capacity
    fill(b, "a", 1, start=9)
    assert not b.wants_data()  # full, and 20 draws banked: more would only be evicted undrawn
    for _ in range(2):
        assert b.draw(5).state == DRAWN
    assert not b.wants_data()  # 10 of 20 left
    assert b.draw(1).state == DRAWN
    assert b.wants_data()  # the trainer spent more than half its bank
    deleting = Buffers(r, Keys(keys.prefix + "del:"), ["a"], capacity=10, start_fraction=0.0)
    fill(deleting, "a", 10)
    assert not deleting.wants_data()
    deleting.draw(1)
    assert deleting.wants_data()  # draw-and-delete: a drawn sample left a place


def owned(r: redis.Redis, keys: Keys, output: str, collector: str) -> set[bytes]:
    return set(r.zrange(keys.buffer_owned(output, collector), 0, -1))


def test_a_collector_over_its_quota_evicts_only_its_own_oldest(r: redis.Redis, keys: Keys) -> None:
    """Crowding out: a collector flooding valid sets of its own evicted everybody's oldest
    samples, so an honest collector's data left the pool. Over its quota, its own go."""
    b = Buffers(r, keys, ["a"], capacity=10, start_fraction=0.0, limit=ReplayLimit(4.0, 10), collector_share=1.0)
    b.live_collectors = 2
    assert b.collector_quota == 5
    b.insert("a", "h0", [b"h-0", b"h-1", b"h-2", b"h-3"], collector="honest")
    for k in range(4):  # 20 rows, 4x her quota, all newer than the honest ones
        b.insert("a", f"m{k}", [f"m-{k}-{i}".encode() for i in range(5)], collector="mallory")
    rows = set(b.rows("a"))
    assert {b"h-0", b"h-1", b"h-2", b"h-3"} <= rows  # the honest collector's samples all stayed
    assert rows - {b"h-0", b"h-1", b"h-2", b"h-3"} == {f"m-3-{i}".encode() for i in range(5)}  # her newest 5
    assert owned(r, keys, "a", "mallory") == {sample_id("mallory", "m3", i).encode() for i in range(5)}
    assert b.replay_stats()["a"]["evicted"] == 15 and stored_rows(r, keys, "a") == 9
    # under their quotas both, a full buffer evicts the oldest of anybody's (and forgets its owner)
    b.insert("a", "h1", [b"h-4", b"h-5"], collector="honest")  # honest over quota by one: its own h-0 leaves
    assert b"h-0" not in set(b.rows("a")) and b.fills()["a"] == 10
    b.live_collectors = 1  # quota 10: the buffer's own capacity evicts now
    b.insert("a", "h2", [b"h-6"], collector="honest")
    assert b"h-1" not in set(b.rows("a")) and b.fills()["a"] == 10
    assert (len(owned(r, keys, "a", "honest")) + len(owned(r, keys, "a", "mallory"))
            == r.zcard(keys.buffer_order("a")) == r.scard(keys.buffer("a")) == 10)


def test_the_quota_is_fair_shares_of_the_capacity() -> None:
    b = Buffers(redis.Redis(), Keys("quota:"), ["a"], capacity=1000, collector_share=1.5)
    assert b.collector_quota == 1000  # no collector known yet: no cap
    b.live_collectors = 2
    assert b.collector_quota == 750
    b.live_collectors = 7
    assert b.collector_quota == 215  # ceil(1000 * 1.5 / 7)
    b.collector_share = 0  # off
    assert b.collector_quota == 1000


def test_draw_and_delete_forgets_the_owner_too(r: redis.Redis, keys: Keys) -> None:
    b = Buffers(r, keys, ["a"], capacity=100, start_fraction=0.0, limit=ReplayLimit(1.0), collector_share=1.0)
    b.insert("a", "s", [f"x-{i}".encode() for i in range(6)], collector="c1")
    assert len(b.draw(6).rows["a"]) == 6
    assert not r.exists(keys.buffer_owned("a", "c1"))
