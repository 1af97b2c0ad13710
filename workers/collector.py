"""`charles collector`: runs the episodes the server hands this collector, until SIGTERM.

Episodes come from the collector's own job list (`pipeline.collect.handoff`), never from rq:
a collector machine holds no rq key. A heartbeat thread keeps this collector's presence and
status fresh and flushes any backlog held during an outage. Connected as a per-machine
user (`charles credentials add collector NAME`) the collector's id is that name, the only
one its keys may carry; as the shared local `collector` user it makes up a unique id.
"""

from __future__ import annotations

import os
import signal
import threading

import click
import structlog

from pipeline.collect.episode import Collector
from pipeline.collect.handoff import work_episodes
from pipeline.log import configure_logging
from pipeline.wire.presence import Presence, beat_or_report, worker_id_for
from pipeline.wire.redis_conn import (
    CONNECTION_ERRORS,
    connect,
    keys_from_env,
    redis_url,
    safe_url,
)

log = structlog.get_logger("collector")


def _heartbeat(collector: Collector, presence: Presence, stop: threading.Event) -> None:
    def beat() -> None:
        pub = collector.publisher
        presence.beat(state=collector.state, episode=collector.episode or "", episodes=collector.episodes_done,
                      samples=collector.samples, backlog=len(pub.backlog) if pub else 0,
                      published=pub.published if pub else 0, dropped=pub.dropped if pub else 0,
                      model_ticks=collector.model_ticks, model_version=collector.model_version,
                      nice=collector.nice)
        if pub is not None and collector.state == "idle":
            pub.flush()

    failing = False
    while not stop.wait(2.0):
        failing = beat_or_report(beat, failing)


@click.command(name="collector")
@click.option("--burst", is_flag=True, help="exit when no episode is waiting (tests, batch runs)")
@click.option("--max-jobs", type=int, default=None, help="exit after this many episodes")
@click.option("--nice", "niceness", type=int, default=10, show_default=True,
              help="CPU priority below players and the trainer (collectors run flat out in fast mode)")
def cli(burst: bool, max_jobs: int | None, niceness: int) -> None:
    """Run collection episodes the server hands this collector until SIGTERM."""
    configure_logging("collector")
    os.nice(niceness)
    r, keys = connect(), keys_from_env()
    stop, beating = threading.Event(), threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # ends the episode at its next tick, its sets handed over
        signal.signal(sig, lambda *_: stop.set())
    worker_id = worker_id_for(r, "collector", stop)
    if worker_id is None:
        return
    collector = Collector(r, keys, worker_id)
    log.info("collector_starting", id=worker_id, redis=safe_url(redis_url()))
    presence = Presence(r, keys, "collector", worker_id)
    threading.Thread(target=_heartbeat, args=(collector, presence, beating), daemon=True).start()
    try:
        work_episodes(r, keys, worker_id, lambda spec: collector.run_episode(spec, stop), stop,
                      burst=burst, max_jobs=max_jobs)
    finally:
        beating.set()
        try:
            if collector.publisher is not None:
                collector.publisher.flush(force=True)
            presence.leave()
        except CONNECTION_ERRORS:
            pass
    pub = collector.publisher
    log.info("collector_stopped", episodes=collector.episodes_done, published=pub.published if pub else 0,
             dropped=pub.dropped if pub else 0, backlog=len(pub.backlog) if pub else 0)
