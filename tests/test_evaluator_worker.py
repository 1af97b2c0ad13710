"""`charles evaluator` as a real rq worker process: jobs queued at publication are scored,
superseded ones skipped, scores and the best pointer written, TensorBoard logged."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import redis
import torch
from rq.registry import FailedJobRegistry

from pipeline.evaluate.scoreboard import (
    best_version,
    enqueue_evaluation,
    evaluation_queue,
    job_id,
    read_scores,
    record_scores,
)
from pipeline.models import build_model
from pipeline.train.learner import Learner
from pipeline.train.live import Trainer, TrainerSettings
from pipeline.wire.config_store import publish_config
from pipeline.wire.keys import EVALUATE_QUEUE, Keys
from pipeline.wire.local_redis import RedisServer
from pipeline.wire.weights import WeightsStore
from tests.factories import tiny_config
from tests.processes import Roles, wait_until

pytestmark = pytest.mark.slow


def _config():  # type: ignore[no-untyped-def]
    return tiny_config(
        run={"name": "eval_tiny"},
        game={"cinematic_width": 32, "cinematic_height": 18},
        model={"width": 8, "dense": 32, "head": [16]},
        evaluator={"episode_s": 2.0, "environments": ["day", "traffic"], "episodes_per_environment": 1},
    )


def test_trainer_queues_every_publication(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    cfg = _config()
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    trainer = Trainer(r, keys, Learner(model, 1e-3, device="cpu"), None,  # type: ignore[arg-type]
                      None, TrainerSettings(cfg.run.name, 8, 1, 100, 100, 1, tmp_path),  # type: ignore[arg-type]
                      WeightsStore(r, keys), on_publish=lambda info: enqueue_evaluation(r, keys, info))
    assert trainer.publish() == 1 and trainer.publish() == 2
    assert evaluation_queue(r, keys).get_job_ids() == [job_id(keys, 1), job_id(keys, 2)]


def test_evaluator_worker_round_trip(redis_server: RedisServer, tmp_path: Path) -> None:
    prefix = f"eval-{uuid.uuid4().hex[:8]}:"
    keys, r = Keys(prefix), redis_server.client()
    cfg = _config()
    publish_config(r, keys, cfg)
    store = WeightsStore(r, keys)
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
        enqueue_evaluation(r, keys, store.publish(model.state_dict(), cfg.run.name, batches=10 * seed))
    forged = evaluation_queue(r, keys).enqueue_call("os.getcwd", job_id=keys.job_id(EVALUATE_QUEUE, "forged"))
    roles = Roles(redis_server.url, prefix, tmp_path)
    try:
        proc = roles.start("evaluator", "evaluator", "--burst", "--nice", "0")
        assert proc.wait(240) == 0, roles.log("evaluator")[-3000:]
    finally:
        roles.stop_all()
    log = roles.log("evaluator")
    scores = read_scores(r, keys)
    # v1 was superseded by v2 (still waiting when v1's job started); v2 is scored
    assert set(scores) == {2}, log[-3000:]
    rec = scores[2]
    assert rec["batches"] == 20 and rec["ratio_to_npc"] is not None and rec["ratio_to_npc"] >= 0
    assert set(rec["environments"]) == {"day", "traffic"} and rec["metrics"]["episodes"] == 2
    assert rec["metrics"]["duration_s"] == pytest.approx(4.0)
    assert rec["npc"]["distance_m"] > 0 and "ratio_to_npc" in rec["baseline"]
    assert best_version(r, keys) == 2
    assert json.loads(r.hget(keys.weights_best, "scores"))["version"] == 2
    assert r.hlen(keys.evaluation_reference) == 1  # NPC and baseline driven once, cached
    assert log.count("evaluation_skipped") == 1 and "superseded by v2" in log
    assert list((tmp_path / "runs" / "eval_tiny").glob("events.out.tfevents.*"))
    assert r.llen(f"rq:queue:{keys.queue(EVALUATE_QUEUE)}") == 0
    assert forged.id in FailedJobRegistry(queue=evaluation_queue(r, keys)).get_job_ids()  # never run


def test_kept_since_scores_every_kept_version_of_the_window_after_a_run(redis_server: RedisServer,
                                                                        tmp_path: Path) -> None:
    """`charles evaluator --kept-since T`: every version still kept and published from T on is
    scored, oldest first, none skipped as superseded (a newer one's job is waiting); a version
    with a score keeps it, and versions before T or no longer kept are left alone."""
    prefix = f"kept-{uuid.uuid4().hex[:8]}:"
    keys, r = Keys(prefix), redis_server.client()
    cfg = _config()
    publish_config(r, keys, cfg)
    store = WeightsStore(r, keys, keep_versions=4)
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    since = 0.0
    for version in range(1, 7):  # v1 and v2 are no longer kept, v3 is before the window
        if version == 4:
            time.sleep(0.01)
            since = time.time()
        info = store.publish(model.state_dict(), cfg.run.name, batches=10 * version)
        enqueue_evaluation(r, keys, info)
    assert [i.version for i in store.kept_infos()] == [3, 4, 5, 6]
    assert [i.version for i in store.kept_infos(since)] == [4, 5, 6]
    record_scores(r, keys, 6, {"version": 6, "ratio_to_npc": 0.5, "kept": "as it was"})
    roles = Roles(redis_server.url, prefix, tmp_path)
    try:
        proc = roles.start("evaluator", "evaluator", "--kept-since", str(since), "--nice", "0", "--processes", "1")
        assert proc.wait(240) == 0, roles.log("evaluator")[-3000:]
    finally:
        roles.stop_all()
    scores = read_scores(r, keys)
    assert set(scores) == {4, 5, 6}, roles.log("evaluator")[-3000:]
    assert [scores[v]["batches"] for v in (4, 5)] == [40, 50]
    assert [len(scores[v]["episodes"]) for v in (4, 5)] == [2, 2]  # 2 environments x 1
    assert scores[6] == {"version": 6, "ratio_to_npc": 0.5, "kept": "as it was"}
    assert "superseded" not in roles.log("evaluator")

    # the same window again with more episodes: the versions scored on the other plan are scored
    # again (tighter intervals after a run), a record that names no plan is kept
    first_plan = scores[4]["reference"]
    try:
        proc = roles.start("evaluator", "evaluator", "--kept-since", str(since), "--nice", "0",
                           "--processes", "2", "--episodes", "2")
        assert proc.wait(240) == 0, roles.log("evaluator")[-3000:]
    finally:
        roles.stop_all()
    rescored = read_scores(r, keys)
    assert [len(rescored[v]["episodes"]) for v in (4, 5)] == [4, 4], roles.log("evaluator")[-3000:]
    assert rescored[4]["reference"] == rescored[5]["reference"] != first_plan
    assert rescored[6] == {"version": 6, "ratio_to_npc": 0.5, "kept": "as it was"}


def test_tampered_or_foreign_weights_are_not_scored(r: redis.Redis, keys: Keys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from pipeline.evaluate.jobs import EvaluatorJobs

    cfg = _config()
    publish_config(r, keys, cfg)
    evaluation_jobs = EvaluatorJobs(r, keys)
    store = WeightsStore(r, keys)
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    info = store.publish(model.state_dict(), cfg.run.name, batches=10)
    r.hset(keys.weights_version_blob(info.version), "blob", b"\x80\x04forged")
    out = evaluation_jobs.evaluate_version({"version": info.version, "sha256": info.sha256})
    assert "sha256" in out["skipped"]
    other = store.publish(model.state_dict(), "another_model", batches=20)
    out = evaluation_jobs.evaluate_version({"version": other.version, "sha256": other.sha256})
    assert "another_model" in out["skipped"]
    gone = evaluation_jobs.evaluate_version({"version": 99, "sha256": "0" * 64})
    assert "no weights" in gone["skipped"]
    assert read_scores(r, keys) == {} and best_version(r, keys) is None


def test_evaluator_survives_a_redis_restart_and_scores_after_it(tmp_path: Path) -> None:
    """kill -9 of an AOF Redis while the evaluator waits for work: it keeps running, and scores
    what is published after the restart (its registration outlived the kill)."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    prefix = f"eval-restart-{uuid.uuid4().hex[:8]}:"
    keys, cfg = Keys(prefix), _config()
    roles = Roles(server.url, prefix, tmp_path)
    try:
        r = server.client()
        publish_config(r, keys, cfg)
        roles.start("evaluator", "evaluator", "--nice", "0")
        worker_key = f"rq:worker:{_wait_for_worker(r, roles)}"
        r.save()  # its registration is on disk, as after any second of AOF everysec
        server.restart(kill=True, down_s=1.0)
        r = server.client()
        assert r.exists(worker_key)  # the registration outlived the kill
        model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
        enqueue_evaluation(r, keys, WeightsStore(r, keys).publish(model.state_dict(), cfg.run.name, 1))
        deadline = time.monotonic() + 180
        while not read_scores(r, keys) and time.monotonic() < deadline and roles.procs["evaluator"].poll() is None:
            time.sleep(0.5)
        log = roles.log("evaluator")
        assert set(read_scores(r, keys)) == {1}, log[-3000:]
        assert roles.stop("evaluator") == 0, log[-3000:]
    finally:
        roles.stop_all()
        server.stop(kill=True)


def _wait_for_worker(r: redis.Redis, roles: Roles) -> str:
    names = wait_until(lambda: [k.decode().split(":", 2)[2] for k in r.scan_iter("rq:worker:evaluator*")], 60,
                       "the evaluator to register with rq", roles, poll=0.2)
    return names[0]


def test_references_are_kept_between_runs_on_this_machine(r: redis.Redis, tmp_path: Path) -> None:
    """A fresh run (empty Redis) reuses the references an earlier run drove on this machine
    instead of spending the evaluator's core on them again; another plan's file is ignored."""
    from pipeline.evaluate.closed_loop import EvalSettings, Evaluator, read_reference_file
    from pipeline.evaluate.jobs import EvaluatorJobs
    from pipeline.evaluate.scoreboard import cached_reference
    from pipeline.games.options import GameCache

    cfg = _config()
    games = GameCache()
    try:
        evaluator = Evaluator(games.get(cfg), EvalSettings.from_config(cfg))
        first = EvaluatorJobs(r, Keys(f"run-a-{uuid.uuid4().hex[:6]}:"), tmp_path)
        refs = first.references(evaluator, cfg)
        assert len(list(tmp_path.glob("reference-*.json"))) == 1

        class NotDriven:  # an evaluator that must not drive: the references come from the file
            settings = evaluator.settings

        fresh_keys = Keys(f"run-b-{uuid.uuid4().hex[:6]}:")
        second = EvaluatorJobs(r, fresh_keys, tmp_path)
        assert second.references(NotDriven(), cfg) == refs
        assert cached_reference(r, fresh_keys, refs["key"]) == refs  # and Redis has them for this run
        elsewhere = tmp_path / "other-machine"
        third = EvaluatorJobs(r, fresh_keys, elsewhere)  # another evaluator of this run, another folder
        assert third.references(NotDriven(), cfg) == refs  # from Redis ...
        assert len(list(elsewhere.glob("reference-*.json"))) == 1  # ... and kept for its next run
        other = cfg.model_copy(update={"evaluator": cfg.evaluator.model_copy(update={"episode_s": 3.0})})
        other_key = EvalSettings.from_config(other).reference_key(other)
        assert other_key != refs["key"]
        (kept,) = tmp_path.glob("reference-*.json")
        assert read_reference_file(kept, other_key) is None  # another plan's file is never used
    finally:
        games.close()


def test_sigterm_mid_job_ends_the_evaluator_promptly(redis_server: RedisServer, tmp_path: Path) -> None:
    """Under `make run` the evaluator was SIGKILLed at every shutdown: rq's warm shutdown waits
    for the running job, and nothing told the job to stop. A signal now sets the job's stop:
    the episode in progress ends it, the worker exits 0 within seconds."""
    prefix = f"eval-stop-{uuid.uuid4().hex[:8]}:"
    keys, r = Keys(prefix), redis_server.client()
    cfg = tiny_config(run={"name": "eval_tiny"}, game={"cinematic_width": 32, "cinematic_height": 18},
                      model={"width": 8, "dense": 32, "head": [16]},
                      evaluator={"episode_s": 30.0, "environments": ["day", "traffic"], "episodes_per_environment": 4})
    publish_config(r, keys, cfg)
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    enqueue_evaluation(r, keys, WeightsStore(r, keys).publish(model.state_dict(), cfg.run.name, batches=10))
    roles = Roles(redis_server.url, prefix, tmp_path)
    try:
        roles.start("evaluator", "evaluator", "--nice", "0")
        deadline = time.monotonic() + 120
        while "evaluation_episode" not in roles.log("evaluator") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "evaluation_episode" in roles.log("evaluator"), roles.log("evaluator")[-3000:]
        start = time.monotonic()
        assert roles.stop("evaluator", timeout=20) == 0, roles.log("evaluator")[-3000:]
        assert time.monotonic() - start < 20
    finally:
        roles.stop_all()
    assert read_scores(r, keys) == {}  # stopped, not scored on part of the plan
