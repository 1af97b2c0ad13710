"""Security: passwords, per-role ACL users, loopback-only listeners, no pickle, safetensors only.

The ACL tests run the real `charles init` and `charles redis` (infra/redis.conf + the
users from `.env`), then connect as each role. The slow test runs server, collector,
trainer and player each as its own ACL user and checks Redis denied nothing they needed.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import signal
import subprocess
import sys
import tokenize
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import torch

from pipeline.errors import WeightsError
from pipeline.wire.acl import ROLES
from pipeline.wire.keys import EVALUATE_QUEUE, SERVER_GROUP, Keys, sample_id
from pipeline.wire.local_redis import free_port
from pipeline.wire.weights import from_blob
from tests.factories import TEST_COLLECTOR, publish_entry
from tests.faults import FaultRoles, prefill, unique_prefix, wait_for
from tests.processes import ROOT

CLI = [sys.executable, "-m", "pipeline.cli"]
SOURCE_DIRS = ("pipeline", "workers", "scripts", "tests")


def read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


# -- charles init ------------------------------------------------------------------------------

def test_init_generates_admin_and_role_passwords(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    subprocess.run([*CLI, "init", "--env-file", str(env_file)], check=True, cwd=tmp_path, capture_output=True)
    assert env_file.stat().st_mode & 0o777 == 0o600
    env = read_env(env_file)
    names = ["CHARLES_REDIS_PASSWORD", *(f"CHARLES_REDIS_PASSWORD_{r.upper()}" for r in ROLES)]
    passwords = [env[n] for n in names]
    assert len(set(passwords)) == len(passwords) and all(len(p) >= 30 for p in passwords)
    before = env_file.read_text()
    subprocess.run([*CLI, "init", "--env-file", str(env_file)], check=True, cwd=tmp_path, capture_output=True)
    assert env_file.read_text() == before  # idempotent
    # an older .env (admin password only) keeps its lines and gains the role passwords
    old = tmp_path / "old.env"
    old.write_text("CHARLES_REDIS_PASSWORD=keep-this-admin-password\n")
    subprocess.run([*CLI, "init", "--env-file", str(old)], check=True, cwd=tmp_path, capture_output=True)
    env = read_env(old)
    assert env["CHARLES_REDIS_PASSWORD"] == "keep-this-admin-password"
    assert all(f"CHARLES_REDIS_PASSWORD_{r.upper()}" in env for r in ROLES)


# -- charles redis with ACL users ----------------------------------------------------------------

class AclRedis:
    """`charles redis` started from a fresh `.env`, on a free port, in a temporary data dir."""

    def __init__(self, workdir: Path) -> None:
        env_file = workdir / ".env"
        subprocess.run([*CLI, "init", "--env-file", str(env_file)], check=True, capture_output=True)
        self.port = free_port()
        self.prefix = unique_prefix("acl")
        self.env = {**os.environ, **read_env(env_file), "CHARLES_REDIS_PORT": str(self.port),
                    "CHARLES_KEY_PREFIX": self.prefix, "CHARLES_ENV_FILE": str(env_file),
                    "CHARLES_CREDENTIALS_FILE": str(workdir / "credentials.json")}
        self.env.pop("CHARLES_REDIS_URL", None)
        self.env.pop("CHARLES_REDIS_USERNAME", None)
        self.workdir = workdir
        self.keys = Keys(self.prefix)
        self.machines: dict[str, str] = {}  # name -> password
        self.start()

    def start(self) -> None:
        self.log = open(self.workdir / "redis.out", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([*CLI, "redis", "--data-dir", str(self.workdir / "redis")], env=self.env,
                                     cwd=self.workdir, stdout=self.log, stderr=subprocess.STDOUT)
        admin = self.client()
        wait_for(lambda: admin.ping(), 20, "charles redis to accept connections")

    def credentials(self, *args: str) -> str:
        """`charles credentials ARGS` against this Redis; its stdout."""
        res = subprocess.run([*CLI, "credentials", *args], env=self.env, cwd=self.workdir, capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return res.stdout

    def machine(self, role: str, name: str) -> redis.Redis:
        """A client of the machine user NAME (created with `charles credentials add` once)."""
        if name not in self.machines:
            out = self.credentials("add", role, name)
            self.machines[name] = re.search(r"\(shown once\): (\S+)", out).group(1)  # type: ignore[union-attr]
        return redis.Redis(port=self.port, username=name, password=self.machines[name])

    def password(self, role: str | None = None) -> str:
        return self.env["CHARLES_REDIS_PASSWORD" + (f"_{role.upper()}" if role else "")]

    def url(self, role: str | None = None) -> str:
        return f"redis://{role or ''}:{self.password(role)}@127.0.0.1:{self.port}/0"

    def client(self, role: str | None = None) -> redis.Redis:
        return redis.Redis.from_url(self.url(role))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    server = AclRedis(tmp_path_factory.mktemp("acl"))
    yield server
    server.stop()


def denied(call: object) -> bool:
    """True when Redis refuses the call for lack of permission (NOPERM)."""
    try:
        call()  # type: ignore[operator]
    except redis.exceptions.NoPermissionError:
        return True
    except redis.exceptions.ResponseError as exc:
        # DEBUG is also refused before the ACL check (enable-debug-command no, Redis' default)
        return "NOPERM" in str(exc) or "DEBUG command not allowed" in str(exc)
    return False


def test_redis_requires_a_password(acl_redis: AclRedis) -> None:
    anonymous = redis.Redis(port=acl_redis.port)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.get("x")
    wrong = redis.Redis(port=acl_redis.port, username="collector", password="not-the-password")
    with pytest.raises(redis.exceptions.AuthenticationError):
        wrong.get("x")
    config = acl_redis.client().config_get("bind")["bind"]
    assert set(config.split()) <= {"127.0.0.1", "-::1"}, f"Redis listens beyond loopback: {config}"


@pytest.mark.parametrize("role", ROLES)
def test_dangerous_commands_denied_to_role_users(acl_redis: AclRedis, role: str) -> None:
    c = acl_redis.client(role)
    assert c.acl_whoami() == role
    for name, call in {
        "FLUSHALL": c.flushall, "FLUSHDB": c.flushdb, "CONFIG GET": lambda: c.config_get("*"),
        "CONFIG SET": lambda: c.config_set("appendonly", "no"), "DEBUG": lambda: c.execute_command("DEBUG", "SLEEP", "0"),
        "SHUTDOWN": lambda: c.execute_command("SHUTDOWN", "NOSAVE"), "KEYS": lambda: c.keys("*"),
        "ACL": c.acl_list, "SAVE": c.save, "BGREWRITEAOF": c.bgrewriteaof, "SWAPDB": lambda: c.swapdb(0, 1),
        "SELECT": lambda: c.execute_command("SELECT", "1"), "MONITOR": lambda: c.execute_command("MONITOR"),
        "FUNCTION FLUSH": lambda: c.execute_command("FUNCTION", "FLUSH"),
        "SCRIPT FLUSH": lambda: c.execute_command("SCRIPT", "FLUSH"),
        "REPLICAOF": lambda: c.execute_command("REPLICAOF", "127.0.0.1", "1"),
        "MODULE": lambda: c.execute_command("MODULE", "LIST"),
    }.items():
        assert denied(call), f"{role} may run {name}"
    assert acl_redis.client().config_get("appendonly")  # the admin may (so the checks above can fail)


def test_collector_user_writes_its_streams_only(acl_redis: AclRedis) -> None:
    k, c, admin = acl_redis.keys, acl_redis.client("collector"), acl_redis.client()
    admin.hset(k.weights_latest, mapping={"blob": b"x", "version": 1})
    admin.hset(k.config, mapping={"json": "{}", "version": 1})
    publish_entry(c.pipeline(transaction=True), k, "steering", {"meta": b"m", "r0": b"row"}).execute()  # its job
    assert admin.xlen(k.stream("steering", TEST_COLLECTOR)) == 1 and admin.get(k.incoming(TEST_COLLECTOR, "unknown", 0)) == b"row"
    assert c.hget(k.config, "json") == b"{}"  # may read the config
    assert c.hget(k.weights_latest, "version") == b"1"  # and the latest weights (DAgger), not write them
    c.set(k.presence("collector", "collector-x"), "1", ex=5)  # and keep its presence
    for what, call in {
        "read an older weights version": lambda: c.hgetall(k.weights_version_blob(1)),
        "write weights": lambda: c.hset(k.weights_latest, "blob", b"forged"),
        "write the config": lambda: c.hset(k.config, "json", "{}"),
        "read a stream": lambda: c.xrange(k.stream("steering", TEST_COLLECTOR)),
        "delete a stream": lambda: c.delete(k.stream("steering", TEST_COLLECTOR)),
        "write the dead-letter stream": lambda: c.xadd(k.deadletter, {"x": 1}),
        "write a buffer": lambda: c.sadd(k.buffer("steering"), "x"),
        "write a buffer row": lambda: c.set(k.buffer_row("steering", "x:0"), b"forged"),
        "read incoming rows": lambda: c.get(k.incoming(TEST_COLLECTOR, "unknown", 0)),
        "write another role's status": lambda: c.hset(k.status("player", "p"), "x", 1),
        "read an evaluation job": lambda: c.hgetall(f"rq:job:{k.job_id(EVALUATE_QUEUE, 'v1')}"),
        "push to the evaluate queue": lambda: c.rpush(f"rq:queue:{k.queue(EVALUATE_QUEUE)}", "x"),
        "publish weights": lambda: c.publish(k.weights_channel, "{}"),
    }.items():
        assert denied(call), f"a collector may {what}"


def test_player_user_reads_weights_and_cannot_write_streams(acl_redis: AclRedis) -> None:
    k, p, admin = acl_redis.keys, acl_redis.client("player"), acl_redis.client()
    admin.hset(k.weights_latest, mapping={"blob": b"x", "version": 1})
    assert p.hget(k.weights_latest, "version") == b"1"
    assert p.hget(k.config, "json") is not None or True  # may read config (absent is fine)
    p.hset(k.status("player", "player-x"), "steps", 1)
    p.set(k.frame("player-x", "hood"), b"jpeg", ex=5)
    sub = p.pubsub()
    sub.subscribe(k.weights_channel)
    sub.close()
    for what, call in {
        "XADD a sample set": lambda: p.xadd(k.stream("steering", "c1"), {"data": b"x"}),
        "XADD dead letters": lambda: p.xadd(k.deadletter, {"x": 1}),
        "write weights": lambda: p.hset(k.weights_latest, "blob", b"forged"),
        "bump the weights version": lambda: p.incr(k.weights_version_counter),
        "publish a notification": lambda: p.publish(k.weights_channel, "{}"),
        "draw from a buffer": lambda: p.spop(k.buffer("steering")),
        "write the config": lambda: p.hset(k.config, "json", "{}"),
        "enqueue rq jobs": lambda: p.rpush(f"rq:queue:{k.queue(EVALUATE_QUEUE)}", "x"),
        "write the trainer's status": lambda: p.hset(k.status("trainer", "t"), "x", 1),
    }.items():
        assert denied(call), f"a player may {what}"
    with pytest.raises(redis.exceptions.NoPermissionError):
        other = p.pubsub()
        other.subscribe("some-other-channel")
        other.get_message(timeout=1)


# -- issue 15 #2-#6: per-machine users, no rq, no EVAL, streams and rows per collector ------------

def test_machine_credentials_survive_a_restart_and_revoke_closes_connections(acl_redis: AclRedis) -> None:
    alice = acl_redis.machine("collector", "sec-alice")
    assert alice.acl_whoami() == "sec-alice"
    registry = (acl_redis.workdir / "credentials.json").read_text()
    assert acl_redis.machines["sec-alice"] not in registry  # its hash only
    assert "sec-alice" in acl_redis.credentials("list")
    acl_redis.stop()
    acl_redis.start()  # the registry becomes `user` lines at every start
    assert alice.acl_whoami() == "sec-alice"
    acl_redis.credentials("revoke", "sec-alice")
    with pytest.raises(redis.ConnectionError):  # ACL DELUSER closed its open connection ...
        alice.ping()
    with pytest.raises(redis.AuthenticationError):  # ... and it cannot log in again
        redis.Redis(port=acl_redis.port, username="sec-alice", password=acl_redis.machines.pop("sec-alice")).ping()
    assert "sec-alice" not in acl_redis.credentials("list")


@pytest.mark.parametrize("who", ["collector", "player", "machine-collector", "machine-player"])
def test_untrusted_users_cannot_eval_or_touch_rq(acl_redis: AclRedis, who: str) -> None:
    """#2: EVAL wrote 273 MB past a 256 MB maxmemory (memory is checked at a script's first
    write only); #3: a collector published rq `shutdown` on another worker's channel and set
    `rq:suspended`; #4: forged rq jobs (webhooks, compressed data) reached honest collectors."""
    role = who.removeprefix("machine-")
    c = acl_redis.machine(role, f"sec-{role}-rq") if who.startswith("machine-") else acl_redis.client(role)
    script = "for i = 1, 10 do redis.call('SET', 'rq:job:x' .. i, string.rep('x', 1000000)) end return 1"
    for what, call in {
        "EVAL": lambda: c.eval(script, 0),
        "EVALSHA": lambda: c.evalsha("0" * 40, 0),
        "FCALL": lambda: c.execute_command("FCALL", "f", 0),
        "FUNCTION LOAD": lambda: c.execute_command("FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('f', "
                                                   "function() return 1 end)"),
        "publish rq shutdown": lambda: c.publish("rq:pubsub:collector-victim", json.dumps({"command": "shutdown"})),
        "suspend rq workers": lambda: c.set("rq:suspended", 1),
        "read the rq worker registry": lambda: c.smembers("rq:workers"),
        "forge an rq job": lambda: c.hset(f"rq:job:{acl_redis.keys.job_id(EVALUATE_QUEUE, 'x')}", "data", b"x"),
        "push to an rq queue": lambda: c.rpush(f"rq:queue:{acl_redis.keys.queue(EVALUATE_QUEUE)}", "x"),
        "SCAN the keyspace": lambda: c.scan(0),
    }.items():
        assert denied(call), f"{who} may {what}"


