"""Weights: safetensors round trip, monotonic versions, hash mismatch and forged blobs refused."""

from __future__ import annotations

import hashlib

import pytest
import redis
import torch

from pipeline.errors import WeightsError
from pipeline.wire.keys import Keys
from pipeline.wire.weights import WeightsStore, from_blob, parse_notification, to_blob


def test_round_trip_and_notification(r: redis.Redis, keys: Keys) -> None:
    store = WeightsStore(r, keys, keep_versions=2)
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.weights_channel)
    state = {"w": torch.randn(3, 4), "b": torch.zeros(4)}
    info = store.publish(state, "m", batches=10)
    assert info.version == 1
    got_info, got = store.fetch()
    assert got_info.version == 1 and got_info.model == "m" and got_info.batches == 10
    assert torch.equal(got["w"], state["w"])
    msg = None
    for _ in range(50):
        msg = pubsub.get_message(timeout=0.1)
        if msg:
            break
    assert msg is not None
    note = parse_notification(msg["data"])
    assert note is not None and note.version == 1 and note.sha256 == info.sha256
    assert len(msg["data"]) < 200  # the blob never travels on the channel


def test_versions_never_go_backwards(r: redis.Redis, keys: Keys) -> None:
    store = WeightsStore(r, keys, keep_versions=2)
    assert store.publish({"w": torch.ones(1)}, "m", 1).version == 1
    r.delete(keys.weights_version_counter)  # e.g. Redis lost the counter
    assert store.publish({"w": torch.ones(1)}, "m", 2, min_version=1).version == 2
    assert store.publish({"w": torch.ones(1)}, "m", 3).version == 3
    assert r.exists(keys.weights_version_blob(1)) == 0  # only the last keep_versions are kept
    assert store.fetch(3)[0].version == 3


def test_hash_mismatch_refused() -> None:
    blob = to_blob({"w": torch.ones(2)})
    with pytest.raises(WeightsError, match="sha256"):
        from_blob(blob, hashlib.sha256(b"other").hexdigest())


def test_forged_blob_refused(r: redis.Redis, keys: Keys) -> None:
    forged = b"\x80\x04not safetensors at all"
    with pytest.raises(WeightsError, match="safetensors"):
        from_blob(forged, hashlib.sha256(forged).hexdigest())
    WeightsStore(r, keys).publish({"w": torch.ones(2)}, "m", 1)
    r.hset(keys.weights_latest, "blob", forged)
    with pytest.raises(WeightsError, match="sha256"):
        WeightsStore(r, keys).fetch()


def test_bad_notification_is_none() -> None:
    assert parse_notification(b"{not json") is None
    assert parse_notification(b'{"version": "x"}') is None
