"""Per-output buffers in Redis: the training pool, with atomic gated random draws.

A buffer is a set of sample ids (`SCARD` = fill, `SPOP` = random draw) plus one string
key per encoded row. A collector writes a set's rows as `incoming` keys; the server checks
the set's manifest and one Lua script compares every row with its checked head and length,
renames the rows into the buffer, adds the ids and acknowledges the stream entry — all or
nothing, so a crash never half-routes a set and a row cannot change between check and
routing. Ids are `{set id}:{row}`, so routing a set twice cannot duplicate a sample. The trainer draws with one Lua script that checks every buffer
against the start threshold and pops from all of them, or from none; the script only
renames the drawn rows under a one-off prefix with a TTL (the rows never pass through
Lua, whose string conversion would cost more than the whole network trip), then the
trainer fetches and deletes them. A trainer that dies in between leaves nothing behind
for longer than the TTL.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from pipeline.keys import Keys

DRAWN_TTL_S = 600

# KEYS: set1, set2, ...   ARGV: threshold, drawn prefix, ttl, then per buffer: row prefix, n.
# Returns nil when any buffer is below the threshold, else per buffer the renamed row keys.
_DRAW_LUA = """
local threshold, drawn, ttl = tonumber(ARGV[1]), ARGV[2], ARGV[3]
for i = 1, #KEYS do
  if redis.call('SCARD', KEYS[i]) < threshold then
    return false
  end
end
local out = {}
for i = 1, #KEYS do
  local prefix, n = ARGV[2 + 2 * i], tonumber(ARGV[3 + 2 * i])
  local got = {}
  if n > 0 then
    for _, id in ipairs(redis.call('SPOP', KEYS[i], n)) do
      local key = drawn .. i .. ':' .. id
      if redis.call('EXISTS', prefix .. id) == 1 then
        redis.call('RENAME', prefix .. id, key)
        redis.call('EXPIRE', key, ttl)
        got[#got + 1] = key
      end
    end
  end
  out[i] = got
end
return out
"""


# KEYS: stream, buffer id set, counters.  ARGV: group, entry id, output, 'copy' | 'rename',
# incoming prefix, buffer row prefix, set id, n, then per row: head, length.
# Returns {1, n} when routed, {0, i} when row i is missing or differs from its head.
_ROUTE_LUA = """
local group, entry, output, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local src, dst, set_id, n = ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8])
for i = 0, n - 1 do
  local key, head, len = src .. i, ARGV[9 + 2 * i], tonumber(ARGV[10 + 2 * i])
  -- a row of another type (a collector may write any) must be refused, not raise WRONGTYPE
  if redis.call('TYPE', key).ok ~= 'string' or redis.call('STRLEN', key) ~= len
      or redis.call('GETRANGE', key, 0, #head - 1) ~= head then
    return {0, i}
  end
end
local ids = {}
for i = 0, n - 1 do
  if mode == 'copy' then
    redis.call('COPY', src .. i, dst .. set_id .. ':' .. i, 'REPLACE')
  else
    redis.call('RENAME', src .. i, dst .. set_id .. ':' .. i)
  end
  ids[#ids + 1] = set_id .. ':' .. i
  if #ids == 1000 then
    redis.call('SADD', KEYS[2], unpack(ids))
    ids = {}
  end
end
if #ids > 0 then
  redis.call('SADD', KEYS[2], unpack(ids))
end
redis.call('XACK', KEYS[1], group, entry)
redis.call('HINCRBY', KEYS[3], 'sets_routed:' .. output, 1)
redis.call('HINCRBY', KEYS[3], 'samples_routed:' .. output, n)
return {1, n}
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
        self._route = self.r.register_script(_ROUTE_LUA)

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

    def route_set(self, output: str, stream: str, group: str, entry_id: str, set_id: str,
                  heads: list[tuple[bytes, int]], copy: bool = False) -> int | None:
        """Move a checked set's incoming rows into the buffer and acknowledge its entry;
        `copy` leaves the incoming rows for another reader (the recorder). Returns None when
        routed, else the index of the first row that is missing or differs from its head."""
        args: list[object] = [group, entry_id, output, "copy" if copy else "rename",
                              self.keys.incoming(set_id), self.keys.buffer_row_prefix(output), set_id, len(heads)]
        for head, length in heads:
            args += [head, length]
        ok, index = self._route(keys=[stream, self.keys.buffer(output), self.keys.counters], args=args)
        return None if ok else int(index)

    def add_rows_pipeline(self, pipe: redis.client.Pipeline, output: str, ids: list[str], rows: list[bytes]) -> None:
        """Queue the writes that put rows into a buffer (the caller's MULTI makes it atomic)."""
        if not ids:
            return
        pipe.mset({self.keys.buffer_row(output, i): row for i, row in zip(ids, rows, strict=True)})
        pipe.sadd(self.keys.buffer(output), *ids)

    def draw(self, batch_size: int) -> dict[str, list[bytes]] | None:
        """Pop an equal random share from every buffer, or None while any is below threshold."""
        shares = split_batch(batch_size, self.outputs)
        args: list[object] = [self.threshold, self.keys.drawn(uuid.uuid4().hex), DRAWN_TTL_S]
        for name, n in zip(self.outputs, shares, strict=True):
            args += [self.keys.buffer_row_prefix(name), n]
        res = self._draw(keys=[self.keys.buffer(name) for name in self.outputs], args=args)
        if res is None:
            return None
        drawn = [key for keys in res for key in keys]
        if not drawn:
            return {name: [] for name in self.outputs}
        pipe = self.r.pipeline(transaction=False)
        pipe.mget(drawn)
        pipe.unlink(*drawn)
        rows = iter(pipe.execute()[0])
        return {name: [row for row in (next(rows) for _ in keys) if row is not None]
                for name, keys in zip(self.outputs, res, strict=True)}

    def rows(self, output: str, count: int = 200) -> Iterator[bytes]:
        """Every row of a buffer, in no order, without removing them (for inspection)."""
        ids = list(self.r.sscan_iter(self.keys.buffer(output), count=count))
        for start in range(0, len(ids), count):
            chunk = [self.keys.buffer_row(output, i.decode()) for i in ids[start : start + count]]
            yield from (row for row in self.r.mget(chunk) if row is not None)

    def clear(self) -> None:
        for name in self.outputs:
            ids = [i.decode() for i in self.r.sscan_iter(self.keys.buffer(name), count=1000)]
            for start in range(0, len(ids), 1000):
                self.r.unlink(*(self.keys.buffer_row(name, i) for i in ids[start : start + 1000]))
            self.r.delete(self.keys.buffer(name))
