"""The Server/Trainer console and the Player console, as rich renderables built from a snapshot.

The same renderables are shown by `charles console` in a terminal and exported to HTML
for the dashboard, so both always show the same figures. Everything here reads only the
dict from `pipeline.observe.status.snapshot()` (plus rates from successive snapshots).
"""

from __future__ import annotations

import io
import time
from collections import deque
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.terminal_theme import MONOKAI
from rich.text import Text

STATE_STYLES = {"training": "bold green", "filling": "bold yellow", "waiting": "bold dark_orange",
                "absent": "bold red"}
#: A heartbeat older than this (seconds) is shown in red: the worker may be gone.
STALE_HEARTBEAT_S = 5.0
MAX_ROWS = 8


class Rates:
    """Per-second rates over the last `window_s` of snapshots (the counters in Redis only go up).

    Sample sets arrive in bursts (a balancing round at a time), so a rate between two
    snapshots one second apart would flicker between 0 and a burst; a window smooths it.
    """

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._history: deque[tuple[float, dict[str, int]]] = deque()
        self.samples_in_per_s: dict[str, float] = {}
        self.ready = False  # False until two snapshots were seen (`--once` shows "-")

    def update(self, snap: dict[str, Any], now: float | None = None) -> Rates:
        """Feed a snapshot; rates are over the window ending now."""
        now = time.monotonic() if now is None else now
        routed = {name: int(b.get("samples_routed", 0)) for name, b in snap.get("buffers", {}).items()}
        while len(self._history) > 1 and now - self._history[1][0] >= self.window_s:
            self._history.popleft()
        if self._history:
            then, before = self._history[0]
            dt = now - then
            if dt > 0:
                self.samples_in_per_s = {n: max(0, v - before.get(n, v)) / dt for n, v in routed.items()}
                self.ready = True
        self._history.append((now, routed))
        return self

    @property
    def total_in_per_s(self) -> float:
        return sum(self.samples_in_per_s.values())


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def ago(timestamp: float | None, now: float | None = None) -> str:
    """'12 s ago', '3 min ago', '2.5 h ago' (or '-' without a time)."""
    if not timestamp:
        return "-"
    age = max(0.0, (time.time() if now is None else now) - timestamp)
    if age < 90:
        return f"{age:.0f} s ago"
    if age < 5400:
        return f"{age / 60:.0f} min ago"
    return f"{age / 3600:.1f} h ago"