def test_a_collector_can_trim_or_block_only_its_own_stream(acl_redis: AclRedis) -> None:
    """#5: `XADD ... MAXLEN 0` emptied the shared stream; an XADD with the largest id made every
    honest publish fail. Each collector now has streams of its own, and only those."""
    from pipeline.collect.episode import SetPublisher
    from pipeline.wire.manifest import SampleSet
    from tests.factories import sample_set, tiny_config

    k, admin = acl_redis.keys, acl_redis.client()
    mallory, bob = acl_redis.machine("collector", "sec-mallory"), acl_redis.machine("collector", "sec-bob")
    cfg = tiny_config()
    honest = SetPublisher(bob, k, stream_maxlen=50, max_backlog=10)
    honest.publish(SampleSet("steering", "sec-bob", "e1", sample_set(cfg, "steering", 2, seed=1).columns, {}))
    assert honest.published == 1 and admin.xlen(k.stream("steering", "sec-bob")) == 1
    for what, call in {
        "trim another's stream": lambda: mallory.xadd(k.stream("steering", "sec-bob"), {"x": 1}, maxlen=0),
        "block another's stream": lambda: mallory.xadd(k.stream("steering", "sec-bob"), {"x": 1},
                                                       id="18446744073709551615-18446744073709551615"),
        "delete another's stream": lambda: mallory.delete(k.stream("steering", "sec-bob")),
    }.items():
        assert denied(call), f"a collector may {what}"
    # on its own streams it may: that spoils its own transport only
    mallory.xadd(k.stream("steering", "sec-mallory"), {"x": 1}, maxlen=0)
    mallory.xadd(k.stream("steering", "sec-mallory"), {"x": 1}, id="18446744073709551615-18446744073709551615")
    with pytest.raises(redis.ResponseError, match="exhausted"):
        mallory.xadd(k.stream("steering", "sec-mallory"), {"x": 1})
    # a stream of an output that does not exist: nobody would read or trim it, so it is deleted
    from pipeline.wire.sample_streams import SampleStreams

    for _ in range(100):
        mallory.xadd(k.stream("no_such_output", "sec-mallory"), {"x": b"y" * 1000})
    found = SampleStreams(admin, k, ["steering", "acceleration_braking"], SERVER_GROUP).refresh()
    assert k.stream("steering", "sec-bob") in found and not admin.exists(k.stream("no_such_output", "sec-mallory"))
    honest.publish(SampleSet("steering", "sec-bob", "e1", sample_set(cfg, "steering", 2, seed=2).columns, {}))
    assert honest.published == 2 and admin.xlen(k.stream("steering", "sec-bob")) == 2


