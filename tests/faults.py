"""Fault injection for the reliability tests: roles with their own environment, JSON log
events, pre-filled buffers, a loopback TCP proxy that can be cut, and network namespaces.

Nothing here sends traffic anywhere but loopback or the addresses of namespaces the
tests create themselves (10.231.x.y inside those namespaces only).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import redis

from pipeline.config import Config
from pipeline.serve.buffers import Buffers
from pipeline.wire.keys import SERVER_GROUP, Keys
from tests.factories import sample_set
from tests.processes import ROOT, Roles, wait_until

RELIABILITY_CONFIG = ROOT / "tests" / "configs" / "reliability_tiny.toml"


class FaultRoles(Roles):
    """`Roles` that can start a role with extra environment or under a command prefix (netns)."""

    def start(self, name: str, *args: str, env: dict[str, str] | None = None,
              prefix: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "pipeline.cli", *args], cwd=self.workdir,
                                env={**self.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> int | None:
        """SIGKILL: no handler runs, nothing is flushed."""
        return self.stop(name, sig=signal.SIGKILL, timeout=10)

    def events(self, name: str, event: str | None = None) -> list[dict[str, Any]]:
        return events_in(self.log(name), event)

    def alive(self, *names: str) -> bool:
        return all(n in self.procs and self.procs[n].poll() is None for n in names)


def events_in(text: str, event: str | None = None) -> list[dict[str, Any]]:
    """The structlog JSON events of a log (other lines, e.g. tracebacks, are skipped)."""
    out = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if event is None or ev.get("event") == event:
            out.append(ev)
    return out


def unique_prefix(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}:"


def prefill(r: redis.Redis, keys: Keys, cfg: Config, per_output: int, tag: str = "prefill") -> int:
    """Put valid rows straight into every buffer, so training can start without waiting for collectors."""
    buffers = Buffers(r, keys, cfg.output_names(), cfg.buffers.capacity, cfg.buffers.start_fraction,
                      cfg.replay_limit())
    for i, output in enumerate(cfg.output_names()):
        buffers.insert(output, f"{tag}-{i}", sample_set(cfg, output, per_output, seed=i).rows())
    return per_output * len(cfg.output_names())


def stream_entries_added(r: redis.Redis, keys: Keys, outputs: Sequence[str]) -> int:
    """Entries ever added to the sample streams (XINFO STREAM `entries-added`, kept across restarts)."""
    total = 0
    for stream in r.scan_iter(match=keys.streams_of("*"), _type="stream"):
        if keys.stream_parts(stream)[1] in outputs:
            total += int(r.xinfo_stream(stream)["entries-added"])
    return total


#: Redis being away counts as "not yet" while a fault is injected
REDIS_AWAY = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


def wait_for(pred: Any, timeout: float, what: str, roles: Roles | None = None, poll: float = 0.25) -> Any:
    """`tests.processes.wait_until` where Redis being away counts as "not yet"."""
    return wait_until(pred, timeout, what, roles, poll, tolerate=REDIS_AWAY)


def server_drained(r: redis.Redis, keys: Keys) -> bool:
    """The server's group has read and acknowledged every entry of every sample stream."""
    for stream in r.scan_iter(match=keys.streams_of("*"), _type="stream"):
        for group in r.xinfo_groups(stream):
            if group["name"] in (SERVER_GROUP, SERVER_GROUP.encode()) and (group["pending"] or group["lag"]):
                return False
    return True


