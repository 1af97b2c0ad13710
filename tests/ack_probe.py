"""A collector's publishing path at a steady rate, recording every acknowledged XADD.

`python -m tests.ack_probe OUT.jsonl SECONDS RATE` publishes one-sample sets through the
real `SetPublisher` (bounded backlog, backoff) for SECONDS at RATE sets/s, then flushes
its backlog (waiting for Redis) and writes one JSON line per acknowledged set (rows and
manifest, one MULTI):
`{"id": stream entry id, "t": wall time of the acknowledgement}`, then a summary line.
The fault tests restart Redis meanwhile and compare these ids with what Redis kept.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.collect.episode import SetPublisher
from pipeline.wire.redis_conn import Backoff, connect, keys_from_env
from tests.factories import sample_set, tiny_config


def main(out: Path, seconds: float, rate: float) -> None:
    r, keys = connect(), keys_from_env()
    acks: list[tuple[str, float]] = []
    publisher = SetPublisher(r, keys, stream_maxlen=1_000_000, max_backlog=100_000)
    send = publisher._send

    def recording_send(*args: Any) -> Any:
        entry = send(*args)  # raises on a connection error: not acknowledged
        acks.append((entry.decode() if isinstance(entry, bytes) else str(entry), time.time()))
        return entry

    publisher._send = recording_send  # type: ignore[method-assign]
    s = sample_set(tiny_config(), "steering", 1)
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < seconds:
        publisher.publish(s)
        sent += 1
        time.sleep(max(0.0, start + sent / rate - time.monotonic()))
    backoff = Backoff(cap=1.0)
    while not publisher.flush(force=True):
        time.sleep(backoff.next_delay())
    with out.open("w") as fh:
        for entry, t in acks:
            fh.write(json.dumps({"id": entry, "t": t}) + "\n")
        fh.write(json.dumps({"summary": True, "sent": sent, "acknowledged": len(acks),
                             "dropped": publisher.dropped}) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]))
