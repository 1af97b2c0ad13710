"""A fake of the Charles GTA5 mod: a real TCP server speaking docs/game-bridge.md.

It keeps a tiny world (a car that the NPC drives at fixed controls) and can be told to
misbehave on the next request: reply late, send a malformed line, drop the connection,
refuse. It records every request, so tests check what the client sent.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections import deque
from typing import Any

NPC_CONTROLS = {"acceleration_braking": 0.6, "steering": -0.2}


class FakeMod:
    """One listening socket; one client at a time (a new connection replaces the old)."""

    def __init__(self, protocol: int = 1, port: int = 0, idle_timeout_s: float = 5.0) -> None:
        self.protocol = protocol
        self.idle_timeout_s = idle_timeout_s
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self.faults: deque[tuple[str, dict[str, Any]]] = deque()
        self.world: dict[str, Any] = {
            "npc": False, "camera": "hood", "position": [100.0, 200.0, 30.0], "heading": 0.0,
            "target": [150.0, 260.0], "collisions": 0, "targets_reached": 0, "env": {},
        }
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", port))
        self.port = self._server.getsockname()[1]
        self._client: socket.socket | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="fake-mod", daemon=True)
        self._thread.start()

    # -- test controls ---------------------------------------------------------------------

    def fault(self, kind: str, **params: Any) -> None:
        """Misbehave on the next request other than hello: delay | malformed | drop | refuse | raw."""
        self.faults.append((kind, params))

    def commands(self) -> list[str]:
        with self._lock:
            return [r.get("cmd", "?") for r in self.requests]

    def last(self, cmd: str) -> dict[str, Any]:
        with self._lock:
            return next(r for r in reversed(self.requests) if r.get("cmd") == cmd)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self._server.close()
        if self._client is not None:
            try:
                self._client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._client.close()

    # -- server ----------------------------------------------------------------------------

    def _accept(self) -> None:
        self._server.settimeout(0.05)  # close() does not wake accept(): poll the stop flag
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            if self._client is not None:
                self._client.close()
            self._client = conn
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(self.idle_timeout_s)
        greeted = False
        try:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    self.world["npc"] = False  # dead client: stop the car, as the doc says
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    req = json.loads(line)
                    with self._lock:
                        self.requests.append(req)
                    if req.get("cmd") == "hello":
                        greeted = True
                    elif not greeted:
                        self._send(conn, {"id": req.get("id"), "ok": False, "error": "hello first"})
                        continue
                    elif self.faults and self._fault(conn, req):
                        return
                    self._send(conn, self._reply(req))
        except OSError:
            return
        finally:
            conn.close()

    def _fault(self, conn: socket.socket, req: dict[str, Any]) -> bool:
        """Apply the next fault; True when the connection must end."""
        kind, params = self.faults.popleft()
        if kind == "delay":
            time.sleep(params.get("seconds", 1.0))
        elif kind == "malformed":
            conn.sendall(params.get("line", b"{this is not json\n"))
        elif kind == "raw":
            conn.sendall(params["line"])
        elif kind == "drop":
            conn.shutdown(socket.SHUT_RDWR)
            return True
        elif kind == "refuse":
            self.faults.appendleft(("_refused", {}))
        return False

    def _send(self, conn: socket.socket, msg: dict[str, Any]) -> None:
        conn.sendall((json.dumps(msg) + "\n").encode())

    def _reply(self, req: dict[str, Any]) -> dict[str, Any]:
        rid, cmd = req.get("id"), req.get("cmd")
        if self.faults and self.faults[0][0] == "_refused":
            self.faults.popleft()
            return {"id": rid, "ok": False, "error": f"{cmd} refused by the fake"}
        w = self.world
        if cmd == "hello":
            if req.get("protocol") != self.protocol:
                return {"id": rid, "ok": False, "protocol": self.protocol, "error": "protocol mismatch"}
            return {"id": rid, "ok": True, "protocol": self.protocol, "mod": "FakeMod/1.0",
                    "game": "fake", "idle_timeout_s": self.idle_timeout_s}
        if cmd == "ping":
            return {"id": rid, "ok": True, "game_time": self._game_time()}
        if cmd == "state":
            return {"id": rid, "ok": True, **self._state()}
        if cmd == "setup":
            w["env"] = {k: v for k, v in req.items() if k not in ("id", "cmd")}
            w["collisions"] = w["targets_reached"] = 0
            return {"id": rid, "ok": True}
        if cmd == "target":
            if req.get("position") is not None:
                w["target"] = list(req["position"])
            return {"id": rid, "ok": True, "target": w["target"]}
        if cmd == "npc":
            w["npc"] = bool(req.get("enabled"))
            return {"id": rid, "ok": True}
        if cmd == "camera":
            if req.get("view") not in ("hood", "cinematic"):
                return {"id": rid, "ok": False, "error": f"unknown view {req.get('view')!r}"}
            w["camera"] = req["view"]
            return {"id": rid, "ok": True}
        if cmd == "teleport":
            w["position"] = [500.0, -300.0, 20.0]
            return {"id": rid, "ok": True, "position": w["position"]}
        if cmd == "bye":
            return {"id": rid, "ok": True}
        return {"id": rid, "ok": False, "error": f"unknown command {cmd!r}"}

    def _game_time(self) -> float:
        return time.monotonic() - self._t0

    def _state(self) -> dict[str, Any]:
        w = self.world
        dx, dy = w["target"][0] - w["position"][0], w["target"][1] - w["position"][1]
        return {
            "game_time": self._game_time(),
            "speed": 12.5 if w["npc"] else 0.0,
            "position": w["position"],
            "heading": w["heading"],
            "purpose": [math.hypot(dx, dy), math.atan2(dy, dx)],
            "controls": dict(NPC_CONTROLS) if w["npc"] else {"acceleration_braking": 0.0, "steering": 0.0},
            "npc": w["npc"],
            "camera": w["camera"],
            "collision": False,
            "collisions": w["collisions"],
            "targets_reached": w["targets_reached"],
            "odometer": 42.0,
        }
