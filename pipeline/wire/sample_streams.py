"""Every collector's own sample streams, found by a scan, so the server and the recorder read them all.

A collector appends its manifests to a stream of its own per output (`Keys.stream(output,
collector)`): its ACL covers that stream only, so `XADD ... MAXLEN 0` or an entry with
the largest id spoils nothing but its own transport. A reader (a consumer group: the
server's, the recorder's) finds the streams by scanning the `stream:` family every
`rescan_s` and creates its group on each new one from id 0, so nothing a collector
published before it was noticed is missed. Only streams of the configured outputs count:
a machine cannot make a reader follow thousands of made-up streams, and the others are
deleted (nobody would ever trim them).
"""

from __future__ import annotations

import time

import redis
import structlog

from pipeline.wire.keys import Keys

log = structlog.get_logger(__name__)
RESCAN_S = 2.0


class SampleStreams:
    """The sample streams one consumer group reads, kept current with `refresh()`."""

    def __init__(self, r: redis.Redis, keys: Keys, outputs: list[str], group: str, rescan_s: float = RESCAN_S) -> None:
        self.r, self.keys, self.group, self.rescan_s = r, keys, group, rescan_s
        self.outputs = list(outputs)
        self.known: set[str] = set()
        self._scanned_at = -float("inf")

    def reset(self) -> None:
        """Redis may have restarted (groups gone): find and create everything again now."""
        self.known.clear()
        self._scanned_at = -float("inf")

    def refresh(self, force: bool = False) -> list[str]:
        """Scan for new streams when due (or `force`), create the group on each; returns the new ones."""
        if not force and time.monotonic() - self._scanned_at < self.rescan_s:
            return []
        self._scanned_at = time.monotonic()
        found, junk = set(), []
        for key in self.r.scan_iter(match=self.keys.streams_of("*"), count=1000, _type="stream"):
            name = key.decode()
            collector, output = self.keys.stream_parts(name)
            if output in self.outputs and collector:
                found.add(name)
            else:
                junk.append(name)
        if junk:  # nobody reads or trims these: unbounded memory a machine could fill
            self.r.unlink(*junk)
            log.warning("junk_streams_deleted", streams=junk[:10], count=len(junk))
        new = sorted(found - self.known)
        for name in new:
            self.create_group(name)
        self.known |= set(new)
        self.known &= found  # a stream deleted (drained, or by an admin) is no longer read
        return new

    def create_group(self, stream: str) -> None:
        try:
            self.r.xgroup_create(stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_map(self) -> dict[str, str]:
        """`{stream: ">"}` for XREADGROUP: every known stream's new entries."""
        return {name: ">" for name in sorted(self.known)}

    def of_output(self, output: str) -> list[str]:
        return sorted(s for s in self.known if self.keys.stream_parts(s)[1] == output)
