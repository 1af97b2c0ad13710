"""X11 helpers (Linux): find a window by title, inject keys (XTEST), read the keyboard.

These let the `screen` backend, keyboard output and human-driver recording work on a
Linux desktop, and let the tests prove them under Xvfb without the game. python-xlib is
imported lazily (extra `gta5` on Linux, and `dev`), so importing this module is free.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import structlog

from pipeline.errors import GameError, MissingExtraError

log = structlog.get_logger(__name__)

#: Charles key names -> X keysym names (single characters map to themselves).
KEYSYMS: dict[str, str] = {
    "up": "Up",
    "down": "Down",
    "left": "Left",
    "right": "Right",
    "space": "space",
    "shift": "Shift_L",
    "ctrl": "Control_L",
    "alt": "Alt_L",
    "enter": "Return",
    "esc": "Escape",
    "tab": "Tab",
    "backspace": "BackSpace",
}


def keysym_name(key: str) -> str:
    """The X keysym name of a Charles key name ('w' -> 'w', 'up' -> 'Up')."""
    return KEYSYMS.get(key.lower(), key)


def open_display(name: str | None = None) -> Any:
    """A python-xlib Display; GameError when no X server is reachable."""
    try:
        from Xlib import display as xdisplay
        from Xlib.error import DisplayError
    except ImportError:
        raise MissingExtraError("python-xlib", "gta5") from None
    target = name or os.environ.get("DISPLAY")
    if not target:
        raise GameError("no X display: DISPLAY is not set (start Xvfb or run inside a desktop session)")
    try:
        return xdisplay.Display(target)
    except (DisplayError, OSError) as exc:
        raise GameError(f"cannot open X display {target!r}: {exc}") from None


def _title(window: Any, display: Any) -> str:
    """A window's title from _NET_WM_NAME (UTF-8) or WM_NAME."""
    try:
        net_name = display.intern_atom("_NET_WM_NAME")
        utf8 = display.intern_atom("UTF8_STRING")
        prop = window.get_full_property(net_name, utf8)
        if prop is not None and prop.value:
            value = prop.value
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        name = window.get_wm_name()
        if isinstance(name, bytes):
            return name.decode("latin-1", "replace")
        return name or ""
    except Exception:  # noqa: BLE001 - a window may vanish while we look at it
        return ""


def find_window(title: str, display: Any | None = None) -> tuple[int, int, int, int] | None:
    """(left, top, width, height) in root coordinates of the largest mapped window whose
    title contains `title` (case-insensitive), or None."""
    own = display is None
    dpy = display or open_display()
    try:
        from Xlib import X

        root = dpy.screen().root
        wanted = title.lower()
        best: tuple[int, tuple[int, int, int, int]] | None = None
        stack = [root]
        while stack:
            win = stack.pop()
            try:
                children = win.query_tree().children
            except Exception:  # noqa: BLE001 - vanished window
                continue
            stack.extend(children)
            if win == root or wanted not in _title(win, dpy).lower():
                continue
            try:
                attrs = win.get_attributes()
                if attrs.map_state != X.IsViewable:
                    continue
                geom = win.get_geometry()
                pos = win.translate_coords(root, 0, 0)
            except Exception:  # noqa: BLE001
                continue
            rect = (-pos.x, -pos.y, int(geom.width), int(geom.height))
            area = rect[2] * rect[3]
            if best is None or area > best[0]:
                best = (area, rect)
        return best[1] if best else None
    finally:
        if own:
            dpy.close()


class Keycodes:
    """Charles key names -> this X server's keycodes, looked up once each."""

    def __init__(self, dpy: Any) -> None:
        self._dpy = dpy
        self._codes: dict[str, int] = {}

    def __call__(self, key: str) -> int:
        if key not in self._codes:
            from Xlib import XK

            sym = XK.string_to_keysym(keysym_name(key))
            code = self._dpy.keysym_to_keycode(sym) if sym else 0
            if not code:
                raise GameError(f"key {key!r} has no keycode on this X server")
            self._codes[key] = code
        return self._codes[key]


class XTestKeySender:
    """Injects key presses through the X test extension (what a real keyboard would do)."""

    def __init__(self, display_name: str | None = None) -> None:
        self._dpy = open_display(display_name)
        if not self._dpy.has_extension("XTEST"):
            self._dpy.close()
            raise GameError("the X server has no XTEST extension; use key_sender = 'xdotool'")
        self.keycode = Keycodes(self._dpy)
        self._lock = threading.Lock()

    def _fake(self, event: int, key: str) -> None:
        from Xlib.ext import xtest

        with self._lock:
            xtest.fake_input(self._dpy, event, self.keycode(key))
            self._dpy.sync()

    def press(self, key: str) -> None:
        from Xlib import X

        self._fake(X.KeyPress, key)

    def release(self, key: str) -> None:
        from Xlib import X

        self._fake(X.KeyRelease, key)

    def close(self) -> None:
        with self._lock:
            self._dpy.close()


class X11KeyState:
    """Which keys are down right now (XQueryKeymap): the human driver's keyboard on Linux."""

    def __init__(self, display_name: str | None = None) -> None:
        self._dpy = open_display(display_name)
        self._code = Keycodes(self._dpy)

    def down(self, keys: list[str]) -> dict[str, bool]:
        """One keymap query for several keys."""
        codes = {k: self._code(k) for k in keys}
        keymap = self._dpy.query_keymap()
        return {k: bool(keymap[c // 8] & (1 << (c % 8))) for k, c in codes.items()}

    def close(self) -> None:
        self._dpy.close()
