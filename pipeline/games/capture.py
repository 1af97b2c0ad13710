"""Screen capture for the real backends: a window (found by title) or a region, via mss.

The window is looked up by title through win32 on Windows and X11 elsewhere, and looked
up again every `relocate_s` seconds so a moved window keeps being captured. Frames come
back as RGB uint8 at the model's size (INTER_AREA: the hood image is a downscale, and
area averaging avoids the aliasing that nearest/linear give on thin lane markings).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import structlog

from pipeline.errors import GameError, MissingExtraError

log = structlog.get_logger(__name__)

Region = tuple[int, int, int, int]  # left, top, width, height


def find_window(title: str) -> Region | None:
    """The client area of the window whose title contains `title`, on this platform."""
    if sys.platform == "win32":
        from pipeline.games.io.win32 import find_window as win_find

        return win_find(title)
    from pipeline.games.io.x11 import find_window as x_find

    return x_find(title)


def _new_mss() -> Any:
    try:
        import mss
    except ImportError:
        raise MissingExtraError("mss", "gta5") from None
    factory = getattr(mss, "MSS", None) or mss.mss  # mss >= 10.2 renamed the factory
    try:
        return factory()
    except Exception as exc:  # noqa: BLE001 - mss raises ScreenShotError and ctypes errors
        raise GameError(f"cannot open the screen for capture: {exc}") from None


def to_rgb(bgra: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """BGRA screenshot -> RGB uint8 at `size` (w, h); resizing first keeps the copy small."""
    if size is not None and (bgra.shape[1], bgra.shape[0]) != tuple(size):
        bgra = cv2.resize(bgra, tuple(size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGB)


class ScreenCapture:
    """Grabs one window or region; `grab()` returns RGB at `size`, `raw` keeps the full frame."""

    def __init__(
        self,
        size: tuple[int, int],
        window: str | None = None,
        region: Region | None = None,
        monitor: int = 1,
        relocate_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.window = window
        self.fixed_region = tuple(region) if region else None
        self.monitor = monitor
        self.relocate_s = relocate_s
        self._clock = clock
        self._local = threading.local()
        self._region: Region | None = None
        self._located_at = -float("inf")
        self.raw: np.ndarray | None = None  # the latest full-size BGRA frame

    def _mss(self) -> Any:
        sct = getattr(self._local, "sct", None)  # mss handles are per thread on X11
        if sct is None:
            sct = self._local.sct = _new_mss()
        return sct

    def region(self) -> Region:
        """Where to grab now: the window's client area (re-found periodically) or the region."""
        now = self._clock()
        if self._region is not None and now - self._located_at < self.relocate_s:
            return self._region
        if self.window:
            found = find_window(self.window)
            if found is None:
                self._region = None
                raise GameError(f"no visible window whose title contains {self.window!r}")
            region = found
        elif self.fixed_region:
            region = self.fixed_region  # type: ignore[assignment]
        else:
            monitors = self._mss().monitors
            if self.monitor >= len(monitors):
                raise GameError(f"monitor {self.monitor} does not exist ({len(monitors) - 1} found)")
            mon = monitors[self.monitor]
            region = (mon["left"], mon["top"], mon["width"], mon["height"])
        region = self._clamp(region)
        if region != self._region:
            log.info("capture.region", window=self.window, region=list(region))
        self._region, self._located_at = region, now
        return region

    def _clamp(self, region: Region) -> Region:
        """Keep the grab inside the screens (a window half off-screen must not fail the grab)."""
        screen = self._mss().monitors[0]
        left = max(region[0], screen["left"])
        top = max(region[1], screen["top"])
        right = min(region[0] + region[2], screen["left"] + screen["width"])
        bottom = min(region[1] + region[3], screen["top"] + screen["height"])
        if right <= left or bottom <= top:
            raise GameError(f"capture region {list(region)} lies outside the screen")
        return (left, top, right - left, bottom - top)

    def grab_raw(self) -> np.ndarray:
        """One full-size BGRA frame of the region (also kept in `raw`)."""
        left, top, width, height = self.region()
        try:
            shot = self._mss().grab({"left": left, "top": top, "width": width, "height": height})
        except Exception as exc:  # noqa: BLE001 - the window may close between locate and grab
            self._region = None
            raise GameError(f"screen grab of {[left, top, width, height]} failed: {exc}") from None
        self.raw = np.asarray(shot)
        return self.raw

    def grab(self) -> np.ndarray:
        """One frame, RGB uint8 at `size` (the hood image the model sees)."""
        return to_rgb(self.grab_raw(), self.size)

    def latest(self, size: tuple[int, int]) -> np.ndarray:
        """The latest full frame at another size (the cinematic view), grabbing if none yet."""
        raw = self.raw if self.raw is not None else self.grab_raw()
        return to_rgb(raw, size)

    def close(self) -> None:
        sct = getattr(self._local, "sct", None)
        if sct is not None:
            sct.close()
            self._local.sct = None
