"""`charles collector`: an rq worker on the `collect` queue (JSON serializer, never pickle).

Each job is one episode (`pipeline.collect.episode.Collector.run_episode`). A heartbeat thread keeps
this collector's presence and status fresh and flushes any backlog held during an outage.
"""

from __future__ import annotations

import os
import threading

import click
import structlog
from rq import SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from pipeline.collect.episode import Collector
from pipeline.log import configure_logging
from pipeline.serve.server import COLLECT_JOB
from pipeline.wire.keys import COLLECT_QUEUE
from pipeline.wire.presence import Presence, beat_or_report, new_worker_id
from pipeline.wire.redis_conn import (
    CONNECTION_ERRORS,
    connect,
    keys_from_env,
    redis_url,
    safe_url,
)
from pipeline.wire.rq_guard import guarded_job_class
from pipeline.wire.rq_loop import work_until_done

log = structlog.get_logger("collector")
#: A running job whose heartbeat is older than this is failed by rq as abandoned (the collector died).
JOB_HEARTBEAT_TTL_S = 20


class CollectorWorker(SimpleWorker):
    """A SimpleWorker whose running job has a short heartbeat, refreshed by the heartbeat thread.

    rq gives a SimpleWorker's job a heartbeat of its whole timeout + 60 s, so a collector
    killed mid-episode left its job "started" (and the server holding back work) for 16
    minutes; with this, rq fails it visibly (AbandonedJobError) within JOB_HEARTBEAT_TTL_S.
    """

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return JOB_HEARTBEAT_TTL_S

    def beat_jobs(self) -> None:
        for execution in list(self.executions.values()):
            self.maintain_heartbeats(execution.job, execution)


def _heartbeat(collector: Collector, presence: Presence, stop: threading.Event,
               current: dict[str, CollectorWorker]) -> None:
    def beat() -> None:
        pub = collector.publisher
        presence.beat(state=collector.state, episode=collector.episode or "", episodes=collector.episodes_done,
                      samples=collector.samples, backlog=len(pub.backlog) if pub else 0,
                      published=pub.published if pub else 0, dropped=pub.dropped if pub else 0,
                      model_ticks=collector.model_ticks, model_version=collector.model_version)
        if pub is not None and collector.state == "idle":
            pub.flush()
        if "worker" in current:  # last: rq's connection waits minutes on a silent network
            current["worker"].beat_jobs()

    failing = False
    while not stop.wait(2.0):
        failing = beat_or_report(beat, failing)


@click.command(name="collector")
@click.option("--burst", is_flag=True, help="exit when the queue is empty (tests, batch runs)")
@click.option("--max-jobs", type=int, default=None, help="exit after this many episodes")
@click.option("--nice", "niceness", type=int, default=10, show_default=True,
              help="CPU priority below players and the trainer (collectors run flat out in fast mode)")
def cli(burst: bool, max_jobs: int | None, niceness: int) -> None:
    """Run collection episodes from the server's queue until SIGTERM."""
    configure_logging("collector")
    os.nice(niceness)
    r, keys = connect(), keys_from_env()
    rq_conn = connect()  # rq raises its socket timeout to ~7 min for BLPOP; publishing keeps its own
    worker_id = new_worker_id("collector")
    collector = Collector(r, keys, worker_id)
    episode_job = guarded_job_class({COLLECT_JOB: collector.run_episode})  # the only job it runs
    log.info("collector_starting", id=worker_id, redis=safe_url(redis_url()))
    stop = threading.Event()
    presence = Presence(r, keys, "collector", worker_id)
    current: dict[str, CollectorWorker] = {}
    threading.Thread(target=_heartbeat, args=(collector, presence, stop, current), daemon=True).start()

    def make_worker() -> CollectorWorker:
        current["worker"] = CollectorWorker([keys.queue(COLLECT_QUEUE)], connection=rq_conn, name=worker_id,
                                            serializer=JSONSerializer, job_class=episode_job)
        return current["worker"]

    try:
        work_until_done(make_worker, rq_conn, "collector", burst=burst, max_jobs=max_jobs)
    finally:
        stop.set()
        try:
            if collector.publisher is not None:
                collector.publisher.flush(force=True)
            presence.leave()
        except CONNECTION_ERRORS:
            pass
    pub = collector.publisher
    log.info("collector_stopped", episodes=collector.episodes_done, published=pub.published if pub else 0,
             dropped=pub.dropped if pub else 0, backlog=len(pub.backlog) if pub else 0)
