"""Every role supervised (`charles supervise`, what `make run` starts): the real Procfile's
redis, server and two collectors under supervisord, on their own Redis port in a temp folder.

kill -9 of a collector, then of redis-server, brings that one back within seconds while the
others keep their PIDs (honcho stopped every role); Ctrl-C stops the roles first, each by
itself, and Redis last (Redis used to stop while collectors still handed over their sets).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from supervisor.xmlrpc import SupervisorTransport

from pipeline.supervision import parse_concurrency, read_procfile, supervisord_config
from pipeline.wire.keys import Keys
from pipeline.wire.local_redis import free_port
from tests.faults import RELIABILITY_CONFIG, wait_for
from tests.processes import ROOT

CLI = [sys.executable, "-m", "pipeline.cli"]


class Supervised:
    """`charles supervise -c collector=2 redis server collector` in `work`, with its own .env."""

    def __init__(self, work: Path) -> None:
        self.work = work
        shutil.copy(ROOT / "Procfile", work / "Procfile")
        subprocess.run([*CLI, "init", "--env-file", str(work / ".env")], check=True, capture_output=True)
        self.port = free_port()
        env_lines = [line for line in (work / ".env").read_text().splitlines()
                     if not line.startswith(("CHARLES_REDIS_PORT=", "CHARLES_CONFIG="))]
        env_lines += [f"CHARLES_REDIS_PORT={self.port}", f"CHARLES_CONFIG={RELIABILITY_CONFIG}",
                      "CHARLES_LOG_JSON=1", "OMP_NUM_THREADS=1"]
        (work / ".env").write_text("\n".join(env_lines) + "\n")
        self.password = next(line.split("=", 1)[1] for line in env_lines
                             if line.startswith("CHARLES_REDIS_PASSWORD="))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHARLES_")}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `charles` in the Procfile
        self.out = open(work / "supervise.out", "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([*CLI, "supervise", "-c", "collector=2", "redis", "server", "collector"],
                                     cwd=work, env=env, stdout=self.out, stderr=subprocess.STDOUT)
        self.sock = work / "var" / "supervisor" / "supervisor.sock"
        self.known_pids: set[int] = set()

    def pids(self) -> dict[str, int]:
        """Process name -> PID of every RUNNING role (empty while supervisord is not answering)."""
        rpc = xmlrpc.client.ServerProxy("http://localhost", transport=SupervisorTransport(None, None, f"unix://{self.sock}"))
        try:
            infos = rpc.supervisor.getAllProcessInfo()
        except (OSError, http.client.HTTPException, xmlrpc.client.Fault):
            return {}
        found = {i["name"]: i["pid"] for i in infos if i["statename"] == "RUNNING"}
        self.known_pids |= set(found.values())
        return found

    def redis(self) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, socket_timeout=5)

    def collectors_present(self) -> int:
        return sum(1 for _ in self.redis().scan_iter(Keys("charles:").presence_pattern("collector")))

    def log(self) -> str:
        return (self.work / "var" / "supervisor" / "supervisord.log").read_text(errors="replace")

    def output_tail(self, lines: int = 80) -> str:
        """The roles' last lines of output (supervisord sends them all to supervise.out)."""
        self.out.flush()
        return "\n".join((self.work / "supervise.out").read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for pid in self.known_pids:  # never leave a role behind, even when supervisord was killed
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        self.out.close()


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Supervised]:
    system = Supervised(tmp_path)
    yield system
    system.close()


def kill_and_wait_back(system: Supervised, name: str, timeout: float = 15.0) -> float:
    """SIGKILL one role; seconds until supervisord runs it again. Every other role keeps its PID."""
    before = system.pids()
    t0 = time.monotonic()
    os.kill(before[name], signal.SIGKILL)
    after = wait_for(lambda: (p := system.pids()).get(name, before[name]) != before[name] and p, timeout,
                     f"{name} to come back")
    back_s = time.monotonic() - t0
    assert {n: p for n, p in after.items() if n != name} == {n: p for n, p in before.items() if n != name}
    return back_s


@pytest.mark.slow
def test_killed_roles_come_back_and_shutdown_stops_redis_last(supervised: Supervised) -> None:
    names = {"redis", "server", "collector_1", "collector_2"}
    wait_for(lambda: set(supervised.pids()) == names, 30, "every role RUNNING")
    wait_for(lambda: supervised.collectors_present() == 2, 45, "both collectors registered in Redis")

    collector_s = kill_and_wait_back(supervised, "collector_1")
    wait_for(lambda: supervised.collectors_present() == 3, 30, "the new collector registered (old key not yet expired)")
    redis_s = kill_and_wait_back(supervised, "redis")
    wait_for(lambda: supervised.redis().ping(), 15, "Redis answering again")
    pids = supervised.pids()
    assert set(pids) == names and supervised.proc.poll() is None
    print(f"FIGURES collector back in {collector_s:.2f} s, redis-server back in {redis_s:.2f} s")

    # Ctrl-C: every role exits by itself (exit status 0, nobody waits for SIGKILL), Redis after them all
    t0 = time.monotonic()
    supervised.proc.send_signal(signal.SIGINT)
    assert supervised.proc.wait(60) == 0
    stopped = re.findall(r"stopped: (\S+) \((.*?)\)", supervised.log())
    assert [n for n, _ in stopped][-1] == "redis" and {n for n, _ in stopped} == names, stopped
    # a role SIGKILLed at stop printed its threads' stacks 10 s after SIGTERM (pipeline.process): show them
    assert all(how == "exit status 0" for _, how in stopped), (stopped, supervised.output_tail())
    print(f"FIGURES shutdown in {time.monotonic() - t0:.1f} s: {stopped}")


def test_config_orders_redis_first_and_last_and_scales_roles(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text("redis: charles redis\nserver: charles server --config ${CHARLES_CONFIG:-x.toml}\n"
                        "collector: charles collector\n# a comment\n\ntensorboard: tb 2>&1 | grep -v '^W'\n")
    roles = read_procfile(procfile)
    assert list(roles) == ["redis", "server", "collector", "tensorboard"]
    text = supervisord_config(roles, tmp_path / "sv", tmp_path, ["redis", "collector"],
                              parse_concurrency("collector=4"))
    assert "[program:server]" not in text and "numprocs=4" in text
    assert "[group:roles]\nprograms=collector\npriority=100" in text
    assert re.search(r"\[program:redis\][^\[]*priority=10\n", text)


@pytest.mark.parametrize(("shell", "seen"), [("configs/from-shell.toml", "configs/from-shell.toml"),
                                             (None, "configs/from-dotenv.toml")])
def test_the_shell_wins_over_dotenv(tmp_path: Path, shell: str | None, seen: str) -> None:
    """Issue 16: `CHARLES_CONFIG=x make run` must run x. honcho lets `.env` win over the shell;
    `charles supervise` reads `.env` without overriding the environment, and supervisord hands
    that environment to every role: the shell's value wins, `.env`'s fills in what it lacks."""
    (tmp_path / "Procfile").write_text(
        "probe: sh -c 'echo \"${CHARLES_CONFIG:-configs/default.toml}\" > probe.out; exec sleep 60'\n")
    (tmp_path / ".env").write_text("CHARLES_CONFIG=configs/from-dotenv.toml\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARLES_")}
    if shell is not None:
        env["CHARLES_CONFIG"] = shell
    proc = subprocess.Popen([*CLI, "supervise"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        probe = tmp_path / "probe.out"
        wait_for(lambda: probe.is_file() and probe.read_text().strip(), 30, "the role to start")
        assert probe.read_text().strip() == seen
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
