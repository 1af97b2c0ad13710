"""A private virtual X display (Xvfb) for capture benchmarks and tests without a desktop.

Xvfb picks a free display number itself (`-displayfd`), so parallel runs never collide.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from pipeline.errors import GameError

log = structlog.get_logger(__name__)


class Xvfb:
    """One Xvfb process; `display` is its name (':N') once started."""

    def __init__(self, width: int = 1920, height: int = 1080, depth: int = 24) -> None:
        self.size = (width, height, depth)
        self.proc: subprocess.Popen[bytes] | None = None
        self.display: str | None = None

    def start(self, timeout_s: float = 10.0) -> str:
        exe = shutil.which("Xvfb")
        if exe is None:
            raise GameError("Xvfb is not installed (apt-get install xvfb)")
        read_fd, write_fd = os.pipe()
        w, h, d = self.size
        self.proc = subprocess.Popen(  # noqa: S603
            [exe, "-displayfd", str(write_fd), "-screen", "0", f"{w}x{h}x{d}", "-nolisten", "tcp", "-noreset"],
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(write_fd)
        deadline = time.monotonic() + timeout_s
        data = b""
        try:
            while not data.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([read_fd], [], [], left)[0]:
                    raise GameError(f"Xvfb did not start within {timeout_s} s")
                chunk = os.read(read_fd, 64)
                if not chunk:
                    raise GameError(f"Xvfb exited at start (code {self.proc.poll()})")
                data += chunk
        except GameError:
            self.stop()
            raise
        finally:
            os.close(read_fd)
        self.display = f":{int(data.strip())}"
        log.info("xvfb.started", display=self.display, size=f"{w}x{h}x{d}")
        return self.display

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@contextmanager
def virtual_display(width: int = 1920, height: int = 1080, depth: int = 24) -> Iterator[str]:
    """Run the body with DISPLAY pointing at a fresh Xvfb; restores DISPLAY afterwards."""
    server = Xvfb(width, height, depth)
    display = server.start()
    previous = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    try:
        yield display
    finally:
        if previous is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = previous
        server.stop()
