"""Per-output buffers in Redis: the training pool, with atomic, gated, rate-limited random draws.

A buffer is a set of sample ids (`SCARD` = fill, `SPOP`/`SRANDMEMBER` = random draw), one
string key per encoded row, a sorted set of the ids by insert time (oldest-first
eviction) and a hash with the replay limit's tokens and counters (`pipeline.serve.replay`). A
collector writes a set's rows as `incoming` keys; the server checks the set's manifest and
one Lua script compares every row with its checked head and length, renames the rows into
the buffer, adds the ids, adds the limit's tokens, evicts the oldest samples beyond
capacity and acknowledges the stream entry — all or nothing, so a crash never half-routes
a set and a row cannot change between check and routing. Ids are `{collector}/{set id}:{row}`,
so routing a set twice cannot duplicate a sample, and no collector's set id can collide with
another's.

No collector can crowd the others out: each one's ids also sit in a sorted set of its own
(`Keys.buffer_owned`), and a collector holding more than its quota of a buffer
(`collector_share` fair shares of the capacity, over the live collectors) has its own
oldest samples evicted, not the others'. A compromised machine flooding valid sets of its
own therefore turns over only its own part of the pool.

The trainer draws with one Lua script that checks every buffer against the start
threshold and the replay limit, and draws from all of them, or from none. With draw-and-
delete (`samples_per_insert = 1`) the script renames the drawn rows under a one-off prefix
with a TTL (the rows never pass through Lua, whose string conversion would cost more than
the whole network trip), then the trainer fetches and deletes them; a trainer that dies in
between leaves nothing behind for longer than the TTL. Above 1 the rows stay and the
script names them (distinct ids: a batch never holds a sample twice); one evicted in the
meantime is simply missing from that batch.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis

from pipeline.serve.replay import ReplayLimit, split_batch, start_threshold
from pipeline.wire.keys import SERVER_GROUP, Counter, Keys
from pipeline.wire.rows import row_head_size

DRAWN_TTL_S = 600
#: The collector name `Buffers.insert` stands in for.
INSERTED = "inserted"
#: What a draw found: batches, or why there are none.
DRAWN, FILLING, LIMITED = "ok", "filling", "limited"

# KEYS: per buffer the id set, then per buffer the order zset, then per buffer the replay hash.
# ARGV: threshold, drawn prefix, ttl, delete (1|0), then per buffer: row prefix, n, owned prefix.
# Returns {'filling'} when a buffer is below the threshold, {'limited'} when one lacks the
# tokens of the replay limit (draw-and-delete needs none: a sample drawn is gone), else
# {'ok', keys of buffer 1, keys of buffer 2, ...}.
_DRAW_LUA = """
local threshold, drawn, ttl, delete = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4] == '1'
local nb = #KEYS / 3
for i = 1, nb do
  if redis.call('SCARD', KEYS[i]) < threshold then
    return {'filling'}
  end
end
for i = 1, nb do
  local n = tonumber(ARGV[3 + 3 * i])
  if not delete and n > 0 and tonumber(redis.call('HGET', KEYS[2 * nb + i], 'tokens') or '0') < n then
    return {'limited'}
  end
