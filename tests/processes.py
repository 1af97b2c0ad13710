"""Run `charles` roles as real processes for end-to-end tests, and stop them cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class Roles:
    """Starts `python -m pipeline.cli ROLE ...` processes sharing one Redis and key prefix."""

    def __init__(self, redis_url: str, prefix: str, workdir: Path) -> None:
        self.env = {
            **os.environ,
            "CHARLES_REDIS_URL": redis_url,
            "CHARLES_KEY_PREFIX": prefix,
            "CHARLES_LOG_JSON": "1",
            "CHARLES_ENV_FILE": str(workdir / "no.env"),
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",
        }
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=self.workdir, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def wait_until(pred: Callable[[], Any], timeout: float = 15.0, what: str = "", roles: Roles | None = None,
               poll: float = 0.1, tolerate: tuple[type[BaseException], ...] = ()) -> Any:
    """The one wait of the tests: poll `pred` until it returns a true value, and return it.

    Fails after `timeout` seconds naming `what` (with the roles' logs), or at once when one of
    `roles` exits; an exception in `tolerate` (Redis away, say) counts as "not yet"."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = pred()
            if value:
                return value
        except tolerate as exc:
            last_exc = exc
        if roles is not None:
            for name, proc in roles.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(f"{name} exited with {proc.returncode} while waiting for {what}:\n"
                                         f"{roles.log(name)[-3000:]}")
        time.sleep(poll)
    logs = "" if roles is None else "\n".join(f"--- {n}\n{roles.log(n)[-1500:]}" for n in roles.procs)
    last = "" if last_exc is None else f" (last error: {last_exc})"
    raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}{last}\n{logs}")