def test_a_collector_cannot_read_rewrite_expire_or_rename_over_anothers_rows(acl_redis: AclRedis) -> None:
    """#6: any collector could SCAN, read, rewrite or expire every collector's incoming rows
    (a rewritten row was routed and credited to its victim), and republishing a routed set
    id renamed over the rows already in the buffer."""
    from pipeline.collect.episode import SetPublisher
    from pipeline.serve.server import Server
    from pipeline.wire.manifest import SampleSet
    from tests.factories import sample_set, tiny_config

    k, admin = acl_redis.keys, acl_redis.client()
    mallory, bob = acl_redis.machine("collector", "sec-mallory6"), acl_redis.machine("collector", "sec-bob6")
    cfg = tiny_config()
    cols = sample_set(cfg, "steering", 2, seed=3).columns
    victim = SampleSet("steering", "sec-bob6", "e1", cols, {})
    row = k.incoming("sec-bob6", victim.set_id, 0)
    SetPublisher(bob, k, 50, 10).publish(victim)
    for what, call in {
        "read another's row": lambda: mallory.get(row),
        "rewrite another's row": lambda: mallory.set(row, b"forged"),
        "expire another's row": lambda: mallory.expire(row, 1),
        "delete another's row": lambda: mallory.delete(row),
        "write a row under another's name": lambda: mallory.set(k.incoming("sec-bob6", "s2", 0), b"x", ex=60),
    }.items():
        assert denied(call), f"a collector may {what}"
    server = Server(admin, k, cfg, rescan_s=0)
    server.setup()
    server.route_once(block_ms=10)
    buffered = {i: admin.get(k.buffer_row("steering", sample_id("sec-bob6", victim.set_id, i))) for i in range(2)}
    assert all(buffered.values())
    # mallory republishes bob's routed set id with frames of her own, on her own stream: sample
    # ids carry their collector, so hers land beside his, as hers, and his rows stay as they were
    forged_cols = {**cols, "frames": 255 - cols["frames"]}
    forged = SampleSet("steering", "sec-mallory6", "e9", forged_cols, {}, set_id=victim.set_id)
    SetPublisher(mallory, k, 50, 10).publish(forged)
    server.route_once(block_ms=10)
    assert {i: admin.get(k.buffer_row("steering", sample_id("sec-bob6", victim.set_id, i))) for i in range(2)} == buffered
    assert admin.exists(k.buffer_row("steering", sample_id("sec-mallory6", victim.set_id, 0)))
    SetPublisher(mallory, k, 50, 10).publish(forged)  # her own set once more: refused, never renamed over
    server.route_once(block_ms=10)
    reasons = [f[b"reason"].decode() for _, f in admin.xrange(k.deadletter)]
    assert any("already in the buffer" in reason for reason in reasons), reasons


