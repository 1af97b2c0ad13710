"""One snapshot of the whole system from Redis: what `charles status`, the consoles and the
dashboard show."""

from __future__ import annotations

import json

import redis

from pipeline.observe.status import snapshot
from pipeline.serve.server import Server
from pipeline.wire.keys import Keys
from pipeline.wire.presence import Presence
from tests.factories import publish_entry, sample_set, tiny_config


def test_an_empty_redis_is_a_snapshot_of_nothing(r: redis.Redis, keys: Keys) -> None:
    snap = snapshot(r, keys)
    assert snap["run"] is None and snap["buffers"] == {} and snap["trainer"]["state"] == "absent"
    assert snap["players"] == [] and snap["weights"]["version"] == 0 and snap["deadletter"] == 0
    json.dumps(snap)  # plain JSON, as `charles status --json` prints it


def test_a_snapshot_shows_buffers_roles_and_rejections(r: redis.Redis, keys: Keys) -> None:
    cfg = tiny_config()
    server = Server(r, keys, cfg, consumer="server-1", seed=1, rescan_s=0)
    server.setup()
    publish_entry(r, keys, "steering", sample_set(cfg, "steering", 5).entry())
    bad = sample_set(cfg, "steering", 2, seed=1)
    bad.columns["speed"][0] = 1e6
    publish_entry(r, keys, "steering", bad.entry())
    server.route_once(block_ms=10)
    Presence(r, keys, "trainer", "t1").beat(state="training", batches=12, loss=0.5, device="cpu")
    Presence(r, keys, "player", "p1").beat(model_version=3, steps=40, raw=json.dumps({"steering": 0.2}))
    Presence(r, keys, "server", "server-1").beat()
    snap = snapshot(r, keys)
    steering = snap["buffers"]["steering"]
    assert snap["run"] == cfg.run.name and snap["config_version"] == 1
    assert (steering["fill"], steering["capacity"], steering["samples_routed"]) == (5, cfg.buffers.capacity, 5)
    assert steering["fraction"] == round(5 / cfg.buffers.capacity, 4)
    assert snap["buffers"]["acceleration_braking"]["fill"] == 0
    assert snap["trainer"]["state"] == "training" and snap["trainer"]["batches"] == 12 and snap["trainer"]["loss"] == 0.5
    [player] = snap["players"]
    assert player["id"] == "p1" and player["model_version"] == 3 and player["raw"]["steering"] == 0.2
    assert [s["id"] for s in snap["servers"]] == ["server-1"]
    assert snap["deadletter"] == 1
