"""rq jobs a worker will run: only the functions it names, never whatever a queue entry asks for.

rq imports and calls the function named in a job hash (and its callbacks). The JSON
serializer keeps pickle out, but whoever can write an rq job could still name
`os.system`; a worker built with `job_class=guarded_job_class({name: handler})` fails such
a job (visibly, in rq's failed registry) instead of running it. A job that names an
allowed function runs the worker's own handler for it (a bound method of the role's
per-process object): nothing is imported from a name in Redis, and no module-global state
is needed to hand the job its game, client or counters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog
from rq.job import Job

from pipeline.errors import JobRefused

log = structlog.get_logger(__name__)


def guarded_job_class(handlers: Mapping[str, Callable[..., Any]]) -> type[Job]:
    """A Job class that runs `handlers[name]` for a job naming one of its keys, refuses any
    other name, and runs no callbacks."""
    allowed = dict(handlers)

    class GuardedJob(Job):
        @property
        def func(self) -> Any:
            if self.func_name not in allowed or self.instance is not None:
                raise JobRefused(f"job {self.id} names {self.func_name!r}; this worker runs only {sorted(allowed)}")
            return allowed[self.func_name]

        def _no_callback(self, kind: str, name: str | None) -> None:
            if name:
                log.warning("job_callback_ignored", job=self.id, kind=kind, callback=name)

        @property
        def success_callback(self) -> None:
            self._no_callback("success", self._success_callback_name)

        @property
        def failure_callback(self) -> None:
            self._no_callback("failure", self._failure_callback_name)

        @property
        def stopped_callback(self) -> None:
            self._no_callback("stopped", self._stopped_callback_name)

    return GuardedJob
