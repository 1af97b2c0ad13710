"""`charles bench broadcast`: trainer publish -> N players notified, weights fetched,
verified and built; p50/p99 latency and bytes, and the pause inside a player when it swaps.

Players are N processes on one throwaway redis-server, each running the real
`WeightsWatcher` (subscribe, fetch, sha256, safetensors, build the configured model). A
version counts as delivered to a player when its model is built; the clock starts before
`WeightsStore.publish` (which serialises the weights). The ceiling, same processes, same
Redis, same run: on a one-byte message each player GETs a blob of the same size, nothing
else. The figure is the p99 for the largest N; every N is in `details.players`.

The swap pause is timed in one real `Player` on the simulator: an Unstuck with a version
prepared in the background, from taking it to its first prediction (on a GPU that first
call captures the new model's CUDA graph).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bench import result
from pipeline.config import Config, load_config
from pipeline.wire.keys import Keys
from pipeline.wire.local_redis import RedisServer

PLAYER_COUNTS = (1, 4, 16)
_RAW_BLOB = "bench-raw-blob"


def _real_keys(n: int) -> Keys:
    return Keys(f"bench-bc{n}:")


def _raw_channel(n: int) -> str:
    return f"bench-raw{n}"


def _player(url: str, index: int, counts: tuple[int, ...], cfg_json: str, device: str, out: Any, ready: Any,
            stop: Any) -> None:
    """One player process: a real watcher and a raw subscriber for every N it belongs to."""
    import torch

    from pipeline.log import configure_logging
    from pipeline.models.loading import build_model_from
    from pipeline.play.player import WeightsWatcher
    from pipeline.wire.redis_conn import connect

    configure_logging("bench-player", level="WARNING")  # 16 processes x every version: no info lines
    torch.set_num_threads(1)
    cfg = Config.from_json(cfg_json)
    halt = threading.Event()

    def build(tensors: dict[str, torch.Tensor]) -> torch.nn.Module:
        return build_model_from(cfg, tensors, device)

    class TimedWatcher(WeightsWatcher):
        def prepare_latest(self) -> bool:
            prepared = super().prepare_latest()
            if prepared:
                out.put(("real", self.n, index, self.pending_version, time.monotonic()))
                self.take()  # as the player's swap does: the next version is newer again
            return prepared

    def raw(n: int) -> None:
        r = connect(url)
        pubsub = r.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(_raw_channel(n))
        while not halt.is_set():
            msg = pubsub.get_message(timeout=0.5)
            if msg is not None:
                r.get(_RAW_BLOB)
                out.put(("raw", n, index, int(msg["data"]), time.monotonic()))

    for n in counts:
        if index < n:
            watcher = TimedWatcher(connect(url), _real_keys(n), build, cfg.run.name, "latest", halt)
            watcher.n = n  # type: ignore[attr-defined]
            watcher.start()
            threading.Thread(target=raw, args=(n,), daemon=True).start()
    from pipeline.models import build_model

    # a player drives before any new version: its device and allocator are warm
    build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width)).to(device)
    time.sleep(1.0)  # subscriptions in place
    ready.wait()
    stop.wait()
    halt.set()


def _collect(out: Any, kind: str, n: int, version: int, since: float) -> list[float]:
    """Seconds from `since` until each of the n players reported `version`."""
    got: list[float] = []
    deadline = time.monotonic() + 120
    while len(got) < n:
        try:
            k, nn, _, v, at = out.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise RuntimeError(f"broadcast: {n - len(got)} of {n} players never got version {version} ({kind})") from None
        if (k, nn, v) == (kind, n, version):
            got.append(at - since)
    return got


def _swap_pauses(cfg: Config, device: str, swaps: int, r: Any, state: dict[str, Any]) -> list[float]:
    """ms of the pause a swap adds to a real Player's Unstuck (take, reset, first prediction)."""
    from pipeline.collect.context import ContextBuilder
    from pipeline.games.base import Environment, load_game
    from pipeline.games.options import game_options
    from pipeline.models import build_model, predict
    from pipeline.models.loading import build_model_from
    from pipeline.play.player import Player, WeightsWatcher
    from pipeline.play.unstuck import StuckDetector
    from pipeline.wire.schema import ContextSpec
    from pipeline.wire.weights import WeightsStore

    keys, stop = Keys("bench-swap:"), threading.Event()
    watcher = WeightsWatcher(r, keys, lambda t: build_model_from(cfg, t, device), cfg.run.name, "latest", stop)
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    game = load_game(cfg.game.backend, **game_options(cfg, realtime=False))
    u = cfg.unstuck
    player = Player(game, model.eval().to(device), ContextBuilder(ContextSpec.from_inputs(cfg.inputs, cfg.game.fps)),
                    StuckDetector(u.min_displacement_m, u.window_s, u.grace_s), predict, watcher, realtime=False)
    try:
        player.run(Environment(map_seed=cfg.collection.held_out_seeds[0]), stop, max_steps=5)
        pauses = []
        for i in range(swaps):
            WeightsStore(r, keys).publish(state, cfg.run.name, batches=i)
            watcher.prepare_latest()  # what the watcher thread does on the notification
            player.unstuck("bench")  # its first prediction reads the result back: the GPU is done
            pauses.append(player.stats.swap_pause_ms)
        return pauses
    finally:
        game.close()


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values) * 1000, q)), 2)


