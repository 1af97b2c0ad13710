"""Publishing a checkpoint trained elsewhere (offline) to the live players.

Players build their model from the live config and refuse weights of another model, so
the checkpoint is checked here first, with a message that says what differs: the run
name it was trained for must be the live `run.name`, and its tensors must load into the
model the live config builds (same names and shapes).
"""

from __future__ import annotations

import json
from pathlib import Path

import redis
from safetensors.torch import load_file

from pipeline.errors import WeightsError
from pipeline.wire.config_store import fetch_config
from pipeline.wire.keys import Keys
from pipeline.wire.presence import live_workers
from pipeline.wire.weights import WeightsInfo, WeightsStore


def push_checkpoint(r: redis.Redis, keys: Keys, folder: Path) -> tuple[WeightsInfo, list[str]]:
    """Publish a checkpoint folder's `model.safetensors`, or a safetensors file (the one
    `charles evaluate` and `charles player --weights` take), as the next version; returns its
    info and notes. A file's run name and batches come from its metadata, or from the
    `trainer.json` beside it."""
    from pipeline.models import build_model
    from pipeline.models.loading import misfit, read_weights_file

    folder = Path(folder)
    if folder.is_file():
        state, meta = read_weights_file(folder)
        beside = folder.parent / "trainer.json"
        if "model" not in meta and beside.is_file():
            try:
                meta = json.loads(beside.read_text())
            except ValueError as exc:
                raise WeightsError(f"{beside}: not JSON: {exc}") from None
        if "model" not in meta:
            raise WeightsError(f"{folder}: its metadata names no model (run name) and no trainer.json is beside it")
    else:
        try:
            meta = json.loads((folder / "trainer.json").read_text())
            state = load_file(folder / "model.safetensors")
        except (OSError, ValueError) as exc:
            raise WeightsError(f"{folder}: not a checkpoint (model.safetensors + trainer.json): {exc}") from None
    fetched = fetch_config(r, keys)
    if fetched is None:
        raise WeightsError("no live config in Redis (is `charles server` running?); nothing to push to")
    cfg, _ = fetched
    model_name = meta.get("model")
    if model_name != cfg.run.name:
        raise WeightsError(
            f"{folder}: checkpoint was trained for run {model_name!r}, the live run is {cfg.run.name!r}; "
            "train with the live config (same [run] name, model, inputs and outputs)")
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    problem = misfit(model.state_dict(), state)
    if problem:
        raise WeightsError(
            f"{folder}: tensors do not fit the live model {cfg.run.name!r} ({problem}); "
            "the live config's model/inputs/outputs differ")
    notes = []
    if live_workers(r, keys, "trainer"):
        notes.append("a live trainer is running: its next publication replaces this version")
    store = WeightsStore(r, keys, cfg.trainer.keep_versions)
    info = store.publish(state, cfg.run.name, int(meta.get("batches", 0)), config_sha256=cfg.sha256())
    return info, notes