def clock(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "-"


def _heartbeat(age: float) -> Text:
    return Text(f"{age:.1f} s", style="red" if age > STALE_HEARTBEAT_S else "green")


def _num(value: Any, fmt: str = "{:.3f}") -> str:
    return fmt.format(value) if isinstance(value, int | float) and value == value else "-"


def server_console(snap: dict[str, Any], rates: Rates | None = None) -> RenderableType:
    """Buffers as bars, samples/s in, trainer state and speed, weights, who is connected, Redis."""
    rates = rates or Rates()
    t, w, mem = snap.get("trainer", {}), snap.get("weights", {}), snap.get("redis", {})
    head = Text.assemble(
        ("run ", "dim"), (str(snap.get("run") or "-"), "bold"),
        ("  config ", "dim"), f"v{snap.get('config_version', 0)}",
        ("  collect queue ", "dim"), str(snap.get("queue", {}).get("collect", 0)),
        ("\nredis ", "dim"),
        f"{human_bytes(mem.get('used_memory', 0))}"
        + (f" / {human_bytes(mem['maxmemory'])}" if mem.get("maxmemory") else ""),
        ("  dead letters ", "dim"), (str(snap.get("deadletter", 0)), "bold red" if snap.get("deadletter") else ""),
    )
    buffers = Table(box=None, pad_edge=False, expand=False, show_edge=False)
    for col, justify in (("buffer", "left"), ("fill", "left"), ("", "right"), ("%", "right"), ("in/s", "right")):
        buffers.add_column(col, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for name, b in snap.get("buffers", {}).items():
        cap = max(1, int(b.get("capacity", 0)))
        frac = float(b.get("fraction", 0.0))
        ready = frac >= float(b.get("start_fraction", 0.9))
        bar = ProgressBar(total=cap, completed=min(cap, int(b.get("fill", 0))), width=22,
                          complete_style="green" if ready else "yellow", finished_style="green")
        buffers.add_row(name, bar, f"{b.get('fill', 0)}/{b.get('capacity', 0)}", f"{100 * frac:.0f}",
                        f"{rates.samples_in_per_s.get(name, 0.0):.1f}" if rates.ready else "-")
    state = str(t.get("state", "absent"))
    trainer = Text.assemble(
        ("trainer ", "dim"), (state, STATE_STYLES.get(state, "bold")),
        ("  batches ", "dim"), (str(t.get("batches", 0)), "bold"),
        ("  ", ""), _num(t.get("batches_per_s"), "{:.2f}"), (" batch/s", "dim"),
        ("  ", ""), _num(t.get("samples_per_s"), "{:.1f}"), (" samples/s trained", "dim"),
        ("\n", ""), ("loss ", "dim"), _num(t.get("loss"), "{:.4f}"),
        ("  lr ", "dim"), _num(t.get("learning_rate"), "{:.1e}"),
        ("  device ", "dim"), str(t.get("device") or "-"),
        ("  samples in ", "dim"), f"{rates.total_in_per_s:.1f}/s" if rates.ready else "-",
        ("\n", ""), ("replay ", "dim"), _num(t.get("draws_per_insert"), "{:.2f}"),
        (f" draws/insert (limit {_replay_limit(snap)})", "dim"),
        ("  waited ", "dim"), _num(t.get("wait_limited_s"), "{:.0f}"), (" s on the ratio, ", "dim"),
        _num(t.get("wait_filling_s"), "{:.0f}"), (" s filling", "dim"),
        ("\n", ""), ("computing ", "dim"), _percent(t.get("compute_share")),
        ("  data age ", "dim"), _num(t.get("data_age_p50_s"), "{:.0f}"), ("/", "dim"),
        _num(t.get("data_age_p95_s"), "{:.0f}"), (" s p50/p95", "dim"),
        ("  policy lag ", "dim"), _num(t.get("policy_lag_p50"), "{:.0f}"), (" versions", "dim"),
        ("\n", ""), ("model drove ", "dim"), _percent(t.get("model_driven_share")),
        ("  frame to version ", "dim"), _num(t.get("frame_to_version_s"), "{:.0f}"), (" s", "dim"),
    )
    weights = Text.assemble(
        ("weights ", "dim"), (f"v{w.get('version', 0)}", "bold cyan"),
        ("  at batch ", "dim"), str(w.get("batches", 0)),
        ("  updated ", "dim"), ago(w.get("created")),
        ("  model ", "dim"), str(w.get("model") or "-"),
    )
    return Panel(Group(head, buffers, trainer, weights, _connections(snap)),
                 title="[bold]Server / Trainer", border_style="blue")


def _percent(share: Any) -> str:
    return _num(100 * share, "{:.0f}%") if isinstance(share, int | float) else "-"


def _replay_limit(snap: dict[str, Any]) -> str:
    """The configured samples_per_insert, from any buffer's entry (all share it)."""
    spi = next((b.get("samples_per_insert") for b in snap.get("buffers", {}).values()), None)
    return "-" if spi is None else f"{spi:g}"


def _connections(snap: dict[str, Any]) -> RenderableType:
    table = Table(box=None, pad_edge=False, show_edge=False, title=None)
    for col in ("connected", "id", "state", "work", "heartbeat"):
        table.add_column(col, no_wrap=True, overflow="ellipsis", max_width=26 if col == "id" else None)
    # ids and states come from the workers (untrusted): plain Text, never parsed as markup
    rows: list[tuple[str, Text, Text, str, Text]] = []
    for s in snap.get("servers", []):
        rows.append(("server", Text(str(s.get("id"))), Text("routing"), "",
                     _heartbeat(s.get("heartbeat_age_s", 0.0))))
    for c in snap.get("collectors", []):
        rows.append(("collector", Text(str(c.get("id"))), Text(str(c.get("state", "?"))),
                     f"{c.get('episodes', 0)} ep {c.get('samples', 0)} smp",
                     _heartbeat(c.get("heartbeat_age_s", 0.0))))
    for p in snap.get("players", []):
        rows.append(("player", Text(str(p.get("id"))), Text(f"v{p.get('model_version', 0)}"),
                     f"{p.get('pps', 0):.1f} PPS", _heartbeat(p.get("heartbeat_age_s", 0.0))))
    for row in rows[:MAX_ROWS]:
        table.add_row(*row)
    if len(rows) > MAX_ROWS:
        table.add_row("", f"+{len(rows) - MAX_ROWS} more", "", "", Text(""))
    if not rows:
        table.add_row("nobody", "", "", "", Text(""))
    return table


def player_console(player: dict[str, Any] | None, weights: dict[str, Any] | None = None) -> RenderableType:
    """Raw predictions and the translated controller values in brackets, FPS, PPS, model, swaps."""
    if player is None:
        return Panel(Text("no player connected", style="dim"), title="[bold]Player", border_style="magenta")
    weights = weights or {}
    created = player.get("model_created") or (
        weights.get("created") if weights.get("version") == player.get("model_version") else None)
    head = Text.assemble(
        ("model ", "dim"), (str(player.get("model") or weights.get("model") or "-"), "bold"),
        ("  version ", "dim"), (f"v{player.get('model_version', 0)}", "bold cyan"),
        ("\ncreated ", "dim"), f"{clock(created)} ({ago(created)})",
    )
    pending = player.get("pending_version") or 0
    if pending:
        head.append_text(Text.assemble(("  pending ", "dim"), (f"v{pending}", "yellow")))
    preds = Table(box=None, pad_edge=False, show_edge=False)
    preds.add_column("prediction", no_wrap=True)
    preds.add_column("raw [controller]", no_wrap=True)
    raw = player.get("raw") or {}
    translated = player.get("translated") or {}
    applied = player.get("applied") or {}
    for name, values in raw.items():
        vals = values if isinstance(values, list) else [values]
        text = Text("  ".join(_num(v, "{:+.3f}") for v in vals), style="bold")
        if name in translated:
            text.append(f" [{_num(translated[name], '{:+.3f}')}]", style="cyan")
        preds.add_row(Text(name), text)
    for control, value in applied.items():  # merged controls, when outputs are not one per control
        if control in raw:
            continue
        text = Text(_num(value, "{:+.3f}"), style="bold")
        if control in translated:
            text.append(f" [{_num(translated[control], '{:+.3f}')}]", style="cyan")
        preds.add_row(Text(f"-> {control}", style="dim"), text)
    extra = {k: v for k, v in translated.items() if k not in raw and k not in applied}
    if extra:
        preds.add_row(Text("controller", style="dim"),
                      Text("[" + "  ".join(f"{k} {_num(v, '{:+.3f}')}" for k, v in extra.items()) + "]",
                           style="cyan"))
    pps = float(player.get("pps") or 0.0)
    speed = Text.assemble(
        ("hood FPS ", "dim"), (f"{float(player.get('fps') or 0.0):.1f}", "bold"),
        ("  PPS ", "dim"), (f"{pps:.1f}", "bold green" if pps >= 29 else "bold yellow"),
        ("  swaps ", "dim"), str(player.get("swaps", 0)),
        ("  Unstucks ", "dim"), str(player.get("unstucks", 0)),
        ("  steps ", "dim"), str(player.get("steps", 0)),
    )
    return Panel(Group(head, preds, speed), title=Text.assemble(("Player ", "bold"), (str(player.get("id", "")), "dim")),
                 border_style="magenta")


#: Versions the score tile and the score console show (the newest ones).
SCORE_POINTS = 60


def _interval(record: dict[str, Any] | None) -> list[float] | None:
    ci = ((record or {}).get("intervals") or {}).get("ratio_to_npc")
    return [float(ci[0]), float(ci[1])] if isinstance(ci, list) and len(ci) == 2 else None


def score_series(snap: dict[str, Any], limit: int = SCORE_POINTS) -> dict[str, Any]:
    """The driving score per version with its interval, the baseline, `best` and who drives what.

    `points`: `{version, batches, ratio, low, high}` for the newest `limit` scored versions;
    the NPC is 1.0 by definition; `baseline`: its ratio and interval from the newest record.
    """
    evaluation = snap.get("evaluation") or {}
    records = []
    for key, rec in (evaluation.get("versions") or {}).items():
        if isinstance(rec, dict) and str(key).isdigit() and isinstance(rec.get("ratio_to_npc"), int | float):
            records.append((int(key), rec))
    records.sort(key=lambda kv: kv[0])
    records = records[-limit:]
    points = []
    for version, rec in records:
        ci = _interval(rec)
        points.append({"version": version, "batches": int(rec.get("batches") or 0),
                       "ratio": float(rec["ratio_to_npc"]), "low": ci[0] if ci else None,
                       "high": ci[1] if ci else None})
    base = records[-1][1].get("baseline") if records else None
    base_ratio = (base or {}).get("ratio_to_npc")
    base_ci = _interval(base)
    level = ((records[-1][1].get("intervals") or {}).get("level")) if records else None
    return {
        "points": points,
        "best": evaluation.get("best"),
        "baseline": None if not isinstance(base_ratio, int | float) else
        {"ratio": float(base_ratio), "low": base_ci[0] if base_ci else None, "high": base_ci[1] if base_ci else None},
        "level": level,
        "players": [{"id": str(p.get("id")), "version": int(p.get("model_version") or 0)}
                    for p in snap.get("players", [])],
    }


def score_console(snap: dict[str, Any], rows: int = 12, width: int = 36) -> RenderableType:
    """The driving score per version as a text chart: interval as a bar, the point, NPC and baseline lines."""
    series = score_series(snap)
    points = series["points"][-rows:]
    if not points:
        return Panel(Text("no version scored yet (the evaluator scores each published version)", style="dim"),
                     title="[bold]Driving score", border_style="green")
    top = max(1.2, *(p["high"] or p["ratio"] for p in points))
    col = lambda v: max(0, min(width - 1, int(round(v / top * (width - 1)))))  # noqa: E731
    base = series["baseline"]
    drivers: dict[int, list[str]] = {}
    for pl in series["players"]:
        drivers.setdefault(pl["version"], []).append(pl["id"])
    table = Table(box=None, pad_edge=False, show_edge=False)
    for name, justify in (("version", "right"), ("batches", "right"), ("ratio [interval]", "left"),
                          (f"0 .. {top:.2f}  | NPC  : baseline", "left"), ("", "left")):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for p in points:
        cells = [" "] * width
        if base is not None:
            cells[col(base["ratio"])] = ":"
        cells[col(1.0)] = "|"
        if p["low"] is not None and p["high"] is not None:
            for i in range(col(p["low"]), col(p["high"]) + 1):
                cells[i] = "-"
        cells[col(p["ratio"])] = "o"
        best = p["version"] == series["best"]
        bar = Text("".join(cells), style="bold green" if best else "cyan")
        ci = f" [{p['low']:.2f}, {p['high']:.2f}]" if p["low"] is not None else ""
        tags = (["best"] if best else []) + [f"<- {pid}" for pid in drivers.get(p["version"], [])]
        table.add_row(f"v{p['version']}", str(p["batches"]), f"{p['ratio']:.2f}{ci}", bar,
                      Text(" ".join(tags), style="bold green" if best else "magenta"))
    level = series["level"]
    foot = Text.assemble(("NPC ", "dim"), "1.00", ("  baseline ", "dim"),
                         "-" if base is None else f"{base['ratio']:.2f}",
                         ("  best ", "dim"), f"v{series['best']}" if series["best"] else "-",
                         ("  intervals ", "dim"), f"{100 * level:.0f}% bootstrap" if level else "-")
    return Panel(Group(table, foot), title="[bold]Driving score[/] [dim](ratio to NPC per version)",
                 border_style="green")


def pick_player(snap: dict[str, Any], player_id: str | None) -> dict[str, Any] | None:
    """The player with this id (or id prefix); the first one when no id is given."""
    players = snap.get("players", [])
    if not player_id:
        return players[0] if players else None
    for p in players:
        if p.get("id") == player_id:
            return p
    matches = [p for p in players if str(p.get("id", "")).startswith(player_id)]
    return matches[0] if len(matches) == 1 else None


def to_html(renderable: RenderableType, width: int = 78) -> str:
    """A `<pre>` fragment with inline styles: the terminal console as the dashboard shows it."""
    console = Console(record=True, width=width, file=io.StringIO(), force_terminal=True,
                      color_system="truecolor", legacy_windows=False)
    console.print(renderable)
    return console.export_html(inline_styles=True, theme=MONOKAI, code_format='<pre class="console">{code}</pre>')


def to_text(renderable: RenderableType, width: int = 78) -> str:
    """Plain text (tests, logs, `charles console --once` without a terminal)."""
    console = Console(record=True, width=width, file=io.StringIO(), force_terminal=False, color_system=None)
    console.print(renderable)
    return console.export_text()
