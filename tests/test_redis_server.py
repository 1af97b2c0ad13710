"""`charles redis` keeps its data private: the data folder 0700, every RDB/AOF file 0600."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
import redis

from pipeline.wire.local_redis import RedisServer, free_port
from tests.faults import wait_for
from workers.redis_server import runtime_config

CLI = [sys.executable, "-m", "pipeline.cli"]


def modes(data_dir: Path) -> dict[str, str]:
    """Every path under (and including) the data folder -> its permission bits, octal."""
    return {str(p.relative_to(data_dir.parent)): oct(stat.S_IMODE(p.stat().st_mode))
            for p in [data_dir, *data_dir.rglob("*")]}


def persist(client: redis.Redis) -> None:
    """Write, then make Redis write an RDB and rewrite its AOF (new files, created by redis-server)."""
    client.set("probe", b"x" * 1000)
    client.bgsave()
    wait_for(lambda: client.info("persistence")["rdb_bgsave_in_progress"] == 0, 20, "BGSAVE")
    time.sleep(0.2)
    client.bgrewriteaof()
    wait_for(lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0
             and client.info("persistence")["aof_rewrite_scheduled"] == 0, 20, "BGREWRITEAOF")


def assert_private(data_dir: Path) -> None:
    found = modes(data_dir)
    assert any(name.endswith(".rdb") for name in found) and any(".aof" in name for name in found), found
    wrong = {name: mode for name, mode in found.items()
             if mode != ("0o700" if (data_dir.parent / name).is_dir() else "0o600")}
    assert not wrong, f"readable by others: {wrong}"


def test_charles_redis_data_is_private(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    subprocess.run([*CLI, "init", "--env-file", str(env_file)], check=True, capture_output=True)
    data_dir = tmp_path / "var" / "redis"
    data_dir.mkdir(parents=True, mode=0o755)  # an existing install: 0755 dir, a 0644 file from before
    (data_dir / "charles.rdb.old").write_bytes(b"")
    (data_dir / "charles.rdb.old").chmod(0o644)
    port = free_port()
    env = {**os.environ, "CHARLES_REDIS_PORT": str(port), "CHARLES_ENV_FILE": str(env_file)}
    env.pop("CHARLES_REDIS_URL", None)
    env.pop("CHARLES_REDIS_PASSWORD", None)
    password = next(line.split("=", 1)[1] for line in env_file.read_text().splitlines()
                    if line.startswith("CHARLES_REDIS_PASSWORD="))
    with open(tmp_path / "redis.out", "wb") as out:
        proc = subprocess.Popen([*CLI, "redis", "--data-dir", str(data_dir)], env=env, cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(port=port, password=password)
        wait_for(client.ping, 20, "charles redis to accept connections")
        persist(client)
        assert_private(data_dir)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert_private(data_dir)  # the RDB written at shutdown too


def test_test_redis_data_is_private(tmp_path: Path) -> None:
    """The throwaway redis-server of tests and benchmarks (pipeline/wire/local_redis.py) does the same."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    try:
        persist(server.client())
        assert_private(server.data_dir)
    finally:
        server.stop()


def test_maxmemory_from_the_environment_overrides_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 270x480 run's 25,000 zstd samples per output need ~3.6 GB: CHARLES_REDIS_MAXMEMORY raises
    infra/redis.conf's 2gb; anything but a size is refused before Redis starts."""
    monkeypatch.setenv("CHARLES_REDIS_MAXMEMORY", "5gb")
    lines = runtime_config(tmp_path, 6500, "a-password-of-16-chars").splitlines()
    assert lines[0].startswith("include ") and "maxmemory 5gb" in lines[1:]
    monkeypatch.setenv("CHARLES_REDIS_MAXMEMORY", "5gb\nrequirepass x")
    with pytest.raises(click.ClickException):
        runtime_config(tmp_path, 6500, "a-password-of-16-chars")
