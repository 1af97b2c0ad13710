"""`charles evaluate --weights FILE`: score one safetensors file closed-loop, no Redis needed.

Same plan, durations and Unstuck rules as the evaluator worker; the NPC's and the
baseline's scores are cached under `var/evaluation/` (they do not depend on the weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from workers.options import config_option, user_errors


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

    from pipeline.evaluate.report import (
        episodes_to_drive,
        evaluate_file,
        load_for_evaluation,
        print_report,
    )

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))

    with user_errors():
        cfg, settings, model, meta = load_for_evaluation(weights_file, config_path, episodes, seconds, processes, sha256)
    total = episodes_to_drive(settings, cfg, use_cache=not no_cache)
    structlog.get_logger("evaluate").info("evaluation_starting", episodes=total, processes=settings.processes,
                                          episode_s=settings.episode_s)
    with progress_bar("evaluating", total=total, unit="episodes", show=show_bar, log_event="evaluation_progress") as bar:
        record = evaluate_file(weights_file, config_path, cfg, settings, model, meta, use_cache=not no_cache,
                               on_episode=lambda name, _trace: (bar.update(description=f"evaluating: {name}"),
                                                                bar.advance()))
    if as_json:
        click.echo(json.dumps(record))
    else:
        print_report(record)
