"""Buffers: the 90% gate at its exact edge, equal shares, and draws that remove samples."""

from __future__ import annotations

import redis

from pipeline.buffers import Buffers, split_batch, start_threshold
from pipeline.keys import Keys
from tests.factories import stored_rows


def fill(buffers: Buffers, output: str, n: int, start: int = 0) -> None:
    pipe = buffers.r.pipeline(transaction=True)
    ids = [f"{output}-{i}" for i in range(start, start + n)]
    buffers.add_rows_pipeline(pipe, output, ids, [i.encode() for i in ids])
    pipe.execute()


def test_threshold_and_split() -> None:
    assert start_threshold(1000, 0.9) == 900
    assert start_threshold(25000, 0.9) == 22500
    assert start_threshold(10, 0.95) == 10
    assert split_batch(32, ["a", "b"]) == [16, 16]
    assert split_batch(7, ["a", "b", "c"]) == [3, 2, 2]


def test_gate_exact_edge(r: redis.Redis, keys: Keys) -> None:
    b = Buffers(r, keys, ["a", "b"], capacity=10, start_fraction=0.9)
    fill(b, "a", 10)
    fill(b, "b", 8)
    assert b.draw(2) is None  # b holds 8 < 9
    assert b.fills() == {"a": 10, "b": 8}  # nothing was taken from a either
    fill(b, "b", 1, start=8)
    drawn = b.draw(2)
    assert drawn is not None and len(drawn["a"]) == 1 and len(drawn["b"]) == 1
    assert b.fills() == {"a": 9, "b": 8}
    assert b.draw(2) is None  # b fell below the gate: the trainer waits


def test_draw_removes_and_never_repeats(r: redis.Redis, keys: Keys) -> None:
    b = Buffers(r, keys, ["a", "b"], capacity=100, start_fraction=0.0)
    fill(b, "a", 50)
    fill(b, "b", 50)
    seen: list[bytes] = []
    while True:
        drawn = b.draw(10)
        assert drawn is not None
        rows = drawn["a"] + drawn["b"]
        if not rows:
            break
        assert len(drawn["a"]) == len(drawn["b"]) == 5
        seen += rows
    assert len(seen) == 100 and len(set(seen)) == 100
    assert stored_rows(r, keys, "a") == 0 and r.scard(keys.buffer("a")) == 0
