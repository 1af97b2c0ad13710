#!/usr/bin/env python
"""Train the shipped default model offline: NPC episodes -> shards -> Learner -> evaluated snapshots.

Why offline: on a 2-core machine the live pipeline's balancing keeps a few hundred of the
~1350 frames of a 45 s episode, so data, not training, limits how good a model gets in an
hour. Here the same `EpisodeRunner` (the NPC drives, `ContextBuilder` labels every
`--sample-every`-th tick, training seeds only) keeps every candidate frame, the steering
imbalance is handled at training time by sampling rarer steering values more often, and
`Learner` (the live trainer's step) trains the default config's model. Snapshots are
scored closed-loop on the held-out seeds by `pipeline.evaluate.closed_loop` while training goes on,
and the best one is written as safetensors with a JSON record for the card.

    python scripts/train_default.py collect --episodes 120 --workers 2
    python scripts/train_default.py train --minutes 60 --device cpu
    # or both, sized by time (the GPU run): all --collect-minutes 4 --minutes 3 --device cuda

DAgger (`all --dagger-rounds N`, or `collect --weights`): behaviour cloning errs in states
the NPC never visits, and errors compound. So the trained model drives a share of the
ticks (switching with the NPC every few seconds), the simulator labels every tick with the
NPC's command there (`expert_labels`), the shards join the first data and training goes on.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import queue
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from pipeline.collect.dagger import MixedDriver

ROOT = Path(__file__).resolve().parent.parent
FIELDS = ("frames", "speed", "purpose", "controls", "targets", "history")
#: seconds a deadline leaves after training: the last snapshot's score (4 episodes of 60 s)
SCORE_TAIL_S = 60.0


class KeepAll:
    """A 'balancer' that keeps every candidate, in chunks (balancing happens at training time)."""

    def __init__(self, chunk: int = 256) -> None:
        self.rows: list[dict[str, np.ndarray]] = []
        self.chunk = chunk

    def add(self, row: dict[str, np.ndarray]) -> list[tuple[str, list[dict[str, np.ndarray]]]]:
        self.rows.append(row)
        if len(self.rows) < self.chunk:
            return []
        rows, self.rows = self.rows, []
        return [("all", rows)]

    def flush(self) -> list[tuple[str, list[dict[str, np.ndarray]]]]:
        rows, self.rows = self.rows, []
        return [("all", rows)] if rows else []


@dataclass(frozen=True)
class CollectJob:
    """One collection process's share; with `weights`, a DAgger collection (see `MixedDriver`)."""

    config: str
    out_dir: str
    worker: int
    episodes: int
    sample_every: int
    episode_s: float
    deadline: float
    weights: str | None = None
    beta: float = 1.0
    segment_s: float = 3.0


def _collect_worker(job: CollectJob) -> dict[str, int]:
    """One process: episodes with environments the server would choose; one .npz shard each."""
    from pipeline.collect.episode import EpisodeRunner
    from pipeline.config import load_config
    from pipeline.games.base import capabilities_of, load_game
    from pipeline.games.options import game_options
    from pipeline.serve.server import sample_environment
    from pipeline.wire.schema import ContextSpec

    cfg = load_config(job.config)
    rng = random.Random(1000 + job.worker)
    options = game_options(cfg, realtime=False)
    driver = None
    if job.weights is not None:  # DAgger: the model drives on this process's one CPU core
        from pipeline.collect.dagger import build_cpu_model
        from pipeline.models.loading import read_weights_file

        options["expert_labels"] = True
        model = build_cpu_model(cfg, read_weights_file(job.weights)[0])
        driver = MixedDriver(model, job.beta, job.segment_s, rng)
    game = load_game(cfg.game.backend, **options)
    sets: list[Any] = []
    runner = EpisodeRunner(game, ContextSpec.from_inputs(cfg.inputs, cfg.game.fps), KeepAll, sets.append,
                           f"offline-{job.worker}", job.sample_every)
    done = ticks = model_ticks = 0
    while done < job.episodes and time.time() < job.deadline:
        env = sample_environment(cfg.collection, rng, capabilities_of(cfg.game.backend))
        assert env.map_seed not in cfg.collection.held_out_seeds
        sets.clear()
        summary = runner.run(env, job.episode_s, f"w{job.worker}e{done}", drive=driver)
        ticks, model_ticks = ticks + summary.ticks, model_ticks + summary.model_ticks
        samples = [sample for s in sets for sample in s.samples]
        cols = {f: np.stack([np.asarray(x[f]) for x in samples]) for f in FIELDS} if samples else None
        if cols is not None:
            name = Path(job.out_dir) / f"shard-w{job.worker:02d}-{done:04d}-seed{env.map_seed}.npz"
            np.savez(name.with_suffix(".tmp.npz"), **cols)
            name.with_suffix(".tmp.npz").rename(name)
        done += 1
    game.close()
    return {"episodes": done, "ticks": ticks, "model_ticks": model_ticks}


