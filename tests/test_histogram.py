"""`charles data histogram`: bin counts per output of what sits in the buffers (real Redis)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import redis
from click.testing import CliRunner

from pipeline.collect.bins import build_binnings
from pipeline.config import Config, OutputConfig
from pipeline.data.histogram import bin_counts, targets_from_rows
from pipeline.wire.keys import Keys
from pipeline.wire.local_redis import RedisServer
from pipeline.wire.manifest import SampleSet
from workers.data import cli

OUTPUTS = [
    OutputConfig(name="accel", type="classification", control="acceleration_braking", classes=3),
    OutputConfig(name="steer", type="classification", control="steering", classes=3),
]


def _set(output: str, targets: list[tuple[float, float]]) -> SampleSet:
    n = len(targets)
    cols = {
        "frames": np.zeros((n, 1, 2, 2, 3), np.uint8),
        "speed": np.zeros(n, np.float32),
        "purpose": np.zeros((n, 2), np.float32),
        "controls": np.zeros((n, 2), np.float32),
        "targets": np.array(targets, np.float32),
        "history": np.zeros((n, 0, 5), np.float32),
        "game_time": np.arange(n, dtype=np.float64),
    }
    return SampleSet(output, "c1", "e1", cols, {})


def test_bin_counts_per_output() -> None:
    t = np.array([[1, 0], [1, 0], [-1, 1], [0, 0]], np.float32)
    h = bin_counts(t, np.zeros_like(t), build_binnings(OUTPUTS))
    assert h["accel"].counts.tolist() == [1, 1, 2]
    assert h["steer"].counts.tolist() == [0, 3, 1]
    assert h["steer"].filled == 2 and h["steer"].imbalance() == 3.0
    t2, c2, skipped = targets_from_rows([*_set("accel", [(1, 0), (0, 1)]).rows(), b"junk"])
    assert t2.tolist() == [[1, 0], [0, 1]] and skipped == 1


def test_histogram_command_reads_the_buffers(
    r: redis.Redis, keys: Keys, redis_server: RedisServer, tmp_path: Path
) -> None:
    cfg = Config(outputs=OUTPUTS)
    r.hset(keys.config, mapping={"json": cfg.to_json(), "version": 1})
    for i, blob in enumerate(_set("accel", [(-1, 0), (0, 0), (1, 0), (1, 1)]).rows()):
        r.set(keys.buffer_row("accel", f"a{i}"), blob)
        r.sadd(keys.buffer("accel"), f"a{i}")
    for i, blob in enumerate(_set("steer", [(0, -1), (0, 1)]).rows()):
        r.set(keys.buffer_row("steer", f"s{i}"), blob)
        r.sadd(keys.buffer("steer"), f"s{i}")
    png = tmp_path / "h.png"
    env = {"CHARLES_REDIS_URL": redis_server.url, "CHARLES_KEY_PREFIX": keys.prefix, "COLUMNS": "200"}
    res = CliRunner().invoke(cli, ["histogram", "--out", str(png)], env=env)
    assert res.exit_code == 0, res.output
    assert "buffer accel - accel (own): n=4, bins 3/3, max/min 2.00" in res.output
    assert "buffer steer - steer (own): n=2, bins 2/3" in res.output
    assert png.stat().st_size > 1000


def test_histogram_of_recordings_needs_no_redis(tmp_path: Path) -> None:
    """Issue 18 #11: `charles data histogram` read only Redis buffers, never recordings."""
    from pipeline.data.chunks import ChunkWriter
    from pipeline.data.drive_recorder import DriveRecorder
    from pipeline.games.base import Environment
    from pipeline.games.sim import SimGame

    data = tmp_path / "data"
    game = SimGame(hood_size=(160, 120), cinematic_size=(32, 18))
    recorder = DriveRecorder(game, ChunkWriter(data), "ep1", collector="npc", source_name="drive:npc", chunk_rows=90)
    recorder.run(Environment(map_seed=2, traffic_density=0.0), 4.0, lambda obs: None, None)
    game.close()
    png = tmp_path / "h.png"
    env = {"CHARLES_REDIS_URL": "redis://127.0.0.1:9/0", "COLUMNS": "200"}
    res = CliRunner().invoke(cli, ["histogram", str(data), "--out", str(png)], env=env)
    assert res.exit_code == 0, res.output
    assert "recordings - acceleration_braking: n=" in res.output and "recordings - steering: n=" in res.output
    assert "inf" not in res.output and "nan" not in res.output
    assert png.stat().st_size > 1000


def test_empty_buffers_say_so_instead_of_inf_and_nan(r: redis.Redis, keys: Keys, redis_server: RedisServer,
                                                     tmp_path: Path) -> None:
    """Issue 18 #11: with empty buffers the tables read `max/min inf, mean nan std nan`."""
    r.hset(keys.config, mapping={"json": Config(outputs=OUTPUTS).to_json(), "version": 1})
    env = {"CHARLES_REDIS_URL": redis_server.url, "CHARLES_KEY_PREFIX": keys.prefix, "COLUMNS": "200"}
    res = CliRunner().invoke(cli, ["histogram", "--out", str(tmp_path / "h.png")], env=env)
    assert res.exit_code == 1 and "inf" not in res.output and "nan" not in res.output
    assert "no samples in the buffers" in res.output and "charles data histogram DIR" in res.output
    for i, blob in enumerate(_set("accel", [(-1, 0), (1, 0)]).rows()):  # one buffer filled, one empty
        r.set(keys.buffer_row("accel", f"a{i}"), blob)
        r.sadd(keys.buffer("accel"), f"a{i}")
    res = CliRunner().invoke(cli, ["histogram", "--out", ""], env=env)
    assert res.exit_code == 0, res.output
    assert "buffer steer - steer (own): empty, no samples" in res.output and "nan" not in res.output