end
local out = {'ok'}
for i = 1, nb do
  local prefix, n, owned = ARGV[2 + 3 * i], tonumber(ARGV[3 + 3 * i]), ARGV[4 + 3 * i]
  local got = {}
  if n > 0 then
    if delete then
      local ids = redis.call('SPOP', KEYS[i], n)
      for j, id in ipairs(ids) do
        local key = drawn .. i .. ':' .. id
        if redis.call('EXISTS', prefix .. id) == 1 then
          redis.call('RENAME', prefix .. id, key)
          redis.call('EXPIRE', key, ttl)
          got[#got + 1] = key
        end
        redis.call('ZREM', KEYS[nb + i], id)
        local owner = string.match(id, '^(.*)/')  -- none in ids routed before owners were kept
        if owner then
          redis.call('ZREM', owned .. owner, id)
        end
      end
    else
      for _, id in ipairs(redis.call('SRANDMEMBER', KEYS[i], n)) do
        got[#got + 1] = prefix .. id
      end
    end
    redis.call('HINCRBYFLOAT', KEYS[2 * nb + i], 'tokens', -#got)
    redis.call('HINCRBY', KEYS[2 * nb + i], 'drawn', #got)
  end
  out[#out + 1] = got
end
return out
"""


# KEYS: stream, buffer id set, counters, order zset, replay hash, the collector's owned zset.
# ARGV: group, entry id, 'copy' | 'rename', incoming prefix, buffer row prefix, set id, n,
# capacity, samples per insert, tolerance, the counters' sets-routed and samples-routed
# fields, the collector, its quota, the owned prefix, then per row: head, length.
# Returns {1, n, evicted} when routed, {0, i} when row i is missing or differs from its head,
# {2, i} when row i of this set id is already in the buffer (a set republished, by its own
# collector or under another's id: never renamed over what is there).
_ROUTE_LUA = """
local group, entry, mode = ARGV[1], ARGV[2], ARGV[3]
local src, dst, set_id, n = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local capacity, spi, tolerance = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local sets_field, samples_field = ARGV[11], ARGV[12]
local owner, quota, owned = ARGV[13], tonumber(ARGV[14]), ARGV[15]
set_id = owner .. '/' .. set_id
for i = 0, n - 1 do
  local key, head, len = src .. i, ARGV[16 + 2 * i], tonumber(ARGV[17 + 2 * i])
  -- a row of another type (a collector may write any) must be refused, not raise WRONGTYPE
  if redis.call('TYPE', key).ok ~= 'string' or redis.call('STRLEN', key) ~= len
      or redis.call('GETRANGE', key, 0, #head - 1) ~= head then
    return {0, i}
  end
  if redis.call('EXISTS', dst .. set_id .. ':' .. i) == 1 then
    return {2, i}
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local ids = {}
local function flush()
  redis.call('SADD', KEYS[2], unpack(ids))
  local scored = {}
  for _, id in ipairs(ids) do
    scored[#scored + 1] = now
    scored[#scored + 1] = id
  end
  redis.call('ZADD', KEYS[4], unpack(scored))
  redis.call('ZADD', KEYS[6], unpack(scored))
  ids = {}
end
for i = 0, n - 1 do
  if mode == 'copy' then
    redis.call('COPY', src .. i, dst .. set_id .. ':' .. i, 'REPLACE')
  else
    redis.call('RENAME', src .. i, dst .. set_id .. ':' .. i)
  end
  ids[#ids + 1] = set_id .. ':' .. i
  if #ids == 1000 then
    flush()
  end
end
if #ids > 0 then
  flush()
end
local tokens = tonumber(redis.call('HGET', KEYS[5], 'tokens') or '0') + n * spi
redis.call('HSET', KEYS[5], 'tokens', tostring(math.min(tokens, tolerance)))
redis.call('HINCRBY', KEYS[5], 'inserted', n)
local evicted = 0
local function evict(id)
  if redis.call('SREM', KEYS[2], id) == 1 then
    redis.call('UNLINK', dst .. id)
    evicted = evicted + 1
    return 1
  end
  return 0
end
-- evict up to `count` samples, the oldest of sorted set `order` first; `forget(id)` drops each
-- from the other sorted set that indexes it
local function evict_oldest(order, count, forget)
  while count > 0 do
    local oldest = redis.call('ZPOPMIN', order, math.min(count, 1000))
    if #oldest == 0 then
      break
    end
    for j = 1, #oldest, 2 do
      forget(oldest[j])
      count = count - evict(oldest[j])
    end
  end
end
-- over its quota, the collector's own oldest samples leave first; then the oldest beyond capacity
evict_oldest(KEYS[6], redis.call('ZCARD', KEYS[6]) - quota, function(id) redis.call('ZREM', KEYS[4], id) end)
evict_oldest(KEYS[4], redis.call('SCARD', KEYS[2]) - capacity, function(id)
  local holder = string.match(id, '^(.*)/')  -- none in ids routed before owners were kept
  if holder then
    redis.call('ZREM', owned .. holder, id)
  end
end)
if evicted > 0 then
  redis.call('HINCRBY', KEYS[5], 'evicted', evicted)
end
redis.call('XACK', KEYS[1], group, entry)
redis.call('HINCRBY', KEYS[3], sets_field, 1)
redis.call('HINCRBY', KEYS[3], samples_field, n)
return {1, n, evicted}
"""


@dataclass(frozen=True)
class Draw:
    """One draw: the rows per output, or none and why (`FILLING` or `LIMITED`)."""

    state: str
    rows: dict[str, list[bytes]] = field(default_factory=dict)


@dataclass
class Buffers:
    """Fill, routing, eviction and gated, rate-limited draws for the buffers of one run."""

    r: redis.Redis
    keys: Keys
    outputs: list[str]
    capacity: int
    start_fraction: float = 0.9
    limit: ReplayLimit = field(default_factory=ReplayLimit)
    #: fair shares of a buffer one collector may hold (0: no cap); see `collector_quota`
    collector_share: float = 0.0
    #: collectors the server saw alive in this shard at its last look (`ShardedBuffers.set_live_collectors`)
    live_collectors: int = 0

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

    def replay_stats(self) -> dict[str, dict[str, float]]:
        """Per output: the limit's banked `tokens` and the `inserted`, `drawn` and `evicted` totals."""
        pipe = self.r.pipeline(transaction=False)
        for name in self.outputs:
            pipe.hgetall(self.keys.buffer_replay(name))
        out = {}
        for name, raw in zip(self.outputs, pipe.execute(), strict=True):
            got = {k.decode(): float(v) for k, v in raw.items()}
            out[name] = {k: got.get(k, 0.0) for k in ("tokens", "inserted", "drawn", "evicted")}
        return out

    def wants_data(self) -> bool:
        """True while some buffer is below capacity or (samples staying after a draw) the
        trainer spent half its banked draws on one: while every buffer is full and the
        trainer lags the ratio, more data would only be evicted undrawn, and on a small
        machine the collectors' cores are better left to the trainer."""
        fills = self.fills()
        if any(fills[n] < self.capacity for n in self.outputs):
            return True
        if self.limit.delete_on_draw:
            return False
        return any(s["tokens"] < self.limit.tolerance / 2 for s in self.replay_stats().values())

    @property
    def collector_quota(self) -> int:
        """Samples of one output buffer a single collector may hold: `collector_share` fair
        shares of the capacity over the live collectors (all of it while one or none is known)."""
        if self.collector_share <= 0:
            return self.capacity
        return min(self.capacity, math.ceil(self.capacity * self.collector_share / max(1, self.live_collectors)))

    def route_set(self, output: str, stream: str, group: str, entry_id: str, collector: str, set_id: str,
                  heads: list[tuple[bytes, int]], copy: bool = False) -> str | None:
        """Move a checked set's incoming rows (the collector's own) into the buffer (evicting
        the collector's own oldest samples beyond its quota, then the oldest beyond capacity)
        and acknowledge its entry; `copy` leaves the incoming rows for another reader (the
        recorder). Returns None when routed, else why not."""
        args: list[object] = [group, entry_id, "copy" if copy else "rename",
                              self.keys.incoming(collector, set_id), self.keys.buffer_row_prefix(output), set_id,
                              len(heads),
                              self.capacity, self.limit.samples_per_insert, self.limit.tolerance,
                              Counter.sets_routed(output), Counter.samples_routed(output),
                              collector, self.collector_quota, self.keys.buffer_owned(output, "")]
        for head, length in heads:
            args += [head, length]
        keys = [stream, self.keys.buffer(output), self.keys.counters,
                self.keys.buffer_order(output), self.keys.buffer_replay(output),
                self.keys.buffer_owned(output, collector)]
        ok, index, *_ = self._route(keys=keys, args=args)
        if ok == 1:
            return None
        if ok == 2:
            return f"set {set_id} is already in the buffer (republished)"
        return f"row {index} is missing or differs from its header (expired?)"

    def insert(self, output: str, set_id: str, rows: list[bytes], ttl_s: int = 600,
               collector: str = INSERTED) -> None:
        """Put finished rows into a buffer the way routing does (limit, order, quota, eviction),
        for benches and tests that stand in for collectors and the server."""
        pipe = self.r.pipeline(transaction=False)
        for i, row in enumerate(rows):
            pipe.set(self.keys.incoming(collector, set_id, i), row, ex=ttl_s)
        pipe.execute()
        heads = [(row[: row_head_size(row)], len(row)) for row in rows]
        bad = self.route_set(output, self.keys.stream(output, collector), SERVER_GROUP, "0-0", collector, set_id,
                             heads)
        if bad is not None:
            raise ValueError(f"set {set_id} not inserted: {bad}")

    def draw(self, batch_size: int) -> Draw:
        """An equal random share from every buffer, or none while any is below the start
        threshold (`FILLING`) or short of the replay limit's tokens (`LIMITED`)."""
        return self.draw_shares(split_batch(batch_size, self.outputs))

    def draw_shares(self, shares: list[int]) -> Draw:
        """`shares[i]` random samples from output i's buffer, gated like `draw`."""
        args: list[object] = [self.threshold, self.keys.drawn(uuid.uuid4().hex), DRAWN_TTL_S,
                              int(self.limit.delete_on_draw)]
        for name, n in zip(self.outputs, shares, strict=True):
            args += [self.keys.buffer_row_prefix(name), n, self.keys.buffer_owned(name, "")]
        keys = ([self.keys.buffer(n) for n in self.outputs] + [self.keys.buffer_order(n) for n in self.outputs]
                + [self.keys.buffer_replay(n) for n in self.outputs])
        state, *res = self._draw(keys=keys, args=args)
        state = state.decode()
        if state != DRAWN:
            return Draw(state)
        drawn = [key for keys in res for key in keys]
        if not drawn:
            return Draw(DRAWN, {name: [] for name in self.outputs})
        pipe = self.r.pipeline(transaction=False)
        # by name, since a cluster's pipeline refuses multi-key `mget()`/`unlink()` (it cannot
        # know the keys share a slot; they do: the shard's)
        pipe.execute_command("MGET", *drawn)
        if self.limit.delete_on_draw:
            pipe.execute_command("UNLINK", *drawn)
        rows = iter(pipe.execute()[0])
        return Draw(DRAWN, {name: [row for row in (next(rows) for _ in keys) if row is not None]
                            for name, keys in zip(self.outputs, res, strict=True)})

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
            owned = [k.decode() for k in self.r.scan_iter(match=self.keys.buffer_owned(name, "*"), count=1000)]
            for key in [self.keys.buffer(name), self.keys.buffer_order(name), self.keys.buffer_replay(name), *owned]:
                self.r.delete(key)  # one by one: a cluster's client refuses a multi-key DELETE
