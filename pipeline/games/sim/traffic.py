"""Other cars: they follow lanes at their own pace, take random turns, queue and take turns.

State is a handful of arrays; one step is vectorised over all cars. Junctions are
reserved (see junctions.py) by traffic and by the ego car alike. Cars that fall far
behind the ego car are recycled to lanes around it, so traffic stays where it is seen.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.games.sim.junctions import PATIENCE_S, Junctions
from pipeline.games.sim.lanes import LaneNet

_PALETTE = np.array([
    (200, 200, 204), (30, 30, 34), (150, 20, 24), (20, 60, 140), (230, 230, 226), (90, 96, 104),
    (40, 110, 60), (200, 140, 30), (120, 120, 128), (60, 30, 80), (170, 170, 176), (12, 12, 14),
], np.float64)
_KEEP_R = 320.0  # cars farther than this from the ego are moved closer
_BRAKE = 4.5
_ASK_BRAKE = 2.5  # plan to stop at the line with this deceleration


class Traffic:
    """N traffic cars on the lane network; `x, y, h, v, length, width, height, colour` per car."""

    def __init__(self, lanes: LaneNet, n_nodes: int, n: int, rng: np.random.Generator, ego_xy: tuple[float, float]) -> None:
        self.lanes = lanes
        self.rng = rng
        self.n = n
        self.junctions = Junctions(lanes, n_nodes)
        self.seg = np.zeros(n, np.int64)
        self.s = np.zeros(n)
        self.nxt = np.zeros(n, np.int64)
        self.holding = np.full(n + 1, -1, np.int64)  # junction node each car holds; last = the ego
        self.held_conn = np.full(n + 1, -1, np.int64)  # the turn reserved there
        self.wait_j = np.zeros(n + 1)  # seconds waiting at a junction line
        self.blocked = np.zeros(n)  # seconds left standing after a crash with the ego
        self.ego_gap = math.inf
        self._ticks = 0
        self._gap: np.ndarray | None = None
        big = rng.random(n) < 0.12
        self.length = np.where(big, rng.uniform(6.0, 8.5, n), rng.uniform(4.0, 4.9, n))
        self.width = np.where(big, 2.3, rng.uniform(1.7, 1.9, n))
        self.height = np.where(big, rng.uniform(2.6, 3.2, n), rng.uniform(1.35, 1.6, n))
        self.colour = _PALETTE[rng.integers(len(_PALETTE), size=n)]
        self.pace = rng.uniform(0.7, 1.08, n) * np.where(big, 0.85, 1.0)
        self.v = np.zeros(n)
        self.x = np.full(n, 1e9)
        self.y = np.full(n, 1e9)
        self.h = np.zeros(n)
        for i in range(n):
            self._place(i, ego_xy, 25.0, 260.0)
        self._pose()

    def _place(self, i: int, ego: tuple[float, float], r_min: float, r_max: float) -> None:
        lanes = self.lanes
        self._release(i)
        for _ in range(200):
            p = int(self.rng.integers(len(lanes.x)))
            seg = int(lanes.seg_of[p])
            if not lanes.is_lane[seg] or (p - lanes.start[seg]) * lanes.step[seg] > lanes.length[seg] - 15.0:
                continue
            d = math.hypot(lanes.x[p] - ego[0], lanes.y[p] - ego[1])
            if not r_min <= d <= r_max:
                continue
            if np.any(np.hypot(self.x - lanes.x[p], self.y - lanes.y[p]) < 14.0):
                continue
            break
        self.seg[i] = seg
        self.s[i] = (p - lanes.start[seg]) * lanes.step[seg]
        self.nxt[i] = self._choose(seg)
        self.v[i] = lanes.advisory[p] * self.pace[i] * 0.8
        self.x[i], self.y[i] = lanes.x[p], lanes.y[p]

    def _choose(self, seg: int) -> int:
        options = self.lanes.nexts[seg]
        return int(options[int(self.rng.integers(len(options)))])

    def _pose(self) -> None:
        lanes = self.lanes
        f = np.clip(self.s / lanes.step[self.seg], 0.0, lanes.count[self.seg] - 1.000001)
        i = f.astype(np.int64)
        t = f - i
        p = lanes.start[self.seg] + i
        x0, y0, x1, y1 = lanes.x[p], lanes.y[p], lanes.x[p + 1], lanes.y[p + 1]
        self.x = x0 + (x1 - x0) * t
        self.y = y0 + (y1 - y0) * t
        self.h = np.arctan2(y1 - y0, x1 - x0)
        self._p = p

    def step(self, dt: float, ego: tuple[float, float, float, float, float, float], ego_next: tuple[int, float],
             ego_off_lane: float = 0.0) -> None:
        """Advance every car one tick; they queue behind cars ahead and take turns at junctions.

        `ego` is (x, y, heading, speed, length, width); `ego_next` is the next connector on
        the ego's route and the distance to it, so the ego reserves junctions as well;
        `ego_off_lane` (m) widens the ego's look-out so it does not pass a car on the kerb.
        Sets `ego_gap`: how far the ego may drive before a car ahead or a junction line.
        """
        lanes = self.lanes
        ex, ey, _, ev, _, _ = ego
        self._ticks += 1
        if self.n and (self._ticks % 2 == 1 or self._gap is None):  # drivers react at 15 Hz
            self._gap = self._corridor(*ego, min(abs(ego_off_lane), 3.5))
        elif self.n and self._gap is not None:  # what was free last tick is closer now
            self._gap = self._gap - np.append(self.v, max(ev, 0.0)) * dt
        gap = self._gap if self.n and self._gap is not None else np.full(self.n + 1, np.inf)
        gap = gap.copy()
        gap[-1] = min(gap[-1], self._ego_junction(ex, ey, ev, dt, *ego_next, first=gap[-1] > ego_next[1] - 1.0))
        self.ego_gap = float(gap[-1])
        if self.n == 0:
            return
        to_end = lanes.length[self.seg] - self.s
        self._junction_lines(gap, to_end, dt)
        v_gap = np.sqrt(2 * _BRAKE * np.maximum(gap[:-1] - 2.0 - 0.5 * self.v, 0.0))
        here = lanes.advisory[self._p] * self.pace
        nxt_v = lanes.advisory[lanes.start[self.nxt]] * self.pace
        v_next = np.sqrt(nxt_v**2 + 2 * 2.5 * np.maximum(to_end, 0.0))
        target = np.minimum(np.minimum(here, v_next), v_gap)
        target = np.where(self.blocked > 0, 0.0, target)
        self.blocked = np.maximum(self.blocked - dt, 0.0)
        self.v = np.maximum(np.clip(target, self.v - 7.0 * dt, self.v + 2.2 * dt), 0.0)
        self.s += self.v * dt
        for i in np.flatnonzero(self.s >= lanes.length[self.seg]):
            while self.s[i] >= lanes.length[self.seg[i]]:
                self.s[i] -= lanes.length[self.seg[i]]
                if not lanes.is_lane[self.seg[i]]:  # left a junction: free it
                    self._release(i)
                self.seg[i] = self.nxt[i]
                self.nxt[i] = self._choose(int(self.seg[i]))
        self._pose()
        far = np.flatnonzero(np.hypot(self.x - ex, self.y - ey) > _KEEP_R)
        for i in far[:2]:  # a couple per tick keeps the cost flat
            self._place(int(i), (ex, ey), 140.0, 280.0)
        if len(far):
            self._pose()

    def _junction_lines(self, gap: np.ndarray, to_end: np.ndarray, dt: float) -> None:
        """Cars near the end of their lane reserve the junction or stop at the line."""
        lanes = self.lanes
        asking = lanes.is_lane[self.seg] & (self.holding[:-1] < 0) & (to_end < 6.0 + self.v**2 / (2 * _ASK_BRAKE))
        asking &= gap[:-1] > to_end - 1.0  # only the first car in the queue asks
        for i in np.flatnonzero(asking):
            conn = int(self.nxt[i])
            if self.junctions.free_pass(conn):
                continue
            node = int(lanes.to_node[self.seg[i]])
            if self.junctions.take(node, conn, force=self.wait_j[i] > PATIENCE_S):
                self.holding[i], self.held_conn[i] = node, conn
                self.wait_j[i] = 0.0
            else:
                gap[i] = min(gap[i], to_end[i] - 1.0)
                self.wait_j[i] += dt

    def _release(self, i: int) -> None:
        if self.holding[i] >= 0:
            self.junctions.release(int(self.holding[i]), int(self.held_conn[i]))
        self.holding[i] = self.held_conn[i] = -1

    def _ego_junction(self, x: float, y: float, v: float, dt: float, conn: int, dist: float, first: bool) -> float:
        """The ego's junction reservations; returns how far it may go (inf when free)."""
        lanes, held = self.lanes, int(self.holding[-1])
        if held >= 0 and conn != int(self.held_conn[-1]):
            nx, ny = self._node_xy(held)
            if math.hypot(x - nx, y - ny) > 12.0 or conn < 0 or int(lanes.from_node[conn]) != held:
                self._release(self.n)  # through the junction, or another way now
                held = -1
        if conn < 0 or self.junctions.free_pass(conn) or dist > 6.0 + v * v / (2 * _ASK_BRAKE) or not first:
            return math.inf
        if conn == int(self.held_conn[-1]):
            return math.inf
        if held >= 0:
            self._release(self.n)
        node = int(lanes.from_node[conn])
        if self.junctions.take(node, conn, force=self.wait_j[-1] > PATIENCE_S):
            self.holding[-1], self.held_conn[-1] = node, conn
            self.wait_j[-1] = 0.0
            return math.inf
        self.wait_j[-1] += dt
        return dist - 1.0

    def _node_xy(self, node: int) -> tuple[float, float]:
        lanes = self.lanes
        k = int(np.flatnonzero(lanes.from_node == node)[0])  # any connector at that node
        return float(lanes.x[lanes.start[k]]), float(lanes.y[lanes.start[k]])

    def _corridor(self, ex: float, ey: float, eh: float, ev: float, elen: float, ew: float, widen: float) -> np.ndarray:
        """Free distance ahead of every car and of the ego (last entry) to a car in its path."""
        n = self.n
        x, y, h = np.append(self.x, ex), np.append(self.y, ey), np.append(self.h, eh)
        length, width = np.append(self.length, elen), np.append(self.width, ew)
        c, s = np.cos(h), np.sin(h)
        off = (length / 2 - width / 2)[:, None] * np.array([-1.0, 0.0, 1.0])[None]
        qx, qy = (x[:, None] + c[:, None] * off).ravel(), (y[:, None] + s[:, None] * off).ravel()
        qr = np.repeat(width / 2, 3)
        owner = np.repeat(np.arange(n + 1), 3)
        dx, dy = qx[None, :] - x[:, None], qy[None, :] - y[:, None]
        fwd = dx * c[:, None] + dy * s[:, None]
        lat = -dx * s[:, None] + dy * c[:, None]
        oncoming = np.cos(h[owner][None, :] - h[:, None]) < -0.5
        reach = width / 2 + 0.3
        reach[-1] += widen
        ahead = (fwd > 0.0) & (fwd < 80.0) & (np.abs(lat) < reach[:, None] + qr[None, :])
        ahead &= owner[None, :] != np.arange(n + 1)[:, None]
        # Only cars whose centre is ahead of mine lead me: two cars side by side never
        # wait for each other.
        centre_fwd = (x[None, :] - x[:, None]) * c[:, None] + (y[None, :] - y[:, None]) * s[:, None]
        ahead &= centre_fwd[:, owner] > 0.0
        # Oncoming cars pass in their own lane; only one right in my path, close, stops me.
        head_on = (fwd < length[:, None] / 2 + 6.0) & (np.abs(lat) < width[:, None] / 2 + 0.3 + qr[None, :])
        ahead &= ~oncoming | head_on
        return np.where(ahead, fwd - length[:, None] / 2 - qr[None, :], np.inf).min(axis=1)

    def circles(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centres (n, 3) and radii (n,) of three circles per car, for crash tests."""
        off = (self.length / 2 - self.width / 2)[:, None] * np.array([-1.0, 0.0, 1.0])[None, :]
        return self.x[:, None] + np.cos(self.h)[:, None] * off, self.y[:, None] + np.sin(self.h)[:, None] * off, self.width / 2
