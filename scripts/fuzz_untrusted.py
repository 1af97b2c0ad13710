#!/usr/bin/env python3
"""Fuzzing as untrusted machines: a collector and a player user attack a running system.

Starts `charles redis` (the project's ACL lines, from a fresh `.env` and a credentials
registry in a temporary folder, on a free port), the server and the trainer, two honest
collectors and an honest player, each honest machine with a user of its own
(`charles credentials add`), as real processes. Then, for `--seconds`, the collector user
`mallory` and the player user `eve` send what they can: junk and mutated manifests, rows
without a TTL or too big, sets claiming another collector, republished set ids, MAXLEN 0
and the largest id on their own streams, stolen and emptied job lists, hostile status and
presence, frames without a TTL or over the cap, and every write to someone else's keys,
EVAL and rq they can think of (each must be refused).

At the end it checks, and prints as one JSON object: every role was still running; no
attack outside the attacker's own keys succeeded; every set the honest collectors say
they published is on their streams, was read and acknowledged by the server, and none of
theirs was dead-lettered (nothing lost, nothing refused as a duplicate). Exit 1 if not.

    .venv/bin/python scripts/fuzz_untrusted.py --seconds 600 > fuzz.json

The roles are started directly (like scripts/load_test.py), not by `charles supervise`:
each honest machine needs its own `CHARLES_REDIS_URL`, which one Procfile cannot give.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import Config, load_config  # noqa: E402
from pipeline.wire.keys import DEFAULT_PREFIX, RQ_ALL, SERVER_GROUP, Keys  # noqa: E402
from pipeline.wire.local_redis import free_port  # noqa: E402
from pipeline.wire.manifest import SampleSet, manifest  # noqa: E402
from pipeline.wire.presence import read_statuses  # noqa: E402
from pipeline.wire.schema import SampleSchema, empty_columns  # noqa: E402

HONEST_COLLECTORS = ("honest-1", "honest-2")
HONEST_PLAYER = "honest-pl"
MALLORY, EVE = "mallory", "eve"
MAX_ID = "18446744073709551615-18446744073709551615"
#: a loaded machine can take longer than --seconds to start the honest collectors: the attack then
#: goes on until one of them has published, this much longer at most
PUBLISH_GRACE_S = 180.0
RQ = RQ_ALL[:-1]  # rq's own key names (`rq:suspended`, `rq:pubsub:<worker>`), which attackers try


def read_env(path: Path) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in path.read_text().splitlines()
                                                  if "=" in line and not line.startswith("#"))}


class System:
    """Redis and the roles as processes in one work folder."""

    def __init__(self, work: Path, config: Path) -> None:
        self.work, self.config = work, config
        subprocess.run([sys.executable, "-m", "pipeline.cli", "init", "--env-file", str(work / ".env")], check=True,
                       capture_output=True, cwd=ROOT)
        self.port = free_port()
        self.env = {**os.environ, **read_env(work / ".env"), "CHARLES_REDIS_PORT": str(self.port),
                    "CHARLES_ENV_FILE": str(work / ".env"), "CHARLES_LOG_JSON": "1", "PYTHONUNBUFFERED": "1",
                    "CHARLES_CREDENTIALS_FILE": str(work / "credentials.json")}
        self.env.pop("CHARLES_REDIS_URL", None)
        self.env.pop("CHARLES_REDIS_USERNAME", None)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.passwords: dict[str, str] = {}

    def add_machine(self, role: str, name: str) -> None:
        """`charles credentials add` before Redis starts: the registry becomes its ACL lines."""
        pw_file = self.work / f"{name}.password"
        subprocess.run([sys.executable, "-m", "pipeline.cli", "credentials", "add", role, name, "--password-file",
                        str(pw_file)], check=True, capture_output=True, cwd=self.work, env=self.env)
        self.passwords[name] = pw_file.read_text().strip()

    def url(self, name: str | None = None) -> str:
        auth = f"{name}:{self.passwords[name]}" if name else f":{self.env['CHARLES_REDIS_PASSWORD']}"
        return f"redis://{auth}@127.0.0.1:{self.port}/0"

    def start(self, name: str, *cmd: str, user: str | None = None) -> None:
        env = {**self.env, "CHARLES_REDIS_URL": self.url(user)} if user else self.env
        log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115 - the process keeps it
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *cmd], cwd=self.work, env=env,
                                            stdout=log, stderr=subprocess.STDOUT)

    def events(self, name: str, event: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in (self.work / f"{name}.log").read_text(errors="replace").splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and (event is None or msg.get("event") == event):
                out.append(msg)
        return out

    def stop(self, name: str, timeout: float = 60) -> int | str:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return f"killed after {timeout} s (rc {proc.wait()})"


class Attacker:
    """One untrusted machine's client and what it tried: refused, done (on its own keys), violations."""

    def __init__(self, r: redis.Redis, name: str) -> None:
        self.r, self.name = r, name
        self.tried: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.violations: list[str] = []

    def own(self, what: str, call: Callable[[], Any]) -> None:
        """An attack on its own keys: allowed by the ACL; it may spoil only its own data."""
        self.tried[what] += 1
        try:
            call()
        except redis.RedisError:
            self.refused[what] += 1

    def foreign(self, what: str, call: Callable[[], Any]) -> None:
        """An attack on anything else: every one must be refused (NOPERM)."""
        self.tried[what] += 1
        try:
            call()
        except redis.exceptions.NoPermissionError:
            self.refused[what] += 1
            return
        except redis.ResponseError as exc:
            if "NOPERM" in str(exc):
                self.refused[what] += 1
                return
            self.violations.append(f"{what}: {exc}")
            return
        self.violations.append(f"{what}: succeeded")


