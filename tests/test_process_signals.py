"""`install_signal_handlers`: what every role does on SIGTERM (supervisord's stop signal)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

from tests.processes import ROOT

_ROLE = textwrap.dedent("""
    import threading, time
    from pipeline.process import install_signal_handlers
    stop = threading.Event()
    install_signal_handlers(stop, stuck_report_s={report_s})
    def stuck_in_a_long_step():
        time.sleep({step_s})  # a step that does not look at `stop`
    print("ready", flush=True)
    stuck_in_a_long_step()
    print("stopped" if stop.is_set() else "not stopped", flush=True)
""")


def _role(report_s: float, step_s: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", _ROLE.format(report_s=report_s, step_s=step_s)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_a_role_stuck_after_sigterm_prints_where() -> None:
    """The server was SIGKILLed 20 s after SIGTERM once in CI, and its log did not say why."""
    proc = _role(report_s=0.5, step_s=4.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.splitlines()[-1] == "stopped"
    assert "stuck_in_a_long_step" in err and "Thread" in err, err


def test_a_role_that_stops_in_time_prints_no_stack() -> None:
    proc = _role(report_s=3.0, step_s=0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.splitlines()[-1] == "stopped" and time.monotonic() - t0 < 3.0
    assert "Thread" not in err, err
