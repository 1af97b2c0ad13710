"""Publishing a checkpoint trained elsewhere to the live players: it must fit the live run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from safetensors.torch import save_file

from pipeline.config import Config
from pipeline.errors import WeightsError
from pipeline.models import build_model
from pipeline.play.push import push_checkpoint
from pipeline.wire.config_store import publish_config
from pipeline.wire.keys import Keys
from pipeline.wire.presence import Presence
from pipeline.wire.weights import WeightsStore
from tests.factories import tiny_config

CFG = tiny_config(model={"width": 8, "dense": 32, "head": [16]})


def checkpoint(folder: Path, cfg: Config = CFG, run: str | None = None) -> Path:
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / "trainer.json").write_text(json.dumps({"model": run or cfg.run.name, "batches": 42}))
    return folder


def test_a_fitting_checkpoint_becomes_the_next_version(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    publish_config(r, keys, CFG)
    info, notes = push_checkpoint(r, keys, checkpoint(tmp_path / "ckpt"))
    assert info.version == 1 and info.batches == 42 and notes == []
    assert WeightsStore(r, keys).latest_info().version == 1  # type: ignore[union-attr]
    Presence(r, keys, "trainer", "t1").beat()
    info, notes = push_checkpoint(r, keys, tmp_path / "ckpt" / "model.safetensors")  # the file, trainer.json beside
    assert info.version == 2 and "live trainer" in notes[0]


def test_what_does_not_fit_the_live_run_is_refused_by_name(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no live config"):
        push_checkpoint(r, keys, checkpoint(tmp_path / "a"))
    publish_config(r, keys, CFG)
    with pytest.raises(WeightsError, match="trained for run 'elsewhere'"):
        push_checkpoint(r, keys, checkpoint(tmp_path / "b", run="elsewhere"))
    wider = tiny_config(model={"width": 16, "dense": 32, "head": [16]})
    with pytest.raises(WeightsError, match="do not fit the live model"):
        push_checkpoint(r, keys, checkpoint(tmp_path / "c", cfg=wider))
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="not a checkpoint"):
        push_checkpoint(r, keys, tmp_path / "empty")
    assert WeightsStore(r, keys).latest_info() is None
