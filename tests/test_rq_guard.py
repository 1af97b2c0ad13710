"""A guarded rq worker runs its own handler for the job names it allows, and nothing else."""

from __future__ import annotations

import redis
from rq import Queue, SimpleWorker
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from pipeline.wire.keys import Keys
from pipeline.wire.rq_guard import guarded_job_class


def test_allowed_name_runs_the_workers_own_handler_and_others_are_refused(r: redis.Redis, keys: Keys) -> None:
    ran: list[dict] = []

    class Role:  # a role's per-process object: the job is its bound method, no module global
        def episode(self, spec: dict) -> dict:
            ran.append(spec)
            return {"ok": spec["n"]}

    role = Role()
    queue = Queue(keys.queue("guard"), connection=r, serializer=JSONSerializer)
    good = queue.enqueue_call("charles.episode", args=({"n": 1},))
    forged = queue.enqueue_call("os.getcwd")
    worker = SimpleWorker([queue], connection=r, serializer=JSONSerializer,
                          job_class=guarded_job_class({"charles.episode": role.episode}))
    worker.work(burst=True, logging_level="WARNING")
    assert ran == [{"n": 1}]
    assert good.latest_result().return_value == {"ok": 1}
    assert forged.id in FailedJobRegistry(queue=queue).get_job_ids()
    assert "JobRefused" in (forged.latest_result().exc_string or "")