def test_keys_written_without_a_ttl_or_too_big_are_swept(acl_redis: AclRedis) -> None:
    """#2: a player SET frame keys without a TTL (past maxmemory, for good). ACLs cannot
    require `EX`; the server's sweep deletes such keys (and oversized ones) within SWEEP_S."""
    from pipeline.serve.sweeper import FRAME_MAX, sweep

    k, admin = acl_redis.keys, acl_redis.client()
    player, collector = acl_redis.machine("player", "sec-pl"), acl_redis.machine("collector", "sec-col")
    player.set(k.frame("sec-pl", "hood"), b"j" * 1000)  # no TTL
    player.set(k.frame("sec-pl", "cinematic"), b"j" * (FRAME_MAX + 1), ex=60)  # too big
    player.set(k.frame("sec-pl", "convcam"), b"j" * 1000, ex=60)  # as LiveView writes it
    player.hset(k.status("player", "sec-pl"), "x", 1)  # no TTL
    collector.set(k.incoming("sec-col", "s1", 0), b"r" * 100)  # no TTL
    collector.set(k.incoming("sec-col", "s2", 0), b"r" * 100, ex=60)
    assert sweep(admin, k, row_max=10_000) >= 4  # (and what earlier tests here wrote without a TTL)
    assert admin.exists(k.frame("sec-pl", "convcam"), k.incoming("sec-col", "s2", 0)) == 2
    assert admin.exists(k.frame("sec-pl", "hood"), k.frame("sec-pl", "cinematic"), k.status("player", "sec-pl"),
                        k.incoming("sec-col", "s1", 0)) == 0


