"""Frame codecs (`[buffers] frame_codec`): round trips, forged and oversized frames refused
before anything is allocated, and coded sets through the real server, the trainer's draw
thread, the recorder and offline training."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np
import pytest
import redis

from pipeline.collect.episode import SetPublisher
from pipeline.data.chunks import load_chunk, scan
from pipeline.data.histogram import targets_from_rows
from pipeline.data.stream_recorder import Recorder
from pipeline.errors import CodecError, ConfigError, SampleError
from pipeline.train.dataset import DataSpec, RecordedDataset, find_episodes
from pipeline.train.live import BatchDrawer
from pipeline.wire import codec
from pipeline.wire import frames as frames_mod
from pipeline.wire.frames import CODECS, FrameCodec
from pipeline.wire.keys import Keys
from pipeline.wire.rows import CODED_ROW_MAGIC, decode_row, read_row_head, row_head_size
from pipeline.wire.schema import ContextSpec, SampleSchema
from pipeline.wire.stacking import stack_rows
from tests.factories import publish_entry, sample_set, tiny_config
from tests.test_server import make_server

CODED = [c for c in CODECS if c != "raw"]
SHAPE = (1, 24, 32, 3)  # tiny_config's rows
#: JPEG's mean absolute error allowed on these tiny 32x24 frames with sharp-edged shapes
#: (4:2:0 chroma on 16x16 blocks; real hood frames measure in `charles bench codec`)
JPEG_MEAN_ERROR = 8


def smooth_frames(shape: tuple[int, ...] = (2, 24, 32, 3), seed: int = 0) -> np.ndarray:
    """Frames that look like frames (gradients, a few flat shapes), not like noise."""
    f, h, w, _ = shape
    y, x = np.mgrid[0:h, 0:w]
    out = np.empty(shape, np.uint8)
    rng = np.random.default_rng(seed)
    for i in range(f):
        base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h) + 60 * i], axis=-1)
        r0, c0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        base[r0 : r0 + h // 3, c0 : c0 + w // 3] = rng.integers(0, 255, 3)
        out[i] = np.clip(base, 0, 255).astype(np.uint8)
    return out


@pytest.mark.parametrize("name", CODECS)
def test_round_trip(name: str) -> None:
    frames = smooth_frames()
    data = FrameCodec(name, quality=90).encode(frames)
    out = np.zeros_like(frames)
    got = frames_mod.decode(data, name, frames.shape, out=out)
    assert got is out and got.shape == frames.shape and got.dtype == np.uint8
    error = np.abs(got.astype(np.int16) - frames)
    if name in frames_mod.LOSSLESS:
        assert np.array_equal(got, frames)
    else:  # lossy: close on average, and colours in the right channels (no RGB/BGR swap)
        assert error.mean() < JPEG_MEAN_ERROR and np.abs(got.mean(axis=(0, 1, 2)) - frames.mean(axis=(0, 1, 2))).max() < 2
    assert np.array_equal(frames_mod.decode(data, name, frames.shape), got)  # without `out`, the same


def test_config_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"buffers\.frame_codec: .*'raw', 'png', 'zstd' or 'jpeg'"):
        tiny_config(buffers={"frame_codec": "webp"})
    with pytest.raises(ConfigError, match=r"buffers\.frame_quality"):
        tiny_config(buffers={"frame_quality": 101})
    assert SampleSchema.from_config(tiny_config(buffers={"frame_codec": "zstd"})).frame_codec == "zstd"


@pytest.mark.parametrize("name", CODED)
def test_frames_of_another_shape_are_refused_before_decoding(name: str) -> None:
    taller = FrameCodec(name).encode(smooth_frames((1, 48, 32, 3)))
    with pytest.raises(CodecError, match="declare"):
        frames_mod.decode(taller, name, SHAPE)
    # the right image size in a lying header: refused from the header, never decoded at 65535x65535
    data = bytearray(FrameCodec(name).encode(smooth_frames(SHAPE)))
    if name == "png":
        data[16:20] = (65535).to_bytes(4, "big")
    elif name == "jpeg":
        sof = next(i for i in range(2, len(data)) if data[i] == 0xFF and data[i + 1] == 0xC0)
        data[sof + 5 : sof + 9] = b"\xff\xff\xff\xff"
    else:
        data = bytearray(FrameCodec(name).encode(np.zeros((1, 2048, 2048, 3), np.uint8)))
    with pytest.raises(CodecError, match="declare"):
        frames_mod.decode(bytes(data), name, SHAPE)


@pytest.mark.parametrize("name", CODED)
def test_oversized_frames_are_refused_before_decoding(name: str) -> None:
    bound = frames_mod.max_encoded_bytes(name, SHAPE)
    assert frames_mod.max_encoded_bytes("raw", SHAPE) == 24 * 32 * 3 < bound
    for data in (b"", b"\x89PNG\r\n\x1a\n" + bytes(bound)):
        with pytest.raises(CodecError, match=rf"allows 1\.\.{bound}"):
            frames_mod.decode(data, name, SHAPE)


def _forged(entry: dict[str, bytes], i: int, frames: bytes, shape: list[int] | None = None) -> dict[str, bytes]:
    """The entry with row i's frames replaced (the header claims `shape`, or the row's own)."""
    row = entry[f"r{i}"]
    head = read_row_head(row[: row_head_size(row)], len(row))
    header = {**head.fields, "frames_shape": shape or head.shape, "frames_codec": head.codec}
    packed = codec.encode(header)
    new = CODED_ROW_MAGIC + len(packed).to_bytes(4, "little") + packed + frames
    meta = codec.decode(entry["meta"])
    meta["row_bytes"][i] = len(new)
    return {**entry, "meta": codec.encode(meta), f"r{i}": new}


def _draw_one_batch(server: object, schema: SampleSchema, batch_size: int) -> dict[str, np.ndarray]:
    """One batch through the trainer's own draw thread (gated draw, decode, stack)."""
    out: queue.Queue = queue.Queue(maxsize=1)  # type: ignore[type-arg]
    stop = threading.Event()
    drawer = BatchDrawer(server.buffers, schema, batch_size, out, stop)  # type: ignore[attr-defined]
    drawer.start()
    try:
        n, columns, provenance = out.get(timeout=20)
    finally:
        stop.set()
        drawer.join(timeout=5)
    assert n == batch_size and drawer.bad_rows == 0 and len(provenance["captured_at"]) == n
    return columns


