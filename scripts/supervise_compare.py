"""Compare the two ways to supervise the roles (issue 15): supervisord vs a restarting honcho.

Runs a scratch Procfile of ROLES idle roles under (a) `charles supervise` (supervisord) and
(b) honcho's Manager with its loop changed to restart a role that exits, kills one role
with SIGKILL ROUNDS times and prints one JSON object per supervisor: the time from the
kill until the role's new process runs, and the memory (RSS) of the supervisor itself
(every process of its tree that is not a role). The roles are `python -c` sleeps, so only
the supervisor is measured.

    .venv/bin/python scripts/supervise_compare.py --roles 8 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROLE = "{python} -c 'import time; time.sleep(10**6)' role-{name}"


def tree(root: int) -> list[tuple[int, int, str]]:
    """(pid, rss KiB, cmdline) of `root` and its descendants."""
    out = subprocess.run(["ps", "-eo", "pid=,ppid=,rss=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 3) for line in out.splitlines()]
    children: dict[int, list[tuple[int, int, str]]] = {}
    for pid, ppid, rss, args in (r for r in rows if len(r) == 4):
        children.setdefault(int(ppid), []).append((int(pid), int(rss), args))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found += [c for c in children.get(pid, [])]
        todo += [c[0] for c in children.get(pid, [])]
    me = next((int(r[2]), r[3]) for r in rows if len(r) == 4 and int(r[0]) == root)
    return [(root, me[0], me[1]), *found]


def role_pid(root: int, name: str) -> int | None:
    for pid, _, args in tree(root):
        if args.endswith(f"role-{name}") and "-c" in args and not args.startswith(("/bin/sh", "sh ")):
            return pid
    return None


def measure(root: int, names: list[str], rounds: int) -> dict[str, object]:
    deadline = time.monotonic() + 30
    while any(role_pid(root, n) is None for n in names):
        if time.monotonic() > deadline:
            raise SystemExit("roles did not start")
        time.sleep(0.1)
    time.sleep(2)  # past supervisord's startsecs, so a kill is a crash and not a failed start
    overhead = sum(rss for pid, rss, args in tree(root) if "role-" not in args or args.startswith("/bin/sh"))
    restarts = []
    for i in range(rounds):
        name = names[i % len(names)]
        old = role_pid(root, name)
        assert old is not None
        t0 = time.monotonic()
        os.kill(old, signal.SIGKILL)
        while role_pid(root, name) in (None, old):
            if time.monotonic() - t0 > 30:
                raise SystemExit(f"{name} did not come back")
            time.sleep(0.005)
        restarts.append(time.monotonic() - t0)
        time.sleep(1.5)
    others_kept = all(role_pid(root, n) is not None for n in names)
    return {"restart_s": {"median": round(statistics.median(restarts), 3), "max": round(max(restarts), 3)},
            "supervisor_rss_mb": round(overhead / 1024, 1),
            "supervisor_processes": sum(1 for _, _, a in tree(root) if "role-" not in a or a.startswith("/bin/sh")),
            "others_running": others_kept}


def restarting_honcho(procfile: Path) -> None:
    """honcho's Manager.loop with one change: a role that stops is started again (a prototype)."""
    from honcho.environ import parse_procfile
    from honcho.manager import Manager

    class Restarting(Manager):
        def loop(self) -> None:  # honcho 2.0's loop, restart instead of "stop everything"
            signal.signal(signal.SIGTERM, lambda *_: self.terminate())
            signal.signal(signal.SIGINT, lambda *_: self.terminate())
            self._start()
            while not (self._terminating and self._all_stopped()):
                try:
                    msg = self.events.get(timeout=0.1)
                except queue.Empty:
                    continue
                if msg.type == "line":
                    self._printer.write(msg)
                elif msg.type == "start":
                    self._processes[msg.name]["pid"] = msg.data["pid"]
                elif msg.type == "stop":
                    p = self._processes[msg.name]
                    p["returncode"] = msg.data["returncode"]
                    if not self._terminating:
                        del p["returncode"]
                        p["process"] = multiprocessing.Process(name=msg.name, target=p["obj"].run,
                                                               args=(self.events, True))
                        p["process"].start()

    manager = Restarting()
    for name, entry in parse_procfile(procfile.read_text()).processes.items():
        manager.add_process(name, entry, env=dict(os.environ))
    manager.loop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--roles", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--honcho-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.honcho_child:
        restarting_honcho(args.honcho_child)
        return
    names = [f"r{i}" for i in range(args.roles)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        procfile = work / "Procfile"
        procfile.write_text("".join(f"{n}: {ROLE.format(python=sys.executable, name=n)}\n" for n in names))
        results = {}
        for kind, cmd in {
            "supervisord": [sys.executable, "-m", "pipeline.cli", "supervise", "--state-dir", str(work / "sv")],
            "honcho_restarting": [sys.executable, __file__, "--honcho-child", str(procfile)],
        }.items():
            proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
            try:
                results[kind] = measure(proc.pid, names, args.rounds)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
            print(json.dumps({"supervisor": kind, "roles": args.roles, "rounds": args.rounds, **results[kind]}),
                  flush=True)


if __name__ == "__main__":
    main()
