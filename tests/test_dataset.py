"""Offline dataset: windows, strides, label shift, padding, splits, class labels, balancing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.collect.bins import build_binnings
from pipeline.config import OutputConfig
from pipeline.data.chunks import ChunkWriter
from pipeline.errors import SampleError
from pipeline.train.dataset import (
    DataSpec,
    RecordedDataset,
    balanced_weights,
    classes_to_controls,
    classes_to_keys,
    collate,
    find_episodes,
    split_episodes,
)
from pipeline.wire.schema import FIELDS, ContextSpec, SampleSchema

W, H = 8, 6


def tick_code(frames: np.ndarray) -> np.ndarray:
    """The tick number each synthetic frame encodes (pixel [0, 0], channels 0 and 1)."""
    return frames[..., 0, 0, 0].astype(np.int64) * 256 + frames[..., 0, 0, 1]


def write_ticks(root: Path, episode: str, n: int, fps: float = 10.0, padding: int = 0, chunk: int = 7,
                labels: np.ndarray | None = None) -> None:
    """A ticks recording whose frame t encodes t, speed = t, actions = (t/1000, -t/1000)."""
    writer = ChunkWriter(root)
    t = np.arange(n)
    frames = np.zeros((n, H, W, 3), np.uint8)
    frames[:, 0, 0, 0], frames[:, 0, 0, 1] = t // 256, t % 256
    cols = {
        "frames": frames, "speed": t.astype(np.float32), "purpose": np.stack([t, -t], 1).astype(np.float32),
        "controls": np.stack([t, t], 1).astype(np.float32) / 1000, "game_time": t / fps,
    }
    if labels is None:
        cols["actions"] = np.stack([t, -t], 1).astype(np.float32) / 1000
    else:
        cols["labels"] = labels
    for a in range(0, n, chunk):
        part = {k: v[a:a + chunk] for k, v in cols.items()}
        writer.write("ticks", episode, "ticks", part, {"fps": fps, "first_tick": a, "padding": padding,
                                                         "frame_size": [W, H], "minimap_box": None})


def spec(frames: int = 1, stride_s: float = 0.1, history: int = 0, history_s: float = 0.1, shift_s: float = 0.0,
         **kw: int | None) -> DataSpec:
    return DataSpec(ContextSpec(30.0, frames, stride_s, history, history_s, shift_s), W, H, **kw)  # type: ignore[arg-type]


def test_sequence_windows_strides_and_label_shift_are_exact(tmp_path: Path) -> None:
    write_ticks(tmp_path, "ep", 50, fps=10.0)
    # 3 frames 0.3 s apart at 10 fps = 3 ticks; 2 history rows 0.2 s = 2 ticks; label 0.4 s = 4 ticks ahead
    ds = RecordedDataset(find_episodes([tmp_path]), spec(3, 0.3, 2, 0.2, 0.4))
    assert len(ds) == 50 - 6 - 4  # lookback 6 ticks, the last 4 have no label
    for i in range(len(ds)):
        row = ds[i]
        now = int(row["speed"])
        assert tick_code(row["frames"]).tolist() == [now - 6, now - 3, now]
        assert row["targets"].tolist() == pytest.approx([(now + 4) / 1000, -(now + 4) / 1000])
        assert row["history"][:, 2].tolist() == [now - 4, now - 2]  # speed column of history rows
        assert row["controls"].tolist() == pytest.approx([now / 1000] * 2)
    assert int(ds[0]["speed"]) == 6


def test_strides_in_frames_override_seconds(tmp_path: Path) -> None:
    write_ticks(tmp_path, "ep", 40, fps=80.0)
    ds = RecordedDataset(find_episodes([tmp_path]), spec(3, 0.25, frame_stride_frames=5, label_shift_frames=2))
    row = ds[0]
    now = int(row["speed"])
    assert now == 10 and tick_code(row["frames"]).tolist() == [0, 5, 10]
    assert row["targets"][0] == pytest.approx(12 / 1000)
    # in seconds at the recording's own fps: 0.25 s at 80 fps = 20 ticks
    ds = RecordedDataset(find_episodes([tmp_path]), spec(2, 0.25))
    assert tick_code(ds[0]["frames"]).tolist() == [0, 20]


def test_padding_is_never_a_sample_but_may_be_context(tmp_path: Path) -> None:
    write_ticks(tmp_path, "stuck", 60, padding=30)
    ds = RecordedDataset(find_episodes([tmp_path]), spec(3, 0.3))  # lookback 6 ticks < padding
    nows = [int(ds[i]["speed"]) for i in range(len(ds))]
    assert min(nows) == 30 and len(nows) == 30
    ds1 = RecordedDataset(find_episodes([tmp_path]), DataSpec(ContextSpec(10, 3, 1.0, 0, 0.1, 0.0), W, H))
    first = ds1[0]
    assert int(first["speed"]) == 30 and tick_code(first["frames"]).tolist() == [10, 20, 30]


def test_gap_splits_an_episode_into_runs(tmp_path: Path) -> None:
    write_ticks(tmp_path, "ep", 21, chunk=7)
    (tmp_path / "ep" / "ticks-000001.json").unlink()  # the middle chunk is gone (e.g. rotated)
    episodes = find_episodes([tmp_path])
    assert [(e.first_tick, e.rows) for e in episodes] == [(0, 7), (14, 7)]
    ds = RecordedDataset(episodes, DataSpec(ContextSpec(10, 2, 0.3, 0, 0.1, 0.0), W, H))
    for i in range(len(ds)):
        codes = tick_code(ds[i]["frames"])
        assert codes[1] - codes[0] == 3  # no window spans the gap


def test_split_by_episode_has_no_episode_on_both_sides(tmp_path: Path) -> None:
    for d in ("a", "b"):
        for e in range(12):
            write_ticks(tmp_path / d, f"ep{e}", 8)  # the same episode ids in two data dirs
    episodes = find_episodes([tmp_path / "a", tmp_path / "b"])
    train, val = split_episodes(episodes, 0.25, seed=3)
    train_ids, val_ids = {e.episode for e in train}, {e.episode for e in val}
    assert train_ids and val_ids and not train_ids & val_ids
    assert train_ids | val_ids == {f"ep{e}" for e in range(12)}
    assert split_episodes(episodes, 0.25, seed=3)[1] == val  # stable


def test_one_recording_is_trained_on_not_all_validation(tmp_path: Path) -> None:
    """Issue 18 #1: the only episode went to validation whenever its hash fell under the
    fraction, and training then failed with a message about recordings too short."""
    write_ticks(tmp_path, "only", 8)
    episodes = find_episodes([tmp_path])
    for seed in range(20):  # some seeds hash it under 0.5
        train, val = split_episodes(episodes, 0.5, seed=seed)
        assert [e.episode for e in train] == ["only"] and val == []


def test_one_hot_classes_become_independent_keys(tmp_path: Path) -> None:
    classes = ["w", "a", "s", "d", "wa", "wd", "none"]
    onehot = np.eye(7, dtype=np.uint8)
    keys = classes_to_keys(onehot, classes)
    assert keys.astype(int).tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1],
                                         [1, 1, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]]
    controls = classes_to_controls(onehot, classes)
    assert controls.tolist() == [[1, 0], [0, -1], [-1, 0], [0, 1], [1, -1], [1, 1], [0, 0]]
    import torch

    from pipeline.models.outputs import build_output

    head = build_output(OutputConfig(name="keys", type="keys", control="both"))
    encoded = head.encode(torch.from_numpy(controls), torch.zeros(7, 2))
    assert encoded.numpy().astype(bool).tolist() == keys.tolist()
    # in a recording: labels are converted when the dataset reads them
    labels = np.eye(7, dtype=np.uint8)[np.arange(20) % 7]
    write_ticks(tmp_path, "seed", 20, labels=labels)
    ds = RecordedDataset(find_episodes([tmp_path]), spec(label_shift_frames=1))
    for i in range(len(ds)):
        now = int(ds[i]["speed"])
        assert ds[i]["targets"].tolist() == controls[(now + 1) % 7].tolist()


def test_batches_have_the_live_trainer_columns(tmp_path: Path) -> None:
    write_ticks(tmp_path, "ep", 30)
    ds = RecordedDataset(find_episodes([tmp_path]), spec(2, 0.1, 3, 0.1))
    columns = collate([ds[i] for i in range(5)])
    assert set(columns) == set(FIELDS)
    assert SampleSchema(H, W, 2, 3).validate_columns(columns) == 5


def test_stream_samples_context_is_taken_down_or_refused(tmp_path: Path) -> None:
    n, schema = 6, SampleSchema(H, W, 3, 4)
    cols = {name: np.zeros((n, *shape), dtype=np.float32) for name, shape in schema.row_shapes().items()}
    cols["frames"] = np.zeros((n, 3, H, W, 3), np.uint8)
    cols["frames"][:, :, 0, 0, 1] = [0, 1, 2]  # frame k of the recorded context
    cols["history"][:, :, 0] = [0, 1, 2, 3]
    cols["game_time"] = np.zeros(n, np.float64)
    context = ContextSpec(30.0, 3, 0.1, 4, 0.1, 0.0).__dict__
    ChunkWriter(tmp_path).write("samples", "ep", "steering", cols, {"fps": 30.0, "output": "steering",
                                                                     "context": context})
    ds = RecordedDataset(find_episodes([tmp_path]), DataSpec(ContextSpec(30.0, 2, 0.2, 2, 0.2, 0.0), W, H))
    row = ds[0]
    assert row["frames"][:, 0, 0, 1].tolist() == [0, 2] and row["history"][:, 0].tolist() == [0, 2]
    with pytest.raises(SampleError, match="stride"):
        RecordedDataset(find_episodes([tmp_path]), DataSpec(ContextSpec(30.0, 2, 0.15, 0, 0.1, 0.0), W, H))


def test_balancing_weights_give_every_bin_the_same_share(tmp_path: Path) -> None:
    n = 100
    labels = np.zeros((n, 7), np.uint8)
    labels[:90, 0] = 1  # 90% straight ahead: the pygta5 problem
    labels[90:, 4] = 1  # "wa" in seed 004's class order
    write_ticks(tmp_path, "ep", n, labels=labels)
    ds = RecordedDataset(find_episodes([tmp_path]), spec())
    binnings = build_binnings([OutputConfig(name="keys", type="keys", control="both")])
    weights = balanced_weights(ds, binnings)
    targets, controls = ds.labels()
    bins = np.array([binnings[0].bin_of(t, c) for t, c in zip(targets, controls, strict=True)])
    shares = {int(b): weights[bins == b].sum() for b in np.unique(bins)}
    assert len(shares) == 2 and all(v == pytest.approx(0.5) for v in shares.values())