@pytest.mark.parametrize("name", CODECS)
def test_coded_sets_are_routed_by_the_server_and_drawn_by_the_trainer(r: redis.Redis, keys: Keys, name: str) -> None:
    server = make_server(r, keys, buffers={"frame_codec": name, "frame_quality": 80})
    cfg, coder = server.config, FrameCodec(name, 80)
    publisher = SetPublisher(r, keys, cfg.buffers.stream_maxlen, 100, frame_codec=coder)  # the collector's own
    sent = []
    for i, output in enumerate(cfg.output_names() * 5):
        s = sample_set(cfg, output, 4, seed=i)
        s.columns["frames"][:] = smooth_frames((4, *SHAPE[1:]), seed=i)[:, None]
        sent.append(s.columns["frames"])
        raw_bytes = sum(len(v) for k, v in s.entry().items() if k != "meta")
        coded_bytes = sum(len(v) for k, v in s.entry(coder).items() if k != "meta")
        assert (coded_bytes < raw_bytes) == (name != "raw")
        publisher.publish(s)
    assert publisher.published == 10
    while server.route_once(block_ms=10):
        pass
    assert server.stats.routed_sets == 10 and not r.xlen(keys.deadletter)
    columns = _draw_one_batch(server, SampleSchema.from_config(cfg), cfg.trainer.batch_size)
    frames = columns["frames"]
    assert frames.shape == (cfg.trainer.batch_size, *SHAPE) and frames.dtype == np.uint8
    pool = np.concatenate(sent)
    for drawn in frames:  # every drawn frame is one that was sent (exactly, unless lossy)
        error = np.abs(pool.astype(np.int16) - drawn).mean(axis=(1, 2, 3, 4)).min()
        assert error == 0 if name in frames_mod.LOSSLESS else error < JPEG_MEAN_ERROR


def test_the_server_refuses_forged_and_foreign_coded_rows(r: redis.Redis, keys: Keys) -> None:
    server = make_server(r, keys, buffers={"frame_codec": "png"})
    cfg, png = server.config, FrameCodec("png")
    good = sample_set(cfg, "steering", 3, seed=1).entry(png)
    taller = png.encode(smooth_frames((1, 48, 32, 3)))
    bound = frames_mod.max_encoded_bytes("png", SHAPE)
    bad = {
        "raw rows under png": sample_set(cfg, "steering", 3, seed=2).entry(),
        "jpeg rows under png": sample_set(cfg, "steering", 3, seed=3).entry(FrameCodec("jpeg")),
        "an image of another size": _forged(good, 1, taller),
        "frames beyond the bound": _forged(good, 0, b"\x89PNG\r\n\x1a\n" + bytes(bound)),
        "a shape beyond the schema": _forged(good, 2, taller, [1, 48, 32, 3]),
    }
    for entry in bad.values():
        publish_entry(r, keys, "steering", entry)
    publish_entry(r, keys, "steering", sample_set(cfg, "steering", 3, seed=4).entry(png))  # not `good`'s set id
    while server.route_once(block_ms=10):
        pass
    reasons = [fields[b"reason"].decode() for _, fields in r.xrange(keys.deadletter)]
    assert server.stats.routed_sets == 1 and len(reasons) == len(bad), reasons
    assert "coded as 'raw'" in reasons[0] and "coded as 'jpeg'" in reasons[1]
    assert "declare an image of 32x48" in reasons[2] and f"allows 1..{bound}" in reasons[3]
    assert "shape [1, 48, 32, 3]" in reasons[4]


