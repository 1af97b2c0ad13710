"""Consoles: every figure of the Server/Trainer and Player consoles, from a real snapshot."""

from __future__ import annotations

import pytest
import redis
from click.testing import CliRunner

from pipeline.observe import consoles
from pipeline.observe.status import snapshot
from pipeline.wire.keys import Keys
from pipeline.wire.local_redis import RedisServer
from tests.live_feed import seed_system


def test_server_console_shows_every_figure(r: redis.Redis, keys: Keys) -> None:
    seed_system(r, keys, ["player-a", "player-b"])
    rates = consoles.Rates()
    snap = snapshot(r, keys)
    rates.update(snap, now=0.0)
    r.hincrby(keys.counters, "samples_routed:steering", 50)
    snap = snapshot(r, keys)
    rates.update(snap, now=2.0)
    text = consoles.to_text(consoles.server_console(snap, rates), width=90)
    for expected in ("model_0003_test", "acceleration_braking", "19/20", "95", "steering", "12/20", "60",
                     "25.0",  # samples/s in for steering: 50 samples in 2 s
                     "training", "batches 350", "7.50 batch/s", "240.0 samples/s trained", "v7",
                     "collector-test-1", "3 ep 900 smp", "server-1", "player-a", "player-b", "dead letters 0", "redis ",
                     "MiB", "3.88 draws/insert (limit 2)", "waited 42 s on the ratio, 95 s filling", "computing 81%",
                     "data age 31/118 s p50/p95", "policy lag 2 versions", "model drove 46%", "frame to version 64 s"):
        assert expected in text, f"{expected!r} missing from\n{text}"


def test_player_console_shows_raw_and_translated(r: redis.Redis, keys: Keys) -> None:
    seed_system(r, keys, ["player-a"])
    snap = snapshot(r, keys)
    player = consoles.pick_player(snap, "player-a")
    assert player is not None and player["model"] == "model_0003_test" and player["model_created"]
    text = consoles.to_text(consoles.player_console(player, snap["weights"]), width=90)
    for expected in ("model_0003_test", "v7", "acceleration_braking", "+0.620 [+0.710]", "-0.180 [-0.380]",
                     "hood FPS 30.0", "PPS 30.0", "swaps 2", "Unstucks 4", "min ago"):
        assert expected in text, f"{expected!r} missing from\n{text}"


def test_rates_are_smoothed_over_a_window() -> None:
    rates = consoles.Rates(window_s=10.0)

    def snap(n: int) -> dict[str, object]:
        return {"buffers": {"steering": {"samples_routed": n}}}

    assert not rates.update(snap(0), now=0.0).ready
    rates.update(snap(100), now=1.0)  # a burst of 100 samples in the first second
    assert rates.samples_in_per_s["steering"] == 100.0
    for t in range(2, 11):
        rates.update(snap(100), now=float(t))
    assert rates.samples_in_per_s["steering"] == 10.0  # 100 samples over the 10 s window
    rates.update(snap(100), now=12.0)
    assert rates.samples_in_per_s["steering"] == 0.0  # the burst left the window


def test_player_console_without_player_and_prefix_pick() -> None:
    snap = {"players": [{"id": "player-host-1-abcd"}, {"id": "player-host-2-ef01"}]}
    assert consoles.pick_player(snap, "player-host-2")["id"] == "player-host-2-ef01"  # type: ignore[index]
    assert consoles.pick_player(snap, "player-host") is None  # ambiguous
    assert consoles.pick_player(snap, None)["id"] == "player-host-1-abcd"  # type: ignore[index]
    assert "no player connected" in consoles.to_text(consoles.player_console(None))


def test_html_export_escapes_text() -> None:
    html = consoles.to_html(consoles.player_console({"id": "<script>alert(1)</script>", "model": "m"}))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.startswith('<pre class="console">')


def test_charles_console_once(redis_server: RedisServer, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.console import cli

    seed_system(redis_server.client(), keys, ["player-a"])
    monkeypatch.setenv("CHARLES_REDIS_URL", redis_server.url)
    monkeypatch.setenv("CHARLES_KEY_PREFIX", keys.prefix)
    monkeypatch.setenv("COLUMNS", "100")
    server = CliRunner().invoke(cli, ["--once"])
    player = CliRunner().invoke(cli, ["--once", "--player", "player-a"])
    missing = CliRunner().invoke(cli, ["--once", "--player", "nobody"])
    assert server.exit_code == 0, server.output
    assert "Server / Trainer" in server.output and "batches 350" in server.output
    assert player.exit_code == 0 and "Unstucks 4" in player.output
    assert "no live player 'nobody'" in missing.output and "player-a" in missing.output


def test_hostile_status_fields_render_as_plain_text(r: redis.Redis, keys: Keys) -> None:
    """Issue 15 #9, #10: a player status `raw='[1, 2]'` broke /api/state and the consoles, a
    collector state '[/bold]' raised a MarkupError, link markup became a live link in the
    dashboard's HTML, and ESC/OSC sequences reached terminals raw."""
    from pipeline.observe.dashboard import public_view
    from pipeline.wire.presence import Presence
    from tests.live_feed import beat_player

    seed_system(r, keys, ["player-a"])
    beat_player(r, keys, "evil\x1b]8;;http://x\x07[link=http://evil.example]click[/link]", 7, "m")
    Presence(r, keys, "player", "player-raw").beat(raw="[1, 2]", translated='{"steering": "x"}', applied="7")
    Presence(r, keys, "collector", "c-[/bold]").beat(state="[/bold][link=http://evil.example]x[/link]\x1b[2J")
    snap = snapshot(r, keys)
    by_id = {p["id"]: p for p in snap["players"]}
    assert by_id["player-raw"]["raw"] == {} and by_id["player-raw"]["translated"] == {}
    assert all("\x1b" not in p["id"] and "\x07" not in p["id"] for p in snap["players"])
    server = consoles.to_text(consoles.server_console(snap, consoles.Rates()), width=200)
    assert "[/bold][link=http://evil.example]x[/link][2J" in server and "\x1b" not in server
    html = consoles.to_html(consoles.server_console(snap, consoles.Rates()))
    assert "evil.example" in html and "href" not in html
    for player in snap["players"]:
        text = consoles.to_text(consoles.player_console(player), width=200)
        assert "\x1b" not in text
        assert "href" not in consoles.to_html(consoles.player_console(player))
    assert public_view(snap, consoles.Rates())["players"]  # what /api/state sends is built
