"""`GTA5Game` end to end without the game: a window titled like GTA5 under Xvfb, the fake
mod over TCP, and the recording double of vgamepad's pad."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pipeline.errors import ConfigError, GameError, MissingExtraError
from pipeline.games.base import Controls, Environment, load_game
from pipeline.games.gta5 import GTA5Game
from tests.fake_mod import NPC_CONTROLS, FakeMod
from tests.fake_vgamepad import RecordingX360Gamepad
from tests.xwindow import ImageWindow, x_display  # noqa: F401 - fixture

W, H = 400, 300
PAD = "tests.fake_vgamepad:RecordingX360Gamepad"


@pytest.fixture
def mod() -> Iterator[FakeMod]:
    fake = FakeMod()
    yield fake
    fake.stop()


@pytest.fixture
def window(x_display: str) -> Iterator[ImageWindow]:  # noqa: F811
    win = ImageWindow("Grand Theft Auto V", W, H, x=0, y=0)
    win.show(np.full((H, W, 3), (10, 120, 200), np.uint8))
    yield win
    win.close()


@pytest.fixture
def game(mod: FakeMod, window: ImageWindow) -> Iterator[GTA5Game]:
    g = load_game("gta5", hood_size=(200, 150), cinematic_size=(W, H), fps=30.0, realtime=False,
                  port=mod.port, gamepad=PAD, reply_timeout_s=0.3, heartbeat_s=5.0, pace=False)
    assert isinstance(g, GTA5Game)
    yield g
    g.close()


def test_unknown_option_is_rejected_with_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"game.options.prot: unknown option \(allowed: .*port"):
        GTA5Game(prot=1)


def test_missing_vgamepad_names_the_extra(mod: FakeMod, window: ImageWindow) -> None:
    try:
        import vgamepad  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vgamepad is installed here")
    g = GTA5Game(port=mod.port, pace=False)
    try:
        g.reset(Environment())
        with pytest.raises(MissingExtraError, match=r"'gta5' extra"):
            g.step(Controls(0.5, 0.0))
    finally:
        g.close()


def test_reset_sets_up_the_world_through_the_mod(mod: FakeMod, game: GTA5Game) -> None:
    env = Environment(weather="rain", time_of_day=21.5, car="sports", traffic_density=0.2, npc_style="calm")
    obs = game.reset(env)
    setup = mod.last("setup")
    assert (setup["weather"], setup["time_of_day"], setup["car"], setup["traffic_density"]) == ("rain", 21.5, "sports", 0.2)
    assert mod.last("npc") == {"id": mod.last("npc")["id"], "cmd": "npc", "enabled": True, "style": "calm"}
    assert mod.world["camera"] == "hood" and "target" in mod.commands()
    assert obs.frame.shape == (150, 200, 3) and tuple(obs.frame[0, 0]) == (10, 120, 200)
    assert obs.position == (100.0, 200.0) and obs.info["speed_known"] is True
    assert obs.purpose[0] == pytest.approx(np.hypot(50, 60))


def test_npc_drives_on_step_none_and_reports_its_controls(mod: FakeMod, game: GTA5Game) -> None:
    game.reset(Environment())
    obs = game.step(None)
    assert obs.controls == Controls(NPC_CONTROLS["acceleration_braking"], NPC_CONTROLS["steering"])
    assert obs.speed == 12.5 and obs.info["driver"] == "npc" and obs.info["npc"] is True
    assert game.output is None  # no virtual pad while the NPC drives


def test_model_controls_switch_the_npc_off_and_go_to_the_pad(mod: FakeMod, game: GTA5Game) -> None:
    game.reset(Environment())
    game.step(None)
    obs = game.step(Controls(0.1, -0.1))
    assert mod.world["npc"] is False and obs.controls == Controls(0.1, -0.1)
    pad = game.output.pad  # type: ignore[union-attr]
    assert isinstance(pad, RecordingX360Gamepad)
    assert pad.reports[-1].sThumbLX < -7849 and pad.reports[-1].bRightTrigger > 30
    npc_calls = mod.commands().count("npc")
    game.step(Controls(0.2, 0.0))
    assert mod.commands().count("npc") == npc_calls  # the mode is sent once, not every step


def test_respawn_teleports_through_the_mod_with_the_pad_released(mod: FakeMod, game: GTA5Game) -> None:
    game.reset(Environment())
    game.step(Controls(1.0, 1.0))
    obs = game.respawn()
    assert mod.last("teleport")["fade"] is True
    assert obs.position == (500.0, -300.0)
    last = game.output.pad.reports[-1]  # type: ignore[union-attr]
    assert (last.bRightTrigger, last.sThumbLX) == (0, 0)


def test_cinematic_switch_mode_moves_the_camera_and_back(mod: FakeMod, window: ImageWindow) -> None:
    g = GTA5Game(hood_size=(200, 150), cinematic_size=(W, H), port=mod.port, gamepad=PAD,
                 cinematic="switch", camera_settle_s=0.0, pace=False)
    try:
        g.reset(Environment())
        view = g.cinematic()
        assert view.shape == (H, W, 3)
        cams = [r["view"] for r in mod.requests if r.get("cmd") == "camera"]
        assert cams[-2:] == ["cinematic", "hood"]
        g.cinematic()  # within cinematic_every_s: the cached view, no camera switch
        assert [r["view"] for r in mod.requests if r.get("cmd") == "camera"] == cams
    finally:
        g.close()


def test_bridge_failures_are_game_errors_the_next_step_survives(mod: FakeMod, game: GTA5Game) -> None:
    game.reset(Environment())
    game.step(None)
    mod.fault("malformed")
    with pytest.raises(GameError):
        game.step(None)
    mod.world["npc"] = False  # a reconnect finds the mod reset: the game must re-send the mode
    obs = game.step(None)
    assert obs.info["npc"] is True and obs.info["bridge_generation"] == 2
    mod.fault("delay", seconds=0.5)
    with pytest.raises(GameError, match="no reply"):
        game.step(None)
    assert game.step(None).speed == 12.5


def test_bad_state_values_are_game_errors(mod: FakeMod, game: GTA5Game) -> None:
    game.reset(Environment())
    original = mod._state

    def broken() -> dict[str, Any]:
        return {**original(), "speed": "fast"}

    mod._state = broken  # type: ignore[method-assign]
    with pytest.raises(GameError, match="state.speed"):
        game.step(None)
