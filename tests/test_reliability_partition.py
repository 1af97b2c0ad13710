"""Fault 6: a collector host cut off from Redis by a network partition.

Two network namespaces joined by a veth pair are the project's own test hosts: Redis
listens on 10.231.N.1 in one, the collector drives in the other; the server and this test
reach Redis through its unix socket. Taking the collector host's link down drops its
packets silently (a real partition, not a refused connection). Proves: the collector
keeps collecting into a bounded backlog (the oldest sets dropped and counted beyond
`max_backlog_sets`), reconnects when the link returns and publishes what it held; every
set it counts as published is in Redis. Skipped, with the reason, where the kernel
refuses namespaces.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pipeline.config import load_config
from pipeline.wire.keys import Keys
from pipeline.wire.local_redis import PASSWORD
from tests.faults import (
    RELIABILITY_CONFIG,
    FaultRoles,
    NetnsHosts,
    netns_unavailable_reason,
    status,
    stream_entries_added,
    unique_prefix,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow
REASON = netns_unavailable_reason()
MAX_BACKLOG = 4
SOCKET_TIMEOUT_S = 3
EPISODE_S = 60.0


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[NetnsHosts, redis.Redis, str]]:
    """The two test hosts, and a redis-server on the Redis host (TCP on its veth, unix socket for us)."""
    if REASON:
        pytest.skip(f"network namespaces unavailable: {REASON}")
    sock = tmp_path / "redis.sock"
    with NetnsHosts() as net:
        proc = subprocess.Popen(
            [*net.exec_prefix(net.redis_host), "redis-server", "--port", "6379", "--bind", net.redis_ip,
             "--unixsocket", str(sock), "--unixsocketperm", "700", "--requirepass", PASSWORD,
             "--save", "", "--appendonly", "no", "--dir", str(tmp_path), "--logfile", str(tmp_path / "redis.log")])
        try:
            r = redis.Redis(unix_socket_path=str(sock), password=PASSWORD)
            wait_for(lambda: sock.exists() and r.ping(), 15, "redis on the Redis host")
            yield net, r, f"unix://{sock}?password={PASSWORD}&db=0"
        finally:
            proc.terminate()
            proc.wait(10)


def test_partitioned_collector_holds_a_bounded_backlog_and_publishes_it(
    hosts: tuple[NetnsHosts, redis.Redis, str], tmp_path: Path
) -> None:
    net, r, unix_url = hosts
    keys = Keys(unique_prefix("partition"))
    # a long episode: the partition must fall inside one (an episode that ends while cut off
    # leaves the rq worker waiting to reconnect, not collecting into the backlog)
    cfg = load_config(RELIABILITY_CONFIG, overrides={"collection": {"max_backlog_sets": MAX_BACKLOG,
                                                                    "episode_s": EPISODE_S}})
    config = write_config(tmp_path / "small_backlog.toml", cfg)
    roles = FaultRoles(unix_url, keys.prefix, tmp_path)
    collector_env = {"CHARLES_REDIS_URL": f"redis://:{PASSWORD}@{net.redis_ip}:6379/0",
                     "CHARLES_REDIS_SOCKET_TIMEOUT": str(SOCKET_TIMEOUT_S)}
    try:
        roles.start("server", "server", "--config", str(config))
        roles.start("collector", "collector", env=collector_env, prefix=net.exec_prefix(net.collector_host))

        def collector() -> dict[str, str]:
            found = status(r, keys, "collector")
            return found[0] if found else {}

        wait_for(lambda: int(collector().get("published", 0)) > 0 and collector().get("state") == "collecting",
                 90, "the collector to publish from its host", roles)
        t_cut = time.time()
        net.partition()
        # it goes on collecting: the backlog fills to its bound, then the oldest sets are dropped
        # generous: under CPU load the episode makes sets slowly, and each try waits out a socket timeout
        wait_for(lambda: any(e["dropped"] > 0 for e in roles.events("collector", "publish_deferred")), 300,
                 "the backlog to reach its bound while partitioned (the oldest sets dropped)", roles)
        time.sleep(max(0.0, t_cut + 6.0 - time.time()))  # hold the partition a while longer
        deferred = [e["backlog"] for e in roles.events("collector", "publish_deferred") if _at(e) > t_cut]
        assert deferred and max(deferred) <= MAX_BACKLOG, deferred
        t_heal = time.time()
        net.heal()
        wait_for(lambda: int(collector().get("backlog", -1)) == 0 and float(collector().get("heartbeat", 0)) > t_heal,
                 90, "the collector to reconnect and publish its backlog", roles)
        wait_for(lambda: int(collector().get("episodes", 0)) >= 1, 240, "an episode to complete", roles)
        assert roles.stop("collector") == 0, roles.log("collector")[-2000:]
        stopped = roles.events("collector", "collector_stopped")[-1]
        added = stream_entries_added(r, keys, cfg.output_names())
        figures = {"partition_s": round(t_heal - t_cut, 1), "max_backlog_seen": max(deferred),
                   "dropped_oldest": stopped["dropped"], "published": stopped["published"], "in_redis": added,
                   "duplicates": added - stopped["published"]}
        print("FIGURES", json.dumps(figures))
        assert stopped["backlog"] == 0 and stopped["dropped"] > 0
        assert 0 <= added - stopped["published"] <= 1, figures  # nothing acknowledged lost (a resend may repeat one)
        assert roles.alive("server") and roles.stop("server") == 0
    finally:
        roles.stop_all()


def _at(event: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
