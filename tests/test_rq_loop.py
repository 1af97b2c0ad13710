"""`work_until_done`: a role's rq worker comes back under its own name after Redis kept its
old registration (a kill -9 restart with AOF), which rq alone refuses."""

from __future__ import annotations

import pytest
import redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from pipeline.wire.keys import Keys
from pipeline.wire.rq_loop import work_until_done


def test_a_stale_registration_of_the_same_name_is_retired(r: redis.Redis, keys: Keys) -> None:
    name = f"evaluator-{keys.prefix.strip(':')}"

    def make_worker() -> SimpleWorker:
        return SimpleWorker([keys.queue("q")], connection=r, name=name, serializer=JSONSerializer)

    make_worker().register_birth()  # the worker of before the restart, never marked dead
    with pytest.raises(ValueError, match="active worker named"):
        make_worker().work(burst=True)  # what a plain restart loop would hit
    assert work_until_done(make_worker, r, "evaluator", burst=True) == 0
    assert r.hexists(f"rq:worker:{name}", "death")  # this run ended cleanly, registered as such
