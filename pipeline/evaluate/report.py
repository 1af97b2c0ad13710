"""`charles evaluate`: one weights file scored closed-loop on this machine, without Redis,
as one record (JSON) or a table; the same plan as the evaluator, references kept on disk."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from pipeline.config import DEFAULT_CONFIG, Config, load_config
from pipeline.errors import ConfigError, MissingExtraError
from pipeline.evaluate.closed_loop import (
    POLICIES,
    REFERENCE_CACHE,
    EvalSettings,
    Evaluator,
    file_cached_references,
    model_policy,
    policy_report,
    reference_cache_file,
    report_warnings,
    score_policy,
)
from pipeline.games.options import GameCache
from pipeline.models.loading import build_model_from, read_weights_file

log = structlog.get_logger(__name__)


def load_for_evaluation(weights_file: Path, config_path: Path | None, episodes: int | None, seconds: float | None,
                        processes: int | None, sha256: str | None) -> tuple[Config, EvalSettings, Any, dict[str, str]]:
    """The config (with `processes`), the plan, the model and the file's metadata, or a one-line error."""
    cfg = load_config(config_path)
    if processes is not None:
        cfg = cfg.model_copy(update={"evaluator": cfg.evaluator.model_copy(update={"processes": processes})})
    settings = EvalSettings.from_config(cfg, episodes=episodes, seconds=seconds)
    tensors, meta = read_weights_file(weights_file, sha256)
    try:
        model = build_model_from(cfg, tensors, source=weights_file, meta=meta, config_file=config_path or DEFAULT_CONFIG)
    except MissingExtraError as exc:
        raise ConfigError(f"{config_path or DEFAULT_CONFIG}: {exc}") from None
    return cfg, settings, model, meta


def episodes_to_drive(settings: EvalSettings, cfg: Config, use_cache: bool) -> int:
    """Episodes this report will drive: the model's, plus the references' unless kept on disk."""
    cache = reference_cache_file(settings, cfg, REFERENCE_CACHE) if use_cache else None
    return len(settings.plan()) * (1 if cache is not None and cache.is_file() else len(POLICIES))


def evaluate_file(weights_file: Path, config_path: Path | None, cfg: Config, settings: EvalSettings, model: Any,
                  meta: dict[str, str], use_cache: bool = True,
                  on_episode: Callable[[str, Any], None] | None = None) -> dict[str, Any]:
    """Drive the model, the NPC and the baseline; the record `charles evaluate --json` prints."""
    warnings = []
    if meta.get("model") not in (None, cfg.run.name):
        warnings.append(f"{weights_file} says it is of model {meta.get('model')!r}, the config's is {cfg.run.name!r}")
    games, pool = GameCache(), None
    if settings.processes > 1:
        from pipeline.evaluate.pool import EpisodePool

        pool = EpisodePool(cfg.to_json(), settings.processes, settings.episodes_per_environment, settings.episode_s)
    try:
        evaluator = Evaluator(None if pool is not None else games.get(cfg), settings, pool, on_episode=on_episode)
        refs = file_cached_references(evaluator, cfg, REFERENCE_CACHE if use_cache else None)
        scores = score_policy(evaluator, model_policy(model, weights_file.read_bytes()), refs)
    finally:
        games.close()
        if pool is not None:
            pool.close()
    policies = policy_report(scores, refs, settings.confidence, settings.bootstrap_resamples)
    warnings += report_warnings(policies, settings.episode_s)
    for warning in warnings:
        log.warning("evaluation_warning", warning=warning)
    return {"weights": {"file": str(weights_file), "sha256": hashlib.sha256(weights_file.read_bytes()).hexdigest(),
                        "model": meta.get("model"), "trained_batches": int(meta.get("batches", 0) or 0)},
            "config": {"file": str(config_path or DEFAULT_CONFIG), "model": cfg.run.name},
            "plan": {"environments": list(settings.environments), "episodes_per_environment":
                     settings.episodes_per_environment, "episode_s": settings.episode_s,
                     "held_out_seeds": list(settings.held_out_seeds)},
            "policies": policies, "warnings": warnings, "wall_s": scores["wall_s"]}


def print_report(record: dict[str, Any]) -> None:
    """The record as a table on the terminal, intervals and warnings included."""
    from rich.console import Console
    from rich.table import Table

    def with_interval(value: float | None, ci: list[float] | None) -> str:
        return "-" if value is None else f"{value:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    scored = any(p["metrics"].get("game_score") is not None for p in record["policies"].values())
    table = Table("policy", "km", "incidents", "per km", "m between", "|lane| m", "km/h", "ratio to NPC",
                  *(["game score"] if scored else []))
    for name, p in record["policies"].items():
        m, intervals = p["metrics"], p.get("intervals") or {}
        lane = m["mean_abs_lane_offset_m"]
        game = [with_interval(m.get("game_score"), intervals.get("game_score"))] if scored else []
        table.add_row(name, f"{m['distance_m'] / 1000:.2f}", str(m["incidents"]), f"{m['incidents_per_km']:.2f}",
                      f"{m['mean_distance_between_incidents_m']:.0f}{'+' if m['censored'] else ''}",
                      "-" if lane is None else f"{lane:.2f}", f"{m['mean_speed_mps'] * 3.6:.1f}",
                      with_interval(p["ratio_to_npc"], intervals.get("ratio_to_npc")), *game)
    console = Console()
    console.print(table)
    model = record["policies"]["model"]
    level = (model.get("intervals") or {}).get("level")
    if level:
        console.print(f"[dim]brackets: {100 * level:.0f}% bootstrap interval over "
                      f"{model['metrics']['episodes']} episodes; + : no incident, a lower bound[/]")
    for warning in record["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")
