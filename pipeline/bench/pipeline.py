"""`charles bench pipeline`: sample sets/s from collector publish to trainer batch, vs raw Redis.

Both figures run the stages as concurrent processes against one throwaway redis-server,
in the same run, with the same encoded payloads, timed from a common start to the last
item consumed:
- ceiling: one process pipelines XADD of the encoded sets (each set in full in one entry),
  another XREADGROUP + XACKs them (every process with the same client settings,
  `pipeline.wire.redis_conn.connect`);
- value: the real path — a collector process encodes and publishes each set (`SetPublisher`:
  rows as keys and a manifest, one MULTI), a server process checks each manifest and routes
  its rows into the buffer (`Buffers.route_set`), a trainer process draws with the gated
  Lua script, decodes and stacks batches.
Frames are the simulator's (rendered once, before the timing), coded with the config's
`[buffers] frame_codec`: the collector encodes in the timed path, the ceiling moves the
same coded bytes.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.bench import result
from pipeline.config import Config, load_config
from pipeline.wire.keys import SERVER_GROUP, Keys
from pipeline.wire.local_redis import RedisServer
from pipeline.wire.manifest import SampleSet
from pipeline.wire.schema import SampleSchema, empty_columns

SET_SIZE = 22  # a v3 round over 0.1-wide bins plus endpoints
N_SETS = 300

#: The collector name the timed sets carry (their streams are created before the clock starts).
BENCH_COLLECTOR = "bench"


def _base_frames(cfg: Config) -> Any:
    """One set's frames [SET_SIZE, F, H, W, 3] from the simulator."""
    from pipeline.bench.codec import sim_frames

    schema = SampleSchema.from_config(cfg)
    frames = sim_frames((schema.width, schema.height), SET_SIZE * schema.frames)
    return frames.reshape(SET_SIZE, schema.frames, schema.height, schema.width, 3)


def _sets(cfg: Config, n: int, base: Any) -> list[SampleSet]:
    import numpy as np

    schema = SampleSchema.from_config(cfg)
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        cols = empty_columns(schema, SET_SIZE)
        cols["frames"][:] = np.roll(base, i, axis=0)
        cols["targets"][:] = rng.uniform(-1, 1, cols["targets"].shape)
        out.append(SampleSet(cfg.output_names()[i % len(cfg.output_names())], BENCH_COLLECTOR, f"e{i}", cols, {}))
    return out


def _stage(role: str, url: str, prefix: str, cfg_json: str, n: int, frames_path: str, ready: Any, go: Any,
           cpu: Any) -> None:
    import numpy as np

    from pipeline.collect.episode import SetPublisher
    from pipeline.serve.buffers import Buffers
    from pipeline.serve.server import Server
    from pipeline.wire.frames import FrameCodec
    from pipeline.wire.redis_conn import connect
    from pipeline.wire.stacking import stack_rows

    cfg = Config.from_json(cfg_json)
    coder = FrameCodec(cfg.buffers.frame_codec, cfg.buffers.frame_quality)
    r, keys = connect(url), Keys(prefix)
    outputs = cfg.output_names()
    sets = _sets(cfg, n, np.load(frames_path)) if role in ("raw_producer", "collector") else []
    payloads = [(s.output, s.entry(coder)) for s in sets] if role == "raw_producer" else []
    server = Server(r, keys, cfg) if role == "server" else None
    ready.wait()
    go.wait()
    started = time.process_time()
    if role == "raw_producer":
        pipe = r.pipeline(transaction=False)
        for i, (output, data) in enumerate(payloads):
            pipe.xadd(keys.stream(output, BENCH_COLLECTOR), data)
            if i % 16 == 15:
                pipe.execute()
        pipe.execute()
    elif role == "raw_consumer":
        got = 0
        while got < n:
            resp = r.xreadgroup("raw", "c", {keys.stream(o, BENCH_COLLECTOR): ">" for o in outputs}, count=16, block=1000)
            for stream, entries in resp or []:
                r.xack(stream, "raw", *[e[0] for e in entries])
                got += len(entries)
    elif role == "collector":
        publisher = SetPublisher(r, keys, cfg.buffers.stream_maxlen, max_backlog=n, frame_codec=coder)
        for s in sets:
            publisher.publish(s)
    elif role == "server":
        assert server is not None
        while server.stats.routed_sets < n:
            server.route_once(block_ms=1000, count=16)
    elif role == "trainer":
        buffers = Buffers(r, keys, outputs, capacity=1, start_fraction=0.0)
        schema = SampleSchema.from_config(cfg)
        drawn = 0
        while drawn < n * SET_SIZE:
            batch = buffers.draw(cfg.trainer.batch_size)
            rows = [row for rows in batch.rows.values() for row in rows]
            if rows:
                stack_rows(rows, schema)
                drawn += len(rows)
            else:
                time.sleep(0.001)
    cpu.put((role, time.process_time() - started))


