"""Windows helpers through ctypes: find the game window, send keys, read XInput and keyboard.

Everything here touches `ctypes.windll` only when called, so the module imports on any
platform; calling it elsewhere raises GameError. Games read keys as scan codes (DirectInput),
so keys go out through SendInput with KEYEVENTF_SCANCODE, as pydirectinput does.
"""

from __future__ import annotations

import ctypes
import sys
from ctypes import wintypes
from typing import Any

import structlog

from pipeline.errors import GameError

log = structlog.get_logger(__name__)

#: Charles key names -> Windows virtual-key codes (letters and digits use their ASCII code).
VIRTUAL_KEYS: dict[str, int] = {
    "up": 0x26,
    "down": 0x28,
    "left": 0x25,
    "right": 0x27,
    "space": 0x20,
    "shift": 0xA0,
    "ctrl": 0xA2,
    "alt": 0xA4,
    "enter": 0x0D,
    "esc": 0x1B,
    "tab": 0x09,
    "backspace": 0x08,
}
_EXTENDED = {"up", "down", "left", "right"}
KEYEVENTF_EXTENDEDKEY = 0x0001
KEYEVENTF_KEYUP = 0x0002
KEYEVENTF_SCANCODE = 0x0008
INPUT_KEYBOARD = 1


def _windll() -> Any:
    if sys.platform != "win32":
        raise GameError("this needs Windows (win32 API)")
    return ctypes.windll  # type: ignore[attr-defined]


def _user32() -> Any:
    """A private user32 handle with argtypes set (64-bit HWNDs must not pass as C int)."""
    _windll()
    user32 = ctypes.WinDLL("user32", use_last_error=True)  # type: ignore[attr-defined]
    user32.IsWindowVisible.argtypes = [wintypes.HWND]
    user32.GetWindowTextLengthW.argtypes = [wintypes.HWND]
    user32.GetWindowTextW.argtypes = [wintypes.HWND, wintypes.LPWSTR, ctypes.c_int]
    user32.GetClientRect.argtypes = [wintypes.HWND, ctypes.POINTER(wintypes.RECT)]
    user32.ClientToScreen.argtypes = [wintypes.HWND, ctypes.POINTER(wintypes.POINT)]
    return user32


def virtual_key(key: str) -> int:
    """The virtual-key code of a Charles key name ('w' -> 0x57)."""
    name = key.lower()
    if name in VIRTUAL_KEYS:
        return VIRTUAL_KEYS[name]
    if len(name) == 1 and name.isalnum():
        return ord(name.upper())
    raise GameError(f"key {key!r} is not supported; use a letter, digit or one of {sorted(VIRTUAL_KEYS)}")


def enable_dpi_awareness() -> None:
    """Make window rectangles physical pixels, as mss captures them (scaled desktops)."""
    try:
        _windll().shcore.SetProcessDpiAwareness(2)
    except (AttributeError, OSError):
        pass  # older Windows, or already set by mss


def find_window(title: str) -> tuple[int, int, int, int] | None:
    """(left, top, width, height) of the client area of the largest visible window whose
    title contains `title` (case-insensitive), or None."""
    enable_dpi_awareness()
    user32 = _user32()
    wanted = title.lower()
    found: list[int] = []

    @ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.HWND, wintypes.LPARAM)  # type: ignore[attr-defined]
    def visit(hwnd: int, _lparam: int) -> bool:
        if user32.IsWindowVisible(hwnd):
            length = user32.GetWindowTextLengthW(hwnd)
            buf = ctypes.create_unicode_buffer(length + 1)
            user32.GetWindowTextW(hwnd, buf, length + 1)
            if wanted in buf.value.lower():
                found.append(hwnd)
        return True

    user32.EnumWindows(visit, 0)
    best: tuple[int, tuple[int, int, int, int]] | None = None
    for hwnd in found:
        rect = wintypes.RECT()
        if not user32.GetClientRect(hwnd, ctypes.byref(rect)):
            continue
        origin = wintypes.POINT(0, 0)
        user32.ClientToScreen(hwnd, ctypes.byref(origin))
        box = (origin.x, origin.y, rect.right - rect.left, rect.bottom - rect.top)
        if box[2] > 0 and box[3] > 0 and (best is None or box[2] * box[3] > best[0]):
            best = (box[2] * box[3], box)
    return best[1] if best else None


