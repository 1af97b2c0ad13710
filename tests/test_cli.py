"""The `charles` command as a user meets it: every user error is one line, names the flag,
file or key, and exits non-zero; no traceback reaches the terminal (issue 18)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

from pipeline.cli import COMMANDS, main
from pipeline.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "models" / "charles_small_cnn.safetensors"


@pytest.fixture(autouse=True)
def no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`main` reads a .env into os.environ: never the checkout's, in the test process."""
    monkeypatch.setenv("CHARLES_ENV_FILE", str(tmp_path / "no.env"))


def charles(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`charles ARGS` as a process in `cwd`, no .env, no Redis."""
    env = {**os.environ, "CHARLES_ENV_FILE": str(cwd / "no.env"), "OMP_NUM_THREADS": "1",
           "CHARLES_REDIS_URL": "redis://127.0.0.1:9/0"}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *names: str) -> str:
    """Non-zero exit, no traceback, and the last line of stderr names each of `names`."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: "), result.stderr
    for name in names:
        assert name in line, line
    return line


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight game seconds of the NPC driving, recorded as `charles record drive` does."""
    folder = tmp_path_factory.mktemp("recording")
    result = charles("record", "drive", "--out", str(folder / "d"), "--driver", "npc", "--seconds", "8",
                     cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "d"


@click.command(name="boom")
def BOOM() -> None:  # noqa: N802 - a command object, looked up by name like the real ones
    raise ConfigError("run.name: 'x y' has a space; use letters, digits, - and _")


def test_a_charles_error_anywhere_in_a_subcommand_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """#4: the group turns any CharlesError a subcommand lets through into one line, exit 1."""
    monkeypatch.setitem(COMMANDS, "boom", (f"{__name__}:BOOM", "raises a ConfigError"))
    result = CliRunner().invoke(main, ["boom"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: run.name: 'x y' has a space; use letters, digits, - and _"



def test_sim_out_of_range_traffic_names_the_flag_and_writes_no_video(tmp_path: Path) -> None:
    """#4: `sim --record z.mp4 --traffic 5` was a ConfigError traceback and left z.mp4 behind."""
    result = charles("sim", "--record", "z.mp4", "--traffic", "5", "--seconds", "1", cwd=tmp_path)
    assert_one_line_error(result, "'--traffic'", "0<=x<=1")
    assert not (tmp_path / "z.mp4").exists()
    assert_one_line_error(charles("sim", "--record", "z.mp4", "--size", "640x", cwd=tmp_path), "'--size'", "640x360")


def test_sim_record_stopped_by_ctrl_c_closes_a_playable_video(tmp_path: Path) -> None:
    """`charles sim --record drive.mp4` stopped by Ctrl-C before its time: exit 0, the summary
    says "signal", and the MP4 is closed with the frames driven so far."""
    import cv2

    env = {**os.environ, "CHARLES_ENV_FILE": str(tmp_path / "no.env"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "sim", "--record", "drive.mp4", "--seconds",
                             "3600"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    video = tmp_path / "drive.mp4"
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline and (not video.exists() or video.stat().st_size < 50_000):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["ended"] == "signal" and 0 < summary["frames"] < 3600 * 30
    capture = cv2.VideoCapture(str(video))
    readable = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, frame = capture.read()
    capture.release()
    assert ok and frame.shape[:2] == (360, 640) and readable > 0


def test_record_drive_unknown_weather_names_the_flag_and_leaves_no_folder(tmp_path: Path) -> None:
    """#4: `record drive --weather foggy` was a traceback and left an empty output folder."""
    result = charles("record", "drive", "--out", "d", "--weather", "foggy", "--driver", "npc", "--seconds", "1",
                     cwd=tmp_path)
    assert_one_line_error(result, "'--weather'", "'fog'")
    assert not (tmp_path / "d").exists()


def test_train_with_a_backbone_it_cannot_build_names_the_config_file(tmp_path: Path, recording: Path) -> None:
    """#4: a timm backbone without timm (or unknown to timm) was a traceback from deep in the model."""
    text = (ROOT / "configs" / "default.toml").read_text()
    assert 'backbone = "small_cnn"' in text
    (tmp_path / "bad.toml").write_text(text.replace('backbone = "small_cnn"', 'backbone = "timm:no_such_net"'))
    result = charles("train", "--offline", str(recording), "--config", "bad.toml", "--epochs", "1", cwd=tmp_path)
    assert_one_line_error(result, "bad.toml", "model.backbone", "no_such_net")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_asking_for_cuda_without_it_names_the_key_or_flag(tmp_path: Path, recording: Path) -> None:
    """#4: configs/h100.toml on a CPU machine failed with torch's 'Torch not compiled with CUDA enabled'."""
    h100 = ROOT / "configs" / "h100.toml"
    result = charles("train", "--offline", str(recording), "--config", str(h100), "--epochs", "1", cwd=tmp_path)
    line = assert_one_line_error(result, "h100.toml", "trainer.device", "'cuda'", "'cpu'")
    assert "Torch not compiled" not in line
    result = charles("train", "--offline", str(recording), "--device", "cuda:0", "--epochs", "1", cwd=tmp_path)
    assert_one_line_error(result, "--device", "'cuda:0'")
    assert not list(tmp_path.glob("runs*"))


def test_weights_of_another_model_name_the_file_and_the_config_they_need() -> None:
    """#8: the shipped model under another config printed a state_dict dump cut mid-name."""
    result = charles("evaluate", "--weights", "models/charles_small_cnn.safetensors",
                     "--config", "configs/history_lstm.toml", "--seconds", "1", "--episodes", "1", cwd=ROOT)
    line = assert_one_line_error(result, "models/charles_small_cnn.safetensors", "'charles_small_cnn'",
                                 "configs/history_lstm.toml", "--config configs/default.toml")
    assert "Error(s) in loading" not in line and "size mismatch" not in line
    assert len(result.stderr.strip().splitlines()) == 1


def test_sim_and_record_drive_share_their_world_flags(tmp_path: Path) -> None:
    """#12: `sim` had --seed, --time and a checked --weather; `record drive` had --map-seed,
    --time-of-day and free text. Both now take either name, and check the values."""
    for args in (["sim"], ["record", "drive"]):
        help_text = CliRunner().invoke(main, [*args, "--help"], terminal_width=200).output
        for flag in ("--seed, --map-seed", "--time, --time-of-day", "[clear|overcast|rain|fog]", "0<=x<=24",
                     "0<=x<=1"):
            assert flag in help_text, (args, flag)
    done = charles("record", "drive", "--out", "d", "--driver", "npc", "--seconds", "1", "--seed", "3",
                   "--time", "22", "--weather", "rain", cwd=tmp_path)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("args", [
    ["evaluate", "--weights", str(SHIPPED)], ["record", "drive", "--out", "d"], ["train", str(ROOT / "configs")],
    ["bench", "model"], ["sim", "--weights", str(SHIPPED)], ["data", "histogram"],
])
def test_config_is_an_existing_file_in_every_command(args: list[str], tmp_path: Path) -> None:
    """#12: `--config` was a PATH in some commands and TEXT in others (a typo then failed later, or differently)."""
    result = CliRunner().invoke(main, [*args, "--config", str(tmp_path / "missing.toml")])
    assert result.exit_code == 2 and "'--config'" in result.output and "does not exist" in result.output, result.output


def test_train_needs_no_offline_flag(tmp_path: Path, recording: Path) -> None:
    """#12: `train --offline` was a required "option"; `charles train DIR` trains (--offline still accepted)."""
    assert "--offline" not in CliRunner().invoke(main, ["train", "--help"]).output
    done = charles("train", str(recording), "--epochs", "1", "--max-steps", "1", "--out", "ckpt", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()


def test_console_once_without_redis_fails_in_one_line(tmp_path: Path) -> None:
    """#12: `console --once` exited 0 when Redis was unreachable. #5: the error says where the
    Redis settings came from (no .env here)."""
    done = charles("console", "--once", cwd=tmp_path)
    line = assert_one_line_error(done, "cannot reach Redis", "no .env found", "no.env")
    assert "charles init" in line
