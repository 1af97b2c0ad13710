"""The recorder: its own consumer group on the sample streams, writing every set to disk.

At-least-once like the server, and nothing acknowledged is ever lost: entries are
buffered per (episode, output) and acknowledged only after the chunk holding them is
fsynced and its sidecar committed. A recorder that dies re-reads its own pending entries
on start (and reclaims those of dead recorders with XAUTOCLAIM); entry ids already in a
committed sidecar are acknowledged without being written twice. Bad entries are
counted, logged and acknowledged (the server dead-letters them under its own group).

Entries are manifests; the rows are the set's `incoming` keys, which the server copies
(instead of renaming) while a recorder group exists. Once a chunk is on disk the recorder
deletes the incoming rows the server has finished with; the others expire.

Under a `[buffers] frame_codec` other than raw the frames are written as they came, coded
(`frames_blob` and `frames_end` columns, the codec in the sidecar): never decoded here,
decoded by offline training when a sample is read (`pipeline.data.chunks`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis
import structlog

from pipeline.config import Config
from pipeline.data.chunks import ChunkMeta, ChunkWriter, DiskBudget, remove_orphans
from pipeline.errors import CodecError, ConfigError, SampleError
from pipeline.process import wait_for_config
from pipeline.train.augment import minimap_box_for
from pipeline.wire import codec
from pipeline.wire import frames as frames_mod
from pipeline.wire.config_store import fetch_config
from pipeline.wire.consumer_group import PendingRecovery
from pipeline.wire.keys import RECORDER_GROUP, SERVER_GROUP, Counter, Keys
from pipeline.wire.manifest import META_FIELD, SET_ID, SetMeta, decode_entry, decode_entry_coded
from pipeline.wire.presence import Presence
from pipeline.wire.redis_conn import CONNECTION_ERRORS, Backoff
from pipeline.wire.sample_streams import SampleStreams
from pipeline.wire.schema import FIELDS, ContextSpec, SampleSchema

log = structlog.get_logger(__name__)
_META = META_FIELD.encode()


@dataclass
class _Pending:
    """Rows read but not yet on disk, with the entry ids they came from (to XACK later)."""

    stream: str
    collector: str
    environment: dict[str, Any]
    started: float
    entries: list[str] = field(default_factory=list)
    incoming: list[list[str]] = field(default_factory=list)  # per entry, its rows' keys
    columns: list[dict[str, np.ndarray]] = field(default_factory=list)
    coded: list[bytes] = field(default_factory=list)  # per row its coded frames (a coded config)
    rows: int = 0


@dataclass
class RecorderStats:
    entries: int = 0
    rows: int = 0
    chunks: int = 0
    duplicates: int = 0
    rejected: int = 0
    rotated: int = 0
    rows_gone: int = 0


class Recorder:
    """One recorder process's work: `run` is its loop, the other methods its steps."""

    def __init__(self, r: redis.Redis, keys: Keys, outputs: list[str], schema: SampleSchema, root: Path,
                 fps: float, context: ContextSpec, minimap_box: list[float] | None = None,
                 budget_bytes: int | None = None, consumer: str = "recorder-1", chunk_rows: int = 256,
                 chunk_age_s: float = 5.0, compress: bool = False,
                 max_bytes: int = codec.DEFAULT_MAX_BYTES) -> None:
        self.r = r
        self.keys = keys
        self.outputs = outputs
        self.schema = schema
        self.root = Path(root)
        self.consumer = consumer
        self.chunk_rows = chunk_rows
        self.chunk_age_s = chunk_age_s
        self.max_bytes = max_bytes
        self.static_meta = {
            "fps": fps, "source": "streams", "context": context.__dict__, "minimap_box": minimap_box,
            "frame_size": [schema.width, schema.height],
        }
        removed = remove_orphans(self.root)
        if removed:
            log.info("recording_orphans_removed", files=removed)
        self.writer = ChunkWriter(self.root, compress=compress)
        self.budget = DiskBudget(self.root, budget_bytes)
        #: entry ids already committed, per stream (restart: skip what a sidecar already holds)
        self.recorded: dict[str, set[str]] = {}
        for meta in self.budget.chunks:
            if meta.kind == "samples" and meta.output is not None:
                self.recorded.setdefault(keys.stream(meta.output, meta.collector), set()).update(meta.entries)
        self.pending: dict[tuple[str, str], _Pending] = {}
        self.stats = RecorderStats()
        self.recovery = PendingRecovery(r, RECORDER_GROUP, consumer, event_prefix="recorder_")
        self.streams = SampleStreams(r, keys, outputs, RECORDER_GROUP)

    @classmethod
    def for_config(cls, r: redis.Redis, keys: Keys, cfg: Config, root: Path, budget_bytes: int | None = None,
                   **options: Any) -> Recorder:
        """A recorder of the active config's outputs, frames and context."""
        _one_shard(cfg)
        return cls(r, keys, cfg.output_names(), SampleSchema.from_config(cfg), root, cfg.game.fps,
                   ContextSpec.from_inputs(cfg.inputs, cfg.game.fps), minimap_box_for(cfg.game), budget_bytes,
                   max_bytes=int(cfg.buffers.max_message_mb * 2**20), **options)

    def follow(self, cfg: Config) -> None:
        """Record under a newly published config from now on."""
        _one_shard(cfg)
        self.reconfigure(cfg.output_names(), SampleSchema.from_config(cfg), cfg.game.fps,
                         ContextSpec.from_inputs(cfg.inputs, cfg.game.fps), minimap_box_for(cfg.game))

    def run(self, stop: threading.Event, presence: Presence, config_version: int,
            deadline: float | None = None) -> None:
        """Record until `stop` (or the monotonic `deadline`); once a second report and follow a
        newly published config. A Redis outage or refusal is waited out, never fatal; what is
        buffered is written at the end (entries not acknowledged stay pending for the next start)."""
        backoff, ready, last_beat = Backoff(), False, 0.0
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                if not ready:
                    self.setup()
                    ready = True
                self.record_once(block_ms=200)
                if time.monotonic() - last_beat >= 1.0:
                    presence.beat(**self.status())
                    last_beat = time.monotonic()
                    fetched = fetch_config(self.r, self.keys)
                    if fetched is not None and fetched[1] != config_version:  # the server published a new config
                        cfg, config_version = fetched
                        self.follow(cfg)
                        log.info("recorder_reconfigured", version=config_version, outputs=cfg.output_names())
                backoff.reset()
            except (*CONNECTION_ERRORS, redis.RedisError) as exc:
                ready = False
                backoff.wait_out(exc, "recorder", stop)
        try:
            self.flush(force=True)
            presence.leave()
        except (*CONNECTION_ERRORS, redis.RedisError) as exc:
            log.warning("recorder_final_flush_failed", error=str(exc))
        log.info("recorder_stopped", **self.status())

    def reconfigure(self, outputs: list[str], schema: SampleSchema, fps: float, context: ContextSpec,
                    minimap_box: list[float] | None) -> None:
        """A new active config: write what is buffered under the old one, then validate with the new."""
        self.flush(force=True)
        self.outputs, self.schema = outputs, schema
        self.static_meta.update(fps=fps, context=context.__dict__, minimap_box=minimap_box,
                                frame_size=[schema.width, schema.height])
        self.streams.outputs = list(outputs)
        self.setup()

    def setup(self) -> None:
        """Create the recorder group on every stream (from the start: record what is in transport)."""
        self.streams.reset()
        self.streams.refresh()
        self.recovery.reset()

    # -- reading ------------------------------------------------------------------------------
    def record_once(self, block_ms: int = 500, count: int = 32) -> int:
        """Read one round of entries, then write the chunks that are due; returns entries read."""
        if self.streams.refresh():
            self.recovery.reset()
        streams = sorted(self.streams.known)
        handled = self.recovery.recover(streams, self.handle_entry)
        handled += self.recovery.read_new(streams, self.handle_entry, count, block_ms)
        self.flush(force=False)
        return handled

    def handle_entry(self, stream: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> bool:
        """Queue one entry's rows for its chunk; a bad or already-recorded entry is acknowledged."""
        entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        collector, output = self.keys.stream_parts(stream)
        if entry in self.recorded.get(stream, ()):
            self.r.xack(stream, RECORDER_GROUP, entry)
            self.stats.duplicates += 1
            return False
        if any(entry in p.entries for p in self.pending.values() if p.stream == stream):
            return False  # re-delivered while still buffered: it is acknowledged with its chunk
        try:
            meta = SetMeta.read(fields.get(_META, b""))  # once per entry: the row lookup and the check
            full, incoming = self._with_rows(collector, fields, meta)
            coded: list[bytes] = []
            if self.schema.frame_codec == frames_mod.RAW:
                sample_set = decode_entry(full, self.schema, self.outputs, self.max_bytes, meta)
            else:
                sample_set, coded = decode_entry_coded(full, self.schema, self.outputs, self.max_bytes, meta)
            if sample_set.output != output:
                raise SampleError(f"set for output {sample_set.output!r} arrived on the {output!r} stream")
            if sample_set.collector != collector:
                raise SampleError(f"set of collector {sample_set.collector!r} arrived on {collector!r}'s stream")
        except (CodecError, SampleError) as exc:
            log.warning("recorder_entry_rejected", stream=stream, entry=entry, reason=str(exc))
            pipe = self.r.pipeline(transaction=True)
            pipe.xack(stream, RECORDER_GROUP, entry)
            pipe.hincrby(self.keys.counters, Counter.RECORDER_REJECTED, 1)
            pipe.execute()
            self.stats.rejected += 1
            return False
        key = (sample_set.episode, output)
        pending = self.pending.get(key)
        if pending is None:
            pending = self.pending[key] = _Pending(stream, sample_set.collector, sample_set.environment,
                                                   time.monotonic())
        pending.entries.append(entry)
        pending.incoming.append(incoming)
        pending.columns.append({name: sample_set.columns[name] for name in FIELDS if not coded or name != "frames"})
        pending.coded.extend(coded)
        pending.rows += len(sample_set)
        self.stats.entries += 1
        if pending.rows >= self.chunk_rows:
            self._write(key)
        return True

    def _with_rows(self, collector: str, fields: dict[bytes, bytes], meta: SetMeta) -> tuple[dict[bytes, bytes], list[str]]:
        """The set in full: the manifest's meta with the rows from their incoming keys."""
        set_id = meta.set_id
        if set_id is None:
            raise SampleError(f"manifest without a set_id matching {SET_ID.pattern}")
        names = [name for name in fields if name != _META]
        keys = [self.keys.incoming(collector, set_id, name.decode(errors="replace")[1:]) for name in names]
        rows = self.r.mget(keys) if keys else []
        if any(row is None for row in rows):
            self.stats.rows_gone += 1
            raise SampleError("rows gone: routed before this recorder read them, or expired")
        return {_META: fields[_META], **dict(zip(names, rows, strict=True))}, keys

    def _release(self, stream: str, entries: list[str], incoming: list[list[str]]) -> None:
        """Delete the incoming rows of entries the server has routed (acknowledged)."""
        server = next((g for g in self.r.xinfo_groups(stream) if g["name"] in (SERVER_GROUP, SERVER_GROUP.encode())),
                      None)
        if server is None:
            return
        last = _stream_id(server["last-delivered-id"])
        pending = {_stream_id(p["message_id"]) for p in self.r.xpending_range(
            stream, SERVER_GROUP, min=min(entries, key=_stream_id), max=max(entries, key=_stream_id), count=10_000)}
        done = [keys for entry, keys in zip(entries, incoming, strict=True)
                if _stream_id(entry) <= last and _stream_id(entry) not in pending]
        keys = [k for ks in done for k in ks]
        for start in range(0, len(keys), 1000):
            self.r.unlink(*keys[start : start + 1000])

    # -- writing ------------------------------------------------------------------------------
    def flush(self, force: bool = True) -> int:
        """Write the chunks that are full or old (all of them when `force`); returns chunks written."""
        now = time.monotonic()
        due = [k for k, p in self.pending.items() if force or now - p.started >= self.chunk_age_s]
        for key in due:
            self._write(key)
        return len(due)

    def _write(self, key: tuple[str, str]) -> ChunkMeta:
        pending = self.pending.pop(key)
        episode, output = key
        names = [name for name in FIELDS if name in pending.columns[0]]
        columns = {name: np.concatenate([c[name] for c in pending.columns]) for name in names}
        coding: dict[str, Any] = {}
        if pending.coded:  # coded frames, as they came: one blob and each row's end in it
            columns["frames_blob"] = np.frombuffer(b"".join(pending.coded), np.uint8)
            columns["frames_end"] = np.cumsum([len(c) for c in pending.coded], dtype=np.int64)
            coding = {"frame_codec": self.schema.frame_codec}
        meta = self.writer.write("samples", episode, output, columns, {
            **self.static_meta, "output": output, "collector": pending.collector,
            "environment": pending.environment, "entries": pending.entries, **coding,
        })
        # durable on disk: only now may the entries leave the group's pending list (and if
        # the XACK fails, a re-read finds them in `recorded` and does not write them twice)
        stream = pending.stream
        self.recorded.setdefault(stream, set()).update(pending.entries)
        pipe = self.r.pipeline(transaction=True)
        pipe.xack(stream, RECORDER_GROUP, *pending.entries)
        pipe.hincrby(self.keys.counters, Counter.recorded_sets(output), len(pending.entries))
        pipe.hincrby(self.keys.counters, Counter.recorded_samples(output), pending.rows)
        pipe.execute()
        self._release(stream, pending.entries, pending.incoming)
        for old in self.budget.add(meta):
            if old.output is not None:
                self.recorded.get(self.keys.stream(old.output, old.collector), set()).difference_update(old.entries)
            self.stats.rotated += 1
        self.stats.chunks += 1
        self.stats.rows += pending.rows
        log.debug("recorder_chunk_written", episode=episode, output=output, rows=pending.rows, file=meta.file)
        return meta

    def status(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "entries": self.stats.entries,
            "samples": self.stats.rows,
            "chunks": self.stats.chunks,
            "rejected": self.stats.rejected,
            "duplicates": self.stats.duplicates,
            "rotated": self.stats.rotated,
            "rows_gone": self.stats.rows_gone,
            "disk_mb": round(self.budget.total / 2**20, 2),
            "pending_sets": sum(len(p.entries) for p in self.pending.values()),
        }


def record_streams(r: redis.Redis, keys: Keys, root: Path, stop: threading.Event, budget_bytes: int | None = None,
                   consumer: str = "recorder-1", deadline: float | None = None, **options: Any) -> None:
    """`charles record streams`: wait for the server's config, then record under it (and
    under every config published later) until `stop` or the monotonic `deadline`."""
    fetched = wait_for_config(r, keys, stop)
    if fetched is None:
        return
    cfg, config_version = fetched
    recorder = Recorder.for_config(r, keys, cfg, root, budget_bytes, consumer=consumer, **options)
    recorder.run(stop, Presence(r, keys, "recorder", consumer), config_version, deadline)


def _one_shard(cfg: Config) -> None:
    """The recorder reads one set of streams; a sharded run's (`[buffers] shards` > 1) are
    spread over hash-tagged keys it does not follow yet: say so rather than record nothing."""
    if cfg.buffers.shards > 1:
        raise ConfigError(f"[buffers] shards = {cfg.buffers.shards}: charles record streams records an unsharded "
                          "run only (docs/scaling.md)")


def _stream_id(value: bytes | str) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)
