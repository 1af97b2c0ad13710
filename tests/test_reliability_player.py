"""Fault 5 and forged weights: a player cut off from Redis, then offered bad weights.

The player process reaches Redis through a loopback TCP proxy the test cuts (every
connection reset, new ones refused) while new versions are published. Proves: it keeps
driving with the weights it has (its log shows Unstucks during the cut), catches up to
the latest version on reconnect without the notifications it missed, and refuses forged
weights (hash mismatch, not safetensors, another model) while driving on, then takes the
next good version.
"""

from __future__ import annotations

import hashlib
import io
import time
from datetime import datetime
from pathlib import Path

import pytest
import redis
import torch

from pipeline.config import load_config
from pipeline.models import build_model
from pipeline.wire.config_store import publish_config
from pipeline.wire.keys import Keys
from pipeline.wire.local_redis import PASSWORD, RedisServer
from pipeline.wire.weights import WeightsInfo, WeightsStore, to_blob
from tests.faults import RELIABILITY_CONFIG, FaultRoles, TcpProxy, status, unique_prefix, wait_for

pytestmark = pytest.mark.slow


def publish_raw(r: redis.Redis, keys: Keys, blob: bytes, sha256: str, model: str) -> int:
    """Publish like a (compromised) trainer would: any blob, any hash, with a notification."""
    version = int(r.incr(keys.weights_version_counter))
    info = WeightsInfo(version, sha256, model, time.time(), version)
    fields = {"blob": blob, "version": version, "sha256": sha256, "model": model, "created": info.created,
              "batches": version}
    r.hset(keys.weights_latest, mapping=fields)
    r.publish(keys.weights_channel, info.notification())
    return version


def _at(event: dict) -> float:
    return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def test_player_cut_off_keeps_driving_and_catches_up(redis_server: RedisServer, tmp_path: Path) -> None:
    keys = Keys(unique_prefix("player-cut"))
    r = redis_server.client()
    cfg = load_config(RELIABILITY_CONFIG)
    publish_config(r, keys, cfg)
    name = cfg.run.name
    store = WeightsStore(r, keys)

    def weights(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width)).state_dict()

    def player() -> dict[str, str]:
        found = status(r, keys, "player")
        return found[0] if found else {}

    assert store.publish(weights(1), name, 1).version == 1
    proxy = TcpProxy(redis_server.port)
    roles = FaultRoles(redis_server.url, keys.prefix, tmp_path)
    try:
        roles.start("player", "player", env={"CHARLES_REDIS_URL": proxy.url(PASSWORD)})
        wait_for(lambda: player().get("model_version") == "1" and int(player().get("steps", 0)) > 30, 90,
                 "the player to drive with version 1", roles)
        steps_before = int(player()["steps"])
        t_cut = time.time()
        proxy.cut()
        for seed in (2, 3):  # published while the player cannot hear: it misses both notifications
            store.publish(weights(seed), name, seed)
        time.sleep(6.0)
        t_restore = time.time()
        proxy.restore()
        first = wait_for(lambda: (p := player()) and float(p["heartbeat"]) > t_restore and p, 30,
                         "the first report after the cut", roles, poll=0.05)
        # steps it drove while cut off (at most ~1 s of them after the restore): it kept driving
        driven = int(first["steps"]) - steps_before - cfg.player.pps * (float(first["heartbeat"]) - t_restore)
        assert driven >= 0.5 * cfg.player.pps * (t_restore - t_cut), (driven, first)
        assert [e for e in roles.events("player", "redis_unavailable") if t_cut < _at(e) < t_restore]
        wait_for(lambda: player().get("model_version") == "3", 60, "the player to catch up to version 3", roles)
        swapped = [e["swapped_to"] for e in roles.events("player", "unstuck") if e.get("swapped_to")]
        assert 2 not in swapped and swapped[-1] == 3  # straight to the latest

        # forged weights: each refused with its reason, the player drives on with version 3
        good = to_blob(weights(4))
        buf = io.BytesIO()
        torch.save(weights(4), buf)  # a pickle
        forged = [
            (good, hashlib.sha256(b"something else").hexdigest(), name, "sha256"),
            (buf.getvalue(), hashlib.sha256(buf.getvalue()).hexdigest(), name, "safetensors"),
            (good, hashlib.sha256(good).hexdigest(), "another_model", "another_model"),
        ]
        for blob, sha, model, reason in forged:
            n = len(roles.events("player", "weights_rejected"))
            publish_raw(r, keys, blob, sha, model)
            wait_for(lambda n=n: len(roles.events("player", "weights_rejected")) > n, 30,
                     f"the player to refuse weights ({reason})", roles)
            assert reason in roles.events("player", "weights_rejected")[-1]["error"]
        steps = int(player()["steps"])
        wait_for(lambda: int(player()["steps"]) > steps + 30, 30, "the player to drive on", roles)
        assert player()["model_version"] == "3"
        final = store.publish(weights(5), name, 5).version
        wait_for(lambda: player().get("model_version") == str(final), 60, "the next good version", roles)
        assert roles.stop("player") == 0
    finally:
        roles.stop_all()
        proxy.close()
    print(f"FIGURES cut {t_restore - t_cut:.1f}s: drove {driven:.0f} steps while cut off; caught up to v3, "
          f"refused {len(forged)} forged versions, then took v{final}")
