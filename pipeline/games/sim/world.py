"""One map seed's world, built once and cached: roads, lanes, obstacles, surface and textures.

Building a world takes about a second; episodes on the same map reuse it, so a collector
that draws many episodes from a few hundred seeds pays that second rarely.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import cv2
import numpy as np
import structlog

from pipeline.games.sim.lanes import LaneNet
from pipeline.games.sim.objects import Obstacles, place
from pipeline.games.sim.roads import RoadNetwork, generate
from pipeline.games.sim.surface import GRASS, ROAD, Raster, paint_ground, paint_surface

log = structlog.get_logger(__name__)

_CACHE: OrderedDict[int, World] = OrderedDict()
_CACHE_SIZE = 2
_LOCK = threading.Lock()


class World:
    """Everything static about a map: what the cameras look at and the car can hit."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.net: RoadNetwork = generate(self.seed)
        self.lanes = LaneNet(self.net)
        self.surface, self.surface_ras = paint_surface(self.net)
        self.obstacles: Obstacles = place(self.net, self.surface, self.surface_ras, self.seed)
        tex, ras = paint_ground(self.net, self.seed)
        self.ground_ras: Raster = ras
        # A small pyramid: distant ground samples coarser levels, so it does not shimmer.
        self.levels: list[np.ndarray] = [tex]
        for _ in range(3):
            prev = self.levels[-1]
            self.levels.append(cv2.resize(prev, (prev.shape[1] // 2, prev.shape[0] // 2), interpolation=cv2.INTER_AREA))
        self.grass = tuple(int(c) for c in np.median(tex[:64, :64].reshape(-1, 3), axis=0))

    @property
    def extent(self) -> tuple[float, float, float, float]:
        return self.net.extent

    def surface_at(self, x: float, y: float) -> int:
        """GRASS, ROAD or SIDEWALK under a world point (grass outside the map)."""
        ras = self.surface_ras
        px, py = int((x - ras.x0) / ras.res), int((y - ras.y0) / ras.res)
        if 0 <= px < ras.width and 0 <= py < ras.height:
            return int(self.surface[py, px])
        return GRASS

    def on_road(self, x: float, y: float) -> bool:
        return self.surface_at(x, y) == ROAD


def get_world(seed: int) -> World:
    """The world of a map seed, from a small cache shared by every game in the process."""
    seed = int(seed)
    with _LOCK:
        if seed in _CACHE:
            _CACHE.move_to_end(seed)
            return _CACHE[seed]
    world = World(seed)
    log.debug("sim.world_built", map_seed=seed, roads=len(world.net.roads), obstacles=len(world.obstacles))
    with _LOCK:
        _CACHE[seed] = world
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return world