def valid_set(cfg: Config, rng: random.Random, output: str, collector: str, set_id: str | None = None) -> SampleSet:
    schema = SampleSchema.from_config(cfg)
    n = rng.randint(1, 4)
    cols = empty_columns(schema, n)
    cols["frames"][:] = np.random.default_rng(rng.randrange(2**32)).integers(0, 255, cols["frames"].shape,
                                                                             dtype=np.uint8)
    cols["targets"][:] = rng.uniform(-1, 1)
    extra = {"set_id": set_id} if set_id else {}
    return SampleSet(output, collector, f"m{rng.randrange(10**6)}", cols, {"map_seed": 1}, **extra)


def mutate(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return os.urandom(rng.randint(1, 64))
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        choice = rng.random()
        i = rng.randrange(len(b)) if b else 0
        if choice < 0.4 and b:
            b[i] = rng.randrange(256)
        elif choice < 0.7:
            b = b[: i] + b[i + rng.randint(1, 16):]
        else:
            b[i:i] = os.urandom(rng.randint(1, 32))
    return bytes(b)


def mallory_round(m: Attacker, keys: Keys, cfg: Config, rng: random.Random, own_sets: list[str],
                  late: bool) -> None:
    """One attack by the collector user: on its own keys, and on everyone else's. The largest
    id blocks its own stream for good, so it comes `late` only (the last tenth of the run)."""
    k = keys.for_collector(MALLORY, cfg.buffers.shards)
    r, outputs = m.r, cfg.output_names()
    output = rng.choice(outputs)
    stream = k.stream(output, MALLORY)
    kind = rng.randrange(14)
    if kind <= 3:  # a set: valid, mutated, claiming another collector, or republished
        claim = rng.choice(HONEST_COLLECTORS) if kind == 2 else MALLORY
        reuse = rng.choice(own_sets) if kind == 3 and own_sets else None
        s = valid_set(cfg, rng, output, claim, reuse)
        entry = s.entry()
        if kind == 1:
            entry = {name: mutate(v, rng) if rng.random() < 0.5 else v for name, v in entry.items()}
        own_sets.append(s.set_id)
        del own_sets[:-50]
        pipe = r.pipeline(transaction=True)
        for name, value in entry.items():
            if name != "meta":
                pipe.set(k.incoming(MALLORY, s.set_id, name[1:]), value, ex=rng.choice([None, 60]))
        pipe.xadd(stream, manifest(entry) if kind != 1 else {n: v[:200] for n, v in entry.items()})
        m.own("publish a set (valid, mutated, claiming another, republished)", pipe.execute)
    elif kind == 4:
        m.own("junk manifest", lambda: r.xadd(stream, {os.urandom(4).hex(): os.urandom(rng.randint(0, 65536))
                                                       for _ in range(rng.randint(0, 6))} or {"x": b""}))
    elif kind == 5:
        m.own("XADD MAXLEN 0 on its own stream", lambda: r.xadd(stream, {"x": 1}, maxlen=0))
        m.own("XADD to a stream of no output", lambda: r.xadd(k.stream("no_such_output", MALLORY),
                                                              {"x": os.urandom(rng.randint(1, 4096))}))
    elif kind == 6 and late and rng.random() < 0.05:  # it blocks its own stream for good
        m.own("XADD the largest id on its own stream", lambda: r.xadd(stream, {"x": 1}, id=MAX_ID))
    elif kind == 7:
        m.own("rows without a TTL or too big", lambda: r.set(k.incoming(MALLORY, os.urandom(8).hex(), 0),
                                                             os.urandom(rng.choice([10, 4096, 2**20]))))
    elif kind == 8:
        m.own("steal its own jobs", lambda: r.rpop(keys.jobs(MALLORY)))
    elif kind == 9:
        values = ["[/bold]", "\x1b]8;;http://x\x07link", "<img src=x>", "x" * 100_000, "[1, 2]", "nan"]
        m.own("hostile status", lambda: r.hset(keys.status("collector", MALLORY),
                                               mapping={rng.choice(["state", "episode", "id", "raw", "pps"]):
                                                        rng.choice(values)}))
    elif kind == 10:
        m.own("presence without a TTL", lambda: r.set(keys.presence("collector", MALLORY), "{}"))
    else:
        victim = rng.choice(HONEST_COLLECTORS)
        hk = keys.for_collector(victim, cfg.buffers.shards)
        attacks: dict[str, Callable[[], Any]] = {
            "trim an honest stream": lambda: r.xadd(hk.stream(output, victim), {"x": 1}, maxlen=0),
            "block an honest stream": lambda: r.xadd(hk.stream(output, victim), {"x": 1}, id=MAX_ID),
            "read an honest stream": lambda: r.xrange(hk.stream(output, victim), count=1),
            "rewrite an honest row": lambda: r.set(hk.incoming(victim, "x", 0), b"forged", ex=60),
            "expire an honest row": lambda: r.expire(hk.incoming(victim, "x", 0), 1),
            "SCAN for rows": lambda: r.scan(0, match="*incoming*"),
            "push a job to an honest collector": lambda: r.lpush(keys.jobs(victim), "{}"),
            "steal an honest job": lambda: r.rpop(keys.jobs(victim)),
            "forge honest presence": lambda: r.set(keys.presence("collector", victim), "{}", ex=10),
            "forge honest status": lambda: r.hset(keys.status("collector", victim), "state", "dead"),
            "EVAL": lambda: r.eval("return 1", 0),
            "rq shutdown": lambda: r.publish(RQ + "pubsub:evaluator-1", json.dumps({"command": "shutdown"})),
            "rq suspend": lambda: r.set(RQ + "suspended", 1),
            "write a buffer": lambda: r.sadd(k.buffer(output), "x"),
            "write the config": lambda: r.hset(keys.config, "json", "{}"),
            "dead letters": lambda: r.xadd(k.deadletter, {"x": 1}),
        }
        what = rng.choice(sorted(attacks))
        m.foreign(what, attacks[what])


def eve_round(e: Attacker, keys: Keys, rng: random.Random) -> None:
    """One attack by the player user."""
    r = e.r
    kind = rng.randrange(6)
    camera = rng.choice(["hood", "cinematic", "convcam", os.urandom(3).hex()])
    if kind == 0:
        e.own("frames without a TTL", lambda: r.set(keys.frame(EVE, camera), os.urandom(rng.choice([100, 65536]))))
    elif kind == 1:
        e.own("a frame over the cap", lambda: r.set(keys.frame(EVE, camera), b"\xff" * (8 * 2**20 + 1), ex=600))
    elif kind == 2:
        e.own("hostile status", lambda: r.hset(keys.status("player", EVE), mapping={
            "raw": rng.choice(["[1, 2]", "{", "x" * 50_000]), "model_version": "NaN"}))
    elif kind == 3:
        e.own("presence without a TTL", lambda: r.set(keys.presence("player", EVE), "{}"))
    else:
        attacks: dict[str, Callable[[], Any]] = {
            "overwrite an honest frame": lambda: r.set(keys.frame(HONEST_PLAYER, "hood"), b"x", ex=5),
            "forge honest status": lambda: r.hset(keys.status("player", HONEST_PLAYER), "model_version", 999),
            "write weights": lambda: r.hset(keys.weights_latest, "blob", b"x"),
            "publish a weights notification": lambda: r.publish(keys.weights_channel, "{}"),
            "XADD a set": lambda: r.xadd(keys.stream("steering", EVE), {"x": 1}),
            "EVAL": lambda: r.eval("return 1", 0),
            "FCALL": lambda: r.execute_command("FCALL", "f", 0),
            "rq suspend": lambda: r.set(RQ + "suspended", 1),
        }
        what = rng.choice(sorted(attacks))
        e.foreign(what, attacks[what])


def honest_ledger(r: redis.Redis, keys: Keys, cfg: Config, server_log: list[dict[str, Any]]) -> dict[str, Any]:
    """Per honest collector: entries on its streams, those unread or unacknowledged by the
    server, and those it refused or dropped (from its log: the dead-letter stream is capped,
    and the attackers fill it)."""
    out = {}
    for name in HONEST_COLLECTORS:
        k = keys.for_collector(name, cfg.buffers.shards)
        own = {k.stream(output, name) for output in cfg.output_names()}
        added = pending = lag = 0
        for stream in own:
            if not r.exists(stream):
                continue
            added += int(r.xinfo_stream(stream)["entries-added"])
            pending += int(r.xpending(stream, SERVER_GROUP)["pending"])
            group = next((g for g in r.xinfo_groups(stream) if g["name"] in (SERVER_GROUP, SERVER_GROUP.encode())),
                         None)
            lag += int(group["lag"] or 0) if group else added
        refused = [e for e in server_log if e.get("event") == "entry_rejected" and e.get("stream") in own]
        dropped = sum(int(e.get("sets", 0)) for e in server_log
                      if e.get("event") == "stream_overflow_dropped" and e.get("stream") in own)
        out[name] = {"entries_added": added, "pending": pending, "unread": lag, "refused": len(refused),
                     "dropped": dropped, "refused_reasons": sorted({str(e.get("reason"))[:80] for e in refused})[:5]}
    return out


def buffer_shares(r: redis.Redis, keys: Keys, cfg: Config) -> dict[str, dict[str, int]]:
    """Per output, how many samples of each collector its buffers hold (ids start with the collector)."""
    shares: dict[str, dict[str, int]] = {}
    for output in cfg.output_names():
        held: Counter[str] = Counter()
        for k in keys.shards(cfg.buffers.shards):
            held.update(i.decode().rpartition("/")[0] for i in r.sscan_iter(k.buffer(output), count=1000))
        shares[output] = dict(held)
    return shares


def honest_published(admin: redis.Redis, keys: Keys) -> bool:
    """Some honest collector has published a set (the attacker is no collector role)."""
    return any(int(s.get("published", 0)) > 0 for s in read_statuses(admin, keys, "collector"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--config", default=str(ROOT / "tests" / "configs" / "reliability_tiny.toml"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default=None, help="keep logs here (default: a temporary folder)")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="charles-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config)
    system = System(work, Path(args.config).resolve())
    for name in HONEST_COLLECTORS + (MALLORY,):
        system.add_machine("collector", name)
    for name in (HONEST_PLAYER, EVE):
        system.add_machine("player", name)
    system.start("redis", "redis", "--data-dir", str(work / "redis"))
    admin = redis.Redis.from_url(system.url())
    deadline = time.monotonic() + 30
    while True:
        try:
            admin.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    keys = Keys(system.env.get("CHARLES_KEY_PREFIX", DEFAULT_PREFIX))
    system.start("server", "server", "--config", str(system.config))
    system.start("trainer", "trainer")
    for name in HONEST_COLLECTORS:
        system.start(name, "collector", user=name)
    system.start(HONEST_PLAYER, "player", user=HONEST_PLAYER)
    mallory = Attacker(redis.Redis.from_url(system.url(MALLORY)), MALLORY)
    eve = Attacker(redis.Redis.from_url(system.url(EVE)), EVE)
    rng, own_sets = random.Random(args.seed), []
    peak_mb, t0 = 0.0, time.monotonic()
    stopped_early: dict[str, Any] = {}
    while (elapsed := time.monotonic() - t0) < args.seconds or (
            elapsed < args.seconds + PUBLISH_GRACE_S and not honest_published(admin, keys)):
        for _ in range(20):
            try:
                mallory_round(mallory, keys, cfg, rng, own_sets, time.monotonic() - t0 > 0.9 * args.seconds)
                eve_round(eve, keys, rng)
            except redis.ConnectionError as exc:  # revoked or Redis away: note it and go on
                mallory.tried["connection lost"] += 1
                print(json.dumps({"connection_lost": str(exc)[:100]}), file=sys.stderr)
        peak_mb = max(peak_mb, admin.info("memory")["used_memory"] / 2**20)
        stopped_early = {n: p.returncode for n, p in system.procs.items() if p.poll() is not None}
        if stopped_early:
            break
        time.sleep(0.01)
    alive = {n: p.poll() is None for n, p in system.procs.items()}
    shares = buffer_shares(admin, keys, cfg)  # while every role still runs
    # the quota with only the honest collectors live: the largest the attacker can have been given
    quota = min(cfg.shard_capacity(), -(-cfg.shard_capacity() * cfg.buffers.collector_share // len(HONEST_COLLECTORS)))
    # the honest collectors hand over what they hold and stop; the server routes what is left
    exits = {name: system.stop(name) for name in HONEST_COLLECTORS}
    published = {n: sum(e.get("published", 0) for e in system.events(n, "collector_stopped")) for n in HONEST_COLLECTORS}
    settle = time.monotonic() + 60
    ledger = honest_ledger(admin, keys, cfg, system.events("server"))
    while time.monotonic() < settle and any(v["pending"] or v["unread"] for v in ledger.values()):
        time.sleep(1)
        ledger = honest_ledger(admin, keys, cfg, system.events("server"))
    for name in [n for n in system.procs if n not in HONEST_COLLECTORS and n != "redis"] + ["redis"]:
        exits[name] = system.stop(name)
    checks = {
        "every role ran to the end": all(alive.values()),
        "no attack outside its own keys succeeded": not (mallory.violations or eve.violations),
        "honest sets all on their streams": all(ledger[n]["entries_added"] == published[n] for n in HONEST_COLLECTORS),
        "honest sets all read and acknowledged": all(not v["pending"] and not v["unread"] for v in ledger.values()),
        "no honest set refused or dropped (lost, or refused as a duplicate)":
            all(v["refused"] == 0 and v["dropped"] == 0 for v in ledger.values()),
        "the honest collectors published": sum(published.values()) > 0,
        "the attacker holds at most its quota of each buffer": all(
            held.get(MALLORY, 0) <= quota * cfg.buffers.shards for held in shares.values()),
    }
    result = {
        "seconds": round(time.monotonic() - t0, 1), "checks": checks, "ok": all(checks.values()),
        "published": published, "ledger": ledger, "buffer_shares": shares, "attacker_quota": quota,
        "alive_at_end": alive, "stopped_early": stopped_early,
        "exit_codes": exits, "redis_peak_used_mb": round(peak_mb, 1),
        "attacks": {a.name: {"tried": sum(a.tried.values()), "refused": sum(a.refused.values()),
                             "by_kind": dict(a.tried), "violations": a.violations[:20]} for a in (mallory, eve)},
        "server": {"swept": [e.get("count") for e in system.events("server", "untrusted_keys_removed")][-1:],
                   "rejected": len(system.events("server", "entry_rejected"))},
        "workdir": str(work),
    }
    print(json.dumps(result, indent=1, default=str))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
