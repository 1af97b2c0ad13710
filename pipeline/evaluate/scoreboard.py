"""Evaluation results in Redis: per-version scores, the cached references, the `best` pointer, the queue.

- `evaluation` (hash version -> JSON) holds every scored version; `charles status --json`
  shows it under `evaluation.versions`.
- `evaluation:reference` caches the NPC's and the baseline's scores per reference key (game,
  plan, durations, Unstuck rules): they do not change between versions, so they are driven once.
- `weights:best` moves only to a version of the same model that is better by more than the
  noise: compared with the current best episode for episode when both drove the same plan
  (`confidence.paired_claim`: the low end of its gain must be above 1), else the low end of its
  own ratio_to_npc interval (`pipeline.evaluate.confidence`) must beat the current best's point
  estimate (a version scored without an interval uses its point estimate: then strictly better
  is enough). It moves atomically (Lua, and only if the best is still the one compared with),
  and keeps its own copy of the blob: published versions beyond `trainer.keep_versions` are
  deleted, the best one must stay fetchable for players that follow it. A move is announced
  on the weights channel so those players prepare it at once.
- Evaluation jobs are enqueued by the trainer right after each publication (the job id
  names the version), so no version is missed while the evaluator is busy or down.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from pipeline.evaluate.confidence import lower_bound, paired_claim
from pipeline.wire.keys import EVALUATE_QUEUE, Keys
from pipeline.wire.weights import WeightsInfo

EVALUATE_JOB = "pipeline.evaluate.jobs.EvaluatorJobs.evaluate_version"
JOB_TIMEOUT_S = 3 * 3600
JOB_WAIT_TTL_S = 24 * 3600  # a job nobody picked up in a day is dropped (no evaluator running)
_JOB_VERSION = re.compile(r"-v(\d+)$")

# KEYS[1] = weights:best; ARGV[1] = the candidate's claim, ARGV[2] = model, ARGV[3] = rank_by,
# ARGV[4] = the best's version the claim was computed against ('' = none: its own lower bound),
# ARGV[5..] = field, value, ... (the stored `score` is the best's point estimate of `rank_by`: a
# candidate must beat it with its claim; a best ranked by another measure is replaced; -1: the
# best moved since it was read, compare again)
_MOVE_BEST_LUA = """
if ARGV[4] ~= '' and redis.call('HGET', KEYS[1], 'version') ~= ARGV[4] then
  return -1
end
local cur = redis.call('HGET', KEYS[1], 'score')
local model = redis.call('HGET', KEYS[1], 'model')
local rank = redis.call('HGET', KEYS[1], 'rank_by') or 'ratio_to_npc'
if cur and model == ARGV[2] and rank == ARGV[3] and tonumber(cur) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
return 1
"""
#: What a version without the ranked score offers (it never beats a best that has one).
_NO_SCORE = {"ratio_to_npc": -1.0, "game_score": -1e300}


def evaluation_queue(r: redis.Redis, keys: Keys) -> Queue:
    return Queue(keys.queue(EVALUATE_QUEUE), connection=r, serializer=JSONSerializer)


def job_id(keys: Keys, version: int) -> str:
    """One job id per version and key prefix: `<prefix>-evaluate-v<n>`."""
    return keys.job_id(EVALUATE_QUEUE, f"v{version}")


def enqueue_evaluation(r: redis.Redis, keys: Keys, info: WeightsInfo) -> str:
    """Queue the evaluation of one published version (called by the trainer after publishing)."""
    job = evaluation_queue(r, keys).enqueue_call(
        EVALUATE_JOB,
        args=({"version": info.version, "sha256": info.sha256, "model": info.model,
               "batches": info.batches, "created": info.created},),
        job_id=job_id(keys, info.version),
        timeout=JOB_TIMEOUT_S,
        ttl=JOB_WAIT_TTL_S,
        result_ttl=3600,
        failure_ttl=24 * 3600,
        description=f"evaluate {info.model} v{info.version} ({info.batches} batches)",
    )
    return job.id


def newest_waiting(r: redis.Redis, keys: Keys) -> int:
    """The newest version whose evaluation job is still waiting in the queue (0 if none)."""
    versions = [int(m.group(1)) for jid in evaluation_queue(r, keys).get_job_ids()
                if (m := _JOB_VERSION.search(jid))]
    return max(versions, default=0)


def record_scores(r: redis.Redis, keys: Keys, version: int, record: dict[str, Any]) -> None:
    r.hset(keys.evaluation, str(version), json.dumps(record))


def read_scores(r: redis.Redis, keys: Keys) -> dict[int, dict[str, Any]]:
    """Every scored version's record, by version."""
    return {int(k): json.loads(v) for k, v in r.hgetall(keys.evaluation).items()}