@pytest.mark.slow
def test_roles_run_as_their_acl_users(acl_redis: AclRedis, tmp_path: Path) -> None:
    """Server, collector, trainer and player each log in as their own user; Redis denies them nothing."""
    from pipeline.config import load_config
    from tests.faults import RELIABILITY_CONFIG

    admin = acl_redis.client()
    for key in admin.scan_iter(match=f"{acl_redis.prefix}*"):  # what the permission tests above left
        admin.delete(key)
    admin.acl_log_reset()
    roles = FaultRoles(acl_redis.url(), acl_redis.prefix, tmp_path)
    marker = tmp_path / "pwned"
    try:
        prefill(admin, acl_redis.keys, load_config(RELIABILITY_CONFIG), 30)
        for role, args in {"server": ["--config", str(RELIABILITY_CONFIG)], "collector": [], "trainer": [],
                           "player": []}.items():
            roles.start(role, role, *args, env={"CHARLES_REDIS_URL": acl_redis.url(role)})
        k = acl_redis.keys
        # a forged episode spec naming a shell command: the collector refuses it and goes on
        collector_id = wait_for(lambda: _statuses(admin, k, "collector"), 60, "the collector", roles)[0]["id"]
        admin.rpush(k.jobs(collector_id), json.dumps({"episode": f"x; touch {marker}", "environment": {},
                                                      "episode_s": 1}))
        wait_for(lambda: int(admin.hget(k.weights_latest, "version") or 0) >= 1, 150, "weights published", roles)
        wait_for(lambda: any(int(s.get("model_version", 0)) >= 1 for s in _statuses(admin, k, "player")), 90,
                 "the player to load a published version", roles)
        wait_for(lambda: roles.events("collector", "episode_spec_refused"), 60, "the forged spec refused", roles)
        assert not marker.exists()
        log = admin.acl_log(count=50)
        assert log == [], "Redis denied a role something it needed:\n" + json.dumps(
            [{k2: (v.decode() if isinstance(v, bytes) else v) for k2, v in e.items()} for e in log], default=str)
        for role in ("player", "collector", "trainer", "server"):
            assert roles.stop(role) == 0, roles.log(role)[-2000:]
    finally:
        roles.stop_all()


