"""Recordings on disk: what `charles record info` says of data directories, and the
disk budget that deletes the oldest chunks first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from pipeline.data.chunks import ChunkMeta, ChunkWriter, DiskBudget, describe, scan
from workers.record import cli as record_cli


def _write(writer: ChunkWriter, episode: str, rows: int) -> ChunkMeta:
    columns = {"frames": np.zeros((rows, 1, 4, 4, 3), np.uint8), "speed": np.arange(rows, dtype=np.float32)}
    return writer.write("ticks", episode, "ticks", columns, {"fps": 30.0})


def test_describe_counts_chunks_episodes_rows_and_kinds(tmp_path: Path) -> None:
    writer = ChunkWriter(tmp_path / "a")
    _write(writer, "ep1", 5)
    _write(writer, "ep1", 3)
    _write(writer, "ep2", 4)
    (tmp_path / "b").mkdir()
    out = describe([tmp_path / "a", tmp_path / "b"])
    a = out[str(tmp_path / "a")]
    assert (a["chunks"], a["episodes"], a["rows"], a["kinds"]) == (3, 2, 12, ["ticks"])
    assert a["mb"] == round(sum(m.bytes for m in scan(tmp_path / "a")) / 2**20, 2)
    assert out[str(tmp_path / "b")] == {"chunks": 0, "episodes": 0, "rows": 0, "mb": 0, "kinds": []}


def test_record_info_prints_the_description_as_json(tmp_path: Path) -> None:
    _write(ChunkWriter(tmp_path), "ep1", 2)
    result = CliRunner().invoke(record_cli, ["info", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads(json.dumps(describe([tmp_path])))


def test_the_budget_deletes_the_oldest_chunks_first(tmp_path: Path) -> None:
    writer = ChunkWriter(tmp_path)
    one = _write(writer, "old", 50).bytes
    budget = DiskBudget(tmp_path, max_bytes=int(2.5 * one))
    for episode in ("mid", "new", "newest"):
        budget.add(_write(writer, episode, 50))
    assert sorted(m.episode for m in scan(tmp_path)) == ["new", "newest"]
    assert budget.deleted_chunks == 2 and not (tmp_path / "old").exists()


def test_a_budget_of_zero_or_less_is_refused_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(record_cli, ["drive", "--out", str(tmp_path / "d"), "--budget-gb", "0"])
    assert result.exit_code == 2 and "--budget-gb" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "d").exists()
