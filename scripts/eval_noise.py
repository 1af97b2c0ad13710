#!/usr/bin/env python
"""How many evaluation episodes tell two versions apart? Measure episode time and interval width.

    python scripts/eval_noise.py --episodes 16 --processes 14 --noise 0 0.15 0.3 --out var/eval_noise.json

Drives the NPC, and the model of `--weights` with each `--noise` level (Gaussian noise of
that many standard deviations added to every weight tensor: a family of worse drivers of
known order), on the evaluator's plan with `--episodes` per environment, in parallel
(`EpisodePool`). Then, for each number k of episodes per environment (the first k of
each), prints every driver's ratio_to_npc with its bootstrap interval and the interval's
width, and the wall time per episode: the numbers behind `[evaluator]
episodes_per_environment` and `processes` in configs/default.toml and configs/h100.toml.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click


def _noisy(tensors: dict, sigma: float, seed: int) -> dict:
    import torch

    if sigma <= 0:
        return tensors
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in tensors.items():
        if t.is_floating_point() and t.dim() >= 2:  # conv and linear weights, not BatchNorm statistics
            t = t + sigma * t.std() * torch.randn(t.shape, generator=g, dtype=t.dtype)
        out[name] = t
    return out


@click.command()
@click.option("--weights", type=click.Path(exists=True, path_type=Path), default=Path("models/charles_small_cnn.safetensors"))
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None)
@click.option("--episodes", type=int, default=8, show_default=True, help="episodes per environment")
@click.option("--seconds", type=float, default=None, help="game seconds per episode (default: the config's)")
@click.option("--processes", type=int, default=2, show_default=True)
@click.option("--noise", type=float, multiple=True, default=(0.0,), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="JSON with every episode's counts")
def cli(weights: Path, config_path: Path | None, episodes: int, seconds: float | None, processes: int,
        noise: tuple[float, ...], out: Path | None) -> None:
    from pipeline.config import load_config
    from pipeline.evaluate.closed_loop import NPC, EvalSettings, model_policy, summarize
    from pipeline.evaluate.confidence import score_intervals
    from pipeline.evaluate.pool import EpisodePool
    from pipeline.log import configure_logging
    from pipeline.models.loading import build_model_from, read_weights_file
    from pipeline.wire.weights import to_blob

    configure_logging("eval_noise", level="WARNING")
    cfg = load_config(config_path)
    settings = EvalSettings.from_config(cfg, episodes=episodes, seconds=seconds)
    tensors, _ = read_weights_file(weights)
    pool = EpisodePool(cfg.to_json(), processes, episodes, seconds)
    drivers: dict[str, dict] = {}
    try:
        start = time.monotonic()
        pool.run(NPC, settings.plan()[:processes])  # warm-up: children started, worlds built
        warm = time.monotonic() - start
        plan = settings.plan()
        runs = [("npc", NPC)]
        for sigma in noise:
            t = _noisy(tensors, sigma, seed=7)
            runs.append((f"model+{sigma:g}", model_policy(build_model_from(cfg, t), to_blob(t))))
        for name, policy in runs:
            start = time.monotonic()
            drivers[name] = summarize(pool.run(policy, plan))
            drivers[name]["wall_s"] = time.monotonic() - start
    finally:
        pool.close()
    n_env = len(settings.environments)
    report = {"episodes_per_environment": episodes, "episode_s": settings.episode_s, "processes": processes,
              "warmup_s": round(warm, 1), "drivers": {}}
    for name, summary in drivers.items():
        per_episode = summary["wall_s"] * processes / len(plan)
        rows = []
        for k in sorted({1, 2, 3, 4, 6, 8, 12, 16, episodes} & set(range(1, episodes + 1))):
            pick = [summary["episodes"][i * episodes + j] for i in range(n_env) for j in range(k)]
            npc = [drivers["npc"]["episodes"][i * episodes + j] for i in range(n_env) for j in range(k)]
            ci = score_intervals(pick, npc, settings.confidence, settings.bootstrap_resamples)
            mdbi = sum(e["distance_m"] for e in pick) / (sum(e["incidents"] for e in pick) + len(pick))
            ref = sum(e["distance_m"] for e in npc) / (sum(e["incidents"] for e in npc) + len(npc))
            lo_hi = None if ci is None else ci["ratio_to_npc"]
            rows.append({"k": k, "episodes": len(pick), "ratio_to_npc": round(mdbi / ref, 3),
                         "interval": None if lo_hi is None else [round(v, 3) for v in lo_hi],
                         "width": None if lo_hi is None else round(lo_hi[1] - lo_hi[0], 3),
                         "incidents": sum(e["incidents"] for e in pick)})
        report["drivers"][name] = {"wall_s": round(summary["wall_s"], 1),
                                   "wall_s_per_episode_per_process": round(per_episode, 2), "by_k": rows}
    click.echo(json.dumps(report, indent=1))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"report": report, "drivers": drivers}, indent=1))


if __name__ == "__main__":
    cli()