def collect(config: str, data: Path, episodes: int, workers: int, sample_every: int, episode_s: float,
            minutes: float | None, weights: Path | None = None, beta: float = 1.0,
            segment_s: float = 3.0) -> None:
    """Episodes in worker processes; with `weights` that model drives a share of them (DAgger)."""
    data.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + (minutes * 60 if minutes else 10**9)
    per = [episodes // workers + (1 if w < episodes % workers else 0) for w in range(workers)]
    start, first = time.time(), _next_worker(data)
    jobs = [CollectJob(config, str(data), first + w, per[w], sample_every, episode_s, deadline,
                       None if weights is None else str(weights), beta, segment_s)
            for w in range(workers)]
    with mp.get_context("spawn").Pool(workers) as pool:
        done = pool.map(_collect_worker, jobs)
    total = {k: sum(d[k] for d in done) for k in ("episodes", "ticks", "model_ticks")}
    click.echo(json.dumps({"collected_episodes": total["episodes"], "wall_s": round(time.time() - start, 1),
                           "shards": len(list(data.glob("shard-*.npz"))), "dagger": weights is not None,
                           "model_share": round(total["model_ticks"] / max(total["ticks"], 1), 3)}))


def _next_worker(data: Path) -> int:
    """Worker numbers continue after the shards already there, so collections add up."""
    ids = [int(p.name.split("-")[1][1:]) for p in data.glob("shard-w*.npz")]
    return max(ids, default=-1) + 1


def load_shards(data: Path, max_samples: int | None) -> dict[str, np.ndarray]:
    paths = sorted(data.glob("shard-*.npz"))
    if not paths:
        raise click.ClickException(f"no shards in {data}; run `collect` first")
    parts: dict[str, list[np.ndarray]] = {f: [] for f in FIELDS}
    n = 0
    for p in paths:
        with np.load(p, allow_pickle=False) as z:
            for f in FIELDS:
                parts[f].append(z[f])
            n += len(z["speed"])
        if max_samples and n >= max_samples:
            break
    return {f: np.concatenate(v)[:max_samples] for f, v in parts.items()}


def sampling_weights(cols: dict[str, np.ndarray], bins: int = 21, keep_standing: bool = False,
                     start_boost: float = 3.0) -> np.ndarray:
    """Which samples training sees how often.

    - ~ 1/sqrt(frequency of the steering bin): rarer turns are seen more often;
    - standing still with the NPC not pushing (waiting in traffic) weight 0 unless
      `keep_standing`: with speed as an input they teach "standing -> stay standing", and a
      model that learned it never sets off again after an Unstuck (the copycat problem);
    - setting off (slow, throttle up) `start_boost` times more often, for the same reason.
    """
    targets, speed = cols["targets"], np.abs(cols["speed"])
    idx = np.clip(((targets[:, 1] + 1) / 2 * bins).astype(int), 0, bins - 1)
    counts = np.bincount(idx, minlength=bins).astype(np.float64)
    w = 1.0 / np.sqrt(counts[idx])
    if not keep_standing:
        w[(speed < 0.5) & (targets[:, 0] <= 0.05)] = 0.0
    w[(speed < 3.0) & (targets[:, 0] > 0.2)] *= start_boost
    return w / w.sum()


def _score_snapshot(args: tuple[str, str, int, int, float]) -> dict[str, Any]:
    """Closed-loop score of one snapshot (a separate process: it drives while training goes on)."""
    config_path, weights, batches, episodes, seconds = args
    import torch

    torch.set_num_threads(1)
    from pipeline.config import load_config
    from pipeline.evaluate.closed_loop import (
        EvalSettings,
        Evaluator,
        file_cached_references,
        model_policy,
        score_policy,
    )
    from pipeline.games.base import load_game
    from pipeline.games.options import game_options
    from pipeline.log import configure_logging
    from pipeline.models.loading import build_model_from, read_weights_file

    configure_logging("train_default", level="WARNING")
    cfg = load_config(config_path)
    ev = Evaluator(load_game(cfg.game.backend, **game_options(cfg, realtime=False)),
                   EvalSettings.from_config(cfg, episodes=episodes, seconds=seconds))
    refs = file_cached_references(ev, cfg, ROOT / "var" / "evaluation")
    scores = score_policy(ev, model_policy(build_model_from(cfg, read_weights_file(weights)[0])), refs)
    return {"weights": weights, "batches": batches, **scores}


def train(config: str, data: Path, out: Path, device: str, minutes: float, batch_size: int | None,
          lr: float | None, snapshot_every: int, eval_workers: int, eval_episodes: int, eval_seconds: float,
          max_samples: int | None, keep_standing: bool = False, start_boost: float = 3.0,
          previous: dict[str, Any] | None = None, deadline: float | None = None) -> dict[str, Any]:
    """Train for `minutes`, keep the best-scored snapshot at `out`; returns the record.

    `previous`: the record of the round before (DAgger): training continues from its model
    (at `out`), and its best snapshot stays the choice unless a new one scores higher.
    `deadline` (time.time()): train less so that the last snapshot is scored by then.
    """
    from safetensors.torch import save_file

    from pipeline.config import load_config
    from pipeline.models import build_model
    from pipeline.models.loading import build_model_from, read_weights_file
    from pipeline.train.learner import Learner

    cfg = load_config(config)
    cols = load_shards(data, max_samples)
    n = len(cols["speed"])
    weights = sampling_weights(cols, keep_standing=keep_standing, start_boost=start_boost)
    bs = batch_size or cfg.trainer.batch_size
    base_lr = lr or cfg.trainer.learning_rate
    round_ = 0 if previous is None else previous["round"] + 1
    if previous is None:
        model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    else:
        model = build_model_from(cfg, read_weights_file(out)[0]).train()
    learner = Learner(model, base_lr, cfg.trainer.weight_decay, device, cfg.trainer.amp)
    snaps = out.parent / f"{out.stem}.snapshots"
    snaps.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pool = mp.get_context("spawn").Pool(eval_workers) if eval_workers else None
    pending: list[Any] = []
    start, budget = time.time(), minutes * 60
    if deadline is not None:
        budget = max(min(budget, deadline - start - SCORE_TAIL_S), 10.0)
    losses: list[float] = []
    click.echo(json.dumps({"samples": n, "sampled": int((weights > 0).sum()), "batch_size": bs,
                           "device": str(learner.device), "lr": base_lr}))

    def snapshot() -> None:
        path = snaps / f"r{round_}-b{learner.batches:06d}.safetensors"
        save_file(learner.weights(), str(path), {"model": cfg.run.name, "batches": str(learner.batches)})
        if pool is not None:
            pending.append(pool.apply_async(_score_snapshot, ((config, str(path), learner.batches,
                                                               eval_episodes, eval_seconds),)))

    batches: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=4)
    done = threading.Event()

    def draw() -> None:  # gather + copy to the device ahead of the step (the GPU run needs it)
        while not done.is_set():
            idx = rng.choice(n, size=bs, p=weights)
            batch = learner.prepare({f: cols[f][idx] for f in FIELDS})
            while not done.is_set():
                try:
                    batches.put(batch, timeout=0.5)
                    break
                except queue.Full:
                    continue

    threading.Thread(target=draw, daemon=True).start()
    while time.time() - start < budget:
        frac = (time.time() - start) / budget
        for group in learner.optimizer.param_groups:  # cosine decay to 5% over the time budget
            group["lr"] = base_lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * frac)))
        metrics = learner.step_tensors(batches.get(), with_metrics=learner.batches % 20 == 19)
        if metrics:
            losses.append(metrics["loss"])
        if learner.batches % 100 == 0:
            click.echo(json.dumps({"batches": learner.batches, "loss": round(float(np.mean(losses[-5:])), 5) if losses else None,
                                   "lr": round(learner.learning_rate, 6), "elapsed_s": round(time.time() - start)}))
        if learner.batches % snapshot_every == 0:
            snapshot()
    done.set()
    snapshot()
    results = [p.get() for p in pending]
    if pool is not None:
        pool.close()
    candidates = results + ([previous["scores"]] if previous and previous["scores"] else [])
    best = max(candidates, key=lambda s: s["ratio_to_npc"] or -1.0) if candidates else None
    chosen = Path(best["weights"]) if best else snaps / f"r{round_}-b{learner.batches:06d}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(chosen.read_bytes())
    record = {"config": str(config), "round": round_, "samples": n, "sampled": int((weights > 0).sum()),
              "keep_standing": keep_standing, "start_boost": start_boost, "batch_size": bs, "batches": learner.batches,
              "train_minutes": round(budget / 60, 2), "device": str(learner.device), "chosen": chosen.name,
              "final_loss": float(np.mean(losses[-10:])) if losses else None,
              "candidates": [{"batches": s["batches"], "ratio_to_npc": s["ratio_to_npc"],
                              "incidents_per_km": s["metrics"]["incidents_per_km"]} for s in results],
              "scores": best, "previous": previous}
    out.with_suffix(".train.json").write_text(json.dumps(record, indent=1))
    click.echo(json.dumps({k: record[k] for k in ("round", "batches", "chosen", "candidates")}))
    return record


