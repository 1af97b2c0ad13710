"""Sample sets on the stream: a set's entry checks out as what was sent, a bad meta is
refused with its reason, and every reader decodes an entry's meta once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from pipeline.collect.balancing import make_balancer
from pipeline.collect.bins import build_binnings
from pipeline.collect.episode import EpisodeRunner
from pipeline.data.stream_recorder import Recorder
from pipeline.errors import CodecError, SampleError
from pipeline.games.base import Environment, load_game
from pipeline.games.options import game_options
from pipeline.serve.server import Server
from pipeline.wire import codec
from pipeline.wire.frames import FrameCodec
from pipeline.wire.keys import Keys
from pipeline.wire.manifest import (
    META_FIELD,
    EntryView,
    SampleRows,
    SampleSet,
    SetMeta,
    check_entry,
    decode_entry,
    manifest,
)
from pipeline.wire.schema import PROVENANCE, ContextSpec, SampleSchema
from pipeline.wire.stacking import rows_to_columns
from tests.factories import TEST_COLLECTOR, publish_entry, sample_set, tiny_config


def test_an_entry_checks_out_as_the_set_that_was_sent() -> None:
    cfg = tiny_config()
    schema = SampleSchema.from_config(cfg)
    sent = sample_set(cfg, "steering", 4, seed=3)
    entry = sent.entry()
    head = check_entry(EntryView.of_manifest(manifest(entry)), schema, cfg.output_names())
    assert (head.set_id, head.output, head.episode, head.n) == (sent.set_id, "steering", "ep3", 4)
    got = decode_entry(entry, schema, cfg.output_names())
    for name, column in sent.columns.items():
        np.testing.assert_array_equal(got.columns[name], column)


def test_set_meta_names_only_valid_set_ids() -> None:
    assert SetMeta.read(codec.encode({"set_id": "abc_1-2"})).set_id == "abc_1-2"
    assert SetMeta.read(codec.encode({"set_id": "../x"})).set_id is None  # it names keys
    assert SetMeta.read(codec.encode(["not", "a", "map"])).set_id is None
    broken = SetMeta.read(b"\xc1")
    assert broken.value is None and broken.set_id is None and "not a valid message" in (broken.error or "")


def test_a_meta_that_does_not_decode_is_refused_with_its_reason() -> None:
    cfg = tiny_config()
    entry = {**sample_set(cfg, "steering", 2).entry(), META_FIELD: b"\xc1"}
    with pytest.raises(CodecError, match="not a valid message"):
        check_entry(EntryView.of(entry), SampleSchema.from_config(cfg), cfg.output_names())


def test_a_meta_of_another_set_shape_is_refused() -> None:
    cfg = tiny_config()
    entry = {**sample_set(cfg, "steering", 2).entry(), META_FIELD: codec.encode({"v": 1})}
    with pytest.raises(SampleError, match="format version"):
        check_entry(EntryView.of(entry), SampleSchema.from_config(cfg), cfg.output_names())


@pytest.fixture
def meta_decodes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every meta `codec.decode` is given (rows' headers are decoded too, and not counted)."""
    seen: list[bytes] = []
    real = codec.decode

    def counting(data: Any, *args: Any, **kwargs: Any) -> Any:
        value = real(data, *args, **kwargs)
        if isinstance(value, dict) and "row_bytes" in value:
            seen.append(bytes(data))
        return value

    monkeypatch.setattr(codec, "decode", counting)
    return seen


def test_the_server_decodes_a_meta_once_routed_or_refused(r: redis.Redis, keys: Keys,
                                                          meta_decodes: list[bytes]) -> None:
    cfg = tiny_config()
    server = Server(r, keys, cfg, consumer="server-1", seed=1, rescan_s=0)
    server.setup()
    good = sample_set(cfg, "steering", 3, seed=1)
    publish_entry(r, keys, "steering", good.entry())
    meta_decodes.clear()  # the publishing test helper reads it too
    assert server.route_once(block_ms=10) == 1 and r.scard(keys.buffer("steering")) == 3
    assert len(meta_decodes) == 1
    bad = sample_set(cfg, "steering", 3, seed=2)
    bad.columns["speed"][0] = 1e6  # refused by the check, after the meta: its rows are deleted
    publish_entry(r, keys, "steering", bad.entry())
    meta_decodes.clear()
    assert server.route_once(block_ms=10) == 1 and server.stats.rejected == 1
    assert not r.exists(keys.incoming(TEST_COLLECTOR, bad.set_id, 0))
    assert len(meta_decodes) == 1


def test_the_recorder_decodes_a_meta_once(r: redis.Redis, keys: Keys, tmp_path: Path,
                                          meta_decodes: list[bytes]) -> None:
    cfg = tiny_config()
    recorder = Recorder(r, keys, cfg.output_names(), SampleSchema.from_config(cfg), tmp_path, cfg.game.fps,
                        ContextSpec.from_inputs(cfg.inputs, cfg.game.fps))
    recorder.streams.rescan_s = 0  # find a stream published to a moment ago (the process rescans every 2 s)
    recorder.setup()
    publish_entry(r, keys, "steering", sample_set(cfg, "steering", 3).entry())
    meta_decodes.clear()
    assert recorder.record_once(block_ms=10) == 1 and recorder.stats.entries == 1
    assert len(meta_decodes) == 1


@pytest.mark.parametrize("frame_codec", ["raw", "png"])
def test_a_collectors_rows_encode_as_the_same_set_in_columns(frame_codec: str) -> None:
    """The collector finishes its samples into rows as they are (`SampleRows`): the bytes are
    those the rows -> columns -> rows path (`SampleSet`) gave, on a real episode's sets."""
    cfg = tiny_config(buffers={"frame_codec": frame_codec})
    game = load_game(cfg.game.backend, **game_options(cfg, realtime=False))
    sent: list[Any] = []
    runner = EpisodeRunner(game, ContextSpec.from_inputs(cfg.inputs, cfg.game.fps),
                           lambda: make_balancer(cfg.balancing, build_binnings(cfg.outputs)), sent.append, "c1")
    try:
        runner.run(Environment(map_seed=3), episode_s=8.0, episode="ep1", policy_version=0)
    finally:
        game.close()
    assert sent and all(isinstance(s, SampleRows) for s in sent)
    coder = FrameCodec(frame_codec, cfg.buffers.frame_quality)
    for rows in sent:
        provenance = {name: np.asarray([sample[name] for sample in rows.samples]) for name in PROVENANCE}
        columns = SampleSet(rows.output, rows.collector, rows.episode, rows_to_columns(rows.samples),
                            rows.environment, rows.set_id, provenance)
        assert rows.entry(coder) == columns.entry(coder)
