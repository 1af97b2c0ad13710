"""The client side of the TCP bridge to the Charles GTA5 mod (JSON lines, docs/game-bridge.md).

Every call is one request line and one reply line, matched by `id`. The client connects
(and handshakes) on the first call and again after any connection loss, so callers never
manage the socket. Failures surface as `GameError`, which players and collectors survive:
- connection lost: idempotent commands are retried once on a fresh connection;
- no reply in time: GameError; the connection stays and the late reply is discarded by
  its id (two timeouts in a row drop the connection);
- malformed line (not JSON, no id/ok, too long): GameError and the connection is dropped,
  since the framing can no longer be trusted;
- protocol version mismatch: `BridgeVersionError` on every call until the mod is updated.
A heartbeat thread pings when the client has been idle `heartbeat_s`, so the mod can tell
a dead client (and stop the car) from a paused one.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import structlog

from pipeline.errors import BridgeVersionError, GameError

log = structlog.get_logger(__name__)

PROTOCOL_VERSION = 1
#: Commands safe to send twice (a retry after a lost connection cannot do harm).
IDEMPOTENT = frozenset({"hello", "ping", "state", "setup", "npc", "camera", "target", "bye"})


class _ConnectionLost(Exception):
    """The socket died mid-call (internal: becomes a retry or a GameError)."""


class BridgeClient:
    """Talks to the mod; thread-safe, reconnecting, with heartbeats."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 27315,
        connect_timeout_s: float = 3.0,
        reply_timeout_s: float = 1.0,
        heartbeat_s: float = 1.0,
        max_line_bytes: int = 65536,
        client_name: str = "charles",
    ) -> None:
        self.host, self.port = host, port
        self.connect_timeout_s = connect_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.heartbeat_s = heartbeat_s
        self.max_line_bytes = max_line_bytes
        self.client_name = client_name
        self.generation = 0  # +1 per successful handshake: mod-side state may need re-sending
        self.server_info: dict[str, Any] = {}
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._next_id = 1
        self._timeouts = 0
        self._last_send = time.monotonic()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    # -- connection ------------------------------------------------------------------------

    def connect(self) -> dict[str, Any]:
        """Open a connection and handshake; returns the mod's hello reply."""
        with self._lock:
            self._drop()
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
            except OSError as exc:
                raise GameError(f"bridge: cannot connect to the mod at {self.host}:{self.port}: {exc}") from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock, self._buf, self._next_id, self._timeouts = sock, bytearray(), 1, 0
            try:
                reply = self._request("hello", {"protocol": PROTOCOL_VERSION, "client": self.client_name},
                                      self.connect_timeout_s, refusal_ok=True)
            except _ConnectionLost as exc:
                self._drop()
                raise GameError(f"bridge: the mod closed the connection during the handshake: {exc}") from None
            except GameError:
                self._drop()
                raise
            if reply.get("protocol") != PROTOCOL_VERSION:
                self._drop()
                raise BridgeVersionError(
                    f"bridge: the mod speaks protocol {reply.get('protocol')!r}, Charles speaks "
                    f"{PROTOCOL_VERSION}; install the matching mod version"
                )
            if reply.get("ok") is not True:
                self._drop()
                raise GameError(f"bridge: the mod refused the handshake: {reply.get('error', 'no reason given')}")
            self.generation += 1
            self.server_info = reply
            log.info("bridge.connected", host=self.host, port=self.port, mod=reply.get("mod"),
                     generation=self.generation)
            self._start_heartbeat()
            return reply

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
            self._buf = bytearray()

    def close(self) -> None:
        """Say goodbye (best effort), stop the heartbeat, close the socket."""
        self._stop.set()
        with self._lock:
            if self._sock is not None:
                try:
                    self._request("bye", {}, self.reply_timeout_s)
                except (GameError, _ConnectionLost):
                    pass
            self._drop()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=2.0)

    # -- calls -----------------------------------------------------------------------------

    def call(self, cmd: str, timeout_s: float | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and return the mod's reply (a dict with ok = true)."""
        timeout = self.reply_timeout_s if timeout_s is None else timeout_s
        with self._lock:
            for attempt in (1, 2):
                if self._sock is None:
                    self.connect()
                try:
                    return self._request(cmd, params, timeout)
                except _ConnectionLost as exc:
                    self._drop()
                    log.warning("bridge.connection_lost", cmd=cmd, error=str(exc), attempt=attempt)
                    if attempt == 2 or cmd not in IDEMPOTENT:
                        raise GameError(f"bridge: connection lost during {cmd!r}: {exc}") from None
        raise AssertionError("unreachable")

    def _request(
        self, cmd: str, params: dict[str, Any], timeout: float, refusal_ok: bool = False
    ) -> dict[str, Any]:
        assert self._sock is not None
        rid = self._next_id
        self._next_id += 1
        line = json.dumps({"id": rid, "cmd": cmd, **params}, separators=(",", ":")) + "\n"
        try:
            self._sock.sendall(line.encode())
        except OSError as exc:
            raise _ConnectionLost(f"send failed: {exc}") from None
        self._last_send = time.monotonic()
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read_message(cmd, timeout, deadline)
            got = msg.get("id")
            if got is None:
                log.debug("bridge.ignored_line", line=msg)  # reserved for future mod events
                continue
            if isinstance(got, int) and got < rid:
                log.info("bridge.stale_reply", id=got, waiting_for=rid)
                continue
            if got != rid:
                self._drop()
                raise GameError(f"bridge: reply id {got!r} to {cmd!r} does not match request id {rid}")
            self._timeouts = 0
            ok = msg.get("ok")
            if ok is True or (ok is False and refusal_ok):
                return msg
            if ok is False:
                raise GameError(f"bridge: the mod refused {cmd!r}: {msg.get('error', 'no reason given')}")
            self._drop()
            raise GameError(f"bridge: reply to {cmd!r} has no boolean 'ok': {msg!r:.200}")

    def _read_message(self, cmd: str, timeout: float, deadline: float) -> dict[str, Any]:
        """The next JSON object line; GameError on timeout or malformed input."""
        assert self._sock is not None
        while b"\n" not in self._buf:
            if len(self._buf) > self.max_line_bytes:
                self._drop()
                raise GameError(f"bridge: reply to {cmd!r} exceeds {self.max_line_bytes} bytes without a newline")
            left = deadline - time.monotonic()
            if left <= 0:
                self._timeouts += 1
                if self._timeouts >= 2:
                    self._drop()
                raise GameError(f"bridge: no reply to {cmd!r} within {timeout:.2f} s")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise _ConnectionLost(f"receive failed: {exc}") from None
            if not chunk:
                raise _ConnectionLost("the mod closed the connection")
            self._buf += chunk
        raw, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        if len(raw) > self.max_line_bytes:
            self._drop()
            raise GameError(f"bridge: reply to {cmd!r} exceeds {self.max_line_bytes} bytes")
        try:
            msg = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self._drop()
            raise GameError(f"bridge: malformed reply to {cmd!r} ({exc}): {raw[:200]!r}") from None
        if not isinstance(msg, dict):
            self._drop()
            raise GameError(f"bridge: reply to {cmd!r} is not a JSON object: {raw[:200]!r}")
        return msg

    # -- heartbeat -------------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._stop.clear()
            self._heartbeat = threading.Thread(target=self._beat, name="bridge-heartbeat", daemon=True)
            self._heartbeat.start()

    def _beat(self) -> None:
        """Ping when idle; never blocks a call in progress (skips the beat instead)."""
        while not self._stop.wait(self.heartbeat_s / 2):
            if self._sock is None or time.monotonic() - self._last_send < self.heartbeat_s:
                continue
            if not self._lock.acquire(blocking=False):
                continue
            try:
                if self._sock is not None:
                    self._request("ping", {}, self.reply_timeout_s)
            except (GameError, _ConnectionLost) as exc:
                self._drop()
                log.warning("bridge.heartbeat_failed", error=str(exc))
            finally:
                self._lock.release()