class _KEYBDINPUT(ctypes.Structure):
    _fields_ = [
        ("wVk", wintypes.WORD),
        ("wScan", wintypes.WORD),
        ("dwFlags", wintypes.DWORD),
        ("time", wintypes.DWORD),
        ("dwExtraInfo", ctypes.c_size_t),
    ]


class _MOUSEINPUT(ctypes.Structure):
    _fields_ = [
        ("dx", wintypes.LONG),
        ("dy", wintypes.LONG),
        ("mouseData", wintypes.DWORD),
        ("dwFlags", wintypes.DWORD),
        ("time", wintypes.DWORD),
        ("dwExtraInfo", ctypes.c_size_t),
    ]


class _INPUTUNION(ctypes.Union):
    _fields_ = [("ki", _KEYBDINPUT), ("mi", _MOUSEINPUT)]


class _INPUT(ctypes.Structure):
    _fields_ = [("type", wintypes.DWORD), ("union", _INPUTUNION)]


class SendInputKeySender:
    """Presses keys as scan codes through SendInput (the game must have focus)."""

    def __init__(self) -> None:
        self._user32 = _windll().user32
        self._scan: dict[str, int] = {}

    def _send(self, key: str, up: bool) -> None:
        if key not in self._scan:
            self._scan[key] = self._user32.MapVirtualKeyW(virtual_key(key), 0)  # MAPVK_VK_TO_VSC
        flags = KEYEVENTF_SCANCODE | (KEYEVENTF_KEYUP if up else 0)
        if key.lower() in _EXTENDED:
            flags |= KEYEVENTF_EXTENDEDKEY
        event = _INPUT(type=INPUT_KEYBOARD)
        event.union.ki = _KEYBDINPUT(0, self._scan[key], flags, 0, 0)
        if self._user32.SendInput(1, ctypes.byref(event), ctypes.sizeof(_INPUT)) != 1:
            raise GameError(f"SendInput refused key {key!r} (is the game elevated while Charles is not?)")

    def press(self, key: str) -> None:
        self._send(key, up=False)

    def release(self, key: str) -> None:
        self._send(key, up=True)

    def close(self) -> None:
        pass


class WindowsKeyState:
    """Which keys are down right now (GetAsyncKeyState): the human driver's keyboard."""

    def __init__(self) -> None:
        self._user32 = _windll().user32

    def down(self, keys: list[str]) -> dict[str, bool]:
        return {k: bool(self._user32.GetAsyncKeyState(virtual_key(k)) & 0x8000) for k in keys}

    def close(self) -> None:
        pass


class _XINPUT_GAMEPAD(ctypes.Structure):
    _fields_ = [
        ("wButtons", wintypes.WORD),
        ("bLeftTrigger", ctypes.c_ubyte),
        ("bRightTrigger", ctypes.c_ubyte),
        ("sThumbLX", ctypes.c_short),
        ("sThumbLY", ctypes.c_short),
        ("sThumbRX", ctypes.c_short),
        ("sThumbRY", ctypes.c_short),
    ]


class _XINPUT_STATE(ctypes.Structure):
    _fields_ = [("dwPacketNumber", wintypes.DWORD), ("Gamepad", _XINPUT_GAMEPAD)]


class XInputPad:
    """Reads one physical Xbox-compatible pad (XInputGetState), for human-driver recording."""

    DLLS = ("xinput1_4", "xinput1_3", "xinput9_1_0")

    def __init__(self, index: int = 0) -> None:
        windll = _windll()
        self.index = index
        self._get_state = None
        for name in self.DLLS:
            try:
                self._get_state = getattr(windll, name).XInputGetState
                break
            except (AttributeError, OSError):
                continue
        if self._get_state is None:
            raise GameError(f"no XInput DLL found (tried {', '.join(self.DLLS)})")

    def read(self) -> tuple[int, int, int, int]:
        """(left trigger 0..255, right trigger 0..255, left stick x, left stick y)."""
        state = _XINPUT_STATE()
        err = self._get_state(self.index, ctypes.byref(state))
        if err != 0:
            raise GameError(f"XInput pad {self.index} is not connected (error {err})")
        pad = state.Gamepad
        return pad.bLeftTrigger, pad.bRightTrigger, pad.sThumbLX, pad.sThumbLY