def _timed(roles: list[str], url: str, prefix: str, cfg: Config, n: int, last: str,
           frames_path: str) -> tuple[float, dict[str, float]]:
    """Sets/s from a common start to the last item consumed, and the CPU seconds each stage
    (and redis-server) spent: with more stages than cores, the sum is what limits."""
    import redis

    ctx = mp.get_context("spawn")
    ready, go, cpu = ctx.Barrier(len(roles) + 1), ctx.Event(), ctx.Queue()
    procs = {role: ctx.Process(target=_stage, args=(role, url, prefix, cfg.to_json(), n, frames_path, ready, go, cpu), daemon=True)
             for role in roles}
    for p in procs.values():
        p.start()
    ready.wait()
    redis_cpu = _redis_cpu(redis.Redis.from_url(url))
    start = time.perf_counter()
    go.set()
    procs[last].join(600)
    elapsed = time.perf_counter() - start
    for p in procs.values():
        p.join(60)
        if p.exitcode != 0:
            raise RuntimeError(f"bench stage {p.name} failed with {p.exitcode}")
    spent = dict(cpu.get(timeout=10) for _ in roles)
    spent["redis"] = _redis_cpu(redis.Redis.from_url(url)) - redis_cpu
    return n / elapsed, {"wall_s": round(elapsed, 2), **{k: round(v, 2) for k, v in spent.items()}}


def _redis_cpu(r: Any) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run(config_path: str | None = None, seconds: float = 10.0, rounds: int = 3, **_: Any) -> dict[str, Any]:
    """Measure the real path and the raw ceiling side by side on one fresh redis-server:
    `rounds` times each, alternating, on an emptied Redis; the best of each counts (a
    shared machine only ever makes a round slower)."""
    from pipeline.serve.server import Server

    cfg = load_config(config_path)
    cfg.buffers.capacity = N_SETS * SET_SIZE * 2
    cfg.buffers.ratio_tolerance = cfg.buffers.capacity  # draw everything routed, as fast as it comes
    cfg.buffers.stream_maxlen = N_SETS * 2
    import numpy as np

    from pipeline.wire.frames import FrameCodec

    base = _base_frames(cfg)
    coder = FrameCodec(cfg.buffers.frame_codec, cfg.buffers.frame_quality)
    set_bytes = sum(len(v) for v in _sets(cfg, 1, base)[0].entry(coder).values())
    ceilings, values = [], []
    with tempfile.TemporaryDirectory() as tmp:
        frames_path = str(Path(tmp) / "frames.npy")
        np.save(frames_path, base)
        server = RedisServer(Path(tmp), appendonly=False)
        server.start()
        try:
            r = server.client()
            for i in range(rounds):
                r.flushall()
                raw = Keys(f"bench-raw-{i}:")
                for o in cfg.output_names():
                    r.xgroup_create(raw.stream(o, BENCH_COLLECTOR), "raw", id="0", mkstream=True)
                ceilings.append(_timed(["raw_producer", "raw_consumer"], server.url, raw.prefix, cfg, N_SETS,
                                       "raw_consumer", frames_path))
                r.flushall()
                real = Keys(f"bench-real-{i}:")
                for o in cfg.output_names():  # the server finds the collector's streams at setup
                    r.xgroup_create(real.stream(o, BENCH_COLLECTOR), SERVER_GROUP, id="0", mkstream=True)
                Server(r, real, cfg).setup()
                values.append(_timed(["collector", "server", "trainer"], server.url, real.prefix, cfg, N_SETS, "trainer",
                                     frames_path))
        finally:
            server.stop()
    (ceiling, ceiling_cpu), (value, value_cpu) = max(ceilings), max(values)
    return result(
        "pipeline", value, "sets/s", ceiling,
        {"sets": N_SETS, "samples_per_set": SET_SIZE, "set_bytes": set_bytes, "frame_codec": coder.name,
         "frame": f"{cfg.game.hood_width}x{cfg.game.hood_height}", "samples_per_s": round(value * SET_SIZE, 1),
         "stages": "collector, server, trainer as concurrent processes",
         "rounds": {"real": [round(v, 1) for v, _ in values], "ceiling": [round(c, 1) for c, _ in ceilings]},
         "cpu_s": {"real": value_cpu, "ceiling": ceiling_cpu}},
    )