def test_the_trainer_refuses_forged_rows_before_allocating() -> None:
    """Rows that reached a buffer some other way: a claimed shape beyond the schema, or an
    image of another size, never get to a decoder or an allocation of their claimed size."""
    cfg = tiny_config(buffers={"frame_codec": "png"})
    schema, png = SampleSchema.from_config(cfg), FrameCodec("png")
    entry = sample_set(cfg, "steering", 2).entry(png)
    huge = [64, 4096, 4096, 3]  # 3.2 GB if anyone believed it
    forged = _forged(entry, 0, png.encode(smooth_frames(SHAPE)), huge)["r0"]
    with pytest.raises(SampleError, match=r"row 0: frames shape \[64, 4096, 4096, 3\]"):
        stack_rows([forged, entry["r1"]], schema)
    with pytest.raises(CodecError, match="exceed the limit"):
        decode_row(forged)
    other = _forged(entry, 1, png.encode(smooth_frames((1, 48, 32, 3))))["r1"]
    with pytest.raises(CodecError, match="declare an image of 32x48"):
        stack_rows([entry["r0"], other], schema)
    assert stack_rows([entry["r0"], entry["r1"]], schema)["frames"].shape == (2, *SHAPE)


@pytest.mark.parametrize("name", ["png", "jpeg"])
def test_a_coded_recording_is_read_back_by_offline_training(r: redis.Redis, keys: Keys, tmp_path: Path,
                                                           name: str) -> None:
    cfg = tiny_config(buffers={"frame_codec": name})
    schema, coder = SampleSchema.from_config(cfg), FrameCodec(name)
    context = ContextSpec.from_inputs(cfg.inputs, cfg.game.fps)
    rec = Recorder(r, keys, cfg.output_names(), schema, tmp_path, cfg.game.fps, context, chunk_rows=1000)
    rec.setup()
    sent = {}
    for i in range(3):
        s = sample_set(cfg, "steering", 4, seed=i)
        s.episode = "ep1"
        s.columns["frames"][:] = smooth_frames((4, *SHAPE[1:]), seed=i)[:, None]
        s.columns["game_time"][:] = np.arange(4) + 10 * i
        sent.update({float(t): f for t, f in zip(s.columns["game_time"], s.columns["frames"], strict=True)})
        publish_entry(r, keys, "steering", s.entry(coder))
    rec.streams.refresh(force=True)  # a new collector's stream is found at the recorder's next scan (2 s): now
    while rec.record_once(block_ms=10):
        pass
    rec.flush()
    assert rec.stats.rejected == 0
    (meta,) = scan(tmp_path)
    cols = load_chunk(meta.data_path)
    assert meta.get("frame_codec") == name and "frames" not in cols and len(cols["frames_end"]) == 12
    assert cols["frames_blob"].nbytes < 12 * 24 * 32 * 3  # they stay coded on disk
    ds = RecordedDataset(find_episodes([tmp_path]), DataSpec(context, cfg.game.hood_width, cfg.game.hood_height))
    assert len(ds) == 12
    for i in range(len(ds)):
        row = ds.row(i, augment=False)
        assert row["frames"].shape == SHAPE
        original = sent[float(row["game_time"])]
        error = np.abs(row["frames"].astype(np.int16) - original)
        assert error.max() == 0 if name == "png" else error.mean() < JPEG_MEAN_ERROR


def test_histograms_read_coded_rows_without_their_frames() -> None:
    cfg = tiny_config(buffers={"frame_codec": "zstd"})
    s = sample_set(cfg, "steering", 3)
    targets, _, skipped = targets_from_rows([*s.rows(FrameCodec("zstd")), b"junk"])
    assert skipped == 1 and np.allclose(targets, s.columns["targets"])