@click.group()
def cli() -> None:
    """Offline training of the shipped default model."""


_config = click.option("--config", default=str(ROOT / "configs" / "default.toml"), show_default=True)
_data = click.option("--data", type=click.Path(path_type=Path), default=ROOT / "var" / "offline",
                     show_default=True, help="folder of .npz shards")


_dagger_beta = click.option("--dagger-beta", type=float, default=0.5, show_default=True,
                            help="DAgger: share of segments the NPC drives, the rest the model")
_dagger_segment = click.option("--dagger-segment-s", type=float, default=3.0, show_default=True,
                               help="DAgger: game seconds between driver switches")


@cli.command(name="collect")
@_config
@_data
@click.option("--episodes", type=int, default=100)
@click.option("--workers", type=int, default=2)
@click.option("--sample-every", type=int, default=2, help="keep every k-th tick (30 fps / k samples per second)")
@click.option("--episode-s", type=float, default=45.0)
@click.option("--minutes", type=float, default=None, help="stop starting episodes after this long")
@click.option("--weights", type=click.Path(path_type=Path, exists=True), default=None,
              help="DAgger: this model drives a share of the ticks, the NPC labels them all")
@_dagger_beta
@_dagger_segment
def collect_cmd(config: str, data: Path, episodes: int, workers: int, sample_every: int, episode_s: float,
                minutes: float | None, weights: Path | None, dagger_beta: float, dagger_segment_s: float) -> None:
    """Episodes on training seeds -> .npz shards; the NPC drives, or with --weights shares it."""
    collect(config, data, episodes, workers, sample_every, episode_s, minutes, weights, dagger_beta,
            dagger_segment_s)


