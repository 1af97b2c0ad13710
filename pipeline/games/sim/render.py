"""Draws one camera's view: sky panorama, warped ground texture, objects, light, rain.

Everything that depends only on the camera rig and the episode's look is precomputed in
`Renderer.__init__`; a frame is a slice copy, a few warps, some polygons and two colour ops.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from pipeline.games.sim.camera import (
    Pose,
    Rig,
    band_homography,
    image_to_ground,
    intrinsics,
    pose_of,
)
from pipeline.games.sim.look import Look, headlight
from pipeline.games.sim.objects import POLE
from pipeline.games.sim.roads import rng_for
from pipeline.games.sim.scene import Scene
from pipeline.games.sim.traffic import Traffic
from pipeline.games.sim.world import World


class Renderer:
    """One camera (hood or chase) of one episode's world and look."""

    def __init__(self, world: World, rig: Rig, look: Look, max_dist: float = 180.0, hills_seed: int = 0, windows: int = 3) -> None:
        self.world, self.rig, self.look = world, rig, look
        self.max_dist = max_dist
        self.windows = windows
        self.small_dist = min(max_dist, 0.9 * rig.focal)  # poles and rails: ~0.2 px wide beyond
        self.f = rig.focal
        self.K = intrinsics(rig)
        self.tan_half = math.tan(math.radians(rig.fov_deg) / 2) * 1.15
        self.row0 = int(min(max(math.floor(rig.horizon) + 1, 0), rig.height))
        self._bands = self._ground_bands()
        self._light_maps()
        self._sky = self._panorama(hills_seed)
        self._rain = self._rain_layers() if look.rain else None

    # -- precomputation ------------------------------------------------------------------

    def _ground_bands(self) -> list[tuple[int, int, int]]:
        """(first row, end row, texture level): farther rows read coarser texture levels."""
        rig, res0 = self.rig, self.world.ground_ras.res
        depth = rig.row_depth()
        foot = depth**1.5 / (self.f * math.sqrt(rig.up))  # geometric mean of both footprints
        levels = np.clip(np.floor(np.log2(np.maximum(foot / (res0 * 1.5), 1e-9))), 0, len(self.world.levels) - 1)
        bands: list[tuple[int, int, int]] = []
        for r in range(self.row0, rig.height):
            lvl = int(levels[r])
            if bands and bands[-1][2] == lvl:
                bands[-1] = (bands[-1][0], r + 1, lvl)
            else:
                bands.append((r, r + 1, lvl))
        return bands

    def _light_maps(self) -> None:
        """Per ground pixel: multiply (light, tint, fog) and add (fog colour) images."""
        rig, look = self.rig, self.look
        fwd, left = rig.ground_points()
        rows = slice(self.row0, rig.height)
        fwd, left = fwd[rows], left[rows]
        dist = np.hypot(fwd - rig.forward, left)
        dist = np.nan_to_num(dist, nan=1e6)
        fog = look.fog(dist)[..., None]
        light = np.full(dist.shape, look.ambient)
        if look.headlights:
            light = light + (1 - look.ambient) * headlight(np.nan_to_num(fwd - 2.0, nan=-1.0), np.nan_to_num(left))
        mul = np.clip(light[..., None] * look.tint[None, None] * (1 - fog), 0, 1)
        self._mul = (mul * 255).astype(np.uint8)
        self._add = np.clip(look.fog_colour[None, None] * fog, 0, 255).astype(np.uint8)

    def _panorama(self, seed: int) -> np.ndarray:
        """The sky and distant hills all around, one column per 1/f radian, wrapped."""
        rig, look = self.rig, self.look
        rows = max(self.row0, 1)
        width = int(round(2 * math.pi * self.f))
        v = np.arange(rows) + 0.5
        elev = np.arctan((rig.height / 2 - v) / self.f) - math.radians(rig.pitch_deg)  # rad above horizon
        t = np.clip(elev / math.radians(35.0), 0, 1) ** 0.6
        col = look.sky_horizon[None] * (1 - t[:, None]) + look.sky_top[None] * t[:, None]
        sky = np.repeat(col[:, None, :], width, axis=1)
        rng = rng_for(seed, 11)
        az = -np.arange(width) / self.f  # azimuth of each panorama column
        if look.weather == "clear" and look.daylight > 0.3:  # a few soft clouds
            cloud = np.zeros((rows, width), np.float32)
            for _ in range(14):
                cx, cy = rng.uniform(0, width), rng.uniform(0.1, 0.7) * rows
                cv2.ellipse(cloud, (int(cx), int(cy)), (int(rng.uniform(0.1, 0.3) * self.f), int(rng.uniform(0.02, 0.05) * self.f) + 1), 0, 0, 360, 1.0, -1)
            cloud = cv2.GaussianBlur(cloud, (0, 0), max(1.0, self.f * 0.02))
            sky = sky * (1 - 0.6 * cloud[..., None]) + 0.6 * cloud[..., None] * np.array([245, 245, 250]) * look.ambient
        if look.stars:
            n = int(width * rows / 220)
            sky[rng.integers(0, rows, n), rng.integers(0, width, n)] = rng.uniform(120, 230, (n, 1))
        if look.sun_elevation > 0 and look.weather == "clear":
            sx = (-look.sun_azimuth % (2 * math.pi)) * self.f
            sy = rig.horizon - self.f * math.tan(look.sun_elevation)
            if 0 <= sy < rows:
                glow = np.exp(-(((np.arange(width)[None] - sx) ** 2 + (v[:, None] - sy) ** 2) / (0.06 * self.f) ** 2))
                sky = sky + glow[..., None] * np.array([255, 240, 200]) * 0.8
        # Hills: two ranges of silhouettes, hazier with distance.
        horizon = rig.horizon
        for k, (amp, shade) in enumerate(((3.0, 0.55), (1.6, 0.8))):
            prof = np.zeros(width)
            for j in range(1, 7):
                prof += rng.uniform(0.2, 1.0) / j * np.sin(j * az * (2 + k) + rng.uniform(0, 6.3))
            height = np.radians(amp * (0.6 + 0.4 * prof)) * self.f
            top = horizon - np.maximum(height, 0.5)
            mask = v[:, None] >= top[None]
            hill = np.array([70, 92, 70]) * look.tint * look.ambient
            hill = hill * (1 - shade) + look.fog_colour * shade
            sky = np.where(mask[..., None], hill[None, None], sky)
        sky = np.clip(sky, 0, 255).astype(np.uint8)
        return np.concatenate([sky, sky[:, : rig.width + 1]], axis=1)

    def _rain_layers(self) -> list[np.ndarray]:
        rig = self.rig
        rng = rng_for(rig.width * 7 + rig.height, 13)
        layers = []
        for _ in range(4):
            img = np.zeros((rig.height, rig.width, 3), np.uint8)
            n = int(rig.width * rig.height / 500)
            x = rng.uniform(0, rig.width, n)
            y = rng.uniform(0, rig.height, n)
            length = rng.uniform(0.03, 0.08, n) * rig.height
            for i in range(n):
                p0 = (int(x[i]), int(y[i]))
                p1 = (int(x[i] - 0.25 * length[i]), int(y[i] + length[i]))
                cv2.line(img, p0, p1, (44, 46, 50), 1, cv2.LINE_AA)
            layers.append(img)
        return layers

    # -- per frame --------------------------------------------------------------------------

    def render(self, x: float, y: float, yaw: float, traffic: Traffic | None, tick: int, ego: tuple | None = None) -> np.ndarray:
        """The camera image (RGB uint8) for a car at (x, y, yaw)."""
        rig = self.rig
        pose = pose_of(rig, x, y, yaw)
        img = np.empty((rig.height, rig.width, 3), np.uint8)
        c0 = int(round(-yaw * self.f - rig.width / 2)) % (self._sky.shape[1] - rig.width - 1)
        img[: self.row0] = self._sky[: self.row0, c0 : c0 + rig.width]
        ras = self.world.ground_ras
        to_ground = image_to_ground(rig, pose)
        for r0, r1, lvl in self._bands:
            h = band_homography(to_ground, ras.x0, ras.y0, ras.res * 2**lvl, r0)
            cv2.warpPerspective(
                self.world.levels[lvl], h, (rig.width, r1 - r0), dst=img[r0:r1],
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=self.world.grass,
            )
        ground = img[self.row0 :]
        cv2.multiply(ground, self._mul, dst=ground, scale=1 / 255.0)
        cv2.add(ground, self._add, dst=ground)
        self._objects(img, pose, traffic, ego, x, y, yaw)
        if self._rain is not None:
            cv2.add(img, self._rain[tick % 4], dst=img)
        return img

    def _objects(self, img: np.ndarray, pose: Pose, traffic: Traffic | None, ego: tuple | None, ex: float, ey: float, eyaw: float) -> None:
        obs = self.world.obstacles
        scene = Scene(pose, self.f, self.K[0, 2], self.K[1, 2], self.look)
        scene.window_budget = self.windows
        cy_, sy_ = math.cos(pose.yaw), math.sin(pose.yaw)
        fwd = (obs.x - pose.x) * cy_ + (obs.y - pose.y) * sy_
        lat = (obs.y - pose.y) * cy_ - (obs.x - pose.x) * sy_
        vis = (fwd > -obs.bound) & (fwd < self.max_dist + obs.bound) & (np.abs(lat) < fwd * self.tan_half + obs.bound + 1.0)
        small = obs.kind >= POLE
        vis &= ~small | (fwd < self.small_dist)
        idx = np.flatnonzero(vis)
        if len(idx):
            scene.obstacles(obs, idx, fwd[idx])
        if traffic is not None and traffic.n:
            tf = (traffic.x - pose.x) * cy_ + (traffic.y - pose.y) * sy_
            tl = (traffic.y - pose.y) * cy_ - (traffic.x - pose.x) * sy_
            k = np.flatnonzero((tf > -6) & (tf < 160) & (np.abs(tl) < tf * self.tan_half + 6))
            if len(k):
                scene.cars(traffic.x[k], traffic.y[k], traffic.h[k], traffic.length[k], traffic.width[k], traffic.height[k], traffic.colour[k], tf[k], 30000)
        if ego is not None:
            length, width, height, colour = ego
            depth = (ex - pose.x) * cy_ + (ey - pose.y) * sy_
            one = np.ones(1)
            scene.cars(one * ex, one * ey, one * eyaw, one * length, one * width, one * height, np.asarray(colour, float)[None], one * depth, 40000)
        scene.draw(img)
