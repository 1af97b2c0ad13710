"""The player's live view: cinematic camera, hood frame and Convcam as JPEGs for the dashboard.

The player must keep its 30 predictions/s on two cores, so this costs nothing while no
one watches: a dashboard showing a player refreshes `Keys.viewer(id)` (short TTL), and
only while that key exists are frames captured, at most `fps` times a second. The main
thread only grabs the arrays (the game is not thread-safe); JPEG encoding and the Redis
writes run in a background thread that keeps just the newest capture, so a slow or absent
Redis never slows the driving, and no Redis error ever reaches the player.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import redis
import structlog

from pipeline.models import convcam
from pipeline.wire.keys import Keys
from pipeline.wire.redis_conn import CONNECTION_ERRORS

log = structlog.get_logger(__name__)

CAMERAS = ("cinematic", "hood", "convcam")
#: Frames expire so a dead player's last picture does not stay on the dashboard.
FRAME_TTL_S = 10
#: Convcam JPEGs are upscaled (nearest) to at least this width so the cells stay crisp.
CONVCAM_MIN_WIDTH = 480


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """RGB [H, W, 3] or grayscale [H, W] uint8 -> JPEG bytes."""
    import cv2

    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return buf.tobytes()


class LiveView:
    """Callable as `live_view(obs, model)` once per player step; see the module docstring."""

    def __init__(self, r: redis.Redis, keys: Keys, worker_id: str, game: Any, fps: float, jpeg_quality: int = 80,
                 ttl_s: int = FRAME_TTL_S, viewer_check_s: float = 1.0, background: bool = True) -> None:
        self.r = r
        self.keys = keys
        self.worker_id = worker_id
        self.game = game
        self.fps = float(fps)
        self.quality = int(jpeg_quality)
        self.ttl_s = int(ttl_s)
        self.viewer_check_s = viewer_check_s
        self.background = background
        self.watched = False
        self.published = 0
        self.errors = 0
        self._checked_at = float("-inf")
        self._next_due = 0.0
        self._pending: dict[str, Any] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged_error_at = float("-inf")
        if background and self.fps > 0:
            self._thread = threading.Thread(target=self._run, name="live-view", daemon=True)
            self._thread.start()

    # -- the player's side (main thread) ------------------------------------------------------
    def __call__(self, obs: Any, model: Any) -> None:
        """Capture the cameras and Convcam if someone watches and a frame is due; never raises."""
        if self.fps <= 0:
            return
        now = time.monotonic()
        if now < self._next_due:
            return
        self._next_due = now + 1.0 / self.fps
        if not self.background and now - self._checked_at >= self.viewer_check_s:
            self._check_viewer(now)
        if not self.watched:
            return
        try:
            images = self.capture(obs, model)
        except Exception as exc:  # noqa: BLE001 - the view is optional; driving must go on
            self._error("live_view_capture_failed", exc)
            return
        if self.background:
            self._pending = images
            self._wake.set()
        else:
            self._publish(images)

    def capture(self, obs: Any, model: Any) -> dict[str, Any]:
        """Copies of what to publish, so the next step cannot change them mid-encode.

        Only the first sample's feature maps are copied here; tiling them into the Convcam
        (1536 channels for Xception) happens in the background thread with the encoding.
        """
        images: dict[str, Any] = {"cinematic": np.array(self.game.cinematic(), dtype=np.uint8, copy=True),
                                  "hood": np.array(obs.frame, dtype=np.uint8, copy=True)}
        features = getattr(model, "last_features", None)
        if features is not None:
            parts = features if isinstance(features, list | tuple) else [features]
            images["convcam"] = [np.array(convcam.to_numpy(p[0] if p.ndim == 4 else p), copy=True) for p in parts]
        return images

    # -- the background side ----------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.viewer_check_s)
            self._wake.clear()
            now = time.monotonic()
            if now - self._checked_at >= self.viewer_check_s:
                self._check_viewer(now)
            images, self._pending = self._pending, None
            if images is not None and self.watched:
                self._publish(images)

    def _check_viewer(self, now: float) -> None:
        self._checked_at = now
        try:
            self.watched = bool(self.r.exists(self.keys.viewer(self.worker_id)))
        except (*CONNECTION_ERRORS, redis.exceptions.ResponseError) as exc:
            self.watched = False
            self._error("live_view_redis_unavailable", exc)

    def _publish(self, images: dict[str, Any]) -> None:
        try:
            encoded = {name: encode_jpeg(self._for_jpeg(name, img), self.quality) for name, img in images.items()
                       if img is not None}
        except Exception as exc:  # noqa: BLE001 - a bad frame is skipped, the next one may be fine
            self._error("live_view_encode_failed", exc)
            return
        try:
            pipe = self.r.pipeline(transaction=False)
            for name, data in encoded.items():
                pipe.set(self.keys.frame(self.worker_id, name), data, ex=self.ttl_s)
            pipe.execute()
            self.published += 1
        except (*CONNECTION_ERRORS, redis.exceptions.ResponseError) as exc:
            self._error("live_view_redis_unavailable", exc)

    @staticmethod
    def _for_jpeg(name: str, image: Any) -> np.ndarray:
        if name != "convcam":
            return image
        tiled = convcam.render(image if isinstance(image, list | tuple) else [image])
        if tiled is None:
            raise ValueError("no feature maps to show")
        return convcam.upscale(tiled, CONVCAM_MIN_WIDTH)

    def _error(self, event: str, exc: BaseException) -> None:
        """Count every error, log at most one every 30 s (a missing Redis must not flood the log)."""
        self.errors += 1
        now = time.monotonic()
        if now - self._logged_error_at >= 30.0:
            self._logged_error_at = now
            log.warning(event, error=str(exc)[:200], errors=self.errors)

    def close(self, timeout: float = 2.0) -> None:
        """Stop the background thread (the player exits anyway; tests call this)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
