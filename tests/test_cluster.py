"""The pipeline across a real 3-node Redis Cluster on loopback: collectors publish to 3
shards, the server routes every shard, the trainer draws from all of them; nothing is lost
or duplicated, and a shard below its 90% gate is never drawn from."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter as Tally
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
import torch
from redis.cluster import RedisCluster

from pipeline.collect.episode import SetPublisher
from pipeline.errors import ConfigError
from pipeline.observe.status import snapshot
from pipeline.serve.buffers import DRAWN, FILLING
from pipeline.serve.server import Server
from pipeline.wire.config_store import fetch_config
from pipeline.wire.keys import Keys, shard_of
from pipeline.wire.local_redis import RedisClusterNodes, RedisServer
from pipeline.wire.presence import Presence
from pipeline.wire.redis_conn import connect
from pipeline.wire.rows import decode_row
from pipeline.wire.rq_loop import work_until_done
from pipeline.wire.weights import WeightsStore
from tests.factories import sample_set, tiny_config

SETS_PER_COLLECTOR = 5
SET_SIZE = 4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes(Path(tmp_path_factory.mktemp("cluster")), nodes=3)
    nodes.start()
    yield nodes
    nodes.stop()


def _collectors(shards: int, per_shard: int) -> list[str]:
    """Collector ids, `per_shard` of them hashing to each shard."""
    ids: list[str] = []
    for shard in range(shards):
        ids += [c for c in (f"collector-{i}" for i in range(1000)) if shard_of(c, shards) == shard][:per_shard]
    return ids


def _publish(r: redis.Redis, keys: Keys, cfg: object, collector: str, start: int, count: int) -> set[float]:
    """`count` sets per output from one collector, every sample with its own game time."""
    publisher = SetPublisher(r, keys.for_collector(collector, 3), 1000, 100)
    times = set()
    for k in range(start, start + count):
        for output in cfg.output_names():  # type: ignore[attr-defined]
            s = sample_set(cfg, output, SET_SIZE, seed=k)  # type: ignore[arg-type]
            s.collector, s.episode = collector, collector
            s.columns["game_time"] = (hash((collector, output)) % 10**6 + k * SET_SIZE + np.arange(SET_SIZE)).astype(
                np.float64)
            times |= {(output, float(t)) for t in s.columns["game_time"]}  # type: ignore[arg-type]
            publisher.publish(s)
    assert publisher.published == 2 * count and not publisher.backlog
    return times


def test_pipeline_across_three_shards_loses_and_duplicates_nothing(cluster: RedisClusterNodes) -> None:
    r = connect(cluster.url)
    assert isinstance(r, RedisCluster)
    keys = Keys(f"test-{uuid.uuid4().hex[:8]}:", cluster=True)
    # per shard and output: 2 collectors x 5 sets x 4 samples = 40 = the shard's capacity
    cfg = tiny_config(buffers={"shards": 3, "capacity": 120, "start_fraction": 0.9, "samples_per_insert": 1.0},
                      trainer={"batch_size": 12})
    server = Server(r, keys, cfg, rescan_s=0)
    server.setup()
    assert fetch_config(r, keys) is not None  # the config and the weights live on one node, tagged {global}
    store = WeightsStore(r, keys)
    store.publish({"w": torch.zeros(3)}, "m", 1)
    assert store.latest_info() is not None and store.latest_info().version == 1
    nodes = {r.get_node_from_key(shard.keys.buffer("steering")).port for shard in server.buffers.shards}
    assert len(nodes) == 3  # a shard per node

    collectors = _collectors(3, 2)
    published: set[tuple[str, float]] = set()
    late = collectors[-1]  # shard 2's second collector sends later: shard 2 stays below its gate
    for c in collectors:
        published |= _publish(r, keys, cfg, c, 0, 2 if c == late else SETS_PER_COLLECTOR)
    while server.route_once(block_ms=10):
        pass
    fills = server.buffers.shard_fills()
    assert [f["steering"] for f in fills] == [40, 40, 28]

    drawn: list[tuple[str, float]] = []
    shard_of_episode = {c: shard_of(c, 3) for c in collectors}
    draw = server.buffers.draw(12)
    assert draw.state == DRAWN
    for output, rows in draw.rows.items():
        for row in rows:
            fields = decode_row(row)
            assert shard_of_episode[fields["episode"]] != 2  # the closed gate holds
            drawn.append((output, float(fields["game_time"])))
    assert server.buffers.shard_fills()[2]["steering"] == 28

    published |= _publish(r, keys, cfg, late, 2, SETS_PER_COLLECTOR - 2)  # shard 2 fills up and opens
    while server.route_once(block_ms=10):
        pass
    assert server.buffers.shard_status()[2]["gate_open"]
    while (draw := server.buffers.draw(12)).state == DRAWN:
        drawn += [(output, float(decode_row(row)["game_time"])) for output, rows in draw.rows.items() for row in rows]
    assert draw.state == FILLING
    left = [(output, float(decode_row(row)["game_time"])) for output in cfg.output_names()
            for row in server.buffers.rows(output)]
    assert all(f["steering"] < 36 for f in server.buffers.shard_fills())  # drawn down to below every gate

    everything = drawn + left
    assert not [item for item, n in Tally(everything).items() if n > 1]  # nothing twice
    assert set(everything) == published  # nothing lost
    assert server.status()["routed_samples"] == len(published)


def test_an_rq_worker_refuses_a_cluster_in_one_line(cluster: RedisClusterNodes) -> None:
    """rq's Worker cannot run on a cluster (no connection pool; CROSSSLOT in its MULTIs): the
    collector or evaluator says so instead of an AttributeError deep in rq."""
    with pytest.raises(ConfigError, match="Redis Cluster"):
        work_until_done(lambda: None, connect(cluster.url), "evaluator", burst=True)  # type: ignore[arg-type,return-value]


def test_the_server_loop_and_status_run_on_a_cluster(cluster: RedisClusterNodes) -> None:
    """The server's whole loop (config, groups, routing rounds over 3 shards, trimming, episodes
    on a collector's own job list, heartbeat) and `charles status`' snapshot work against the cluster."""
    r = connect(cluster.url)
    keys = Keys(f"test-{uuid.uuid4().hex[:8]}:", cluster=True)
    server = Server(r, keys, tiny_config(buffers={"shards": 3, "capacity": 60}))
    _publish(r, keys, server.config, _collectors(3, 1)[2], 0, 1)
    Presence(r, keys, "collector", _collectors(3, 1)[2]).beat(state="idle")
    server.run(threading.Event(), Presence(r, keys, "server", "server-1"), deadline=time.monotonic() + 2)
    snap = snapshot(r, keys)
    assert [s["id"] for s in snap["servers"]] == ["server-1"] and snap["config_version"] == 1
    assert snap["buffers"]["steering"]["samples_routed"] == SET_SIZE and snap["queue"]["collect"] >= 1
    assert snap["redis"]["used_memory"] > 0  # summed over the nodes' INFO


def _wrapped_redis_cli(folder: Path, body: str) -> str:
    """A `redis-cli` first on PATH that runs `body` (sh) before, or instead of, the real one."""
    folder.mkdir()
    (folder / "redis-cli").write_text(f"#!/bin/sh\n{body}\n")
    (folder / "redis-cli").chmod(0o755)
    return f"{folder}:{os.environ['PATH']}"


def test_the_cluster_is_joined_with_the_callers_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the GPU image redis-cli loads its libraries through LD_LIBRARY_PATH: an environment of
    only PATH and the password made it exit 127 there, and `bench fleet` measured nothing."""
    real = shutil.which("redis-cli")
    monkeypatch.setenv("PATH", _wrapped_redis_cli(
        tmp_path / "bin", f'[ -n "$CHARLES_TEST_LIBS" ] || exit 127\nexec {real} "$@"'))
    monkeypatch.setenv("CHARLES_TEST_LIBS", "/opt/libs")
    nodes = RedisClusterNodes(tmp_path / "cluster", nodes=3)
    nodes.start()
    try:
        assert nodes.servers[0].client().cluster("info")["cluster_state"] == "ok"
    finally:
        nodes.stop()


def test_a_cluster_that_cannot_be_joined_leaves_no_node_running(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed `redis-cli --cluster create` says why and stops the nodes it started: a node left
    running kept `charles bench fleet | tee`'s pipe open, and the device call hung for 10 minutes."""
    monkeypatch.setenv("PATH", _wrapped_redis_cli(tmp_path / "bin", 'echo "[ERR] Node is not empty" >&2; exit 1'))
    nodes = RedisClusterNodes(tmp_path / "cluster", nodes=3)
    procs: list[subprocess.Popen[bytes]] = []
    started = RedisServer.start

    def start_and_keep(server: RedisServer) -> None:
        started(server)
        assert server.proc is not None
        procs.append(server.proc)

    monkeypatch.setattr(RedisServer, "start", start_and_keep)
    with pytest.raises(RuntimeError, match=r"exit 1\): \[ERR\] Node is not empty"):
        nodes.start()
    assert len(procs) == 3 and all(p.poll() is not None for p in procs)