_train_opts = [
    click.option("--out", type=click.Path(path_type=Path), default=ROOT / "models" / "charles_small_cnn.safetensors"),
    click.option("--device", default="auto"),
    click.option("--minutes", type=float, default=60.0, help="training time budget"),
    click.option("--batch-size", type=int, default=None),
    click.option("--lr", type=float, default=None),
    click.option("--snapshot-every", type=int, default=1000),
    click.option("--eval-workers", type=int, default=1, help="processes scoring snapshots meanwhile"),
    click.option("--eval-episodes", type=int, default=1, help="episodes per environment per snapshot"),
    click.option("--eval-seconds", type=float, default=60.0),
    click.option("--max-samples", type=int, default=None),
    click.option("--keep-standing", is_flag=True, help="also train on standing-still, not-pushing samples"),
    click.option("--start-boost", type=float, default=3.0, help="how much more often setting-off samples are seen"),
]


def _with(opts: list[Any]) -> Any:
    def deco(f: Any) -> Any:
        for opt in reversed(opts):
            f = opt(f)
        return f

    return deco


@cli.command(name="train")
@_config
@_data
@_with(_train_opts)
def train_cmd(config: str, data: Path, **kw: Any) -> None:
    """Train on the shards for a time budget; score snapshots; keep the best."""
    train(config, data, **kw)


@cli.command(name="all")
@_config
@_data
@click.option("--workers", type=int, default=2)
@click.option("--collect-minutes", type=float, default=10.0)
@click.option("--sample-every", type=int, default=2)
@click.option("--dagger-rounds", type=int, default=0, show_default=True,
              help="after training: collect with the model driving, add to the data, train on")
@click.option("--dagger-minutes", type=float, default=1.5, show_default=True, help="collection per round")
@click.option("--dagger-train-minutes", type=float, default=None, help="training per round [--minutes]")
@_dagger_beta
@_dagger_segment
@click.option("--budget-s", type=float, default=None,
              help="wall-clock budget of the whole run: training is cut short to end within it")
@_with(_train_opts)
def all_cmd(config: str, data: Path, workers: int, collect_minutes: float, sample_every: int, dagger_rounds: int,
            dagger_minutes: float, dagger_train_minutes: float | None, dagger_beta: float, dagger_segment_s: float,
            budget_s: float | None, **kw: Any) -> None:
    """Collect for a time budget, then train for one; then DAgger rounds, if asked for."""
    deadline = None if budget_s is None else time.time() + budget_s
    collect(config, data, 10**6, workers, sample_every, 45.0, collect_minutes)
    record = train(config, data, **kw, deadline=deadline)
    for _ in range(dagger_rounds):
        collect(config, data, 10**6, workers, sample_every, 45.0, dagger_minutes, kw["out"], dagger_beta,
                dagger_segment_s)
        minutes = kw["minutes"] if dagger_train_minutes is None else dagger_train_minutes
        record = train(config, data, **{**kw, "minutes": minutes}, previous=record, deadline=deadline)


if __name__ == "__main__":
    cli()
