"""mss capture of a real X window under Xvfb, window lookup, key injection and key reading."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from pipeline.errors import GameError
from pipeline.games.capture import ScreenCapture
from tests.processes import wait_until
from tests.xwindow import ImageWindow, x_display  # noqa: F401 - fixture

W, H = 320, 240


def known_frame(seed: int, width: int = W, height: int = H) -> np.ndarray:
    """Noise: every pixel differs, so any offset, channel swap or scaling shows."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture
def window(x_display: str) -> Iterator[ImageWindow]:  # noqa: F811
    win = ImageWindow("Charles capture test", W, H, x=37, y=51)
    yield win
    win.close()


def test_captured_pixels_match_the_frames_the_window_shows(window: ImageWindow) -> None:
    cap = ScreenCapture((W, H), window="capture TEST")  # substring, case-insensitive
    try:
        for seed in range(3):
            frame = known_frame(seed)
            window.show(frame)
            np.testing.assert_array_equal(cap.grab(), frame)
        assert cap.region() == (37, 51, W, H)
    finally:
        cap.close()


def test_capture_resizes_to_the_hood_size_with_area_averaging(window: ImageWindow) -> None:
    frame = known_frame(7)
    window.show(frame)
    cap = ScreenCapture((160, 120), window="Charles capture test")
    try:
        got = cap.grab()
        assert got.shape == (120, 160, 3) and got.dtype == np.uint8
        expected = cv2.resize(frame, (160, 120), interpolation=cv2.INTER_AREA)
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
        big = cap.latest((640, 480))  # the cinematic view comes from the same full grab
        assert big.shape == (480, 640, 3)
    finally:
        cap.close()


def test_fixed_region_and_clamping_at_the_screen_edge(window: ImageWindow) -> None:
    frame = known_frame(3)
    window.show(frame)
    cap = ScreenCapture((100, 50), region=(37 + 10, 51 + 20, 100, 50))
    try:
        np.testing.assert_array_equal(cap.grab(), frame[20:70, 10:110])
    finally:
        cap.close()
    edge = ScreenCapture((64, 64), region=(1280 - 32, 0, 64, 64))
    try:
        assert edge.region() == (1280 - 32, 0, 32, 64)
        assert edge.grab().shape == (64, 64, 3)
    finally:
        edge.close()


def test_moved_window_is_found_again(window: ImageWindow) -> None:
    cap = ScreenCapture((W, H), window="Charles capture test", relocate_s=0.0)
    try:
        assert cap.region()[:2] == (37, 51)
        window.window.configure(x=300, y=400)
        window.dpy.sync()
        frame = known_frame(11)
        window.show(frame)
        assert cap.region()[:2] == (300, 400)
        np.testing.assert_array_equal(cap.grab(), frame)
    finally:
        cap.close()


def test_missing_window_is_a_game_error(x_display: str) -> None:  # noqa: F811
    cap = ScreenCapture((W, H), window="no such window anywhere")
    with pytest.raises(GameError, match="no visible window"):
        cap.grab()


@pytest.mark.parametrize("sender_kind", ["xtest", "xdotool"])
def test_injected_keys_are_seen_by_the_keyboard_reader(x_display: str, sender_kind: str) -> None:  # noqa: F811
    from pipeline.games.io.devices import make_key_sender
    from pipeline.games.io.x11 import X11KeyState

    if sender_kind == "xdotool" and shutil.which("xdotool") is None:
        pytest.skip("xdotool not installed (apt-get install xdotool)")
    sender = make_key_sender(sender_kind)
    state = X11KeyState()
    try:
        assert state.down(["w", "a", "up"]) == {"w": False, "a": False, "up": False}
        sender.press("w")
        sender.press("up")
        wait_until(lambda: state.down(["w", "a", "up"]) == {"w": True, "a": False, "up": True}, 2, "the keys down", poll=0.005)
        sender.release("w")
        sender.release("up")
        wait_until(lambda: not any(state.down(["w", "up"]).values()), 2, "the keys up", poll=0.005)
    finally:
        sender.close()
        state.close()
