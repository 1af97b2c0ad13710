"""A throwaway `redis-server` on a free loopback port with a password, for tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

PASSWORD = "test-password-not-secret"


def private_data_dir(path: Path) -> None:
    """Create Redis' data folder 0700 and take group/other access from what is already in it.

    Redis creates its RDB/AOF files with the process umask (0644 by default): start it with
    umask 077 as well, so files written later are 0600 too.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    for sub in path.rglob("*"):
        if not sub.is_symlink():
            sub.chmod(sub.stat().st_mode & 0o700)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """Starts, stops (gracefully or with SIGKILL) and restarts one redis-server process."""

    def __init__(self, data_dir: Path, port: int | None = None, appendonly: bool = True,
                 extra: tuple[str, ...] = ()) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra = extra  # more redis-server arguments
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        private_data_dir(self.data_dir)
        args = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--requirepass", PASSWORD,
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--logfile", str(self.data_dir / "redis.log"),
            *self.extra,
        ]
        self.proc = subprocess.Popen(args, umask=0o077)  # RDB/AOF files 0600, like `charles redis`
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                return
            except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            try:
                redis.Redis.from_url(self.url).shutdown(save=False)
            except redis.exceptions.ConnectionError:
                pass
        self.proc.wait(timeout=15)
        self.proc = None

    def restart(self, kill: bool = False, down_s: float = 0.0) -> None:
        """Stop (SHUTDOWN, or SIGKILL with `kill`), stay down `down_s`, start again on the same port and data dir."""
        self.stop(kill=kill)
        time.sleep(down_s)
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


class RedisClusterNodes:
    """A throwaway Redis Cluster of `nodes` masters on loopback (no replicas), each a
    `redis-server --cluster-enabled yes` joined by `redis-cli --cluster create`."""

    def __init__(self, data_dir: Path, nodes: int = 3) -> None:
        if shutil.which("redis-cli") is None:
            raise RuntimeError("redis-cli is not installed (Debian: apt-get install redis-tools)")
        self.servers = [RedisServer(data_dir / f"node{i}", appendonly=False,
                                    extra=("--cluster-enabled", "yes", "--masterauth", PASSWORD,
                                           "--cluster-port", str(free_port()),  # not port + 10000: > 65535?
                                           "--cluster-config-file", str(data_dir / f"node{i}" / "nodes.conf")))
                        for i in range(nodes)]

    @property
    def url(self) -> str:
        """The URL of the first node, marked as a cluster (`pipeline.wire.redis_conn.is_cluster`)."""
        return self.servers[0].url + "?cluster=yes"

    def start(self) -> None:
        """Start the nodes and join them; if that fails, no node is left running (a node left
        behind holds its parent's stdout open: `charles bench fleet | tee` then never ended)."""
        try:
            for server in self.servers:
                server.start()
            addresses = [f"127.0.0.1:{s.port}" for s in self.servers]
            # the whole environment: redis-cli may need LD_LIBRARY_PATH as redis-server does (the GPU image)
            joined = subprocess.run(["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "0",
                                     "--cluster-yes"], env={**os.environ, "REDISCLI_AUTH": PASSWORD},
                                    capture_output=True, timeout=60)
            if joined.returncode != 0:
                said = (joined.stderr or joined.stdout).decode(errors="replace").strip()[-500:]
                raise RuntimeError(f"redis-cli --cluster create failed (exit {joined.returncode}): {said}")
            deadline = time.monotonic() + 30
            while any(s.client().cluster("info").get("cluster_state") != "ok" for s in self.servers):
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not reach cluster_state:ok in 30 s")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
