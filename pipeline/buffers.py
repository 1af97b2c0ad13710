"""Per-output buffers in Redis: the training pool, with atomic gated random draws.

A buffer is a set of sample ids (`SCARD` = fill, `SPOP` = random draw) plus a hash of
their encoded rows. Rows enter from the server in one MULTI with the stream XACK, so a
crash never half-routes a set; ids are `{stream entry id}:{row}`, so routing the same
entry twice cannot duplicate a sample. The trainer draws with one Lua script that checks
every buffer against the start threshold and pops from all of them, or from none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis

from pipeline.keys import Keys

# KEYS: set1, hash1, set2, hash2, ...   ARGV: threshold, n1, n2, ...
# Returns nil when any buffer is below the threshold, else one list of rows per buffer.
_DRAW_LUA = """
local threshold = tonumber(ARGV[1])
local nbuf = #KEYS / 2
for i = 1, nbuf do
  if redis.call('SCARD', KEYS[2 * i - 1]) < threshold then
    return false
  end
end
local out = {}
for i = 1, nbuf do
  local n = tonumber(ARGV[i + 1])
  local rows = {}
  if n > 0 then
    local ids = redis.call('SPOP', KEYS[2 * i - 1], n)
    if #ids > 0 then
      rows = redis.call('HMGET', KEYS[2 * i], unpack(ids))
      redis.call('HDEL', KEYS[2 * i], unpack(ids))
    end
  end
  out[i] = rows
end
return out
"""


def start_threshold(capacity: int, start_fraction: float) -> int:
    """Samples a buffer needs before training may draw from it (90% of capacity by default)."""
    return math.ceil(capacity * start_fraction - 1e-9)


def split_batch(batch_size: int, outputs: list[str]) -> list[int]:
    """An equal share of the batch from every output's buffer; the remainder to the first ones."""
    base, extra = divmod(batch_size, len(outputs))
    return [base + (1 if i < extra else 0) for i in range(len(outputs))]


@dataclass
class Buffers:
    """Fill, routing and gated draws for the buffers of one run."""

    r: redis.Redis
    keys: Keys
    outputs: list[str]
    capacity: int
    start_fraction: float = 0.9

    def __post_init__(self) -> None:
        self._draw = self.r.register_script(_DRAW_LUA)

    @property
    def threshold(self) -> int:
        return start_threshold(self.capacity, self.start_fraction)

    def fills(self) -> dict[str, int]:
        pipe = self.r.pipeline(transaction=False)
        for name in self.outputs:
            pipe.scard(self.keys.buffer(name))
        return dict(zip(self.outputs, (int(n) for n in pipe.execute()), strict=True))

    def ready(self) -> bool:
        """True when every buffer holds at least the start threshold."""
        return all(n >= self.threshold for n in self.fills().values())

    def add_rows_pipeline(self, pipe: redis.client.Pipeline, output: str, ids: list[str], rows: list[bytes]) -> None:
        """Queue the writes that put rows into a buffer (the caller's MULTI makes it atomic)."""
        if not ids:
            return
        pipe.hset(self.keys.buffer_data(output), mapping=dict(zip(ids, rows, strict=True)))
        pipe.sadd(self.keys.buffer(output), *ids)

    def draw(self, batch_size: int) -> dict[str, list[bytes]] | None:
        """Pop an equal random share from every buffer, or None while any is below threshold."""
        shares = split_batch(batch_size, self.outputs)
        keys: list[str] = []
        for name in self.outputs:
            keys += [self.keys.buffer(name), self.keys.buffer_data(name)]
        res = self._draw(keys=keys, args=[self.threshold, *shares])
        if res is None:
            return None
        return {name: [row for row in rows if row is not None] for name, rows in zip(self.outputs, res, strict=True)}

    def clear(self) -> None:
        for name in self.outputs:
            self.r.delete(self.keys.buffer(name), self.keys.buffer_data(name))
