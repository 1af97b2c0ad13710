"""A window onto the built-in simulator, and driving it with the keyboard (the `viewer` extra).

`charles sim` shows the chase camera in a pygame window; with `--keyboard`, and in
`charles record drive --driver human` on the sim backend, the keys held in that window
drive the car. pygame is optional: `pip install 'charles[viewer]'`.

Keys: Up/W throttle, Down/S brake (reverse once stopped), Left/A and Right/D steer,
R respawn (`charles sim` only), Esc/Q or closing the window quits.
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.errors import GameError, ViewerMissingError
from pipeline.games.base import Controls

DRIVE_KEYS_HELP = "Up/W throttle, Down/S brake and reverse, Left/A Right/D steer"
KEYS_HELP = f"{DRIVE_KEYS_HELP}, R respawns, Esc/Q quits"
#: key names `SimWindow.keys()` reports -> pygame key constants (by attribute name)
KEY_BINDINGS: dict[str, tuple[str, ...]] = {
    "up": ("K_UP", "K_w"),
    "down": ("K_DOWN", "K_s"),
    "left": ("K_LEFT", "K_a"),
    "right": ("K_RIGHT", "K_d"),
    "respawn": ("K_r",),
    "quit": ("K_ESCAPE", "K_q"),
}


_NO_DISPLAY = "needs a display (DISPLAY or WAYLAND_DISPLAY)"


def _runtime_dir() -> None:
    """Give SDL the XDG_RUNTIME_DIR it warns about when a session (ssh, su, a container) has none:
    a private folder of this user's, as the login manager would have made."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    import tempfile

    path = os.path.join(tempfile.gettempdir(), f"charles-runtime-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    if os.stat(path).st_uid == os.getuid():  # never one another user made for us
        os.chmod(path, 0o700)
        os.environ["XDG_RUNTIME_DIR"] = path


def composite(game: Any, obs: Any) -> Any:
    """Chase camera with the hood camera inset and a one-line HUD (RGB)."""
    import cv2
    import numpy as np

    img = np.ascontiguousarray(game.cinematic())
    hood = obs.frame
    h, w = img.shape[:2]
    iw = w // 4
    ih = int(hood.shape[0] * iw / hood.shape[1])
    img[8 : 8 + ih, w - iw - 8 : w - 8] = cv2.resize(hood, (iw, ih), interpolation=cv2.INTER_AREA)
    text = (f"{obs.speed * 3.6:5.0f} km/h  acc {obs.controls.acceleration_braking:+.2f}  steer {obs.controls.steering:+.2f}"
            f"  target {obs.purpose[0]:.0f} m  crashes {obs.collisions}")
    cv2.putText(img, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return img


class SimWindow:
    """A pygame window that shows RGB frames and reports the drive keys held in it.

    The constructor checks for pygame and a display (fail fast, before a world is built);
    the window itself opens with the first `show()`, so it appears once there is a picture.
    `keys()` pumps the event queue (call it once per frame): a key counts as held when it
    is down now or was pressed since the last call, so a tap shorter than a frame still
    registers. "respawn" is reported once per press, "quit" on Esc/Q or a window close.
    """

    def __init__(self, size: tuple[int, int], title: str = "Charles sim", keys_help: str = KEYS_HELP) -> None:
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # stdout carries JSON summaries
        _runtime_dir()
        try:
            import pygame
        except ImportError:
            raise ViewerMissingError() from None
        try:
            pygame.display.init()  # only the display: no audio device needed
        except pygame.error as exc:
            raise GameError(f"cannot open a window ({exc}): {_NO_DISPLAY}") from None
        driver = pygame.display.get_driver()
        if driver in ("offscreen", "dummy") and os.environ.get("SDL_VIDEODRIVER") != driver:
            pygame.display.quit()  # pygame's fallback when there is no display: nobody would see it
            raise GameError(f"cannot open a window (no display, SDL fell back to {driver!r}): {_NO_DISPLAY}")
        self.pg = pygame
        self.size = (int(size[0]), int(size[1]))
        self.title = f"{title} - {keys_help}"
        self.screen: Any = None
        self._codes = {name: tuple(getattr(pygame, c) for c in codes) for name, codes in KEY_BINDINGS.items()}
        self._by_code = {code: name for name, codes in self._codes.items() for code in codes}

    def _open(self) -> None:
        pg = self.pg
        try:
            self.screen = pg.display.set_mode(self.size)
        except pg.error as exc:
            raise GameError(f"cannot open a window ({exc}): {_NO_DISPLAY}") from None
        pg.display.set_caption(self.title)
        pg.event.pump()

    def show(self, rgb: Any) -> None:
        """Draw one RGB uint8 frame (H x W x 3), scaled to the window when sizes differ."""
        if self.screen is None:
            self._open()
        pg = self.pg
        surf = pg.surfarray.make_surface(rgb.swapaxes(0, 1))
        if surf.get_size() != self.size:
            surf = pg.transform.scale(surf, self.size)
        self.screen.blit(surf, (0, 0))
        pg.display.flip()

    def keys(self) -> set[str]:
        """Names of the keys held now (see KEY_BINDINGS), plus "quit" on a window close."""
        pg = self.pg
        held: set[str] = set()
        if self.screen is None:
            return held
        for event in pg.event.get():
            if event.type == pg.QUIT:
                held.add("quit")
            elif event.type == pg.KEYDOWN and event.key in self._by_code:
                held.add(self._by_code[event.key])
        pressed = pg.key.get_pressed()
        held |= {name for name, codes in self._codes.items()
                 if name != "respawn" and any(pressed[c] for c in codes)}
        return held

    def close(self) -> None:
        self.pg.display.quit()


class KeyboardDriver:
    """Drive keys -> Controls: full throttle/brake, steering that builds up while a key is held
    and recentres when it is let go (a keyboard's stand-in for a stick)."""

    def __init__(self, steer_rate: float = 0.12, recentre: float = 0.3) -> None:
        self.steer_rate = steer_rate
        self.recentre = recentre
        self.steer = 0.0

    def controls(self, keys: set[str]) -> Controls:
        target = float("right" in keys) - float("left" in keys)
        if target:
            self.steer += max(-self.steer_rate, min(self.steer_rate, target - self.steer))
        else:
            self.steer -= self.steer * self.recentre
            if abs(self.steer) < 1e-3:
                self.steer = 0.0
        accel = float("up" in keys) - float("down" in keys)
        return Controls(accel, self.steer)


class VideoOut:
    """An MP4 of RGB frames: H.264 (browsers play it) where OpenCV has an encoder for it,
    else MPEG-4 Part 2, converted to H.264 at `close()` when an `ffmpeg` is on PATH.
    `codec` says which one the file ended up with."""

    def __init__(self, path: str, fps: float, size: tuple[int, int]) -> None:
        import cv2

        # OpenCV and FFmpeg report every encoder they try and lack; one summary line is enough
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        quiet = getattr(getattr(cv2, "utils", None), "logging", None)
        level = quiet.getLogLevel() if quiet else None
        if quiet:
            quiet.setLogLevel(quiet.LOG_LEVEL_SILENT)
        self.path = path
        self.codec = ""
        try:
            for fourcc, codec in (("avc1", "h264"), ("mp4v", "mpeg4")):
                writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, size)
                if writer.isOpened():
                    self.writer, self.codec = writer, codec
                    break
        finally:
            if quiet:
                quiet.setLogLevel(level)
        if not self.codec:
            raise GameError(f"{path}: cannot write an MP4 here (OpenCV has neither an H.264 nor an MPEG-4 encoder)")
        self._cv2 = cv2

    def write(self, rgb: Any) -> None:
        self.writer.write(self._cv2.cvtColor(rgb, self._cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        """Finish the file; an MPEG-4 one becomes H.264 when an ffmpeg with libx264 is at hand."""
        import shutil
        import subprocess

        self.writer.release()
        ffmpeg = shutil.which("ffmpeg")
        if self.codec != "mpeg4" or ffmpeg is None:
            return
        tmp = f"{self.path}.h264.mp4"
        done = subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-i", self.path, "-c:v", "libx264",
                               "-pix_fmt", "yuv420p", "-movflags", "+faststart", tmp], capture_output=True)
        if done.returncode == 0:
            os.replace(tmp, self.path)
            self.codec = "h264"
        elif os.path.exists(tmp):
            os.remove(tmp)

    @property
    def note(self) -> str:
        """'' for H.264; otherwise what the user should know about the file."""
        if self.codec == "h264":
            return ""
        return ("MPEG-4 Part 2: players such as VLC or mpv play it, browsers do not; for H.264 install ffmpeg "
                "(it is used when on PATH) or convert: ffmpeg -i IN.mp4 -c:v libx264 -pix_fmt yuv420p OUT.mp4")