def _statuses(r: redis.Redis, keys: Keys, role: str) -> list[dict[str, str]]:
    from pipeline.wire.presence import read_statuses

    return read_statuses(r, keys, role)


# -- listeners on loopback -------------------------------------------------------------------------

def test_listeners_bound_to_loopback() -> None:
    procfile = {line.split(":", 1)[0]: line.split(":", 1)[1] for line in
                (ROOT / "Procfile").read_text().splitlines() if ":" in line}
    from workers.tensorboard import cli as tensorboard_cli

    host = next(o.default for o in tensorboard_cli.params if o.name == "host")
    assert procfile["tensorboard"].split() == ["charles", "tensorboard"] and host == "127.0.0.1", procfile["tensorboard"]
    assert "--host" not in procfile.get("dashboard", "") or "--host 127.0.0.1" in procfile["dashboard"]
    from pipeline.config import DashboardConfig, load_config

    assert DashboardConfig().host == "127.0.0.1"
    for path in sorted((ROOT / "configs").glob("*.toml")):
        assert load_config(path).dashboard.host in ("127.0.0.1", "localhost", "::1"), path
    conf = (ROOT / "infra" / "redis.conf").read_text()
    assert re.search(r"^bind 127\.0\.0\.1 -::1$", conf, re.M) and re.search(r"^protected-mode yes$", conf, re.M)


# -- no pickle anywhere ---------------------------------------------------------------------------

#: Test files that use pickle on purpose, to prove it never runs: file -> reason.
PICKLE_ALLOWED = {
    "tests/test_codec.py": "monkeypatches pickle.loads to prove object arrays never reach it",
    "tests/test_server.py": "builds a malicious msgpack-numpy object array to feed the server",
    "tests/test_fuzz.py": "builds malicious payloads and traps pickle.loads",
    "tests/test_security.py": "this scanner, and a torch.save blob that must be refused",
    "tests/faults.py": "builds the malicious entries (msgpack-numpy object arrays) the server must refuse",
    "tests/test_reliability_trainer.py": "puts a pickle-carrying row into a buffer the trainer must refuse",
}
RQ_BUILDERS = {"Queue", "Worker", "SimpleWorker", "SpawnWorker", "CollectorWorker"}


def _python_files() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _call_name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _rq_names(tree: ast.AST) -> set[str]:
    """Names this file imported from rq (so `queue.Queue` of the standard library is not flagged)."""
    return {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
            and n.module.split(".")[0] == "rq" for a in n.names}


def _code_only(text: str) -> str:
    """The source without comments and string literals (docstrings may name pickle.loads)."""
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    return " ".join(t.string for t in tokens if t.type not in (tokenize.COMMENT, tokenize.STRING))


