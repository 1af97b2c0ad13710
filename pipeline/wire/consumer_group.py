"""What a reader of a stream consumer group (the server, the recorder) owes after a crash.

Two kinds of entries are read but never acknowledged: this consumer's own, read before it
stopped, and those of a reader of the same group that died (claimed once idle for
RECLAIM_IDLE_MS). Both go to the reader's own `handle(output, entry_id, fields)`, which
acknowledges them; an entry trimmed from the stream while pending has no fields left and
is acknowledged here, since nothing of it remains to handle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
import structlog

from pipeline.wire.keys import Keys

log = structlog.get_logger(__name__)

RECLAIM_IDLE_MS = 60_000
_BATCH = 64

Handle = Callable[[str, Any, dict[bytes, bytes]], Any]


class PendingRecovery:
    """Own pending entries once per (re)start, abandoned ones every RECLAIM_IDLE_MS / 2."""

    def __init__(self, r: redis.Redis, keys: Keys, group: str, consumer: str, event_prefix: str = "") -> None:
        self.r, self.keys, self.group, self.consumer = r, keys, group, consumer
        self.event_prefix = event_prefix  # log events: `{prefix}reclaimed_own_pending`, ...
        self.own_done = False
        self._last_reclaim = 0.0

    def reset(self) -> None:
        """The groups were (re)created: look at this consumer's own pending entries again."""
        self.own_done = False

    def create_groups(self, outputs: list[str]) -> None:
        """Create the group on every output's stream, reading from its start (what is in
        transport); an existing group is kept. Then look at own pending entries again."""
        for name in outputs:
            try:
                self.r.xgroup_create(self.keys.stream(name), self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self.reset()

    def read_new(self, outputs: list[str], handle: Handle, count: int, block_ms: int | None) -> int:
        """Read entries never delivered to the group (waiting up to `block_ms`, None: not at
        all) and give each to `handle`; returns how many."""
        streams = {self.keys.stream(name): ">" for name in outputs}
        resp = self.r.xreadgroup(self.group, self.consumer, streams, count=count, block=block_ms)
        handled = 0
        for stream, entries in resp or []:
            output = self.keys.output_of_stream(stream)
            for entry_id, fields in entries:
                handle(output, entry_id, fields)
                handled += 1
        return handled

    def recover(self, outputs: list[str], handle: Handle) -> int:
        """Handle what is due now; returns the number of entries handled."""
        handled = 0
        if not self.own_done:
            handled += self._own_pending(outputs, handle)
            self.own_done = True
        if time.monotonic() - self._last_reclaim > RECLAIM_IDLE_MS / 2000:
            handled += self._abandoned(outputs, handle)
            self._last_reclaim = time.monotonic()
        return handled

    def _own_pending(self, outputs: list[str], handle: Handle) -> int:
        handled = 0
        for name in outputs:
            stream, last = self.keys.stream(name), "0"
            while True:
                resp = self.r.xreadgroup(self.group, self.consumer, {stream: last}, count=_BATCH)
                entries = resp[0][1] if resp else []
                if not entries:
                    break
                for entry_id, fields in entries:
                    last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    self._handle(name, stream, entry_id, fields, handle)
                    handled += 1
        if handled:
            log.info(f"{self.event_prefix}reclaimed_own_pending", entries=handled)
        return handled

    def _abandoned(self, outputs: list[str], handle: Handle) -> int:
        handled = 0
        for name in outputs:
            stream = self.keys.stream(name)
            _next, claimed, *_ = self.r.xautoclaim(stream, self.group, self.consumer, RECLAIM_IDLE_MS, "0-0",
                                                   count=_BATCH)
            for entry_id, fields in claimed:
                self._handle(name, stream, entry_id, fields, handle)
                handled += 1
        if handled:
            log.info(f"{self.event_prefix}reclaimed_abandoned", entries=handled)
        return handled

    def _handle(self, output: str, stream: str, entry_id: Any, fields: dict[bytes, bytes], handle: Handle) -> None:
        if fields:
            handle(output, entry_id, fields)
        else:  # trimmed from the stream while pending: nothing left of it
            self.r.xack(stream, self.group, entry_id)
