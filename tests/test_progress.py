"""Progress bars: silent off a terminal (honcho, CI, pipes), drawn on stderr when asked."""

from __future__ import annotations

import pytest

from pipeline.observe import progress


def test_silent_when_not_a_terminal(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHARLES_PROGRESS", raising=False)
    assert list(progress.track(range(3), "work")) == [0, 1, 2]
    with progress.progress_bar("work", total=2) as bar:
        bar.advance()
        bar.update(completed=2)
    assert bar.completed == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_forced_bar_goes_to_stderr_only(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARLES_PROGRESS", "1")
    assert sum(progress.track([1, 2, 3], "summing")) == 6
    out = capsys.readouterr()
    assert out.out == "" and "summing" in out.err and "3/3" in out.err
    monkeypatch.setenv("CHARLES_PROGRESS", "0")
    assert not progress.enabled()