def pickle_findings(path: Path, tree: ast.AST) -> list[str]:
    """Every way this file could unpickle: imports, loads, torch.load, allow_pickle, rq without JSON."""
    found = []
    rq_names = _rq_names(tree)
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            bad = [n for n in names if n.split(".")[0] in {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve"}]
            bad += [n for n in names if n == "msgpack_numpy" or n.startswith("msgpack_numpy.")]
            if bad:
                found.append(f"{where}: imports {bad}")
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        text = ast.unparse(node.func)
        if text in {"torch.load", "load"} and "torch" in text:
            wo = _kw(node, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                found.append(f"{where}: torch.load without weights_only=True")
        allow = _kw(node, "allow_pickle")
        if isinstance(allow, ast.Constant) and allow.value is True:
            found.append(f"{where}: allow_pickle=True")
        if name in {"loads", "load", "Unpickler"} and text.split(".")[0] in {"pickle", "cPickle", "dill", "joblib"}:
            found.append(f"{where}: {text}")
        if name in RQ_BUILDERS and (text.split(".")[0] in rq_names | {"rq"} or name == "CollectorWorker"):
            ser = _kw(node, "serializer")
            if not (ser is not None and "JSONSerializer" in ast.unparse(ser)):
                found.append(f"{where}: {text}(...) without serializer=JSONSerializer (rq's default is pickle)")
    return found


def test_no_pickle_anywhere_in_the_source_tree() -> None:
    findings: list[str] = []
    for path in _python_files():
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text(), filename=rel)
        hits = pickle_findings(path, tree)
        if rel in PICKLE_ALLOWED:
            continue
        findings += hits
        code = _code_only(path.read_text())
        if re.search(r"\bpickle\s*\.\s*loads?\b|torch\s*\.\s*load\s*\(|allow_pickle\s*=\s*True", code) and not hits:
            findings.append(f"{rel}: mentions an unpickling call in a form the AST scan missed")
    assert findings == [], "pickle could run:\n" + "\n".join(findings)


def test_the_scanner_catches_each_pattern(tmp_path: Path) -> None:
    """The scan above must be able to fail: each bad pattern is reported."""
    bad = (
        "import pickle\nfrom joblib import load\nimport msgpack_numpy\nimport torch\nimport numpy as np\n"
        "from rq import Queue, SimpleWorker\n"
        "torch.load('w.pt')\ntorch.load('w.pt', weights_only=False)\nnp.load('x.npy', allow_pickle=True)\n"
        "pickle.loads(b'')\nQueue('q', connection=None)\nSimpleWorker(['q'])\n"
    )
    findings = pickle_findings(ROOT / "tests" / "x.py", ast.parse(bad))
    assert len(findings) == 9, findings


def test_rq_queues_and_jobs_use_json(r: redis.Redis, keys: Keys) -> None:
    """What the trainer really enqueues for the evaluator: a JSON job (rq's default would be a pickle)."""
    from rq.serializers import JSONSerializer

    from pipeline.evaluate.scoreboard import EVALUATE_JOB, enqueue_evaluation, evaluation_queue
    from pipeline.wire.weights import WeightsInfo

    assert evaluation_queue(r, keys).serializer is JSONSerializer
    job_id = enqueue_evaluation(r, keys, WeightsInfo(version=3, sha256="0" * 64, model="m", batches=1, created=0.0))
    assert job_id.startswith(keys.job_id(EVALUATE_QUEUE, ""))
    data = zlib.decompress(r.hget(f"rq:job:{job_id}", "data"))  # rq compresses the serialized call
    func, _instance, args, _kwargs = json.loads(data)  # JSON, not pickle
    assert func == EVALUATE_JOB and args[0]["version"] == 3


# -- weights only as safetensors ------------------------------------------------------------------

def test_weights_load_only_safetensors() -> None:
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)  # a pickle: must never be loaded
    with pytest.raises(WeightsError, match="safetensors"):
        from_blob(buf.getvalue())
    assert not any("torch.load" in p.read_text() for p in _python_files()
                   if str(p.relative_to(ROOT)) not in PICKLE_ALLOWED)


def test_redis_refuses_weak_admin_password(tmp_path: Path) -> None:
    env = {**os.environ, "CHARLES_REDIS_PASSWORD": "change-me", "CHARLES_REDIS_PORT": str(free_port())}
    res = subprocess.run([*CLI, "redis", "--data-dir", str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=30)
    assert res.returncode != 0 and "too weak" in res.stderr


def test_a_collector_flooding_valid_sets_cannot_crowd_out_another(acl_redis: AclRedis) -> None:
    """The gap left by #6: a machine flooding plausible sets of its own made the full buffer
    evict everybody's oldest samples, the honest collector's first. Each collector now holds at
    most `collector_share` fair shares of a buffer; beyond that its own oldest leave."""
    from pipeline.collect.episode import SetPublisher
    from pipeline.serve.server import Server
    from pipeline.wire.manifest import SampleSet
    from pipeline.wire.presence import Presence
    from tests.factories import sample_set, tiny_config

    k, admin = acl_redis.keys, acl_redis.client()
    names = {"mallory": "sec-mallory7", "bob": "sec-bob7"}
    mallory, bob = (acl_redis.machine("collector", name) for name in names.values())
    for client, name in ((mallory, names["mallory"]), (bob, names["bob"])):
        Presence(client, k, "collector", name).beat(state="collecting")
    cfg = tiny_config(buffers={"capacity": 40, "collector_share": 1.5, "stream_maxlen": 1000})
    server = Server(admin, k, cfg, rescan_s=0)
    server.setup()
    server.supply_jobs()  # the server learns who is alive: a quota of 30 samples each (fewer if more are alive)
    quota = server.buffers.shards[0].collector_quota
    assert quota <= 30
    honest = SampleSet("steering", names["bob"], "e1", sample_set(cfg, "steering", 8, seed=1).columns, {})
    SetPublisher(bob, k, 1000, 10).publish(honest)
    server.route_once(block_ms=10)
    refused_before = admin.xlen(k.deadletter)
    flood = SetPublisher(mallory, k, 1000, 100)
    for seed in range(2, 30):  # 224 valid samples, 7x what the buffer holds
        flood.publish(SampleSet("steering", names["mallory"], f"e{seed}",
                                sample_set(cfg, "steering", 8, seed=seed).columns, {}))
    while server.route_once(block_ms=10):
        pass
    ids = {i.decode() for i in admin.smembers(k.buffer("steering"))}
    assert {sample_id(names["bob"], honest.set_id, i) for i in range(8)} <= ids  # bob's samples all stayed
    assert len([i for i in ids if i.startswith(names["mallory"] + "/")]) == quota
    assert admin.xlen(k.deadletter) == refused_before  # her sets were valid: routed, at her own samples' expense


def test_every_users_keys_are_its_own_on_a_redis_cluster_too(acl_redis: AclRedis) -> None:
    """On a Redis Cluster the keys outside the shards carry `{global}` and the shard keys a
    shard's tag: the users' patterns named only the plain layout, so a machine's own presence,
    jobs and weights were denied there (and the trainer's buffers). Checked with ACL DRYRUN,
    Redis' own ACL engine, on the cluster's key names."""
    k = Keys(acl_redis.prefix, cluster=True)
    admin = acl_redis.client()
    acl_redis.machine("collector", "sec-cl1")
    acl_redis.machine("player", "sec-pl1")
    shard = k.for_collector("sec-cl1", 3)

    def allowed(user: str, *command: str) -> bool:
        return admin.execute_command("ACL", "DRYRUN", user, *command) in (b"OK", "OK")

    for command in (("SET", k.presence("collector", "sec-cl1"), "x", "EX", "10"),
                    ("HSET", k.status("collector", "sec-cl1"), "state", "idle"), ("BRPOP", k.jobs("sec-cl1"), "1"),
                    ("HGET", k.config, "json"), ("HGET", k.weights_latest, "version"),
                    ("XADD", shard.stream("steering", "sec-cl1"), "*", "meta", "x"),
                    ("SET", shard.incoming("sec-cl1", "s1", 0), "row", "EX", "60")):
        assert allowed("sec-cl1", *command), command
    for command in (("SET", k.presence("collector", "sec-other"), "x"), ("BRPOP", k.jobs("sec-other"), "1"),
                    ("XADD", shard.stream("steering", "sec-other"), "*", "meta", "x"),
                    ("SET", shard.buffer_row("steering", "x"), "x"), ("HSET", k.config, "json", "{}")):
        assert not allowed("sec-cl1", *command), command
    for command in (("SET", k.frame("sec-pl1", "hood"), "jpeg", "EX", "5"), ("HGET", k.weights_latest, "blob"),
                    ("SUBSCRIBE", k.weights_channel)):
        assert allowed("sec-pl1", *command), command
    assert not allowed("sec-pl1", "SET", k.frame("sec-pl2", "hood"), "jpeg")
    for command in (("SADD", shard.buffer("steering"), "id"), ("HINCRBY", shard.counters, "x", "1"),
                    ("HSET", k.weights_latest, "version", "1"), ("SET", k.presence("trainer", "t1"), "x"),
                    ("HGET", k.config, "json")):
        assert allowed("trainer", *command), command
    assert not allowed("trainer", "HSET", k.config, "json", "{}")