def cached_reference(r: redis.Redis, keys: Keys, key: str) -> dict[str, Any] | None:
    raw = r.hget(keys.evaluation_reference, key)
    return None if raw is None else json.loads(raw)


def store_reference(r: redis.Redis, keys: Keys, key: str, reference: dict[str, Any]) -> None:
    r.hset(keys.evaluation_reference, key, json.dumps(reference))


def best_score(record: dict[str, Any], rank_by: str = "ratio_to_npc") -> float:
    """What `best` maximises: `[evaluator] rank_by`, ratio_to_npc or the game's own score
    (a version without it never beats a best that has it)."""
    value = record.get(rank_by)
    return _NO_SCORE[rank_by] if value is None else float(value)


def best_claim(record: dict[str, Any], rank_by: str = "ratio_to_npc") -> float:
    """What a candidate offers against the current best: the low end of its `rank_by` interval."""
    low = lower_bound(record, rank_by)
    return _NO_SCORE[rank_by] if low is None or record.get(rank_by) is None else low


def claim_against_best(r: redis.Redis, keys: Keys, record: dict[str, Any], model: str,
                       rank_by: str = "ratio_to_npc") -> tuple[float, str]:
    """The candidate's claim and the best's version it was compared with ('' when not paired):
    episode for episode against a best of the same model, rank and plan, else its own lower bound."""
    version, best_model, best_rank, raw = (v.decode() if isinstance(v, bytes) else v for v in
                                           r.hmget(keys.weights_best, "version", "model", "rank_by", "scores"))
    if version is not None and raw is not None and best_model == model and (best_rank or "ratio_to_npc") == rank_by:
        claim = paired_claim(record, json.loads(raw), rank_by)
        if claim is not None:
            return claim, version
    return best_claim(record, rank_by), ""


def move_best(r: redis.Redis, keys: Keys, info: WeightsInfo, blob: bytes, record: dict[str, Any],
              rank_by: str = "ratio_to_npc") -> bool:
    """Point `best` at this version if it beats the best by more than the noise
    (`claim_against_best`), or the best was ranked by another measure; True when it moved."""
    score = best_score(record, rank_by)
    metrics = record.get("metrics", {})
    fields: dict[str, Any] = {
        "version": info.version, "sha256": info.sha256, "model": info.model, "created": info.created,
        "batches": info.batches, "blob": blob, "score": repr(score), "lower": repr(best_claim(record, rank_by)),
        "rank_by": rank_by, "game_score": json.dumps(record.get("game_score")),
        "ratio_to_npc": json.dumps(record.get("ratio_to_npc")),
        "incidents_per_km": json.dumps(metrics.get("incidents_per_km")),
        "scores": json.dumps(record), "moved_at": time.time(),
    }
    script = r.register_script(_MOVE_BEST_LUA)
    moved = -1
    while moved == -1:  # the best moved between reading it and the compare-and-set: compare again
        claim, against = claim_against_best(r, keys, record, info.model, rank_by)
        args: list[Any] = [repr(claim), info.model, rank_by, against]
        for name, value in fields.items():
            args += [name, value]
        moved = int(script(keys=[keys.weights_best], args=args))
    if moved:
        note = json.loads(info.notification())
        r.publish(keys.weights_channel, json.dumps({**note, "best": True}))
    return bool(moved)


def best_version(r: redis.Redis, keys: Keys) -> int | None:
    raw = r.hget(keys.weights_best, "version")
    return None if raw is None else int(raw)
