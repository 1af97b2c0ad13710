"""The recorder: acknowledged means on disk, restarts lose and duplicate nothing, budget rotation."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis

from pipeline.data.chunks import load_chunk, scan
from pipeline.data.stream_recorder import Recorder
from pipeline.errors import ConfigError
from pipeline.wire.config_store import publish_config
from pipeline.wire.keys import RECORDER_GROUP, Keys
from pipeline.wire.schema import ContextSpec, SampleSchema
from tests.factories import TEST_COLLECTOR, publish_entry, sample_set, tiny_config
from tests.processes import Roles, wait_until


def make_recorder(r: redis.Redis, keys: Keys, root: Path, **kw: object) -> Recorder:
    cfg = tiny_config()
    rec = Recorder(r, keys, cfg.output_names(), SampleSchema.from_config(cfg), root, cfg.game.fps,
                   ContextSpec.from_inputs(cfg.inputs, cfg.game.fps), **kw)  # type: ignore[arg-type]
    rec.streams.rescan_s = 0  # find a stream published to a moment ago (the process rescans every 2 s)
    rec.setup()
    return rec


def add_sets(r: redis.Redis, keys: Keys, count: int, rows: int = 2, start: int = 0) -> list[str]:
    cfg = tiny_config()
    ids = []
    for i in range(start, start + count):
        output = cfg.output_names()[i % 2]
        s = sample_set(cfg, output, rows, seed=i)
        s.episode = f"ep{i // 10}"
        ids.append(publish_entry(r, keys, output, s.entry()).decode())
    return ids


def recorded_entries(root: Path) -> list[str]:
    return [e for meta in scan(root) for e in meta.entries]


def pending_ids(r: redis.Redis, keys: Keys) -> set[str]:
    out = set()
    for output in tiny_config().output_names():
        for p in r.xpending_range(keys.stream(output, TEST_COLLECTOR), RECORDER_GROUP, "-", "+", 10_000):
            out.add(p["message_id"].decode())
    return out


def delivered_ids(r: redis.Redis, keys: Keys, ids: list[str]) -> set[str]:
    out = set()
    for output in tiny_config().output_names():
        for group in r.xinfo_groups(keys.stream(output, TEST_COLLECTOR)):
            if group["name"].decode() == RECORDER_GROUP:
                last = group["last-delivered-id"].decode()
                out |= {i for i in ids if _id(i) <= _id(last)
                        and r.xrange(keys.stream(output, TEST_COLLECTOR), i, i)}
    return out


def _id(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq)


def test_entries_are_written_then_acknowledged(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    ids = add_sets(r, keys, 25, rows=3)
    rec = make_recorder(r, keys, tmp_path, chunk_rows=8)
    while rec.record_once(block_ms=10):
        pass
    assert pending_ids(r, keys)  # the last, partly filled chunks are not on disk yet: not acknowledged
    rec.flush()
    assert not pending_ids(r, keys)
    assert sorted(recorded_entries(tmp_path)) == sorted(ids)
    metas = scan(tmp_path)
    assert sum(m.rows for m in metas) == 75
    meta = metas[0]
    assert meta.kind == "samples" and meta.fps == 30.0 and meta.collector == "collector-test"
    assert meta.environment == {"map_seed": 1} and meta.output in ("acceleration_braking", "steering")
    assert meta.get("format_version") == 1 and meta.get("context")["frames"] == 1
    cols = load_chunk(meta.data_path)
    assert cols["frames"].shape[1:] == (1, 24, 32, 3) and cols["frames"].dtype == np.uint8


def test_a_crash_between_write_and_ack_writes_nothing_twice(r: redis.Redis, keys: Keys, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    ids = add_sets(r, keys, 6)
    rec = make_recorder(r, keys, tmp_path, chunk_rows=1000)
    rec.record_once(block_ms=10)

    def no_redis(*_a: object, **_k: object) -> None:
        raise redis.ConnectionError("gone")

    monkeypatch.setattr(rec.r, "pipeline", no_redis)
    with pytest.raises(redis.ConnectionError):
        rec.flush()
    monkeypatch.undo()
    assert pending_ids(r, keys) == set(ids)  # on disk but not acknowledged
    again = make_recorder(r, keys, tmp_path, chunk_rows=1000)  # the restarted process
    again.record_once(block_ms=10)
    again.flush()
    # the first chunk was committed before the failure; the other output's was never written
    assert again.stats.duplicates == 3 and again.stats.entries == 3 and not pending_ids(r, keys)
    assert sorted(recorded_entries(tmp_path)) == sorted(ids)


def test_disk_budget_deletes_the_oldest_chunks(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    add_sets(r, keys, 40, rows=2)
    rec = make_recorder(r, keys, tmp_path, chunk_rows=2, budget_bytes=60_000)
    while rec.record_once(block_ms=10):
        pass
    rec.flush()
    metas = scan(tmp_path)
    assert sum(m.bytes for m in metas) <= 60_000 and rec.stats.rotated > 0
    kept = recorded_entries(tmp_path)
    assert kept and len(kept) < 40
    assert not pending_ids(r, keys)  # rotated chunks were acknowledged before they were deleted


def test_killed_recorder_loses_nothing_it_acknowledged(redis_server: object, r: redis.Redis, keys: Keys,
                                                        tmp_path: Path) -> None:
    publish_config(r, keys, tiny_config())
    out = tmp_path / "data"
    roles = Roles(redis_server.url, keys.prefix, tmp_path)  # type: ignore[attr-defined]
    args = ("record", "streams", "--out", str(out), "--chunk-rows", "4", "--chunk-age-s", "0.2")
    ids: list[str] = []
    feeding = threading.Event()

    def feed() -> None:
        while not feeding.is_set() and len(ids) < 600:
            ids.extend(add_sets(r, keys, 5, start=len(ids)))
            time.sleep(0.02)

    try:
        roles.start("recorder", *args)
        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        wait_until(lambda: len(recorded_entries(out)) >= 40, 60, "the recorder writing chunks", roles)
        roles.stop("recorder", sig=signal.SIGKILL)  # mid-run: no final flush, no goodbye
        on_disk = set(recorded_entries(out))
        acknowledged = delivered_ids(r, keys, ids) - pending_ids(r, keys)
        assert acknowledged and acknowledged <= on_disk, f"{len(acknowledged - on_disk)} acknowledged, not on disk"
        unwritten = pending_ids(r, keys)
        feeding.set()
        feeder.join(5)
        roles.start("recorder", *args)  # same consumer name: it finishes its own pending entries first
        wait_until(lambda: len(recorded_entries(out)) >= len(ids), 60, "every entry on disk", roles)
        wait_until(lambda: not pending_ids(r, keys), 10, "nothing pending")
        entries = recorded_entries(out)
        assert sorted(entries) == sorted(ids)  # every entry once: none lost, none twice
        assert sum(m.rows for m in scan(out)) == 2 * len(ids)
        print(f"killed with {len(acknowledged)} acknowledged, {len(unwritten)} pending; total {len(ids)} sets")
    finally:
        feeding.set()
        roles.stop_all()


def test_a_sharded_run_is_refused_not_recorded_empty(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    """With `[buffers] shards` > 1 the streams carry hash tags the recorder does not follow:
    it says so instead of reading untagged streams nobody writes."""
    with pytest.raises(ConfigError, match="shards"):
        Recorder.for_config(r, keys, tiny_config(buffers={"shards": 2}), tmp_path)
    recorder = Recorder.for_config(r, keys, tiny_config(), tmp_path)
    with pytest.raises(ConfigError, match="shards"):
        recorder.follow(tiny_config(buffers={"shards": 3}))
