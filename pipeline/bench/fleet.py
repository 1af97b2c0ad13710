"""`charles bench fleet`: routed samples/s over 1, 2 and 3 shards of a local Redis Cluster, vs the raw ceiling.

It starts a 3-node Redis Cluster on loopback (`RedisClusterNodes`; shard i of k lands on
node i, `pipeline.wire.keys.shard_tag`) and for k = 1, 2, 3 pipeline shards measures, for
`seconds` after a second of warm-up, every stage a process of its own:
- value: `collectors` synthetic collectors per shard (no game: one round of simulator
  frames coded once with the config's `[buffers] frame_codec`, sent again and again under
  fresh set ids by the collectors' `SetPublisher`, at `rate` sets/s each, 0 = as fast as
  they can) and one server per shard (`Server(shards=[i])`) checking and routing every
  set into the shard's buffers (full: every insert evicts the oldest). Routed samples/s
  and bytes/s are the servers' counts. A collector waits while its stream holds more than
  `stream_maxlen` unread sets, so nothing is dropped: the figure is what is routed.
- ceiling: as many writer processes sending the same bytes (each row a SET, the manifest
  an XADD, pipelined, no MULTI, no server) to the same k nodes, as fast as they can.
`details.scaling` is routed samples/s at 3 shards over 1 shard: the cluster's gain when
every shard has a node and a server of its own (the issue's target: >= 2.5 on 16 cores).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.bench import result
from pipeline.config import Config, load_config
from pipeline.wire.keys import Keys

SHARD_COUNTS = (1, 2, 3)
WARMUP_S = 1.0
PREFIX = "bench-fleet:"


def _template(cfg: Config, index: int) -> Any:
    """One coded set of simulator frames for collector `index` (its own output and rows)."""
    import numpy as np

    from pipeline.bench.pipeline import _sets
    from pipeline.wire.frames import FrameCodec
    from pipeline.wire.manifest import CodedRows

    frames_path = os.environ["CHARLES_BENCH_FLEET_FRAMES"]
    base = np.load(frames_path)
    sample_set = _sets(cfg, index + 1, base)[index]
    coder = FrameCodec(cfg.buffers.frame_codec, cfg.buffers.frame_quality)
    return CodedRows(sample_set.output, f"fleet-{index}", sample_set.episode, sample_set.rows(coder))


def _worker(role: str, index: int, shards: int, url: str, cfg_json: str, rate: float, ready: Any, go: Any,
            start: Any, out: Any) -> None:
    """One process of a round: a collector, a server or a raw writer; puts its count in `out`."""
    from pipeline.wire.redis_conn import connect

    cfg = Config.from_json(cfg_json)
    r = connect(url)
    keys = Keys(PREFIX, cluster=True).shards(shards)[index % shards]
    if role == "server":
        from pipeline.serve.server import Server

        server = Server(r, Keys(PREFIX, cluster=True), cfg, consumer=f"fleet-{index}", shards=[index])
        server.setup()
        ready.put(role)
        go.wait()
        t0, t1 = start.value + WARMUP_S, start.value + WARMUP_S + _seconds()
        first = last = None
        trimmed = time.monotonic()
        while time.time() < t1 + 0.5:
            server.route_once(block_ms=50)
            now = time.time()
            if first is None and now >= t0:
                first = server.stats.routed_samples
            if last is None and now >= t1:
                last = server.stats.routed_samples
            if time.monotonic() - trimmed > 0.5:
                server.trim_streams()
                trimmed = time.monotonic()
        out.put((role, (last or 0) - (first or 0)))
        return
    coded = _template(cfg, index)
    ready.put(role)
    go.wait()
    t0, t1 = start.value + WARMUP_S, start.value + WARMUP_S + _seconds()
    counted = 0
    if role == "collector":
        from pipeline.collect.episode import SetPublisher

        publisher = SetPublisher(r, keys, cfg.buffers.stream_maxlen, max_backlog=10, incoming_ttl_s=120)
        stream = keys.stream(coded.output, coded.collector)
        next_at = time.time()
        while (now := time.time()) < t1:
            if rate > 0 and now < next_at:
                time.sleep(next_at - now)
                continue
            if r.xlen(stream) > cfg.buffers.stream_maxlen:  # the server is behind: wait, drop nothing
                time.sleep(0.002)
                continue
            publisher.publish(coded.again())
            next_at += 1.0 / rate if rate > 0 else 0.0
            counted += t0 <= time.time() < t1
    else:  # raw: the same bytes, SET + XADD pipelined, no transaction and no server
        from pipeline.wire.manifest import manifest, row_field

        entry = coded.entry()
        head = manifest(entry)
        n = 0
        while time.time() < t1:
            pipe = r.pipeline(transaction=False)
            for i in range(len(coded)):
                pipe.set(keys.incoming(coded.collector, f"raw-{index}-{n % 64}", i), entry[row_field(i)])
            pipe.xadd(keys.stream(coded.output, coded.collector), head, maxlen=cfg.buffers.stream_maxlen, approximate=True)
            pipe.execute()
            n += 1
            counted += t0 <= time.time() < t1
    out.put((role, counted))


def _seconds() -> float:
    return float(os.environ["CHARLES_BENCH_FLEET_SECONDS"])


def _round(roles: list[tuple[str, int]], shards: int, url: str, cfg: Config, rate: float) -> dict[str, int]:
    """Start the processes of one round, start them together, sum their counts by role."""
    ctx = mp.get_context("spawn")
    ready, out, go, start = ctx.Queue(), ctx.Queue(), ctx.Event(), ctx.Value("d", 0.0)
    procs = [ctx.Process(target=_worker, args=(role, index, shards, url, cfg.to_json(), rate, ready, go, start, out),
                         daemon=True) for role, index in roles]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=300)
    start.value = time.time()
    go.set()
    totals: dict[str, int] = {}
    for _ in procs:
        role, count = out.get(timeout=_seconds() + 120)
        totals[role] = totals.get(role, 0) + count
    for p in procs:
        p.join(timeout=30)
    return totals


def run(config_path: str | None = None, seconds: float = 10.0, collectors: int = 0, rate: float = 0.0,
        **_: Any) -> dict[str, Any]:
    """`collectors` per shard (0: by the cores, (cores - 6) // 3, at least 1), each at `rate` sets/s (0: flat out)."""
    import numpy as np

    from pipeline.bench.pipeline import SET_SIZE, _base_frames, _sets
    from pipeline.wire.frames import FrameCodec
    from pipeline.wire.local_redis import RedisClusterNodes

    cfg = load_config(config_path)
    per_shard = collectors or max(1, ((os.cpu_count() or 2) - 6) // 3)
    base = _base_frames(cfg)
    coder = FrameCodec(cfg.buffers.frame_codec, cfg.buffers.frame_quality)
    set_bytes = sum(len(v) for v in _sets(cfg, 1, base)[0].entry(coder).values())
    rounds: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        frames_path = str(Path(tmp) / "frames.npy")
        np.save(frames_path, base)
        os.environ["CHARLES_BENCH_FLEET_FRAMES"] = frames_path
        os.environ["CHARLES_BENCH_FLEET_SECONDS"] = str(seconds)
        nodes = RedisClusterNodes(Path(tmp) / "cluster", nodes=max(SHARD_COUNTS))
        nodes.start()
        try:
            for k in SHARD_COUNTS:
                cfg.buffers.shards = k
                writers = list(range(per_shard * k))
                for node in nodes.servers:
                    node.client().flushall()
                raw = _round([("raw", i) for i in writers], k, nodes.url, cfg, rate)
                for node in nodes.servers:
                    node.client().flushall()
                real = _round([("server", i) for i in range(k)] + [("collector", i) for i in writers], k,
                              nodes.url, cfg, rate)
                rounds[k] = {"routed_samples_per_s": real.get("server", 0) / seconds,
                             "raw_samples_per_s": raw.get("raw", 0) * SET_SIZE / seconds,
                             "published_sets_per_s": real.get("collector", 0) / seconds}
        finally:
            nodes.stop()
    for figures in rounds.values():
        figures["routed_bytes_per_s"] = figures["routed_samples_per_s"] / SET_SIZE * set_bytes
        figures["raw_bytes_per_s"] = figures["raw_samples_per_s"] / SET_SIZE * set_bytes
        figures["ratio"] = figures["routed_samples_per_s"] / figures["raw_samples_per_s"] if figures[
            "raw_samples_per_s"] else 0.0
    top, one = rounds[max(SHARD_COUNTS)], rounds[min(SHARD_COUNTS)]
    scaling = top["routed_samples_per_s"] / one["routed_samples_per_s"] if one["routed_samples_per_s"] else 0.0
    return result(
        "fleet", top["routed_samples_per_s"], "samples/s", top["raw_samples_per_s"],
        {"shards": {str(k): {name: round(v, 3) for name, v in figures.items()} for k, figures in rounds.items()},
         "scaling": round(scaling, 3), "collectors_per_shard": per_shard, "rate_sets_per_s": rate,
         "samples_per_set": SET_SIZE, "set_bytes": set_bytes, "frame_codec": coder.name,
         "frame": f"{cfg.game.hood_width}x{cfg.game.hood_height}", "nodes": len(SHARD_COUNTS),
         "stages": "synthetic collectors and one server per shard as processes, a node per shard"},
    )
