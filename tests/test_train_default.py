"""scripts/train_default.py's DAgger collection: the model drives, the NPC labels every tick."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from safetensors.torch import save_file

from pipeline.config import load_config
from pipeline.models import build_model, predict
from pipeline.models.loading import build_model_from, read_weights_file

ROOT = Path(__file__).resolve().parent.parent
CONFIG = str(ROOT / "configs" / "default.toml")


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "train_default", ROOT / "scripts" / "train_default.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_dagger_worker_writes_model_driven_shards_with_expert_labels(tmp_path: Path) -> None:
    td = _script()
    cfg = load_config(CONFIG)
    torch.manual_seed(0)
    model = build_model(
        cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width)
    )
    weights = tmp_path / "random.safetensors"
    save_file(model.state_dict(), str(weights), {"model": cfg.run.name})
    job = td.CollectJob(
        CONFIG,
        str(tmp_path),
        worker=0,
        episodes=1,
        sample_every=1,
        episode_s=4.0,
        deadline=time.time() + 300,
        weights=str(weights),
        beta=0.0,
    )
    assert td._collect_worker(job) == {"episodes": 1, "ticks": 120, "model_ticks": 120}

    (shard,) = tmp_path.glob("shard-w00-*.npz")
    with np.load(shard, allow_pickle=False) as z:
        cols = {f: z[f] for f in td.FIELDS}
    assert len(cols["speed"]) > 100
    # Row i holds the inputs the model drove from; the controls it chose are row i+1's.
    driver = build_model_from(cfg, read_weights_file(weights)[0])
    inputs = ("frames", "speed", "purpose", "controls", "history")
    chosen = np.array(
        [
            predict(driver, {f: cols[f][i] for f in inputs})[1].as_array()
            for i in range(len(cols["speed"]) - 1)
        ]
    )
    np.testing.assert_allclose(cols["controls"][1:], chosen, atol=1e-4)
    # ... and the labels are the NPC's commands in those states, not the model's.
    assert np.abs(cols["targets"][:-1] - chosen).max() > 0.3
    assert np.abs(cols["targets"]).max() <= 1.0
