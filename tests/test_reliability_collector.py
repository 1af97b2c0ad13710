"""Fault 4: a collector killed (SIGKILL) in the middle of an episode.

Proves: rq fails the orphaned job visibly (FailedJobRegistry, AbandonedJobError) within
the collector's job heartbeat TTL instead of leaving it "started" for the whole job
timeout; the server keeps handing out episodes to a new collector meanwhile; and no
partial sample set reaches a buffer (a set is one XADD: whole or absent).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from pipeline.config import load_config
from pipeline.wire.keys import COLLECT_QUEUE, Keys
from pipeline.wire.local_redis import RedisServer
from pipeline.wire.manifest import EntryView, check_entry
from pipeline.wire.schema import SampleSchema
from tests.factories import stored_rows
from tests.faults import (
    RELIABILITY_CONFIG,
    FaultRoles,
    status,
    unique_prefix,
    wait_for,
    write_config,
)
from workers.collector import JOB_HEARTBEAT_TTL_S

pytestmark = pytest.mark.slow


def test_collector_killed_mid_job(redis_server: RedisServer, tmp_path: Path) -> None:
    keys = Keys(unique_prefix("collector-kill"))
    r = redis_server.client()
    # keep every routed set in the streams (to check them) and never fill up (so episodes keep coming)
    cfg = load_config(RELIABILITY_CONFIG, overrides={"buffers": {"stream_keep": 100_000, "capacity": 100_000}})
    config = write_config(tmp_path / "keep_streams.toml", cfg)
    queue = Queue(keys.queue(COLLECT_QUEUE), connection=r, serializer=JSONSerializer)
    started, failed = StartedJobRegistry(queue=queue), FailedJobRegistry(queue=queue)
    roles = FaultRoles(redis_server.url, keys.prefix, tmp_path)
    try:
        roles.start("server", "server", "--config", str(config))
        roles.start("collector", "collector")

        def mid_job() -> list[str]:
            jobs = started.get_job_ids(cleanup=False)
            busy = [s for s in status(r, keys, "collector") if s.get("state") == "collecting"]
            return jobs if jobs and busy and int(busy[0].get("published", 0)) > 0 else []

        first = wait_for(lambda: r.xlen(keys.stream("acceleration_braking")) > 0 and mid_job(), 90,
                         "the collector to be mid-episode", roles)
        # wait for the next job to be under way too: kill while its episode is publishing
        wait_for(lambda: (ids := mid_job()) and ids != first, 60, "a second episode under way", roles)
        orphans = mid_job()
        t_kill = time.monotonic()
        assert roles.kill("collector") == -9
        roles.start("collector2", "collector")  # the replacement gets work while the orphan is still 'started'
        for job_id in orphans:
            wait_for(lambda j=job_id: j in failed.get_job_ids(), JOB_HEARTBEAT_TTL_S + 30,
                     f"rq to fail the orphaned job {job_id}", roles)
        visible_after_s = round(time.monotonic() - t_kill, 1)
        for job_id in orphans:
            job = Job.fetch(job_id, connection=r, serializer=JSONSerializer)
            assert job.get_status() == "failed"
            assert "AbandonedJobError" in (job.latest_result().exc_string or ""), job.latest_result()
        wait_for(lambda: any(int(s.get("episodes", 0)) >= 1 for s in status(r, keys, "collector")), 90,
                 "the new collector to finish an episode", roles)
        print(f"FIGURES orphaned job failed visibly {visible_after_s}s after the kill (TTL {JOB_HEARTBEAT_TTL_S}s)")
        assert roles.stop("collector2") == 0
        time.sleep(1.5)  # let the server route what is left
        assert roles.stop("server") == 0
    finally:
        roles.stop_all()
    assert_no_partial_sets(r, keys, SampleSchema.from_config(cfg), cfg.output_names())


def assert_no_partial_sets(r: redis.Redis, keys: Keys, schema: SampleSchema, outputs: list[str]) -> None:
    """Every entry in the streams is a whole, valid set; every routed set is in its buffer whole."""
    assert r.xlen(keys.deadletter) == 0, r.xrange(keys.deadletter)
    for output in outputs:
        sizes = {}
        for _entry_id, fields in r.xrange(keys.stream(output)):
            head = check_entry(EntryView.of_manifest(fields), schema, outputs)
            sizes[head.set_id] = head.n  # sample ids are `{set_id}:{row}`
        per_entry = Counter(i.decode().rsplit(":", 1)[0] for i in r.smembers(keys.buffer(output)))
        assert per_entry, f"nothing was routed into {output}"
        checked = [s for s in per_entry if s in sizes]  # the server trims routed sets beyond stream_keep
        assert checked, f"no routed set of {output} is left in its stream to compare with"
        for set_id in checked:
            rows = per_entry[set_id]
            assert rows == sizes[set_id], f"{output}: set {set_id} has {rows} of its {sizes[set_id]} samples"
        assert stored_rows(r, keys, output) == r.scard(keys.buffer(output))