def status(r: redis.Redis, keys: Keys, role: str) -> list[dict[str, str]]:
    """The live status hashes of a role (empty while Redis is away)."""
    from pipeline.wire.presence import read_statuses

    return read_statuses(r, keys, role)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def write_config(path: Path, cfg: Config) -> Path:
    """Write a validated config back to TOML (so a server process can load it)."""
    data = json.loads(cfg.to_json())
    lines = []
    for section, values in data.items():
        if isinstance(values, list):
            for item in values:
                lines.append(f"[[{section}]]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in item.items()]
        else:
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class TcpProxy:
    """A loopback TCP proxy in front of Redis that a test can cut (connections reset) and restore."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, password: str) -> str:
        return f"redis://:{password}@127.0.0.1:{self.port}/0"

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until `restore`."""
        self._cut.set()
        with self._lock:
            socks, self._socks = list(self._socks), set()
        for s in socks:
            _close(s)

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        _close(self.listener)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                _close(client)
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._socks |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data or self._cut.is_set():
                    break
                dst.sendall(data)
        except OSError:
            pass
        _close(src)
        _close(dst)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


# -- network namespaces (the project's own test hosts) -------------------------------------

def netns_unavailable_reason() -> str | None:
    """Why `ip netns` + veth cannot be used here, or None when they can."""
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"charles-probe-{uuid.uuid4().hex[:6]}"
    res = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if res.returncode != 0:
        return f"the kernel refused `ip netns add`: {res.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


class NetnsHosts:
    """Two namespaces joined by a veth pair: `redis_host` (10.231.N.1) and `collector_host` (10.231.N.2)."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.net = 1 + int(tag, 16) % 250
        self.redis_host, self.collector_host = f"chr-{tag}-r", f"chr-{tag}-c"
        self.veth_redis, self.veth_collector = f"chr{tag}r", f"chr{tag}c"
        self.redis_ip, self.collector_ip = f"10.231.{self.net}.1", f"10.231.{self.net}.2"

    def __enter__(self) -> NetnsHosts:
        try:
            for cmd in (
                ["netns", "add", self.redis_host],
                ["netns", "add", self.collector_host],
                ["link", "add", self.veth_redis, "type", "veth", "peer", "name", self.veth_collector],
                ["link", "set", self.veth_redis, "netns", self.redis_host],
                ["link", "set", self.veth_collector, "netns", self.collector_host],
                ["-n", self.redis_host, "addr", "add", f"{self.redis_ip}/30", "dev", self.veth_redis],
                ["-n", self.collector_host, "addr", "add", f"{self.collector_ip}/30", "dev", self.veth_collector],
                ["-n", self.redis_host, "link", "set", "lo", "up"],
                ["-n", self.collector_host, "link", "set", "lo", "up"],
                ["-n", self.redis_host, "link", "set", self.veth_redis, "up"],
                ["-n", self.collector_host, "link", "set", self.veth_collector, "up"],
            ):
                subprocess.run(["ip", *cmd], check=True, capture_output=True)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.redis_host, self.collector_host):  # deleting a namespace removes its veth end
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def exec_prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", host]

    def partition(self) -> None:
        """Take the collector host's link down: its packets to Redis go nowhere (a blackhole)."""
        subprocess.run(["ip", "-n", self.collector_host, "link", "set", self.veth_collector, "down"], check=True)

    def heal(self) -> None:
        subprocess.run(["ip", "-n", self.collector_host, "link", "set", self.veth_collector, "up"], check=True)


def iter_log_values(events: list[dict[str, Any]], key: str) -> Iterator[Any]:
    for ev in events:
        if key in ev:
            yield ev[key]


# -- bad input over the wire ----------------------------------------------------------------

class PickleBomb:
    """Unpickling this creates `marker`: proof, if the file appears, that pickle ran somewhere."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (_touch_via_pathlib, (str(self.marker), "pwned"))


def _touch_via_pathlib(path: str, text: str) -> None:
    Path(path).write_text(text)


def bad_entries(cfg: Config, output: str, marker: Path) -> list[tuple[str, dict[str, bytes]]]:
    """(expected reason, stream fields) for every kind of bad entry a stream may carry."""
    import msgpack
    import msgpack_numpy
    import numpy as np

    from pipeline.wire import codec

    def mutated(change: Any, n: int = 3) -> dict[str, bytes]:
        s = sample_set(cfg, output, n, seed=7)
        change(s)
        return s.entry()

    def set_col(name: str, value: Any) -> Any:
        return lambda s: s.columns.__setitem__(name, value)

    good = sample_set(cfg, output, 3, seed=8).entry()
    other = next(o for o in cfg.output_names() if o != output)
    bomb = np.empty(1, dtype=object)
    bomb[0] = PickleBomb(marker)
    raw = {"v": 2, "output": output, "collector": "c", "episode": "e", "environment": {}, "n": 1, "x": bomb}
    limit = int(cfg.buffers.max_message_mb * 1024 * 1024)
    big_n = limit // (cfg.game.hood_width * cfg.game.hood_height * 3) + 2
    no_row = dict(good)
    del no_row["r2"]
    return [
        ("differs from its header", {**good, "r0": good["r0"][:-20]}),  # a row cut short
        ("not a valid message", {**good, "meta": b"\xc1" + os.urandom(64)}),  # not msgpack at all
        ("exceeds the limit", sample_set(cfg, output, min(big_n, 4096), seed=9).entry()),  # oversized
        ("not allowed", {**good, "meta": msgpack.packb(raw, default=msgpack_numpy.encode, use_bin_type=True)}),
        ("speed: not numbers", mutated(lambda s: s.columns.__setitem__("speed", np.array(["fast"] * 3)))),
        ("unknown format", {**good, "r1": b"not a row"}),
        ("NaN or infinity", mutated(lambda s: s.columns["targets"].__setitem__((0, 0), np.nan))),
        ("NaN or infinity", mutated(lambda s: s.columns["speed"].__setitem__(1, np.inf))),
        ("outside [-1, 1]", mutated(lambda s: s.columns["targets"].__setitem__((0, 1), 7.0))),
        ("shape", mutated(set_col("frames", np.zeros((3, 1, 10, 10, 3), np.uint8)))),
        ("shape", mutated(set_col("purpose", np.zeros((3, 3), np.float32)))),
        ("fields wrong", no_row),
        ("fields wrong", mutated(lambda s: s.columns.pop("history"))),
        ("fields wrong", mutated(set_col("extra", np.zeros(3, np.float32)))),
        ("unknown output", mutated(lambda s: setattr(s, "output", "flying"))),
        ("arrived on", sample_set(cfg, other, 3).entry()),
        ("1..4096", mutated(lambda s: s.columns.update({k: v[:0] for k, v in s.columns.items()}))),
        ("characters", mutated(lambda s: setattr(s, "episode", "e" * 5000))),  # memory amplification
        ("format version", {**good, "meta": codec.encode({"v": 99, "output": output})}),
        ("needs", {**good, "meta": msgpack.packb({"v": 2, "output": output, "x": {
            b"nd": True, b"type": "|u1", b"kind": b"", b"shape": [2**20, 2**20, 3], b"data": b"\0"}})}),
        ("no 'meta' field", {"other": b"x"}),
        ("unknown ['r²']", {**good, "r²": good["r0"]}),  # "²".isdigit(), yet int("²") raises: killed the server
    ]