def run(config_path: str | None = None, device: str | None = None, players: tuple[int, ...] = PLAYER_COUNTS,
        versions: int = 8, swaps: int = 10, **_: Any) -> dict[str, Any]:
    from pipeline.models import build_model
    from pipeline.models.loading import pick_device
    from pipeline.wire.redis_conn import connect
    from pipeline.wire.weights import WeightsStore, to_blob

    cfg = load_config(config_path)
    dev = str(pick_device(device or cfg.player.device, fall_back=True))
    hw = (cfg.game.hood_height, cfg.game.hood_width)
    state = {k: v.detach().cpu() for k, v in build_model(cfg.model, cfg.inputs, cfg.outputs, hw).state_dict().items()}
    blob_bytes = len(to_blob(state, {"model": cfg.run.name, "batches": "0"}))
    by_count: dict[str, Any] = {}
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=False)
        server.start()
        r = connect(server.url)
        r.set(_RAW_BLOB, b"\0" * blob_bytes)
        most = max(players)
        out, ready, stop = ctx.Queue(), ctx.Barrier(most + 1), ctx.Event()
        procs = [ctx.Process(target=_player, args=(server.url, i, players, cfg.to_json(), dev, out, ready, stop), daemon=True)
                 for i in range(most)]
        try:
            for p in procs:
                p.start()
            ready.wait(timeout=300)
            for n in players:
                store = WeightsStore(r, _real_keys(n))
                real, raw, sent = [], [], []
                for v in range(1, versions + 1):
                    before = int(r.info("stats")["total_net_output_bytes"])
                    start = time.monotonic()
                    info = store.publish(state, cfg.run.name, batches=v)
                    real += _collect(out, "real", n, info.version, start)
                    sent.append(int(r.info("stats")["total_net_output_bytes"]) - before)
                    start = time.monotonic()
                    r.publish(_raw_channel(n), str(v))
                    raw += _collect(out, "raw", n, v, start)
                by_count[str(n)] = {"p50_ms": _pct(real, 50), "p99_ms": _pct(real, 99), "raw_p50_ms": _pct(raw, 50),
                                   "raw_p99_ms": _pct(raw, 99), "bytes_sent_per_version": int(np.median(sent))}
            stop.set()  # the player processes go; the swap is timed alone
            pauses = _swap_pauses(cfg, dev, swaps, r, state)
        finally:
            stop.set()
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
            server.stop()
    top = by_count[str(most)]
    return result(
        "broadcast", top["p99_ms"], f"ms p99 publish -> model ready ({most} players)", top["raw_p99_ms"],
        {"config": str(config_path or "configs/default.toml"), "device": dev, "blob_bytes": blob_bytes,
         "versions_per_n": versions, "players": by_count,
         "swap_pause_ms": {"p50": round(float(np.percentile(pauses, 50)), 2),
                           "p99": round(float(np.percentile(pauses, 99)), 2), "first": round(pauses[0], 2)}},
        lower_is_better=True,
    )
