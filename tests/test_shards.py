"""Pipeline shards on a plain Redis: hash-tagged keys, collectors' shards, per-shard gates
and replay limits, draws in proportion to fill (the 3-node cluster: test_cluster.py)."""

from __future__ import annotations

import json

import numpy as np
import redis
from redis.crc import key_slot

from pipeline.collect.episode import SetPublisher
from pipeline.serve.buffers import DRAWN, FILLING
from pipeline.serve.server import Server
from pipeline.serve.shards import ShardedBuffers, apportion
from pipeline.wire.keys import Keys, shard_of, shard_tag
from pipeline.wire.rows import decode_row
from tests.factories import sample_set, tiny_config


def test_one_shard_on_a_plain_redis_keeps_todays_names() -> None:
    keys = Keys("run:")
    assert keys.shards(1) == [keys]
    assert keys.buffer("steering") == "run:buffer:steering" and keys.config == "run:config"


def test_every_key_of_a_shard_hashes_to_its_slot_and_shards_to_their_own_slot_range() -> None:
    for count in (2, 3, 8):
        shards = Keys("run:", cluster=True).shards(count)
        for i, k in enumerate(shards):
            names = [k.stream("steering", "c1"), k.incoming("c1", "set1", 3), k.buffer("steering"), k.buffer_row("steering", "a:1"),
                     k.buffer_order("steering"), k.buffer_replay("steering"), k.drawn("t") + "1:x", k.counters,
                     k.deadletter]
            slots = {key_slot(name.encode()) for name in names}
            assert len(slots) == 1
            assert i * 16384 // count <= slots.pop() < (i + 1) * 16384 // count  # a node each, on an even split
        assert len({k.shard for k in shards}) == count
    cluster = Keys("run:", cluster=True)
    globals_ = [cluster.config, cluster.weights_latest, cluster.weights_version_blob(3), cluster.weights_version_counter,
                cluster.status("trainer"), cluster.presence("player", "p1")]
    assert len({key_slot(name.encode()) for name in globals_}) == 1
    assert Keys("run:").shards(3)[2].shard == shard_tag(2, 3)  # a plain Redis with shards: the same tags


def test_collectors_spread_over_shards_stably() -> None:
    ids = [f"collector-{i}" for i in range(300)]
    counts = np.bincount([shard_of(c, 3) for c in ids], minlength=3)
    assert counts.min() > 70  # about 100 each
    assert [shard_of(c, 3) for c in ids] == [shard_of(c, 3) for c in ids]


def test_apportion_splits_in_proportion_and_keeps_the_total() -> None:
    assert apportion(10, [1, 1, 2]) == [3, 2, 5]
    assert sum(apportion(7, [5, 0, 9])) == 7 and apportion(7, [5, 0, 9])[1] == 0
    assert apportion(4, [0, 0]) == [2, 2]


def _publish(r: redis.Redis, keys: Keys, cfg: object, collector: str, output: str, n: int, seed: int) -> None:
    s = sample_set(cfg, output, n, seed)  # type: ignore[arg-type]
    s.collector = collector
    publisher = SetPublisher(r, keys.for_collector(collector, cfg.buffers.shards), 1000, 10)  # type: ignore[attr-defined]
    publisher.publish(s)


def _collector_of(shard: int, shards: int, n: int = 0) -> str:
    """The n-th collector id that hashes to `shard`."""
    found = [c for c in (f"c{i}" for i in range(1000)) if shard_of(c, shards) == shard]
    return found[n]


def test_per_shard_gate_and_draws_in_proportion_to_fill(r: redis.Redis, keys: Keys) -> None:
    cfg = tiny_config(buffers={"shards": 3, "capacity": 60, "start_fraction": 0.5, "samples_per_insert": 1.0})
    server = Server(r, keys, cfg, rescan_s=0)
    server.setup()
    # shard 0: 20 per output (full), shard 1: 10 (its gate, 50% of 20), shard 2: 4 (below its gate)
    for shard, n in ((0, 20), (1, 10), (2, 4)):
        for output in cfg.output_names():
            _publish(r, keys, cfg, _collector_of(shard, 3), output, n, seed=shard)
    while server.route_once(block_ms=10):
        pass
    buffers = ShardedBuffers.for_config(r, keys, cfg)
    assert [f["steering"] for f in buffers.shard_fills()] == [20, 10, 4]
    drawn = buffers.draw(12)  # 6 per output: 4 from shard 0 and 2 from shard 1, none from the closed shard 2
    assert drawn.state == DRAWN
    episodes = [decode_row(row)["episode"] for row in drawn.rows["steering"]]
    assert sorted(episodes) == ["ep0"] * 4 + ["ep1"] * 2
    assert [f["steering"] for f in buffers.shard_fills()] == [16, 8, 4]
    status = buffers.shard_status()
    assert [s["gate_open"] for s in status] == [True, False, False] and status[2]["capacity"] == 20
    assert json.loads(server.status()["shards"])[0]["fill"]["steering"] == 16
    while buffers.draw(12).state == DRAWN:  # drawn down to below every gate
        pass
    assert buffers.draw(12).state == FILLING
    assert all(f["steering"] < 10 for f in buffers.shard_fills())


def test_a_server_routes_only_its_shards(r: redis.Redis, keys: Keys) -> None:
    cfg = tiny_config(buffers={"shards": 3, "capacity": 60})
    only_two = Server(r, keys, cfg, shards=[2], rescan_s=0)
    only_two.setup()
    assert not only_two.primary  # shard 0's server publishes the config and the episodes
    for shard in range(3):
        _publish(r, keys, cfg, _collector_of(shard, 3), "steering", 3, seed=shard)
    while only_two.route_once(block_ms=10):
        pass
    assert [f["steering"] for f in only_two.buffers.shard_fills()] == [0, 0, 3]
