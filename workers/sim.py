"""`charles sim`: watch the NPC drive the built-in simulator, drive it yourself, or record a video."""

from __future__ import annotations

import time
from typing import Any

import click

_KEYS_HELP = "arrows or WASD drive, R respawns, Q/Esc quits"


def _composite(game: Any, obs: Any) -> Any:
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


class _Window:
    """A window with key states: pygame if installed, else OpenCV's highgui if it has one."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.kind = ""
        try:
            import pygame

            pygame.init()
            self.screen = pygame.display.set_mode(size)
            pygame.display.set_caption("charles sim — " + _KEYS_HELP)
            self.pg, self.kind = pygame, "pygame"
            return
        except Exception:  # no pygame or no display: try OpenCV's own window
            pass
        import cv2

        try:
            cv2.namedWindow("charles sim")
        except cv2.error as exc:
            raise click.ClickException(
                "no window available (opencv-python-headless has no GUI and pygame is not installed "
                "or there is no display); `pip install pygame` for a window, or use --record FILE.mp4"
            ) from exc
        self.cv2, self.kind, self._held = cv2, "cv2", {}

    def show(self, rgb: Any) -> None:
        if self.kind == "pygame":
            surf = self.pg.surfarray.make_surface(rgb.swapaxes(0, 1))
            self.screen.blit(surf, (0, 0))
            self.pg.display.flip()
        else:
            self.cv2.imshow("charles sim", self.cv2.cvtColor(rgb, self.cv2.COLOR_RGB2BGR))

    def keys(self) -> set[str]:
        """Names of the keys held now: up, down, left, right, respawn, quit."""
        held: set[str] = set()
        if self.kind == "pygame":
            pg = self.pg
            for event in pg.event.get():
                if event.type == pg.QUIT:
                    held.add("quit")
                elif event.type == pg.KEYDOWN and event.key == pg.K_r:
                    held.add("respawn")
            k = pg.key.get_pressed()
            names = {"up": (pg.K_UP, pg.K_w), "down": (pg.K_DOWN, pg.K_s), "left": (pg.K_LEFT, pg.K_a),
                     "right": (pg.K_RIGHT, pg.K_d), "quit": (pg.K_ESCAPE, pg.K_q)}
            held |= {n for n, codes in names.items() if any(k[c] for c in codes)}
            return held
        code = self.cv2.waitKeyEx(1)
        now = time.monotonic()
        table = {ord("w"): "up", 65362: "up", ord("s"): "down", 65364: "down", ord("a"): "left", 65361: "left",
                 ord("d"): "right", 65363: "right", ord("r"): "respawn", ord("q"): "quit", 27: "quit"}
        if code in table:
            self._held[table[code]] = now
        return {n for n, t in self._held.items() if now - t < 0.15}  # key repeat stands in for "held"

    def close(self) -> None:
        if self.kind == "pygame":
            self.pg.quit()
        elif self.kind == "cv2":
            self.cv2.destroyAllWindows()


_PICTURES = (("day", "clear", 12.5), ("night", "clear", 22.5), ("rain", "rain", 15.0), ("fog", "fog", 9.0))


def _pictures(folder: str, seed: int, episode: int, car: str, traffic: float, seconds: float, size: tuple[int, int]) -> None:
    """The docs pictures: the same drive under each look, hood (4x, nearest) and chase camera."""
    from pathlib import Path

    import cv2

    from pipeline.games.base import Environment
    from pipeline.games.sim import SimGame

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    game = SimGame(cinematic_size=size)
    for name, weather, hours in _PICTURES:
        obs = game.reset(Environment(map_seed=seed, episode_seed=episode, weather=weather, time_of_day=hours,
                                     car=car, traffic_density=traffic))
        while obs.game_time < seconds:
            obs = game.step()
        hood = cv2.resize(obs.frame, (obs.frame.shape[1] * 4, obs.frame.shape[0] * 4), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(out / f"sim_hood_{name}.png"), cv2.cvtColor(hood, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out / f"sim_chase_{name}.png"), cv2.cvtColor(game.cinematic(), cv2.COLOR_RGB2BGR))
        click.echo(f"{out}/sim_*_{name}.png")


@click.command(name="sim")
@click.option("--seed", default=1, show_default=True, help="map seed (any integer)")
@click.option("--episode", default=0, show_default=True, help="episode seed: traffic, spawn, targets")
@click.option("--weather", type=click.Choice(["clear", "overcast", "rain", "fog"]), default="clear", show_default=True)
@click.option("--time", "hours", default=12.0, show_default=True, help="time of day, hours")
@click.option("--car", type=click.Choice(["sedan", "sports", "truck"]), default="sedan", show_default=True)
@click.option("--traffic", default=0.5, show_default=True, help="traffic density 0..1")
@click.option("--style", type=click.Choice(["calm", "normal", "aggressive"]), default="normal", show_default=True)
@click.option("--seconds", default=60.0, show_default=True, help="game seconds to run")
@click.option("--npc/--keyboard", "npc", default=True, help="let the NPC drive, or drive with the keyboard")
@click.option("--record", type=click.Path(dir_okay=False), default=None, help="write an MP4 instead of opening a window")
@click.option("--size", default="640x360", show_default=True, help="chase camera size WxH")
@click.option("--pictures", type=click.Path(file_okay=False), default=None,
              help="write hood and chase PNGs by day, at night and in rain into this folder, then exit")
def cli(seed: int, episode: int, weather: str, hours: float, car: str, traffic: float, style: str,
        seconds: float, npc: bool, record: str | None, size: str, pictures: str | None) -> None:
    """Watch the NPC drive the built-in simulator, drive it yourself, or record an MP4 headless."""
    import cv2
    import structlog

    from pipeline.games.base import Controls, Environment
    from pipeline.games.sim import SimGame
    from pipeline.log import configure_logging

    configure_logging("sim")
    log = structlog.get_logger("sim")
    width, _, height = size.partition("x")
    if pictures:
        _pictures(pictures, seed, episode, car, traffic, seconds, (int(width), int(height)))
        return
    game = SimGame(cinematic_size=(int(width), int(height)), realtime=record is None)
    env = Environment(map_seed=seed, weather=weather, time_of_day=hours, car=car, traffic_density=traffic,
                      episode_seed=episode, npc_style=style)
    obs = game.reset(env)
    writer = window = None
    if record:
        if not npc:
            raise click.UsageError("--keyboard needs a window; record the NPC, or drop --record")
        writer = cv2.VideoWriter(record, cv2.VideoWriter_fourcc(*"mp4v"), game.fps, (int(width), int(height)))
        if not writer.isOpened():
            raise click.ClickException(f"cannot write {record!r} (OpenCV has no MP4 encoder here?)")
    else:
        window = _Window((int(width), int(height)))
    steer = 0.0
    try:
        while obs.game_time < seconds:
            controls = None
            if window is not None:
                keys = window.keys()
                if "quit" in keys:
                    break
                if "respawn" in keys:
                    obs = game.respawn()
                if not npc:  # keyboard: proportional steering that builds up while a key is held
                    target = (1.0 if "right" in keys else 0.0) - (1.0 if "left" in keys else 0.0)
                    steer += max(-0.12, min(0.12, target - steer)) if target else -steer * 0.3
                    acc = (1.0 if "up" in keys else 0.0) - (1.0 if "down" in keys else 0.0)
                    controls = Controls(acc, steer)
            obs = game.step(controls)
            if obs.info.get("stuck") and npc:
                obs = game.respawn()
            frame = _composite(game, obs)
            if writer is not None:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            else:
                window.show(frame)  # type: ignore[union-attr]
    finally:
        if writer is not None:
            writer.release()
        if window is not None:
            window.close()
        game.close()
    log.info("sim.done", km=round(obs.odometer / 1000, 3), collisions=obs.collisions, targets=obs.targets_reached,
             game_s=round(obs.game_time, 1), record=record)
