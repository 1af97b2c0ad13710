"""Recording a drive, importing seed-004 files, training offline, pushing to live players."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import redis
import torch
from click.testing import CliRunner

from pipeline.data.chunks import ChunkWriter, load_chunk, scan
from pipeline.data.drive_recorder import DriveRecorder
from pipeline.games.base import Environment
from pipeline.games.sim import SimGame
from pipeline.train.dataset import DataSpec, RecordedDataset, find_episodes
from pipeline.wire.config_store import publish_config
from pipeline.wire.keys import Keys
from pipeline.wire.schema import ContextSpec
from pipeline.wire.weights import WeightsStore, to_blob
from tests.factories import tiny_config

TOML = """
[run]
name = "{name}"
log_dir = "{root}/runs"
checkpoint_dir = "{root}/checkpoints"
[game]
hood_width = 32
hood_height = 24
[inputs]
stacked_frames = 2
stacked_stride_s = 0.1
label_shift_s = 0.1
[model]
width = 8
dense = 32
head = [16]
[trainer]
batch_size = 4
log_every = 1
checkpoint_every = 1000
"""


def record_npc(root: Path, seconds: float, seed: int) -> None:
    game = SimGame(hood_size=(32, 24), cinematic_size=(32, 24), fps=30.0)
    rec = DriveRecorder(game, ChunkWriter(root), f"npc{seed}", "npc", "drive:npc", chunk_rows=40,
                        minimap_box=[0.1, 0.7, 0.3, 0.25])
    rec.run(Environment(map_seed=seed, episode_seed=seed, traffic_density=0.0), seconds, lambda obs: None)
    game.close()


def test_drive_recording_labels_each_frame_with_the_next_action(tmp_path: Path) -> None:
    record_npc(tmp_path, 4.0, seed=3)
    metas = scan(tmp_path)
    assert [m.first_tick for m in metas] == [0, 40, 80] and sum(m.rows for m in metas) == 120
    cols = [load_chunk(m.data_path) for m in metas]
    controls = np.concatenate([c["controls"] for c in cols])
    actions = np.concatenate([c["actions"] for c in cols])
    assert np.array_equal(actions[:-1], controls[1:])  # the choice after frame t drives during tick t + 1
    assert np.abs(actions).max() > 0  # the NPC did drive
    assert metas[0].fps == 30.0 and metas[0].get("source") == "drive:npc"


def test_seed004_import_converts_one_hot_labels_and_skips_stuck_padding(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    from pipeline.data.seed004 import import_seed004

    src = tmp_path / "seed"
    (src / "stuck").mkdir(parents=True)
    n = 50
    labels = np.eye(7, dtype=np.float32)[np.arange(n) % 7]
    images = np.zeros((n, 18, 24, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    for name in ("stuck/session1.h5", "regular.h5"):
        with h5py.File(src / name, "w") as f:
            f["images"], f["labels"] = images, labels
    out = tmp_path / "data"
    summary = import_seed004(src, ChunkWriter(out), fps=80.0, stuck_padding=20, chunk_rows=16)
    assert summary.files == 2 and summary.frames == 2 * n
    episodes = {e.episode: e for e in find_episodes([out])}
    assert set(episodes) == {"seed004-regular", "seed004-stuck-session1"}
    assert episodes["seed004-stuck-session1"].padding == 20 and episodes["seed004-regular"].padding == 0
    spec = DataSpec(ContextSpec(30.0, 1, 0.1, 0, 0.1, 0.0), 24, 18)
    stuck = RecordedDataset([episodes["seed004-stuck-session1"]], spec)
    nows = [int(stuck[i]["frames"][0, 0, 0, 0]) for i in range(len(stuck))]
    assert nows == list(range(20, n))
    wa = [1.0, -1.0]  # class 4 = "wa": forward and left
    i = nows.index(25)  # 25 % 7 == 4
    assert stuck[i]["targets"].tolist() == wa and stuck[i]["controls"].tolist() == [0.0, 1.0]  # previous: "d"


def test_offline_training_from_files_then_push_makes_a_live_version(r: redis.Redis, keys: Keys, tmp_path: Path,
                                                                    redis_server: object,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.push import cli as push_cli
    from workers.train import cli as train_cli

    data = tmp_path / "data"
    for seed in (1, 2, 3):
        record_npc(data, 2.0, seed)
    config = tmp_path / "offline.toml"
    config.write_text(TOML.format(name="charles_small_cnn", root=tmp_path))
    runner = CliRunner()
    result = runner.invoke(train_cli, ["--offline", str(data), "--config", str(config), "--epochs", "2",
                                       "--max-steps", "6", "--val-fraction", "0.34"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 6 and summary["last_epoch"]["val_loss"] > 0
    ckpt = Path(summary["checkpoint"])
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "best" / "trainer.json").is_file()
    assert list((tmp_path / "runs" / "charles_small_cnn-offline").glob("events.out.tfevents.*"))

    monkeypatch.setenv("CHARLES_REDIS_URL", redis_server.url)  # type: ignore[attr-defined]
    monkeypatch.setenv("CHARLES_KEY_PREFIX", keys.prefix)
    monkeypatch.setenv("CHARLES_ENV_FILE", str(tmp_path / "no.env"))
    publish_config(r, keys, tiny_config(run={"name": "another_run"}))
    refused = runner.invoke(push_cli, [str(ckpt)])
    assert refused.exit_code != 0 and "'charles_small_cnn'" in refused.output and "'another_run'" in refused.output
    from pipeline.config import load_config

    publish_config(r, keys, load_config(config))
    pushed = runner.invoke(push_cli, [str(ckpt)])
    assert pushed.exit_code == 0, pushed.output
    version = json.loads(pushed.stdout.strip().splitlines()[-1])["version"]
    info, tensors = WeightsStore(r, keys).fetch()
    assert info.version == version >= 1 and info.model == "charles_small_cnn" and info.batches == 6
    from safetensors.torch import load_file

    saved = load_file(ckpt / "model.safetensors")
    assert all(np.array_equal(saved[k].numpy(), tensors[k].numpy()) for k in saved)


def test_an_epoch_shorter_than_log_every_still_has_a_train_loss(tmp_path: Path) -> None:
    """Issue 18 #2: with fewer batches in an epoch than log_every, `train_loss` was NaN,
    in the log and as `NaN` in the summary JSON (not JSON at all)."""
    from workers.train import cli as train_cli

    data = tmp_path / "data"
    for seed in (1, 2, 3):
        record_npc(data, 2.0, seed)
    config = tmp_path / "offline.toml"
    config.write_text(TOML.format(name="charles_small_cnn", root=tmp_path).replace("log_every = 1", "log_every = 1000"))
    result = CliRunner().invoke(train_cli, ["--offline", str(data), "--config", str(config), "--epochs", "1",
                                            "--val-fraction", "0.34"])
    assert result.exit_code == 0, result.output

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in the summary: not JSON")

    summary = json.loads(result.stdout.strip().splitlines()[-1], parse_constant=refuse)
    assert 0 < summary["last_epoch"]["train_loss"] < 10


def test_push_takes_a_safetensors_file_as_evaluate_and_player_do(r: redis.Redis, keys: Keys, tmp_path: Path,
                                                                   redis_server: object,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18 #12: `push` took only a checkpoint folder where `evaluate` and `player` take a file."""
    from pipeline.config import load_config
    from workers.push import cli as push_cli

    shipped = Path(__file__).resolve().parent.parent / "models" / "charles_small_cnn.safetensors"
    monkeypatch.setenv("CHARLES_REDIS_URL", redis_server.url)  # type: ignore[attr-defined]
    monkeypatch.setenv("CHARLES_KEY_PREFIX", keys.prefix)
    monkeypatch.setenv("CHARLES_ENV_FILE", str(tmp_path / "no.env"))
    publish_config(r, keys, load_config())
    pushed = CliRunner().invoke(push_cli, [str(shipped)])
    assert pushed.exit_code == 0, pushed.output
    info, _ = WeightsStore(r, keys).fetch()
    assert info.model == "charles_small_cnn" and info.batches == 4500  # from the file's metadata
    bare = tmp_path / "bare.safetensors"
    bare.write_bytes(to_blob({"w": torch.zeros(1)}))
    refused = CliRunner().invoke(push_cli, [str(bare)])
    assert refused.exit_code != 0 and "names no model" in refused.output


def test_a_bad_minimap_box_is_one_line_and_makes_no_folder(tmp_path: Path) -> None:
    from pipeline.data.seed004 import parse_minimap_box
    from pipeline.train.augment import GTA5_MINIMAP_BOX
    from workers.record import cli as record_cli

    assert parse_minimap_box(None) == list(GTA5_MINIMAP_BOX)
    assert parse_minimap_box("0.1,0.2,0.3,0.4") == [0.1, 0.2, 0.3, 0.4]
    for bad in ("1,2", "a,b,c,d"):
        result = CliRunner().invoke(record_cli, ["import-seed004", str(tmp_path), "--out", str(tmp_path / "out"),
                                                 "--minimap-box", bad])
        assert result.exit_code == 1 and "--minimap-box" in result.output and "x,y,w,h" in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "out").exists()
