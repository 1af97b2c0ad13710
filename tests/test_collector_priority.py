"""A collector yields the CPU to the trainer once a weights version exists
(`collection.nice_once_trained`), and keeps its start nice until then, so the buffers fill.

Each case runs one short episode in a child process (a nice, once lowered, stays lowered:
the test process must keep its own) against a real redis-server, with the config published
as a server would, and reads the child's nice after the episode: of its main thread, of a
thread started before it (as the heartbeat is), and the one the collector reports.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import torch

from pipeline.config import load_config
from pipeline.models import build_model
from pipeline.wire.config_store import publish_config
from pipeline.wire.keys import Keys
from pipeline.wire.local_redis import RedisServer
from pipeline.wire.weights import WeightsStore

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import os, random, sys, threading
import redis
from pipeline.collect.episode import Collector
from pipeline.collect.handoff import EpisodeSpec
from pipeline.games.base import capabilities_of
from pipeline.serve.server import sample_environment
from pipeline.wire.config_store import fetch_config
from pipeline.wire.keys import Keys

url, prefix, start_nice = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.nice(start_nice)
r, keys = redis.Redis.from_url(url), Keys(prefix)
cfg, _ = fetch_config(r, keys)
env = sample_environment(cfg.collection, random.Random(3), capabilities_of(cfg.game.backend))
collector = Collector(r, keys, "collector-priority-test")
started, done = threading.Event(), threading.Event()
# a thread started before the yield, as the heartbeat is: Linux keeps a nice per thread
helper = threading.Thread(target=lambda: (started.set(), done.wait()))
helper.start()
started.wait()
summary = collector.run_episode(EpisodeSpec("priority-ep0", env, 2.0))
assert summary["ticks"] > 0, summary
helper_nice = os.getpriority(os.PRIO_PROCESS, helper.native_id)
done.set()
assert helper_nice == os.nice(0) == collector.nice, (helper_nice, os.nice(0), collector.nice)
print(os.nice(0))
"""


def nice_after_an_episode(server: RedisServer, keys: Keys, start_nice: int) -> int:
    """The child's nice after one episode: it starts at the test's own nice plus `start_nice`."""
    out = subprocess.run([sys.executable, "-c", CHILD, server.url, keys.prefix, str(start_nice)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.strip().splitlines()[-1])


def publish(r: redis.Redis, keys: Keys, nice_once_trained: int, weights: bool) -> None:
    cfg = load_config(overrides={"collection": {"nice_once_trained": nice_once_trained},
                                 "balancing": {"min_bins_filled": 0.0}})
    publish_config(r, keys, cfg)
    if weights:
        model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
        torch.manual_seed(0)
        WeightsStore(r, keys).publish(model.state_dict(), cfg.run.name, batches=200)


@pytest.mark.skipif(os.nice(0) >= 19, reason="the test process already runs at the lowest priority")
def test_a_collector_yields_the_cpu_once_a_version_exists(redis_server: RedisServer, r: redis.Redis,
                                                          keys: Keys) -> None:
    publish(r, keys, nice_once_trained=19, weights=False)
    assert nice_after_an_episode(redis_server, keys, 0) == os.nice(0), "no version yet: keeps its nice"
    publish(r, keys, nice_once_trained=19, weights=True)
    assert nice_after_an_episode(redis_server, keys, 0) == 19


@pytest.mark.skipif(os.nice(0) > 10, reason="the test process runs below the priorities this test sets")
def test_a_lower_nice_than_its_own_changes_nothing(redis_server: RedisServer, r: redis.Redis, keys: Keys) -> None:
    """A collector started at --nice 10 under a config that says 5 stays at 10: nice only goes up."""
    publish(r, keys, nice_once_trained=5, weights=True)
    start = 10 - os.nice(0)
    assert nice_after_an_episode(redis_server, keys, start) == 10
