"""What a reader of a stream consumer group (the server, the recorder) owes after a crash.

Two kinds of entries are read but never acknowledged: this consumer's own, read before it
stopped, and those of a reader of the same group that died (claimed once idle for
RECLAIM_IDLE_MS). Both go to the reader's own `handle(stream, entry_id, fields)`, which
acknowledges them; an entry trimmed from the stream while pending has no fields left and
is acknowledged here, since nothing of it remains to handle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
import structlog

log = structlog.get_logger(__name__)

RECLAIM_IDLE_MS = 60_000
_BATCH = 64

Handle = Callable[[str, Any, dict[bytes, bytes]], Any]


class PendingRecovery:
    """Own pending entries once per (re)start, abandoned ones every RECLAIM_IDLE_MS / 2."""

    def __init__(self, r: redis.Redis, group: str, consumer: str, event_prefix: str = "") -> None:
        self.r, self.group, self.consumer = r, group, consumer
        self.event_prefix = event_prefix  # log events: `{prefix}reclaimed_own_pending`, ...
        self.own_done = False
        self._last_reclaim = 0.0

    def reset(self) -> None:
        """The groups were (re)created: look at this consumer's own pending entries again."""
        self.own_done = False

    def read_new(self, streams: list[str], handle: Handle, count: int, block_ms: int | None) -> int:
        """Read entries of `streams` never delivered to the group (waiting up to `block_ms`,
        None: not at all) and give each to `handle`; returns how many."""
        if not streams:
            if block_ms:
                time.sleep(block_ms / 1000)
            return 0
        resp = self.r.xreadgroup(self.group, self.consumer, {name: ">" for name in streams}, count=count,
                                 block=block_ms)
        handled = 0
        for stream, entries in resp or []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            for entry_id, fields in entries:
                handle(name, entry_id, fields)
                handled += 1
        return handled

    def recover(self, streams: list[str], handle: Handle) -> int:
        """Handle what is due now in `streams`; returns the number of entries handled."""
        handled = 0
        if not self.own_done:
            handled += self._own_pending(streams, handle)
            self.own_done = True
        if time.monotonic() - self._last_reclaim > RECLAIM_IDLE_MS / 2000:
            handled += self._abandoned(streams, handle)
            self._last_reclaim = time.monotonic()
        return handled

    def _own_pending(self, streams: list[str], handle: Handle) -> int:
        handled = 0
        for stream in streams:
            last = "0"
            while True:
                resp = self.r.xreadgroup(self.group, self.consumer, {stream: last}, count=_BATCH)
                entries = resp[0][1] if resp else []
                if not entries:
                    break
                for entry_id, fields in entries:
                    last = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    self._handle(stream, entry_id, fields, handle)
                    handled += 1
        if handled:
            log.info(f"{self.event_prefix}reclaimed_own_pending", entries=handled)
        return handled

    def _abandoned(self, streams: list[str], handle: Handle) -> int:
        handled = 0
        for stream in streams:
            _next, claimed, *_ = self.r.xautoclaim(stream, self.group, self.consumer, RECLAIM_IDLE_MS, "0-0",
                                                   count=_BATCH)
            for entry_id, fields in claimed:
                self._handle(stream, entry_id, fields, handle)
                handled += 1
        if handled:
            log.info(f"{self.event_prefix}reclaimed_abandoned", entries=handled)
        return handled

    def _handle(self, stream: str, entry_id: Any, fields: dict[bytes, bytes], handle: Handle) -> None:
        if fields:
            handle(stream, entry_id, fields)
        else:  # trimmed from the stream while pending: nothing left of it
            self.r.xack(stream, self.group, entry_id)
