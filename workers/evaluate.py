"""`charles evaluate --weights FILE`: score one safetensors file closed-loop, no Redis needed.

Same plan, durations and Unstuck rules as the evaluator worker; the NPC's and the
baseline's scores are cached under `var/evaluation/` (they do not depend on the weights).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import click

from workers.options import config_option


@click.command(name="evaluate")
@click.option("--weights", "weights_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a safetensors file of the config's model")
@config_option()
@click.option("--episodes", type=click.IntRange(min=1), default=None,
              help="episodes per environment (default: evaluator.episodes_per_environment)")
@click.option("--seconds", type=click.FloatRange(min=1.0), default=None,
              help="game seconds per episode (default: evaluator.episode_s)")
@click.option("--processes", type=click.IntRange(min=1, max=64), default=None,
              help="episodes driven at once, one process each (default: evaluator.processes)")
@click.option("--sha256", default=None, help="refuse the file unless it has this sha256")
@click.option("--no-cache", is_flag=True, help="drive the NPC and the baseline again")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def cli(weights_file: Path, config_path: Path | None, episodes: int | None, seconds: float | None,
        processes: int | None, sha256: str | None, no_cache: bool, as_json: bool) -> None:
    """Drive the model, the NPC and the baseline on the held-out seeds; print the scores."""
    from pipeline.log import configure_logging
    from pipeline.observe.progress import enabled, progress_bar

    show_bar = enabled()  # a bar on a terminal; elsewhere a log line per episode and its progress
    configure_logging("evaluate", level="WARNING" if show_bar else None)
    import structlog
    import torch

    from pipeline.config import DEFAULT_CONFIG, load_config
    from pipeline.errors import ConfigError, MissingExtraError, WeightsError
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
    from pipeline.games.base import load_game
    from pipeline.games.options import game_options
    from pipeline.models.loading import build_model_from, read_weights_file

    log = structlog.get_logger("evaluate")
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    try:
        cfg = load_config(config_path)
        if processes is not None:
            cfg = cfg.model_copy(update={"evaluator": cfg.evaluator.model_copy(update={"processes": processes})})
        settings = EvalSettings.from_config(cfg, episodes=episodes, seconds=seconds)
        tensors, meta = read_weights_file(weights_file, sha256)
        model = build_model_from(cfg, tensors, source=weights_file, meta=meta,
                                 config_file=config_path or DEFAULT_CONFIG)
    except (ConfigError, WeightsError) as exc:
        raise click.ClickException(str(exc)) from None
    except MissingExtraError as exc:
        raise click.ClickException(f"{config_path or DEFAULT_CONFIG}: {exc}") from None
    warnings = []
    if meta.get("model") not in (None, cfg.run.name):
        warnings.append(f"{weights_file} says it is of model {meta.get('model')!r}, the config's is {cfg.run.name!r}")
    cache = None if no_cache else reference_cache_file(settings, cfg, REFERENCE_CACHE)
    per_policy = len(settings.plan())
    total = per_policy * (1 if cache is not None and cache.is_file() else len(POLICIES))
    log.info("evaluation_starting", episodes=total, processes=settings.processes, episode_s=settings.episode_s)
    if settings.processes > 1:
        from pipeline.evaluate.pool import EpisodePool

        game, pool = None, EpisodePool(cfg.to_json(), settings.processes, episodes, seconds)
    else:
        game, pool = load_game(cfg.game.backend, **game_options(cfg, realtime=False)), None
    try:
        with progress_bar("evaluating", total=total, unit="episodes", show=show_bar,
                          log_event="evaluation_progress") as bar:
            evaluator = Evaluator(game, settings, pool,
                                  on_episode=lambda name, _trace: (bar.update(description=f"evaluating: {name}"),
                                                                   bar.advance()))
            refs = file_cached_references(evaluator, cfg, None if no_cache else REFERENCE_CACHE)
            scores = score_policy(evaluator, model_policy(model, weights_file.read_bytes()), refs)
    finally:
        if game is not None:
            game.close()
        if pool is not None:
            pool.close()
    policies = policy_report(scores, refs, settings.confidence, settings.bootstrap_resamples)
    warnings += report_warnings(policies, settings.episode_s)
    for warning in warnings:
        log.warning("evaluation_warning", warning=warning)
    record = {"weights": {"file": str(weights_file), "sha256": hashlib.sha256(weights_file.read_bytes()).hexdigest(),
                          "model": meta.get("model"), "trained_batches": int(meta.get("batches", 0) or 0)},
              "config": {"file": str(config_path or DEFAULT_CONFIG), "model": cfg.run.name},
              "plan": {"environments": list(settings.environments), "episodes_per_environment":
                       settings.episodes_per_environment, "episode_s": settings.episode_s,
                       "held_out_seeds": list(settings.held_out_seeds)},
              "policies": policies, "warnings": warnings, "wall_s": scores["wall_s"]}
    if as_json:
        click.echo(json.dumps(record))
        return
    _print(record)


def _print(record: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("policy", "km", "incidents", "per km", "m between", "|lane| m", "km/h", "ratio to NPC")
    for name, p in record["policies"].items():
        m, ratio = p["metrics"], p["ratio_to_npc"]
        ci = (p.get("intervals") or {}).get("ratio_to_npc")
        lane = m["mean_abs_lane_offset_m"]
        table.add_row(name, f"{m['distance_m'] / 1000:.2f}", str(m["incidents"]), f"{m['incidents_per_km']:.2f}",
                      f"{m['mean_distance_between_incidents_m']:.0f}{'+' if m['censored'] else ''}",
                      "-" if lane is None else f"{lane:.2f}", f"{m['mean_speed_mps'] * 3.6:.1f}",
                      "-" if ratio is None else f"{ratio:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))
    console = Console()
    console.print(table)
    model = record["policies"]["model"]
    level = (model.get("intervals") or {}).get("level")
    if level:
        console.print(f"[dim]brackets: {100 * level:.0f}% bootstrap interval over "
                      f"{model['metrics']['episodes']} episodes; + : no incident, a lower bound[/]")
    for warning in record["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")
