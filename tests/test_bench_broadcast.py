"""`charles bench broadcast` delivers every version to every player process through the real
watcher and times a real swap (its figures are the bench's to report, not asserted here)."""

from __future__ import annotations

from pipeline.bench.broadcast import run


def test_every_player_fetches_every_version_and_a_swap_is_timed() -> None:
    res = run(players=(1, 3), versions=2, swaps=2)
    details = res["details"]
    blob = details["blob_bytes"]
    assert blob > 100_000  # the default model's safetensors
    for n in (1, 3):
        got = details["players"][str(n)]
        assert 0 < got["p50_ms"] <= got["p99_ms"]
        assert 0 < got["raw_p50_ms"] <= got["raw_p99_ms"]
        assert got["bytes_sent_per_version"] >= n * blob  # each player fetched the whole blob itself
    assert details["players"]["3"]["bytes_sent_per_version"] < 4 * blob  # ... and only once
    assert res["value"] == details["players"]["3"]["p99_ms"] and 0 < res["ratio"]
    assert details["swap_pause_ms"]["p50"] > 0
