"""Who may drive through a junction now: reservations of turns that do not cross.

A car about to leave its lane asks for its turn (connector) at the junction ahead; it
goes if no turn in use there crosses or merges with it (opposite straights and turns that
keep apart run together), else it stops at the line. Through traffic on the highway never
waits. This keeps crossings crash-free and without gridlock at the cost of a few set
look-ups per approaching car.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from pipeline.games.sim.lanes import LaneNet

PATIENCE_S = 12.0  # after this long at the line a car goes anyway
_CLEARANCE_M = 2.8  # turns whose paths come closer than this conflict


class Junctions:
    """The turns in use at every junction node and which turns conflict with which."""

    def __init__(self, lanes: LaneNet, n_nodes: int) -> None:
        self.lanes = lanes
        self.active: list[Counter[int]] = [Counter() for _ in range(n_nodes)]
        hwy = lanes.is_lane & (lanes.speed > 25.0)
        self._through = np.zeros(lanes.n_segments, bool)
        for seg in np.flatnonzero(hwy):
            for conn in lanes.nexts[seg]:
                self._through[conn] = bool(hwy[lanes.nexts[conn][0]])
        self.conflicts: dict[int, set[int]] = defaultdict(set)
        by_node: dict[int, list[int]] = defaultdict(list)
        for seg in np.flatnonzero(~lanes.is_lane):
            by_node[int(lanes.from_node[seg])].append(int(seg))
        for conns in by_node.values():
            pts = [self._points(c) for c in conns]
            for i, a in enumerate(conns):
                for j in range(i + 1, len(conns)):
                    d = np.hypot(pts[i][:, None, 0] - pts[j][None, :, 0], pts[i][:, None, 1] - pts[j][None, :, 1])
                    if d.min() < _CLEARANCE_M:
                        self.conflicts[a].add(conns[j])
                        self.conflicts[conns[j]].add(a)

    def _points(self, seg: int) -> np.ndarray:
        a, n = int(self.lanes.start[seg]), int(self.lanes.count[seg])
        return np.stack([self.lanes.x[a : a + n], self.lanes.y[a : a + n]], axis=1)

    def free_pass(self, conn: int) -> bool:
        """Highway-to-highway connectors need no reservation."""
        return bool(self._through[conn])

    def take(self, node: int, conn: int, force: bool = False) -> bool:
        """Try to reserve turn `conn` at `node`; True when the car may go."""
        active = self.active[node]
        blocking = self.conflicts[conn]
        if force or not any(c in blocking for c in active):
            active[conn] += 1
            return True
        return False

    def release(self, node: int, conn: int) -> None:
        if node < 0:
            return
        active = self.active[node]
        active[conn] -= 1
        if active[conn] <= 0:
            del active[conn]
