"""`SimGame`: the built-in driving game behind the `Game` protocol (the default backend).

One `step` = one tick of a fixed game clock (1/fps s): controls (or the NPC's), car
physics with collisions, traffic, route progress and Purpose, then the hood frame.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import structlog

from pipeline.errors import ConfigError, GameError
from pipeline.games.base import WEATHERS, Capabilities, Controls, Environment, Observation
from pipeline.games.sim import physics
from pipeline.games.sim.camera import Rig
from pipeline.games.sim.lanes import Route
from pipeline.games.sim.look import Look
from pipeline.games.sim.minimap import Minimap, minimap_rect
from pipeline.games.sim.npc import STYLES, Autopilot, style_named
from pipeline.games.sim.render import Renderer
from pipeline.games.sim.roads import rng_for
from pipeline.games.sim.surface import GRASS, ROAD
from pipeline.games.sim.traffic import Traffic
from pipeline.games.sim.world import World, get_world

log = structlog.get_logger(__name__)

#: `[game.options]` the simulator understands, with their defaults.
OPTIONS: dict[str, Any] = {
    "minimap": True,  # draw the minimap on the hood frame
    "cinematic_minimap": True,  # and on the chase camera
    "bonnet": True,  # show the car's bonnet at the bottom of the hood frame
    "hood_fov": 80.0,  # horizontal field of view of the hood camera, degrees
    "max_traffic": 36,  # traffic cars at traffic_density = 1
    "perturbations": True,  # NPC steering perturbations (recoveries in the data)
    "expert_labels": False,  # given controls drive, info["expert"] says what the NPC would (DAgger)
    "view_distance": 180.0,  # metres of drawn objects for the hood camera
}

#: The option's name before it became the protocol's `expert_labels`; still accepted.
_OLD_EXPERT_LABELS = "label_with_npc"

_TARGET_REACHED_M = 12.0
_NPC_GIVE_UP_S = 15.0  # stuck this long under the NPC: respawn (info["respawned"])
_NPC_ATTEMPTS = 5  # reverse-and-turn attempts before the NPC gives up
_NPC_STALLED_S = 45.0  # no 3 m of progress in this long (a jam, wedged in): respawn
_FADE_S = 0.5


def _words(seed: int) -> tuple[int, int, int]:
    """Any integer as non-negative seed words (low, high, sign)."""
    seed = int(seed)
    return abs(seed) & 0xFFFFFFFF, (abs(seed) >> 32) & 0xFFFFFFFF, int(seed < 0)


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


class SimGame:
    """The built-in simulator; see docs/simulator.md for the world, options and numbers."""

    capabilities = Capabilities(
        expert_labels=True,
        environment={"map_seed": (), "weather": WEATHERS, "time_of_day": (0.0, 24.0), "car": tuple(physics.CARS),
                     "traffic_density": (0.0, 1.0), "spawn": (), "npc_style": tuple(STYLES)},
        purpose=True,
        respawn=True,
        incidents=("collision", "stuck"),
    )

    def __init__(self, hood_size: tuple[int, int] = (160, 120), cinematic_size: tuple[int, int] = (640, 360),
                 fps: float = 30.0, realtime: bool = False, **options: Any) -> None:
        if _OLD_EXPERT_LABELS in options:
            options["expert_labels"] = options.pop(_OLD_EXPERT_LABELS)
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"game.options: unknown option(s) {unknown} for the sim backend; allowed: {sorted(OPTIONS)}")
        self.options = {**OPTIONS, **options}
        self.hood_size = (int(hood_size[0]), int(hood_size[1]))
        self.cinematic_size = (int(cinematic_size[0]), int(cinematic_size[1]))
        if min(self.hood_size) < 16 or min(self.cinematic_size) < 16:
            raise ConfigError(f"game: frame sizes must be at least 16x16, got {self.hood_size} and {self.cinematic_size}")
        self.fps = float(fps)
        self.dt = 1.0 / self.fps
        self.realtime = bool(realtime)
        self.env: Environment | None = None
        self._deadline = 0.0

    @property
    def minimap_rect(self) -> tuple[int, int, int, int] | None:
        """(x, y, w, h) of the minimap in hood frames, or None when it is switched off."""
        return minimap_rect(*self.hood_size) if self.options["minimap"] else None

    # -- episode ----------------------------------------------------------------------------

    def reset(self, env: Environment) -> Observation:
        """Build (or reuse) the map, place the car, traffic and a first target; first frame."""
        if env.car not in physics.CARS:
            raise ConfigError(f"environment.car: {env.car!r} is not one of {sorted(physics.CARS)}")
        if not 0.0 <= env.traffic_density <= 1.0:
            raise ConfigError(f"environment.traffic_density: {env.traffic_density} is outside 0..1")
        self.look = Look.of(env.weather, env.time_of_day)
        style = style_named(env.npc_style)
        self.env = env
        self.world: World = get_world(env.map_seed)
        self.spec = physics.CARS[env.car]
        episode = _words(env.episode_seed)
        self._rng = rng_for(env.map_seed, 21, *episode)
        self.npc = Autopilot(style, self.spec, rng_for(env.map_seed, 22, *episode), bool(self.options["perturbations"]))
        self.game_time = 0.0
        self.tick = 0
        self.car = physics.CarState()
        self._spawn(env.spawn)
        n_cars = int(round(env.traffic_density * int(self.options["max_traffic"])))
        self.traffic = Traffic(self.world.lanes, len(self.world.net.nodes), n_cars, rng_for(env.map_seed, 23, *episode), (self.car.x, self.car.y))
        self.collisions = 0
        self.targets_reached = 0
        self._contact = False
        self._free_s = 1.0
        self._stuck_s = 0.0
        self._off_route_s = 0.0
        self._fade = 0.0
        self._minimap_img: np.ndarray | None = None
        self._cam_yaw = self.car.heading
        self._anchor = (0.0, self.car.x, self.car.y)  # where the car last made progress
        self._route_dist = 99.0  # not the last episode's: a reused game must reset as a new one does
        self._route_n = 0  # routes count from each reset, so an episode's ticks do not depend on the last
        self._new_target()
        spec = self.spec
        hood = Rig(*self.hood_size, float(self.options["hood_fov"]), spec.length / 2 - 1.2, spec.height - 0.05, 3.5)
        chase = Rig(*self.cinematic_size, 68.0, -spec.length / 2 - 6.5, spec.height + 2.0, 10.0)
        self.hood = Renderer(self.world, hood, self.look, float(self.options["view_distance"]), env.map_seed)
        self.chase = Renderer(self.world, chase, self.look, 220.0, env.map_seed, windows=10)
        self.minimap = Minimap(self.world) if self.options["minimap"] or self.options["cinematic_minimap"] else None
        self._bonnet = self._bonnet_mask(hood) if self.options["bonnet"] else None
        self._deadline = time.perf_counter()
        log.debug("sim.reset", **env.to_dict())
        return self._observe(Controls(), collision=False, npc_info={})

    def _spawn(self, spawn: int | None) -> None:
        lanes = self.world.lanes
        good = np.flatnonzero(lanes.is_lane & (lanes.length > 40.0))
        if spawn is None:
            seg = int(good[self._rng.integers(len(good))])
            s = float(self._rng.uniform(10.0, lanes.length[seg] - 15.0))
        else:
            seg = int(good[int(spawn) % len(good)])
            s = float(lanes.length[seg] * 0.3)
        x, y, h = lanes.pose_at(seg, s)
        self.car = physics.CarState(x, y, h, 0.0, 0.0, self.car.odometer if hasattr(self, "car") else 0.0)
        self._seg, self._s = seg, s

    def _new_target(self) -> None:
        """Pick a target some hundreds of metres away and route to it along the lanes."""
        lanes = self.world.lanes
        p, _, _ = lanes.nearest(self.car.x, self.car.y, self.car.heading, lanes_only=True)
        seg0, s0 = lanes.point_s(p) if p >= 0 else (self._seg, self._s)
        good = np.flatnonzero(lanes.is_lane & (lanes.length > 30.0))
        route: Route | None = None
        for _ in range(30):
            seg = int(good[self._rng.integers(len(good))])
            s = float(lanes.length[seg] / 2)
            x, y, _ = lanes.pose_at(seg, s)
            d = math.hypot(x - self.car.x, y - self.car.y)
            if 180.0 <= d <= 750.0:
                route = lanes.route(seg0, min(s0 + 2.0, float(lanes.length[seg0])), seg, s)
                if route is not None and len(route.xy) > 20:
                    break
        if route is None:  # tiny or odd map: wander along random successors instead
            segs = [(seg0, s0, float(lanes.length[seg0]))]
            while sum(b - a for _, a, b in segs) < 400.0:
                nxt = lanes.nexts[segs[-1][0]]
                seg = int(nxt[int(self._rng.integers(len(nxt)))])
                segs.append((seg, 0.0, float(lanes.length[seg])))
            route = lanes.route_along(segs)
        self.route = route
        self._at = 0
        self._route_n += 1

    def _reroute(self) -> None:
        lanes = self.world.lanes
        p, _, _ = lanes.nearest(self.car.x, self.car.y, self.car.heading, lanes_only=True)
        if p < 0:
            return
        seg0, s0 = lanes.point_s(p)
        last_seg, _, s_t = self.route.segs[-1]
        route = lanes.route(seg0, min(s0 + 3.0, float(lanes.length[seg0])), last_seg, s_t)
        if route is None or len(route.xy) < 5:
            self._new_target()
        else:
            self.route, self._at = route, 0
            self._route_n += 1

    # -- stepping ------------------------------------------------------------------------------

    def step(self, controls: Controls | None = None) -> Observation:
        """Advance one tick; None lets the NPC drive and reports what it chose.

        With the `expert_labels` option, given controls drive while the NPC still decides
        for this state and `info["expert"]` carries its command: DAgger labels the states a
        learner reaches by its own mistakes with what the expert would do there.
        """
        if self.env is None:
            raise GameError("SimGame.step() before reset(env): call reset first")
        car, dt = self.car, self.dt
        npc_info: dict[str, Any] = {}
        if controls is None:
            if math.hypot(car.x - self._anchor[1], car.y - self._anchor[2]) > 3.0:
                self._anchor = (self.game_time, car.x, car.y)
            stalled = self.game_time - self._anchor[0] > _NPC_STALLED_S
            if self._stuck_s > _NPC_GIVE_UP_S or self.npc.attempts > _NPC_ATTEMPTS or stalled:
                return self.respawn()  # the NPC gives up: teleport, as a player's Unstuck would
            controls, npc_info = self._npc_command(None)
        elif self.options["expert_labels"]:
            _, info = self._npc_command(controls.acceleration_braking > 0.2)
            npc_info = {"expert": info["expert"], "unstucking": info["unstucking"]}
        thr, steer = float(np.clip(controls.acceleration_braking, -1, 1)), float(np.clip(controls.steering, -1, 1))
        surface = self.world.surface_at(car.x, car.y)
        wet = 0.8 if self.look.weather == "rain" else 1.0
        grip = wet * (1.0 if surface == ROAD else 0.9 if surface != GRASS else 0.6)
        drag_extra = 1.8 if surface == GRASS else 0.0
        n_sub = 1 if abs(car.speed) < 14.0 else 2
        contact = False
        self._hit = ""
        for _ in range(n_sub):
            physics.step(car, self.spec, thr, steer, dt / n_sub, grip, drag_extra)
            contact = self._collide() or contact
        collision = contact and self._free_s >= 0.5  # one crash, not every tick of scraping
        self._free_s = 0.0 if contact else self._free_s + dt
        self._contact = contact
        self.collisions += int(collision)
        off_lane = getattr(self, "_route_dist", 0.0)
        self.traffic.step(dt, (car.x, car.y, car.heading, car.speed, self.spec.length, self.spec.width), self._next_connector(), off_lane)
        self.game_time += dt
        self.tick += 1
        self._fade = max(0.0, self._fade - dt / _FADE_S)
        k = 1.0 - math.exp(-dt / 0.35)
        self._cam_yaw = _wrap(self._cam_yaw + _wrap(car.heading - self._cam_yaw) * k)
        pushing = thr > 0.2 or contact
        self._stuck_s = self._stuck_s + dt if abs(car.speed) < 0.5 and pushing else 0.0
        self._progress()
        obs = self._observe(Controls(thr, steer), collision, npc_info)
        if self.realtime:
            self._pace()
        return obs

    def _npc_command(self, pushing: bool | None) -> tuple[Controls, dict[str, Any]]:
        """The NPC's controls for this tick and its info, `expert` = the unperturbed command;
        `pushing`: whether someone else's throttle pushes now (None: the NPC's own does)."""
        gap, now = self.traffic.ego_gap, self.game_time
        controls, info = self.npc.act(
            self.car, self.route, self._at, gap, now, self.dt, self._contact, pushing
        )
        if info.get("unstucking") and self._gap_behind() < 2.0:  # never back into a car
            self.npc.stop_reversing()
            controls = Controls(0.0, controls.steering)
        info.setdefault("expert", (controls.acceleration_braking, controls.steering))
        return controls, info

    def _pace(self) -> None:
        self._deadline += self.dt
        delay = self._deadline - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.25:  # far behind (a slow machine or a pause): do not race to catch up
            self._deadline = time.perf_counter()

    def _next_connector(self) -> tuple[int, float]:
        """The next junction turn on the route and how far ahead it starts (0 inside it)."""
        route, at = self.route, self._at
        for i0, i1, seg in route.connectors:
            if i1 >= at:
                return seg, max(float(route.s[i0] - route.s[at]), 0.0)
        return -1, math.inf

    def _gap_behind(self) -> float:
        """Free metres behind the car's tail to the nearest traffic car in its path."""
        tr, car = self.traffic, self.car
        if tr.n == 0:
            return math.inf
        tx, ty, tr_r = tr.circles()
        c, s = math.cos(car.heading), math.sin(car.heading)
        dx, dy = tx - car.x, ty - car.y
        back, lat = -(dx * c + dy * s), np.abs(-dx * s + dy * c)
        hit = (back > 0) & (lat < self.spec.width / 2 + tr_r[:, None] + 0.3)
        if not hit.any():
            return math.inf
        return float(np.min(np.where(hit, back - self.spec.length / 2 - tr_r[:, None], np.inf)))

    def _collide(self) -> bool:
        """Push the car out of obstacles and traffic; stop it if it was moving into them."""
        car, spec = self.car, self.spec
        hit = False
        for _ in range(2):
            cx, cy, r = physics.circles(car, spec)
            px, py, touched = self.world.obstacles.push_out(np.array(cx), np.array(cy), r)
            if not touched:
                break
            hit = True
            self._hit = "obstacle"
            self._stop_into(px, py)
            car.x += px
            car.y += py
        tr = self.traffic
        if tr.n:
            near = np.flatnonzero(np.hypot(tr.x - car.x, tr.y - car.y) < (tr.length + spec.length) / 2 + 0.5)
            if len(near):
                cx, cy, r = physics.circles(car, spec)
                tx, ty, tr_r = tr.circles()
                dx = np.array(cx)[None, :, None] - tx[near][:, None, :]
                dy = np.array(cy)[None, :, None] - ty[near][:, None, :]
                dist = np.hypot(dx, dy)
                pen = (r + tr_r[near])[:, None, None] - dist
                if (pen > 0).any():
                    k = np.unravel_index(int(np.argmax(pen)), pen.shape)
                    d = max(float(dist[k]), 1e-6)
                    px, py = float(dx[k]) / d * (float(pen[k]) + 0.01), float(dy[k]) / d * (float(pen[k]) + 0.01)
                    self._stop_into(px, py)
                    car.x += px
                    car.y += py
                    tr.blocked[near[k[0]]] = 2.0
                    tr.v[near[k[0]]] = 0.0
                    hit = True
                    self._hit = "traffic"
        x0, y0, x1, y1 = self.world.extent
        if not (x0 + 5 < car.x < x1 - 5 and y0 + 5 < car.y < y1 - 5):
            car.x, car.y = min(max(car.x, x0 + 5), x1 - 5), min(max(car.y, y0 + 5), y1 - 5)
            car.speed = 0.0
            hit = True
            self._hit = "edge"
        return hit

    def _stop_into(self, px: float, py: float) -> None:
        car = self.car
        if car.speed * (math.cos(car.heading) * px + math.sin(car.heading) * py) < 0:
            car.speed = 0.0

    def _progress(self) -> None:
        """Follow the car along its route; new target when reached, new route when lost."""
        xy = self.route.xy
        lo, hi = max(self._at - 5, 0), min(self._at + 40, len(xy))
        d = np.hypot(xy[lo:hi, 0] - self.car.x, xy[lo:hi, 1] - self.car.y)
        k = int(np.argmin(d))
        self._at, self._route_dist = lo + k, float(d[k])
        if math.hypot(*(self.route.target - (self.car.x, self.car.y))) < _TARGET_REACHED_M:
            self.targets_reached += 1
            self._new_target()
            return
        if self._route_dist > 12.0 or self._at >= len(xy) - 2:
            self._off_route_s += self.dt
            if self._off_route_s > 0.7:
                self._off_route_s = 0.0
                self._reroute()
        else:
            self._off_route_s = 0.0

    def route_progress(self) -> tuple[int, float]:
        """(route id, metres along it): rewards and evaluators measure progress with it."""
        return id(self.route), float(self.route.s[self._at])

    # -- observing -----------------------------------------------------------------------------

    def _lane_offset(self) -> float:
        if getattr(self, "_route_dist", 99.0) < 4.0:
            h = float(self.route.heading[self._at])
            dx, dy = self.car.x - self.route.xy[self._at, 0], self.car.y - self.route.xy[self._at, 1]
            return -math.sin(h) * dx + math.cos(h) * dy
        p, _, off = self.world.lanes.nearest(self.car.x, self.car.y, self.car.heading)
        return off if p >= 0 else 0.0

    def _observe(self, controls: Controls, collision: bool, npc_info: dict[str, Any]) -> Observation:
        car = self.car
        tx, ty = self.route.target
        rel = math.atan2(ty - car.y, tx - car.x) - car.heading
        purpose = np.array([math.hypot(tx - car.x, ty - car.y), _wrap(rel)], np.float32)
        frame = self.hood.render(car.x, car.y, car.heading, self.traffic, self.tick)
        if self._bonnet is not None:
            first_row, mask = self._bonnet
            np.copyto(frame[first_row:], self._bonnet_colour, where=mask)  # 3x a boolean index
        if self.options["minimap"] and self.minimap is not None:
            x, y, w, h = rect = minimap_rect(*self.hood_size)
            if self.tick % 2 == 0 or self._minimap_img is None:  # a map moves slowly: redraw at 15 Hz
                self.minimap.draw(frame, rect, car.x, car.y, car.heading, self.route.xy, self._at)
                self._minimap_img = frame[y : y + h, x : x + w].copy()
            else:
                frame[y : y + h, x : x + w] = self._minimap_img
        surface = self.world.surface_at(car.x, car.y)
        info: dict[str, Any] = {
            "on_road": surface == ROAD,
            "surface": ("grass", "road", "sidewalk")[surface],
            "stuck": self._stuck_s > 3.0,
            "stuck_s": round(self._stuck_s, 3),
            "contact": self._contact,
            "hit": getattr(self, "_hit", ""),
            "target": (float(tx), float(ty)),
            # the route to the target: which one (a count) and how far along it the car is (metres);
            # progress is measured along it, as a straight line to the target can grow round a bend
            "route": (self._route_n, float(self.route.s[self._at])),
            **npc_info,
        }
        return Observation(
            frame=frame, speed=float(car.speed), purpose=purpose, controls=controls,
            game_time=round(self.game_time, 6), position=(float(car.x), float(car.y)), heading=float(car.heading),
            odometer=float(car.odometer), collision=collision, collisions=self.collisions,
            lane_offset=float(self._lane_offset()), targets_reached=self.targets_reached, info=info,
        )

    def _bonnet_mask(self, rig: Rig) -> tuple[int, np.ndarray]:
        """Pixels where the car's own bonnet hides the road (fixed to the camera): the first
        row it reaches and an (rows, W, 1) mask from there down."""
        spec = self.spec
        fwd_edge = spec.length / 2 - rig.forward  # metres from camera to the bonnet's front edge
        drop = rig.up - (spec.height * 0.62)
        pitch = math.radians(rig.pitch_deg)
        ang = math.atan2(drop, fwd_edge) - pitch
        v_edge = rig.height / 2 + rig.focal * math.tan(ang)
        u = np.arange(rig.width) - rig.width / 2 + 0.5
        v_edge = max(v_edge, rig.height * 0.9)  # keep the bonnet a sliver: pixels are precious
        curve = v_edge + (u / (rig.width / 2)) ** 2 * rig.height * 0.05
        mask = np.arange(rig.height)[:, None] >= curve[None, :]
        c = np.asarray(spec.colour, float) * self.look.tint * max(self.look.ambient, 0.12) * 0.8
        self._bonnet_colour = np.clip(c, 0, 255).astype(np.uint8)
        first_row = int(np.argmax(mask.any(axis=1))) if mask.any() else rig.height
        return first_row, mask[first_row:, :, None]

    # -- the rest of the protocol ------------------------------------------------------------

    def respawn(self) -> Observation:
        """The Unstuck teleport: a random lane spot clear of traffic, a short fade, new route."""
        if self.env is None:
            raise GameError("SimGame.respawn() before reset(env): call reset first")
        tr = self.traffic
        for _ in range(40):
            self._spawn(None)
            if tr.n == 0 or np.min(np.hypot(tr.x - self.car.x, tr.y - self.car.y)) > 20.0:
                break
        self._contact = False
        self._stuck_s = 0.0
        self._cam_yaw = self.car.heading
        self.npc.reset(self.game_time)
        self._reroute()
        self.game_time += _FADE_S
        self._fade = 1.0
        if self.realtime:
            time.sleep(_FADE_S)
            self._deadline = time.perf_counter()
        self._anchor = (self.game_time, self.car.x, self.car.y)
        obs = self._observe(Controls(), collision=False, npc_info={})
        obs.info["respawned"] = True
        return obs

    def cinematic(self) -> np.ndarray:
        """The chase camera: behind and above the car, lagging its turns a little."""
        if self.env is None:
            raise GameError("SimGame.cinematic() before reset(env): call reset first")
        car, spec = self.car, self.spec
        img = self.chase.render(car.x, car.y, self._cam_yaw, self.traffic, self.tick,
                                ego=(spec.length, spec.width, spec.height, np.asarray(spec.colour, float)))
        if self.options["cinematic_minimap"] and self.minimap is not None:
            self.minimap.draw(img, minimap_rect(*self.cinematic_size), car.x, car.y, car.heading, self.route.xy, self._at)
        if self._fade > 0:
            img = (img * (1.0 - self._fade)).astype(np.uint8)
        return img

    def close(self) -> None:
        """Nothing to release: no window, no device; kept for the protocol."""
        self.env = None
