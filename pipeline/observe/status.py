"""One snapshot of the whole system, read from Redis: what `charles status` and the consoles show."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from pipeline.wire.keys import Counter, Keys
from pipeline.wire.presence import read_statuses


def _num(value: str | None, default: float = 0.0) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except ValueError:
        return default


def _json(value: str | None) -> Any:
    try:
        return json.loads(value) if value else None
    except ValueError:
        return None


def _controls(value: Any) -> dict[str, float | list[float]]:
    """A player's predictions or controller values as {name: number or list of numbers};
    anything else a player wrote there (it is untrusted) becomes {}."""
    if not isinstance(value, dict):
        return {}

    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    ok = all(isinstance(k, str) and (number(v) or (isinstance(v, list) and all(number(x) for x in v)))
             for k, v in value.items())
    return value if ok else {}


#: trainer status fields the snapshot passes on as numbers, when the trainer reports them
REPLAY_FIELDS: tuple[str, ...] = (
    "draws_per_insert", "draws_per_insert_total", "evicted", "wait_filling_s", "wait_limited_s", "compute_share",
    "data_age_p50_s", "data_age_p95_s", "policy_lag_p50", "policy_lag_p95", "model_driven_share",
    "frame_to_version_s", "bad_rows",
)


def snapshot(r: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Buffers, trainer, weights, players, collectors, dead letters and evaluation, as plain JSON."""
    from pipeline.wire.config_store import fetch_config

    fetched = fetch_config(r, keys)
    cfg = fetched[0] if fetched else None
    outputs = cfg.output_names() if cfg else []
    capacity = cfg.buffers.capacity if cfg else 0
    shards = keys.shards(cfg.buffers.shards if cfg else 1)
    pipe = r.pipeline(transaction=False)
    for shard in shards:
        for name in outputs:
            pipe.scard(shard.buffer(name))
    per_shard = pipe.execute() if outputs else []
    fills = [sum(int(n) for n in per_shard[i :: len(outputs)]) for i in range(len(outputs))]
    counters: dict[str, int] = {}
    for shard in shards:  # every shard counts what its routing script did
        for k, v in r.hgetall(shard.counters).items():
            counters[k.decode()] = counters.get(k.decode(), 0) + int(v)
    buffers = {
        name: {
            "fill": int(fill),
            "capacity": capacity,
            "fraction": round(int(fill) / capacity, 4) if capacity else 0.0,
            "sets_routed": counters.get(Counter.sets_routed(name), 0),
            "samples_routed": counters.get(Counter.samples_routed(name), 0),
            "sets_dropped": counters.get(Counter.sets_dropped(name), 0),
            "start_fraction": cfg.buffers.start_fraction if cfg else 0.9,
            "samples_per_insert": cfg.buffers.samples_per_insert if cfg else 1.0,
        }
        for name, fill in zip(outputs, fills, strict=True)
    }
    trainers = read_statuses(r, keys, "trainer")
    trainer: dict[str, Any] = {"state": "absent", "batches": 0, "samples_per_s": 0.0}
    if trainers:
        t = max(trainers, key=lambda s: _num(s.get("batches")))
        trainer = {
            "state": t.get("state", "?"),
            "batches": int(_num(t.get("batches"))),
            "samples_per_s": _num(t.get("samples_per_s")),
            "batches_per_s": _num(t.get("batches_per_s")),
            "loss": _num(t.get("loss"), float("nan")) if t.get("loss") else None,
            "version": int(_num(t.get("version"))),
            "device": t.get("device", ""),
            "learning_rate": _num(t.get("learning_rate")),
            "count": len(trainers),
            "shards": _json(t.get("shards")) or [],  # per shard: fill, gate, replay tokens
            # the replay limit and what is trained on (pipeline/serve/replay.py, pipeline/train/live.py)
            **{name: _num(t.get(name)) for name in REPLAY_FIELDS if t.get(name) not in (None, "")},
        }
    raw_w = r.hmget(keys.weights_latest, ["version", "created", "batches", "model", "sha256"])
    weights = {
        "version": int(raw_w[0]) if raw_w[0] else 0,
        "created": float(raw_w[1]) if raw_w[1] else None,
        "batches": int(raw_w[2]) if raw_w[2] else 0,
        "model": raw_w[3].decode() if raw_w[3] else None,
        "sha256": raw_w[4].decode() if raw_w[4] else None,
    }
    players = [
        {
            "id": p.get("id"),
            "model_version": int(_num(p.get("model_version"))),
            "pending_version": int(_num(p.get("pending_version"))),
            "swaps": int(_num(p.get("swaps"))),
            "swap_pause_ms": _num(p.get("swap_pause_ms")),
            "unstucks": int(_num(p.get("unstucks"))),
            "pps": _num(p.get("pps")),
            "fps": _num(p.get("fps")),
            "steps": int(_num(p.get("steps"))),
            "raw": _controls(_json(p.get("raw"))),
            "translated": _controls(_json(p.get("translated"))),
            "applied": _controls(_json(p.get("applied"))),
            "model": p.get("model"),
            "device": p.get("device"),
            "model_created": _num(p.get("model_created")) or None,
            "heartbeat_age_s": round(time.time() - _num(p.get("heartbeat")), 2),
        }
        for p in read_statuses(r, keys, "player")
    ]
    collectors = [
        {
            "id": c.get("id"),
            "state": c.get("state", "?"),
            "episodes": int(_num(c.get("episodes"))),
            "samples": int(_num(c.get("samples"))),
            "backlog": int(_num(c.get("backlog"))),
            "model_ticks": int(_num(c.get("model_ticks"))),  # DAgger: ticks the model drove
            "model_version": int(_num(c.get("model_version"))),
            "nice": int(_num(c.get("nice"))),  # its CPU priority: 19 once it yields to the trainer
            "heartbeat_age_s": round(time.time() - _num(c.get("heartbeat")), 2),
        }
        for c in read_statuses(r, keys, "collector")
    ]
    servers = [
        {"id": s.get("id"), "heartbeat_age_s": round(time.time() - _num(s.get("heartbeat")), 2)}
        for s in read_statuses(r, keys, "server")
    ]
    evaluation = {k.decode(): _json(v.decode()) for k, v in r.hgetall(keys.evaluation).items()}
    best = r.hget(keys.weights_best, "version")
    memory = _memory(r)
    return {
        "run": cfg.run.name if cfg else None,
        "config_version": fetched[1] if fetched else 0,
        "buffers": buffers,
        "trainer": trainer,
        "weights": weights,
        "players": players,
        "collectors": collectors,
        "servers": servers,
        "deadletter": sum(int(r.xlen(shard.deadletter)) for shard in shards),
        "queue": {"collect": sum(int(r.llen(keys.jobs(c["id"]))) for c in collectors if c.get("id"))},
        "evaluation": {"versions": evaluation, "best": int(best) if best else None},
        "redis": memory,
    }


def _memory(r: redis.Redis) -> dict[str, int]:
    """Used and maximum memory, summed over a cluster's nodes (its INFO answers per node)."""
    info = r.info("memory")
    nodes = list(info.values()) if info and all(isinstance(v, dict) for v in info.values()) else [info]
    return {name: sum(int(node.get(name, 0)) for node in nodes) for name in ("used_memory", "maxmemory")}
