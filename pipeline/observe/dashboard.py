"""The dashboard's web app: the stream layout in one page, fed live from Redis, read-only.

Transport (docs/dashboard.md says why): the three camera tiles are MJPEG streams
(`multipart/x-mixed-replace`, shown by a plain `<img>`), everything textual is one
Server-Sent Events stream per page (status, both consoles, new loss points). All data
goes one way, from Redis to the page; no route writes anything except the short-TTL
viewer key that tells a player someone watches it.

Redis is reached through one `Hub` per process: one snapshot per second whatever the
number of open pages, and one frame poller per watched player shared by every stream.
The page receives only whitelisted fields, never the config, URLs or credentials.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import redis
import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from pipeline.observe import consoles
from pipeline.observe.dashboard_page import APP_CSS, APP_JS, INDEX_HTML
from pipeline.play.live_view import CAMERAS
from pipeline.wire.keys import Keys
from pipeline.wire.redis_conn import CONNECTION_ERRORS

log = structlog.get_logger(__name__)

WORKER_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
#: The viewer key lives this long; the poller refreshes it every VIEWER_REFRESH_S while watched.
VIEWER_TTL_S = 5
VIEWER_REFRESH_S = 2.0
LOSS_POINTS = 2000
BOUNDARY = "charlesframe"
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


@dataclass
class State:
    """One refresh of everything the page shows (built in a worker thread)."""

    at: float
    ok: bool
    error: str = ""
    public: dict[str, Any] = field(default_factory=dict)
    server_html: str = ""
    player_html: dict[str, str] = field(default_factory=dict)
    no_player_html: str = ""
    loss: list[dict[str, float]] = field(default_factory=list)


class FrameFeed:
    """The newest JPEG of each camera of one player, polled once for every stream that shows it."""

    def __init__(self, player_id: str) -> None:
        self.player_id = player_id
        self.frames: dict[str, tuple[int, bytes]] = {}
        self.changed = asyncio.Condition()
        self.viewers = 0
        self.task: asyncio.Task[None] | None = None


class Hub:
    """Everything the dashboard reads from Redis, shared by all open pages."""

    def __init__(self, r: redis.Redis, keys: Keys, refresh_s: float = 1.0, frame_fps: float = 10.0) -> None:
        self.r = r
        self.keys = keys
        self.refresh_s = refresh_s
        self.frame_period = 1.0 / max(0.5, frame_fps)
        self.rates = consoles.Rates()
        self._state: State | None = None
        self._lock = asyncio.Lock()
        self.feeds: dict[str, FrameFeed] = {}
        #: Set on shutdown: every stream ends by itself within ~2 s instead of being cancelled.
        self.closing = threading.Event()

    def close(self) -> None:
        """End all streams (called before the server stops waiting for open connections)."""
        self.closing.set()

    # -- status -------------------------------------------------------------------------------
    async def state(self) -> State:
        """The current state, recomputed at most once per `refresh_s` for all pages together."""
        async with self._lock:
            if self._state is None or time.time() - self._state.at >= self.refresh_s * 0.9:
                self._state = await asyncio.to_thread(self._build)
            return self._state

    def _build(self) -> State:
        from pipeline.observe.status import snapshot

        try:
            snap = snapshot(self.r, self.keys)
            raw_loss = self.r.lrange(self.keys.loss_history, -LOSS_POINTS, -1)
        except CONNECTION_ERRORS as exc:
            log.warning("dashboard_redis_unavailable", error=str(exc)[:200])
            return State(at=time.time(), ok=False, error="Redis is unreachable; retrying")
        self.rates.update(snap)
        state = State(at=time.time(), ok=True, public=public_view(snap, self.rates))
        state.server_html = consoles.to_html(consoles.server_console(snap, self.rates))
        state.player_html = {str(p["id"]): consoles.to_html(consoles.player_console(p, snap.get("weights")))
                             for p in snap.get("players", [])}
        state.no_player_html = consoles.to_html(consoles.player_console(None))
        state.loss = parse_loss(raw_loss)
        return state

    # -- frames -------------------------------------------------------------------------------
    def watch(self, player_id: str) -> FrameFeed:
        feed = self.feeds.get(player_id)
        if feed is None:
            feed = self.feeds[player_id] = FrameFeed(player_id)
        feed.viewers += 1
        if feed.task is None or feed.task.done():
            feed.task = asyncio.create_task(self._poll(feed), name=f"frames-{player_id}")
        return feed

    def unwatch(self, feed: FrameFeed) -> None:
        feed.viewers = max(0, feed.viewers - 1)

    async def _poll(self, feed: FrameFeed) -> None:
        """Refresh the viewer key and fetch changed frames while anyone watches this player."""
        names = [self.keys.frame(feed.player_id, cam) for cam in CAMERAS]
        viewer_set_at = 0.0
        while feed.viewers > 0 and not self.closing.is_set():
            try:
                if time.monotonic() - viewer_set_at >= VIEWER_REFRESH_S:
                    await asyncio.to_thread(self.mark_viewer, feed.player_id)
                    viewer_set_at = time.monotonic()
                values = await asyncio.to_thread(self.r.mget, names)
            except CONNECTION_ERRORS as exc:
                log.warning("dashboard_redis_unavailable", error=str(exc)[:200])
                await asyncio.sleep(1.0)
                continue
            changed = False
            for cam, data in zip(CAMERAS, values, strict=True):
                if data and (cam not in feed.frames or feed.frames[cam][1] != data):
                    feed.frames[cam] = (feed.frames.get(cam, (0, b""))[0] + 1, data)
                    changed = True
            if changed:
                async with feed.changed:
                    feed.changed.notify_all()
            await asyncio.sleep(self.frame_period)
        self.feeds.pop(feed.player_id, None)

    def mark_viewer(self, player_id: str) -> None:
        """Tell the player someone watches: its LiveView publishes frames while this key lives."""
        self.r.set(self.keys.viewer(player_id), "1", ex=VIEWER_TTL_S)


def public_view(snap: dict[str, Any], rates: consoles.Rates) -> dict[str, Any]:
    """The whitelisted fields the page may see (no config, no URLs, nothing secret)."""
    w = snap.get("weights", {})
    t = snap.get("trainer", {})
    return {
        "run": snap.get("run"),
        "weights": {"version": w.get("version", 0), "created": w.get("created"), "model": w.get("model"),
                    "batches": w.get("batches", 0)},
        "trainer": {"state": t.get("state"), "batches": t.get("batches", 0)},
        "players": [
            {"id": p.get("id"), "model": p.get("model"), "model_version": p.get("model_version", 0),
             "model_created": p.get("model_created"), "pps": p.get("pps", 0.0), "fps": p.get("fps", 0.0)}
            for p in snap.get("players", [])
        ],
        "samples_in_per_s": round(rates.total_in_per_s, 2),
        "scores": consoles.score_series(snap),
    }


def parse_loss(raw: list[bytes]) -> list[dict[str, float]]:
    """Loss points `{batch, loss, t}`; malformed entries are skipped (the list is advisory)."""
    points = []
    for item in raw:
        try:
            p = json.loads(item)
            points.append({"batch": int(p["batch"]), "loss": float(p["loss"]), "t": float(p.get("t", 0.0))})
        except (ValueError, KeyError, TypeError):
            continue
    return points


def page_payload(state: State, player_id: str | None, since_t: float | None) -> dict[str, Any]:
    """One SSE message for a page showing `player_id`, with the loss points newer than `since_t`."""
    if not state.ok:
        return {"ok": False, "error": state.error}
    players = state.public["players"]
    chosen = next((p for p in players if p["id"] == player_id), None) or (players[0] if players else None)
    newest = state.loss[-1]["t"] if state.loss else None
    reset = since_t is None or newest is None or newest < since_t
    points = state.loss if reset else [p for p in state.loss if p["t"] > since_t]
    return {
        "ok": True,
        **state.public,
        "player": chosen,
        "server_console": state.server_html,
        "player_console": state.player_html.get(chosen["id"], state.no_player_html) if chosen else state.no_player_html,
        "loss": {"reset": reset, "points": [[p["batch"], p["loss"]] for p in points]},
        "loss_t": newest,
    }


def create_app(hub: Hub, allowed_hosts: list[str] | None = None) -> Starlette:
    """The ASGI app; `allowed_hosts` guards a loopback dashboard against DNS rebinding."""

    def static(body: str, media_type: str) -> Response:
        return Response(body, media_type=media_type, headers=SECURITY_HEADERS)

    async def index(_: Request) -> Response:
        return static(INDEX_HTML, "text/html; charset=utf-8")

    async def app_js(_: Request) -> Response:
        return static(APP_JS, "text/javascript; charset=utf-8")

    async def app_css(_: Request) -> Response:
        return static(APP_CSS, "text/css; charset=utf-8")

    async def favicon(_: Request) -> Response:
        return Response(status_code=204, headers=SECURITY_HEADERS)

    async def health(_: Request) -> Response:
        return PlainTextResponse("ok", headers=SECURITY_HEADERS)

    async def api_state(request: Request) -> Response:
        payload = page_payload(await hub.state(), request.query_params.get("player"), None)
        return JSONResponse(payload, headers=SECURITY_HEADERS)

    async def events(request: Request) -> Response:
        player_id = request.query_params.get("player") or None

        async def stream() -> AsyncIterator[str]:
            since: float | None = None
            yield "retry: 2000\n\n"
            while not hub.closing.is_set():
                payload = page_payload(await hub.state(), player_id, since)
                since = payload.get("loss_t", since)
                yield f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
                await asyncio.sleep(hub.refresh_s)

        headers = {**SECURITY_HEADERS, "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    def check(player_id: str, camera: str) -> Response | None:
        if not WORKER_ID.match(player_id) or camera not in CAMERAS:
            return PlainTextResponse("unknown player or camera", status_code=404, headers=SECURITY_HEADERS)
        return None

    async def mjpeg(request: Request) -> Response:
        player_id, camera = request.path_params["player"], request.path_params["camera"]
        if (bad := check(player_id, camera)) is not None:
            return bad

        async def stream() -> AsyncIterator[bytes]:
            feed = hub.watch(player_id)
            sent, sent_at = 0, 0.0
            try:
                yield f"--{BOUNDARY}\r\n".encode()
                while not hub.closing.is_set():
                    seq, data = feed.frames.get(camera, (0, b""))
                    # resend now and then so proxies keep the connection; Starlette ends this
                    # generator when the client disconnects (it listens for http.disconnect)
                    if data and (seq != sent or time.monotonic() - sent_at > 5.0):
                        head = f"Content-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                        yield head + data + f"\r\n--{BOUNDARY}\r\n".encode()
                        sent, sent_at = seq, time.monotonic()
                    async with feed.changed:
                        try:
                            await asyncio.wait_for(
                                feed.changed.wait_for(lambda seen=sent: feed.frames.get(camera, (0, b""))[0] != seen),
                                timeout=2.0)
                        except TimeoutError:
                            pass
            finally:
                hub.unwatch(feed)

        headers = {**SECURITY_HEADERS, "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers=headers)

    async def frame(request: Request) -> Response:
        player_id, camera = request.path_params["player"], request.path_params["camera"]
        if (bad := check(player_id, camera)) is not None:
            return bad
        try:
            await asyncio.to_thread(hub.mark_viewer, player_id)
            data = await asyncio.to_thread(hub.r.get, hub.keys.frame(player_id, camera))
        except CONNECTION_ERRORS:
            return PlainTextResponse("Redis is unreachable", status_code=503, headers=SECURITY_HEADERS)
        if not data:
            return PlainTextResponse("no frame yet", status_code=404, headers=SECURITY_HEADERS)
        return Response(data, media_type="image/jpeg", headers=SECURITY_HEADERS)

    routes = [
        Route("/", index),
        Route("/app.js", app_js),
        Route("/app.css", app_css),
        Route("/healthz", health),
        Route("/favicon.ico", favicon),
        Route("/api/state", api_state),
        Route("/events", events),
        Route("/stream/{player}/{camera}", mjpeg),
        Route("/frame/{player}/{camera}.jpg", frame),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)] if allowed_hosts else []
    return Starlette(routes=routes, middleware=middleware)


def loopback_hosts(host: str) -> list[str] | None:
    """Host names a loopback dashboard answers to (None = any, for a deliberate public bind)."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return ["127.0.0.1", "localhost", "[::1]", "::1"]
    return None
