"""`charles evaluator`: an rq worker on the `evaluate` queue (JSON serializer, never pickle).

Each job scores one published version (`pipeline.evaluate.jobs.EvaluatorJobs.evaluate_version`); the
trainer queues one per publication. A heartbeat thread keeps this evaluator's presence
and status (`status:evaluator:<id>`) fresh.
"""

from __future__ import annotations

import os
import threading

import click
import structlog
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from pipeline.evaluate.closed_loop import REFERENCE_CACHE
from pipeline.evaluate.jobs import EvaluatorJobs, queue_latest_if_missing
from pipeline.evaluate.scoreboard import EVALUATE_JOB
from pipeline.log import configure_logging
from pipeline.wire.keys import EVALUATE_QUEUE
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

log = structlog.get_logger("evaluator")


def _heartbeat(jobs: EvaluatorJobs, presence: Presence, stop: threading.Event) -> None:
    failing = False
    while not stop.wait(2.0):
        failing = beat_or_report(lambda: presence.beat(state=jobs.state, version=jobs.version,
                                                       evaluated=jobs.evaluated, skipped=jobs.skipped,
                                                       last=jobs.last), failing)


@click.command(name="evaluator")
@click.option("--burst", is_flag=True, help="exit when the queue is empty (tests, batch runs)")
@click.option("--max-jobs", type=int, default=None, help="exit after this many jobs")
@click.option("--nice", "niceness", type=int, default=10, show_default=True,
              help="CPU priority below players and the trainer")
@click.option("--kept-since", type=float, default=None, metavar="EPOCH_S",
              help="instead of the queue: score every version still kept in Redis that was published at or after "
                   "this time and has no score on this plan (see --episodes), oldest first, then exit (a run's history)")
@click.option("--processes", type=click.IntRange(min=1, max=64), default=None,
              help="episodes driven at once (default: evaluator.processes)")
@click.option("--episodes", type=click.IntRange(min=1, max=1000), default=None,
              help="episodes per environment (default: evaluator.episodes_per_environment); with --kept-since, "
                   "versions scored on another number are scored again")
def cli(burst: bool, max_jobs: int | None, niceness: int, kept_since: float | None, processes: int | None,
        episodes: int | None) -> None:
    """Score every published version closed-loop on the held-out seeds, until SIGTERM."""
    configure_logging("evaluator")
    os.nice(niceness)
    r, keys = connect(), keys_from_env()
    worker_id = new_worker_id("evaluator")
    jobs = EvaluatorJobs(r, keys, REFERENCE_CACHE, processes, episodes)
    if kept_since is not None:
        try:
            scored = jobs.score_kept(kept_since)
        finally:
            jobs.close()
        log.info("kept_versions_scored", versions=[s["version"] for s in scored if "ratio_to_npc" in s],
                 skipped=[s["version"] for s in scored if "skipped" in s])
        return
    evaluation_job = guarded_job_class({EVALUATE_JOB: jobs.evaluate_version})  # the only job it runs
    log.info("evaluator_starting", id=worker_id, redis=safe_url(redis_url()))
    stop = threading.Event()
    presence = Presence(r, keys, "evaluator", worker_id)
    threading.Thread(target=_heartbeat, args=(jobs, presence, stop), daemon=True).start()
    queued = False

    def make_worker() -> SimpleWorker:
        nonlocal queued
        if not queued:  # once: a version published while no evaluator ran
            version = queue_latest_if_missing(r, keys)
            queued = True
            if version is not None:
                log.info("queued_latest", version=version)
        return SimpleWorker([keys.queue(EVALUATE_QUEUE)], connection=r, name=worker_id,
                            serializer=JSONSerializer, job_class=evaluation_job)

    try:
        work_until_done(make_worker, r, "evaluator", stop=jobs.stop, burst=burst, max_jobs=max_jobs)
    finally:
        stop.set()
        jobs.close()
        try:
            presence.leave()
        except CONNECTION_ERRORS:
            pass
    log.info("evaluator_stopped", evaluated=jobs.evaluated, skipped=jobs.skipped)
