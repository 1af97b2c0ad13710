"""Fault 3: the trainer killed (SIGKILL) while training.

Proves: on restart it resumes from its last checkpoint exactly (model and optimiser
tensors bit for bit, batch counter, last version); the published version never goes
backwards (every notification is newer than the one before); training carries on with
the optimiser's step count continuing; a poisoned buffer row is rejected, not fatal.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import msgpack
import msgpack_numpy
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline.config import load_config
from pipeline.serve.buffers import Buffers
from pipeline.wire.config_store import publish_config
from pipeline.wire.keys import Keys
from pipeline.wire.local_redis import RedisServer
from pipeline.wire.rows import ROW_MAGIC
from tests.faults import (
    RELIABILITY_CONFIG,
    FaultRoles,
    PickleBomb,
    prefill,
    status,
    unique_prefix,
    wait_for,
)

pytestmark = pytest.mark.slow


def _tensors(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {name: load_file(folder / f"{name}.safetensors") for name in ("model", "optimizer")}


def test_trainer_killed_mid_training_resumes_from_checkpoint(redis_server: RedisServer, tmp_path: Path) -> None:
    keys = Keys(unique_prefix("trainer-kill"))
    r = redis_server.client()
    cfg = load_config(RELIABILITY_CONFIG)
    publish_config(r, keys, cfg)
    ckpt = tmp_path / cfg.run.checkpoint_dir / cfg.run.name
    notes: list[int] = []
    listening = threading.Event()

    def listen() -> None:
        sub = r.pubsub(ignore_subscribe_messages=True)
        sub.subscribe(keys.weights_channel)
        listening.set()
        while not stop.is_set():
            msg = sub.get_message(timeout=0.2)
            if msg is not None:
                notes.append(json.loads(msg["data"])["version"])
        sub.close()

    stop = threading.Event()
    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    listening.wait(5)
    roles = FaultRoles(redis_server.url, keys.prefix, tmp_path)
    try:
        prefill(r, keys, cfg, 1000, tag="a")
        roles.start("trainer", "trainer")
        wait_for(lambda: any(s.get("state") == "training" for s in status(r, keys, "trainer")), 120,
                 "training", roles)
        # kill between a publication and the next checkpoint: Redis is ahead of the checkpoint
        wait_for(lambda: (ckpt / "trainer.json").exists() and len(notes) >= 2
                 and notes[-1] > json.loads((ckpt / "trainer.json").read_text())["last_version"],
                 120, "a publication newer than the last checkpoint", roles, poll=0.002)
        assert roles.kill("trainer") == -9  # mid-training: nothing flushed, no final checkpoint
        meta = json.loads((ckpt / "trainer.json").read_text())
        before = _tensors(ckpt)
        version_at_kill = int(r.hget(keys.weights_latest, "version"))
        assert meta["batches"] % cfg.trainer.checkpoint_every == 0 and meta["last_version"] <= version_at_kill

        # restart with empty buffers: it can only load the checkpoint; SIGTERM makes it write it back
        Buffers(r, keys, cfg.output_names(), cfg.buffers.capacity).clear()
        roles.start("trainer", "trainer")  # its log is appended to: count the second start
        wait_for(lambda: len(roles.events("trainer", "trainer_ready")) == 2, 60, "the trainer to restart", roles)
        resumed = roles.events("trainer", "checkpoint_resumed")[-1]
        assert (resumed["batches"], resumed["version"]) == (meta["batches"], meta["last_version"])
        assert roles.stop("trainer") == 0
        after = _tensors(ckpt)
        for name in before:  # model and optimiser restored exactly
            assert before[name].keys() == after[name].keys()
            for k, v in before[name].items():
                assert torch.equal(v, after[name][k]), f"{name}.{k} changed across the restart"

        # refill (plus poisoned rows), restart: training carries on, versions only go up
        prefill(r, keys, cfg, 200, tag="b")
        marker = tmp_path / "pickle-ran"
        obj = np.empty(1, dtype=object)
        obj[0] = PickleBomb(marker)
        header = msgpack.packb({"v": 2, "episode": "e", "frames_shape": [0], "speed": obj},
                               default=msgpack_numpy.encode, use_bin_type=True)
        evil = ROW_MAGIC + len(header).to_bytes(4, "little") + header  # a well-framed row with a pickle inside
        bomb = b"not a buffer row at all"
        # draws are random: 20 poisoned rows beside the 40 the capacity keeps, so the ~30 draws
        # before the buffers run dry cannot all miss them (two of 42 were missed once in CI)
        poison = {f"poison:{i}": (bomb, evil)[i % 2] for i in range(20)}
        for name in cfg.output_names():
            r.mset({keys.buffer_row(name, row_id): row for row_id, row in poison.items()})
            r.sadd(keys.buffer(name), *poison)
        notes_before = len(notes)
        roles.start("trainer", "trainer")
        wait_for(lambda: len(notes) >= notes_before + 2 and roles.events("trainer", "rows_rejected")
                 and json.loads((ckpt / "trainer.json").read_text())["batches"] > meta["batches"],
                 120, "training to carry on after the restart", roles)
        assert roles.stop("trainer") == 0
        assert not marker.exists(), "pickle ran inside the trainer"
        final = json.loads((ckpt / "trainer.json").read_text())
        steps = load_file(ckpt / "optimizer.safetensors")
        step = next(v for k, v in steps.items() if k.endswith(".step"))
        assert int(step.item()) == final["batches"], "the optimiser restarted its step count"
    finally:
        stop.set()
        listener.join(5)  # before the fixture stops Redis under it
        roles.stop_all()
    print(f"FIGURES killed at version {version_at_kill}, checkpoint batches {meta['batches']} "
          f"(version {meta['last_version']}); notifications {notes}")
    assert notes == sorted(set(notes)), f"a published version went backwards or repeated: {notes}"
    assert notes[-1] > version_at_kill
