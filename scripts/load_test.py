#!/usr/bin/env python3
"""Load test: N collectors, the trainer and M players against the project's own Redis for a while.

Starts `charles redis` (infra/redis.conf: maxmemory budget, AOF) from a fresh `.env` in a
temporary folder on a free port, then the server, the trainer, the collectors and the
players as real processes, samples Redis memory and every process's RSS every
`--every` seconds, stops everything with SIGTERM and prints one JSON object:
Redis memory against its budget, RSS per role (after warm-up vs the end), throughput,
dead letters, exit codes and log errors.

    .venv/bin/python scripts/load_test.py --minutes 10 --collectors 8 --players 2 > load.json

Not part of `make test` (it runs for minutes); see docs/reliability.md for results.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.observe.status import snapshot  # noqa: E402
from pipeline.wire.keys import DEFAULT_PREFIX, Keys  # noqa: E402
from pipeline.wire.local_redis import free_port  # noqa: E402


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--collectors", type=int, default=8)
    ap.add_argument("--players", type=int, default=2)
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.toml"))
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=120.0, help="seconds before the RSS baseline")
    ap.add_argument("--workdir", default=None, help="keep logs here (default: a temporary folder)")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="charles-load-"))
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pipeline.cli", "init", "--env-file", str(work / ".env")], check=True,
                   capture_output=True, cwd=ROOT)
    port = free_port()
    base = {**os.environ, **read_env(work / ".env"), "CHARLES_REDIS_PORT": str(port),
            "CHARLES_ENV_FILE": str(work / ".env"), "CHARLES_LOG_JSON": "1", "PYTHONUNBUFFERED": "1"}
    base.pop("CHARLES_REDIS_URL", None)
    url = f"redis://:{base['CHARLES_REDIS_PASSWORD']}@127.0.0.1:{port}/0"
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str, *cmd: str, cwd: Path = work) -> None:
        log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - closed at exit
        procs[name] = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *cmd], cwd=cwd, env=base,
                                       stdout=log, stderr=subprocess.STDOUT)

    start("redis", "redis", "--data-dir", str(work / "redis"))
    r = redis.Redis.from_url(url)
    deadline = time.monotonic() + 30
    while True:
        try:
            r.ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    keys = Keys(base.get("CHARLES_KEY_PREFIX", DEFAULT_PREFIX))
    start("server", "server", "--config", args.config)
    start("trainer", "trainer")
    for i in range(args.collectors):
        start(f"collector{i}", "collector")
    for i in range(args.players):
        start(f"player{i}", "player")

    samples: list[dict[str, Any]] = []
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    while time.monotonic() < end:
        time.sleep(args.every)
        mem = r.info("memory")
        snap = snapshot(r, keys)
        samples.append({
            "t": round(time.monotonic() - t0, 1),
            "redis_used_mb": round(mem["used_memory"] / 2**20, 1),
            "redis_rss_mb": round(mem["used_memory_rss"] / 2**20, 1),
            "rss_mb": {n: rss_mb(p.pid) for n, p in procs.items()},
            "batches": snap["trainer"]["batches"],
            "version": snap["weights"]["version"],
            "deadletter": snap["deadletter"],
            "fills": {n: b["fill"] for n, b in snap["buffers"].items()},
            "routed_sets": sum(b["sets_routed"] for b in snap["buffers"].values()),
            "dropped_sets": sum(b["sets_dropped"] for b in snap["buffers"].values()),
            "players": [{"version": p["model_version"], "pps": p["pps"], "swaps": p["swaps"]} for p in snap["players"]],
            "exited": {n: p.returncode for n, p in procs.items() if p.poll() is not None},
        })
        print(json.dumps(samples[-1]), file=sys.stderr, flush=True)
    mem = r.info("memory")
    final = snapshot(r, keys)
    deadletters = [{k.decode(): v.decode(errors="replace") for k, v in f.items()}
                   for _, f in r.xrange(keys.deadletter, count=20)]
    exit_codes = {}
    for name in [n for n in procs if n != "redis"] + ["redis"]:
        proc = procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            exit_codes[name] = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            exit_codes[name] = f"killed after 60 s (rc {proc.wait()})"

    def rss_summary(name: str) -> dict[str, Any]:
        series = [(s["t"], s["rss_mb"][name]) for s in samples if s["rss_mb"].get(name)]
        base_ = [v for t, v in series if args.warmup <= t < args.warmup + 60] or [v for _, v in series[:3]]
        last = [v for t, v in series if t >= series[-1][0] - 60] if series else []
        if not series:
            return {}
        b, e = median(base_), median(last)
        return {"after_warmup_mb": round(b, 1), "end_mb": round(e, 1), "growth_mb": round(e - b, 1),
                "growth_pct": round(100 * (e - b) / b, 1), "max_mb": round(max(v for _, v in series), 1)}

    logs = {n: (work / f"{n}.log").read_text(errors="replace") for n in procs}
    result = {
        "minutes": args.minutes, "collectors": args.collectors, "players": args.players, "config": args.config,
        "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
        "redis": {"maxmemory_mb": round(mem["maxmemory"] / 2**20), "used_peak_mb": round(mem["used_memory_peak"] / 2**20, 1),
                  "used_end_mb": round(mem["used_memory"] / 2**20, 1),
                  "max_sampled_mb": max((s["redis_used_mb"] for s in samples), default=None)},
        "rss": {n: rss_summary(n) for n in procs},
        "trainer": {"batches": final["trainer"]["batches"], "versions_published": final["weights"]["version"]},
        "routed_sets": sum(b["sets_routed"] for b in final["buffers"].values()),
        "routed_samples": sum(b["samples_routed"] for b in final["buffers"].values()),
        "dropped_sets_full_buffers": sum(b["sets_dropped"] for b in final["buffers"].values()),
        "deadlettered": final["deadletter"], "deadletters_first": deadletters,
        "player_status": samples[-1]["players"] if samples else [],
        "exit_codes": exit_codes,
        "log_errors": {n: sum(1 for line in text.splitlines() if '"level": "error"' in line or line.startswith("Traceback"))
                       for n, text in logs.items()},
        "redis_unavailable_events": {n: text.count('"redis_unavailable"') for n, text in logs.items()},
        "workdir": str(work),
    }
    print(json.dumps(result, indent=1))
    ok = result["deadlettered"] == 0 and result["redis"]["used_peak_mb"] < result["redis"]["maxmemory_mb"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
