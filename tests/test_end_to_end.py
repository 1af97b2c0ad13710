"""The whole live pipeline as real processes: server, collector, trainer, player on the simulator.

Proves: collectors fill the buffers, training starts by itself at 90%, weights are
published, and the player swaps a new version in at an Unstuck.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.observe.status import snapshot
from pipeline.wire.keys import Keys
from pipeline.wire.local_redis import RedisServer
from tests.processes import ROOT, Roles, wait_until

pytestmark = pytest.mark.slow
CONFIG = ROOT / "tests" / "configs" / "e2e_tiny.toml"


@pytest.fixture
def roles(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[Roles, Keys]]:
    prefix = f"e2e-{uuid.uuid4().hex[:8]}:"
    roles = Roles(redis_server.url, prefix, tmp_path)
    yield roles, Keys(prefix)
    roles.stop_all()


def test_live_pipeline_trains_and_player_swaps_at_unstuck(roles: tuple[Roles, Keys], redis_server: RedisServer) -> None:
    procs, keys = roles
    r = redis_server.client()
    procs.start("server", "server", "--config", str(CONFIG))
    procs.start("collector", "collector")
    procs.start("trainer", "trainer")
    procs.start("player", "player", "--fast")
    wait_until(lambda: snapshot(r, keys)["trainer"]["batches"] > 0, 240, "training to start", procs)
    wait_until(lambda: snapshot(r, keys)["weights"]["version"] >= 1, 120, "weights to be published", procs)
    wait_until(
        lambda: any(p["model_version"] >= 1 and p["swaps"] >= 1 for p in snapshot(r, keys)["players"]),
        120, "the player to swap in a published version", procs,
    )
    snap = snapshot(r, keys)
    assert all(b["fill"] >= 0 for b in snap["buffers"].values())
    assert snap["deadletter"] == 0  # nothing valid was rejected
    assert snap["collectors"] and snap["collectors"][0]["episodes"] >= 0
    player = snap["players"][0]
    assert player["unstucks"] >= player["swaps"] >= 1  # every swap happened during an Unstuck
    assert player["device"] == "cpu" and player["swap_pause_ms"] > 0  # status says where and how long
    for name in ("player", "trainer", "collector", "server"):
        assert procs.stop(name) == 0, procs.log(name)[-2000:]
    assert "unstuck" in procs.log("player")
