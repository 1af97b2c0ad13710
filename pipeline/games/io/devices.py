"""Building the output devices a backend drives through: a virtual gamepad or a key sender.

Each is chosen by a short name from the backend's options, or a `package.module:Class`
path (how tests plug in a recording double of vgamepad's `VX360Gamepad`, and how a user
plugs in their own device). Platform-specific pieces are imported only when chosen.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any

import structlog

from pipeline.errors import ConfigError, GameError, MissingExtraError
from pipeline.games.base import import_named
from pipeline.games.io.control import GamepadLike, KeySender

log = structlog.get_logger(__name__)

GAMEPADS = ("vgamepad",)
KEY_SENDERS = ("auto", "xtest", "xdotool", "sendinput")


def load_object(spec: str, what: str) -> Any:
    """Instantiate `package.module:Class` with no arguments (a plug-in device)."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ConfigError(f"game.options.{what}: {spec!r} is not a built-in name nor 'package.module:Class'")
    return import_named(module_name, name, f"game.options.{what}")()


def make_gamepad(spec: str = "vgamepad") -> GamepadLike:
    """A virtual Xbox 360 pad: vgamepad (ViGEmBus on Windows, uinput on Linux) or a plug-in."""
    if spec != "vgamepad":
        pad = load_object(spec, "gamepad")
    else:
        try:
            import vgamepad
        except ImportError:
            raise MissingExtraError("vgamepad", "gta5") from None
        try:
            pad = vgamepad.VX360Gamepad()
        except Exception as exc:  # noqa: BLE001 - vgamepad raises bare errors when the driver is missing
            hint = "install ViGEmBus" if sys.platform == "win32" else "needs write access to /dev/uinput"
            raise GameError(f"cannot create the virtual gamepad ({hint}): {exc!r}") from None
    if not isinstance(pad, GamepadLike):
        raise ConfigError(f"game.options.gamepad: {spec!r} lacks the VX360Gamepad float methods")
    log.info("gamepad.created", gamepad=spec)
    return pad


class XdotoolKeySender:
    """Keys through the `xdotool` command (Linux, no python-xlib needed; one process per key)."""

    def __init__(self) -> None:
        self._exe = shutil.which("xdotool")
        if self._exe is None:
            raise GameError("xdotool is not installed (apt-get install xdotool)")
        if not os.environ.get("DISPLAY"):
            raise GameError("no X display: DISPLAY is not set")

    def _run(self, action: str, key: str) -> None:
        from pipeline.games.io.x11 import keysym_name

        done = subprocess.run([self._exe, action, keysym_name(key)], capture_output=True, timeout=2.0)  # noqa: S603
        if done.returncode != 0:
            raise GameError(f"xdotool {action} {key!r} failed: {done.stderr.decode(errors='replace').strip()}")

    def press(self, key: str) -> None:
        self._run("keydown", key)

    def release(self, key: str) -> None:
        self._run("keyup", key)

    def close(self) -> None:
        pass


def make_key_sender(spec: str = "auto") -> KeySender:
    """auto = SendInput on Windows, XTEST on Linux (xdotool when python-xlib is missing)."""
    if spec == "auto":
        if sys.platform == "win32":
            spec = "sendinput"
        else:
            try:
                import Xlib  # noqa: F401
            except ImportError:
                spec = "xdotool"
            else:
                spec = "xtest"
    if spec == "sendinput":
        from pipeline.games.io.win32 import SendInputKeySender

        return SendInputKeySender()
    if spec == "xtest":
        from pipeline.games.io.x11 import XTestKeySender

        return XTestKeySender()
    if spec == "xdotool":
        return XdotoolKeySender()
    sender = load_object(spec, "key_sender")
    for method in ("press", "release", "close"):
        if not callable(getattr(sender, method, None)):
            raise ConfigError(f"game.options.key_sender: {spec!r} has no {method}()")
    return sender
