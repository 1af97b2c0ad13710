"""Pipeline shards: a run's buffers split over `[buffers] shards` key sets, one hash tag each.

A Redis Cluster keeps each shard's keys in one slot (`pipeline.wire.keys`), so each shard's
routing and draw scripts run on one node and the shards spread over the nodes. Collectors
pick their shard by a hash of their id (`pipeline.wire.keys.shard_of`): no coordination, stable across
restarts, even over many collectors; a shard that gets no collector simply never opens its
gate, and draws take from the others. The capacity is per output over all shards, split
evenly, so the memory plan does not change with the shard count.

`ShardedBuffers` is what the trainer and the server's status see: per shard the 90% gate
and the replay limit hold on their own (each shard's draw script checks them atomically),
and a batch is drawn from the shards whose gate is open, each output's share split over
them in proportion to their fill.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from pipeline.config import Config
from pipeline.serve.buffers import DRAWN, FILLING, LIMITED, Buffers, Draw
from pipeline.serve.replay import split_batch
from pipeline.wire.keys import Keys, shard_of

#: How far back `ShardedBuffers.starved` counts each collector's inserts.
STARVED_WINDOW_S = 60.0


def apportion(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights` (largest remainder; all zero weights: evenly)."""
    if not weights:
        return []
    weight_sum = sum(weights)
    if weight_sum <= 0:
        return split_batch(total, [str(i) for i in range(len(weights))])
    exact = [total * w / weight_sum for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


@dataclass
class ShardedBuffers:
    """The buffers of every shard of a run, with the interface of one `Buffers`."""

    shards: list[Buffers]

    @classmethod
    def for_config(cls, r: redis.Redis, keys: Keys, config: Config) -> ShardedBuffers:
        b = config.buffers
        return cls([Buffers(r, shard_keys, config.output_names(), config.shard_capacity(), b.start_fraction,
                            config.replay_limit(), b.collector_share) for shard_keys in keys.shards(b.shards)])

    def starved(self, collectors: list[str], window_s: float = STARVED_WINDOW_S) -> list[str]:
        """The collectors kept from their share while the buffers want no data: those with
        under half a fair share of some buffer's inserts of the last `window_s` while another
        collector of their shard filled its whole quota in that time. A collector flooding
        valid sets keeps the buffers full and the trainer's bank topped up, so the server
        would hand nobody else an episode; these get one anyway. In an honest fleet resting
        under the replay limit nobody fills a quota, and nobody is starved."""
        out: list[str] = []
        for i, shard in enumerate(self.shards):
            mine = [c for c in collectors if shard_of(c, len(self.shards)) == i]
            if len(mine) < 2:
                continue
            seconds, micros = shard.r.time()
            since = seconds + micros / 1e6 - window_s
            pipe = shard.r.pipeline(transaction=False)
            for name in self.outputs:
                for collector in mine:
                    pipe.zcount(shard.keys.buffer_owned(name, collector), since, "+inf")
            counts = iter(int(n) for n in pipe.execute())
            fair = shard.capacity / len(mine)
            for _ in self.outputs:
                recent = {collector: next(counts) for collector in mine}
                if max(recent.values()) >= shard.collector_quota:
                    out += [c for c, n in recent.items() if n < fair / 2 and c not in out]
        return out

    def set_live_collectors(self, collectors: list[str]) -> None:
        """Tell each shard how many live collectors send to it: their quota of its buffers
        (`Buffers.collector_quota`) is a share of that count."""
        for i, shard in enumerate(self.shards):
            shard.live_collectors = sum(1 for c in collectors if shard_of(c, len(self.shards)) == i)

    @property
    def outputs(self) -> list[str]:
        return self.shards[0].outputs

    @property
    def capacity(self) -> int:
        """Samples per output over all shards."""
        return sum(shard.capacity for shard in self.shards)

    def shard_fills(self) -> list[dict[str, int]]:
        """Per shard, each output buffer's fill (one round trip per node)."""
        pipe = self.shards[0].r.pipeline(transaction=False)
        for shard in self.shards:
            for name in self.outputs:
                pipe.scard(shard.keys.buffer(name))
        counts = iter(int(n) for n in pipe.execute())
        return [{name: next(counts) for name in self.outputs} for _ in self.shards]

    def fills(self) -> dict[str, int]:
        """Per output, the fill over all shards."""
        per_shard = self.shard_fills()
        return {name: sum(fills[name] for fills in per_shard) for name in self.outputs}

    def ready(self) -> bool:
        """True when some shard's gate is open (every one of its buffers at the threshold)."""
        return any(self._open(shard, fills) for shard, fills in zip(self.shards, self.shard_fills(), strict=True))

    @staticmethod
    def _open(shard: Buffers, fills: dict[str, int]) -> bool:
        return all(n >= shard.threshold for n in fills.values())

    def replay_stats(self) -> dict[str, dict[str, float]]:
        """Per output, the replay limit's tokens and totals summed over the shards."""
        per_shard = [shard.replay_stats() for shard in self.shards]
        return {name: {k: sum(stats[name][k] for stats in per_shard) for k in per_shard[0][name]}
                for name in self.outputs}

    def shard_status(self) -> list[dict[str, Any]]:
        """Per shard: its hash tag, fill per output, whether its gate is open, and its replay limit."""
        out = []
        for shard, fills in zip(self.shards, self.shard_fills(), strict=True):
            replay = shard.replay_stats()
            out.append({"shard": shard.keys.shard or "-", "fill": fills, "capacity": shard.capacity,
                        "gate_open": self._open(shard, fills),
                        "tokens": {n: round(replay[n]["tokens"], 1) for n in self.outputs},
                        "evicted": sum(int(replay[n]["evicted"]) for n in self.outputs)})
        return out

    def wants_data(self) -> bool:
        """True while some shard's buffers want data (`Buffers.wants_data`)."""
        return any(shard.wants_data() for shard in self.shards)

    def draw(self, batch_size: int) -> Draw:
        """Each output's equal share of the batch, split over the shards whose gate is open
        in proportion to their fill; `FILLING` while no gate is open, `LIMITED` when the
        open shards' replay limits give nothing."""
        if len(self.shards) == 1:
            return self.shards[0].draw(batch_size)
        per_shard = self.shard_fills()
        open_shards = [i for i, (shard, fills) in enumerate(zip(self.shards, per_shard, strict=True))
                       if self._open(shard, fills)]
        if not open_shards:
            return Draw(FILLING)
        shares = split_batch(batch_size, self.outputs)
        # per output, its share split over the open shards by their fill of that output
        split = [apportion(share, [per_shard[i][name] for i in open_shards])
                 for name, share in zip(self.outputs, shares, strict=True)]
        rows: dict[str, list[bytes]] = {name: [] for name in self.outputs}
        states = set()
        for j, i in enumerate(open_shards):
            counts = [split[o][j] for o in range(len(self.outputs))]
            if not any(counts):
                continue
            drawn = self.shards[i].draw_shares(counts)
            states.add(drawn.state)
            for name, got in drawn.rows.items():
                rows[name].extend(got)
        if DRAWN in states:
            return Draw(DRAWN, rows)
        return Draw(LIMITED if LIMITED in states else FILLING)

    def rows(self, output: str, count: int = 200) -> Iterator[bytes]:
        for shard in self.shards:
            yield from shard.rows(output, count)

    def clear(self) -> None:
        for shard in self.shards:
            shard.clear()
