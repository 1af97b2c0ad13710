"""Test helpers for X: a private Xvfb per session, and a window that shows given frames.

The window is drawn with python-xlib (PutImage): pure Python from PyPI, no GUI toolkit,
no compiled parts, and the same library the backends use for window lookup, XTEST and
keyboard state — so tests need nothing beyond `xvfb` from Debian.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import numpy as np
import pytest


@pytest.fixture(scope="session")
def x_display() -> Iterator[str]:
    """DISPLAY of a fresh Xvfb for this test session (skips where Xvfb is not installed)."""
    pytest.importorskip("Xlib", reason="python-xlib not installed (pip install -e '.[dev]')")
    pytest.importorskip("mss", reason="mss not installed (pip install -e '.[dev]')")
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb not installed (apt-get install xvfb)")
    from pipeline.games.xvfb import virtual_display

    with virtual_display(1280, 1024) as display:
        yield display


class ImageWindow:
    """An X window at a fixed place showing RGB frames (a stand-in for a game's window)."""

    def __init__(self, title: str, width: int, height: int, x: int = 0, y: int = 0,
                 display: str | None = None) -> None:
        from Xlib import X
        from Xlib import display as xdisplay

        self.dpy = xdisplay.Display(display or os.environ["DISPLAY"])
        screen = self.dpy.screen()
        self.width, self.height = width, height
        # override_redirect: no window manager runs under Xvfb, and none may move it.
        self.window = screen.root.create_window(
            x, y, width, height, 0, screen.root_depth, X.InputOutput, X.CopyFromParent,
            background_pixel=screen.black_pixel, override_redirect=True,
            event_mask=X.ExposureMask,
        )
        self.window.set_wm_name(title)
        self.window.map()
        self.gc = self.window.create_gc()
        max_bytes = self.dpy.display.info.max_request_length * 4 - 64
        self.rows_per_put = max(1, max_bytes // (width * 4))
        self.dpy.sync()

    def show(self, rgb: np.ndarray) -> None:
        """Draw one RGB uint8 frame (H x W x 3) of the window's size; returns once drawn."""
        from Xlib import X

        assert rgb.shape == (self.height, self.width, 3), rgb.shape
        bgrx = np.empty((self.height, self.width, 4), np.uint8)
        bgrx[..., 0], bgrx[..., 1], bgrx[..., 2], bgrx[..., 3] = rgb[..., 2], rgb[..., 1], rgb[..., 0], 0
        for top in range(0, self.height, self.rows_per_put):
            rows = min(self.rows_per_put, self.height - top)
            self.window.put_image(self.gc, 0, top, self.width, rows, X.ZPixmap, 24, 0,
                                  bgrx[top:top + rows].tobytes())
        self.dpy.sync()

    def close(self) -> None:
        self.window.destroy()
        self.dpy.close()
