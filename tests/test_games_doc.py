"""docs/games.md ("Bring your own game") stays true: its package, backend and config, written
exactly as the page shows them, with the package's entry point installed, load, collect with
DAgger against a real Redis, and are scored by the evaluator on the game's own score."""

from __future__ import annotations

import importlib
import random
import re
import tomllib
from pathlib import Path

import pytest
import redis
import torch

from pipeline.collect.episode import Collector
from pipeline.collect.handoff import EpisodeSpec
from pipeline.config import load_config
from pipeline.evaluate.closed_loop import (
    EvalSettings,
    Evaluator,
    model_policy,
    reference_scores,
    score_policy,
)
from pipeline.games.base import capabilities_of
from pipeline.games.options import GameCache
from pipeline.models import build_model
from pipeline.serve.server import Server, sample_environment
from pipeline.wire.config_store import publish_config
from pipeline.wire.keys import Keys
from pipeline.wire.weights import WeightsStore
from tests.processes import ROOT

FENCE = re.compile(r"```(?:python|toml)\n# (\S+)\n(.*?)```", re.S)


def write_files(folder: Path) -> dict[str, str]:
    """Every code block of the page that starts with `# path`, written under `folder`."""
    files = {path: f"# {path}\n{body}" for path, body in FENCE.findall((ROOT / "docs" / "games.md").read_text())}
    for path, text in files.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    return files


def install_entry_points(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `pip install -e ./mygame` leaves: the package importable and its entry points found."""
    project = tomllib.loads((folder / "mygame" / "pyproject.toml").read_text())["project"]
    site = folder / "site"
    dist = site / f"{project['name']}-{project['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines: list[str] = []
    for group, points in project["entry-points"].items():
        lines += [f"[{group}]", *(f"{name} = {target}" for name, target in points.items())]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(folder / "mygame"))
    importlib.invalidate_caches()


def test_the_worked_example_runs(r: redis.Redis, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = write_files(tmp_path)
    assert {"mygame/pyproject.toml", "mygame/mygame/__init__.py", "mygame/mygame/world.py",
            "configs/mygame.toml"} <= set(files)
    install_entry_points(tmp_path, monkeypatch)
    cfg = load_config(tmp_path / "configs" / "mygame.toml")
    caps = capabilities_of(cfg.game.backend)
    assert cfg.game.backend == "mygame" and caps.expert_labels and caps.score == "centred_s"
    Server(r, keys, cfg)  # the server accepts its [collection] choices

    publish_config(r, keys, cfg)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    store = WeightsStore(r, keys)
    for _ in range(cfg.collection.model_drives_after_version):  # the model drives from this version on
        info = store.publish(model.state_dict(), cfg.run.name, batches=0)
    collector = Collector(r, keys, "collector-doc-test")
    try:
        env = sample_environment(cfg.collection, random.Random(2), caps)
        summary = collector.run_episode(EpisodeSpec("doc-ep", env, 6.0))
    finally:
        collector.games.close()
    assert summary["model_version"] == info.version and summary["model_ticks"] > 0 and summary["samples"] > 0

    settings = EvalSettings.from_config(cfg, episodes=2, seconds=2.0)
    games = GameCache()
    try:
        evaluator = Evaluator(games.get(cfg), settings)
        scores = score_policy(evaluator, model_policy(model.eval()), reference_scores(evaluator))
    finally:
        games.close()
    assert scores["game_score"] is not None and scores["intervals"]["game_score"] is not None
    assert [p.env.weather for p in settings.plan()] == ["clear", "clear", "rain", "rain"]
