"""LiveView: frames only while a dashboard watches, at most `fps` a second, never raising."""

from __future__ import annotations

import time

import cv2
import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pipeline.play.live_view import CAMERAS, CONVCAM_MIN_WIDTH, LiveView
from pipeline.wire.keys import Keys
from pipeline.wire.local_redis import free_port
from tests.live_feed import FeatureModel, MovingGame


def frames(r: redis.Redis, keys: Keys, pid: str) -> dict[str, bytes | None]:
    return {cam: r.get(keys.frame(pid, cam)) for cam in CAMERAS}


def run_steps(view: LiveView, seconds: float, hz: float = 200.0) -> None:
    game, model = view.game, FeatureModel()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        model.forward()
        view(game.step(), model)
        time.sleep(1 / hz)


def test_nothing_is_written_until_someone_watches(r: redis.Redis, keys: Keys) -> None:
    view = LiveView(r, keys, "p1", MovingGame(), fps=50, background=False, viewer_check_s=0.05)
    run_steps(view, 0.3)
    assert view.published == 0 and frames(r, keys, "p1") == dict.fromkeys(CAMERAS)

    r.set(keys.viewer("p1"), "1", ex=5)
    run_steps(view, 0.3)
    got = frames(r, keys, "p1")
    assert view.published > 0 and all(got.values())
    cin = cv2.imdecode(np.frombuffer(got["cinematic"], np.uint8), cv2.IMREAD_UNCHANGED)
    hood = cv2.imdecode(np.frombuffer(got["hood"], np.uint8), cv2.IMREAD_UNCHANGED)
    cam = cv2.imdecode(np.frombuffer(got["convcam"], np.uint8), cv2.IMREAD_UNCHANGED)
    assert cin.shape == (360, 640, 3) and hood.shape == (120, 160, 3)
    assert cam.ndim == 2 and cam.shape[1] >= CONVCAM_MIN_WIDTH  # grayscale, upscaled
    assert 0 < r.ttl(keys.frame("p1", "hood")) <= 10

    r.delete(keys.viewer("p1"))
    time.sleep(0.1)
    run_steps(view, 0.1)  # notices the viewer left
    before = view.published
    run_steps(view, 0.3)
    assert view.published == before


def test_at_most_fps_frames_per_second(r: redis.Redis, keys: Keys) -> None:
    r.set(keys.viewer("p2"), "1", ex=5)
    view = LiveView(r, keys, "p2", MovingGame(), fps=5, background=False)
    run_steps(view, 1.0)
    assert 4 <= view.published <= 6


def test_background_thread_publishes_and_stops(r: redis.Redis, keys: Keys) -> None:
    view = LiveView(r, keys, "p3", MovingGame(), fps=20, viewer_check_s=0.1)
    try:
        r.set(keys.viewer("p3"), "1", ex=5)
        run_steps(view, 0.6)
        assert view.published > 0 and all(frames(r, keys, "p3").values())
    finally:
        view.close()


def test_redis_errors_never_reach_the_player() -> None:
    # no client-side retries: redis-py 8 retries 10 times with backoff by default, which the
    # background thread absorbs in real use but would only slow this test down
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.1, socket_timeout=0.1, retry=Retry(NoBackoff(), 0))
    view = LiveView(dead, Keys("x:"), "p4", MovingGame(), fps=100, background=False, viewer_check_s=0.0)
    run_steps(view, 0.2)
    assert view.errors > 0 and view.published == 0 and not view.watched
    view.watched = True  # even a failing write (Redis gone between check and write) is swallowed
    view._publish({"hood": np.zeros((4, 4, 3), np.uint8)})


def test_a_failing_camera_does_not_stop_the_driving(r: redis.Redis, keys: Keys) -> None:
    class Broken(MovingGame):
        def cinematic(self) -> np.ndarray:
            raise RuntimeError("window closed")

    r.set(keys.viewer("p5"), "1", ex=5)
    view = LiveView(r, keys, "p5", Broken(), fps=100, background=False)
    run_steps(view, 0.1)
    assert view.errors > 0


def test_disabled_with_zero_fps(r: redis.Redis, keys: Keys) -> None:
    r.set(keys.viewer("p6"), "1", ex=5)
    view = LiveView(r, keys, "p6", MovingGame(), fps=0)
    run_steps(view, 0.1)
    assert view.published == 0 and view._thread is None
