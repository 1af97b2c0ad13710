"""The `charles player` process with the game in its own process, overlapped, on the device
the config asks for (or the CPU, said in its log, where there is no GPU): it drives, swaps in
a new version at an Unstuck and reports the pause."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from pipeline.config import load_config
from pipeline.models import build_model
from pipeline.wire.config_store import publish_config
from pipeline.wire.keys import Keys
from pipeline.wire.local_redis import RedisServer
from pipeline.wire.weights import WeightsStore
from tests.faults import RELIABILITY_CONFIG, FaultRoles, status, unique_prefix, wait_for


def _spawned_children(pid: int) -> list[int]:
    """Processes whose parent is `pid` and that multiprocessing's spawn started."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
            found.append(int(entry))
    return found


def test_player_worker_drives_a_game_process_on_the_configured_device(redis_server: RedisServer,
                                                                        tmp_path: Path) -> None:
    keys = Keys(unique_prefix("player-worker"))
    r = redis_server.client()
    cfg = load_config(RELIABILITY_CONFIG)
    cfg.player.device, cfg.player.game_process, cfg.player.overlap = "cuda", True, True
    publish_config(r, keys, cfg)
    store = WeightsStore(r, keys)
    hw = (cfg.game.hood_height, cfg.game.hood_width)
    store.publish(build_model(cfg.model, cfg.inputs, cfg.outputs, hw).state_dict(), cfg.run.name, 1)

    def player() -> dict[str, str]:
        found = status(r, keys, "player")
        return found[0] if found else {}

    roles = FaultRoles(redis_server.url, keys.prefix, tmp_path)
    try:
        roles.start("player", "player")
        wait_for(lambda: int(player().get("steps", 0)) > 30, 90, "the player to drive", roles)
        want = "cuda" if torch.cuda.is_available() else "cpu"
        assert player()["device"].startswith(want)
        assert bool(roles.events("player", "cuda_unavailable")) == (want == "cpu")
        children = _spawned_children(roles.procs["player"].pid)
        assert children  # the game runs in a child process
        store.publish(build_model(cfg.model, cfg.inputs, cfg.outputs, hw).state_dict(), cfg.run.name, 2)
        wait_for(lambda: player().get("model_version") == "2", 60, "the swap to version 2", roles)
        assert float(player()["swap_pause_ms"]) > 0
        steps = int(player()["steps"])
        wait_for(lambda: int(player()["steps"]) > steps + 30, 30, "the player to drive on after the swap", roles)
        assert not roles.events("player", "game_error")
        assert roles.stop("player") == 0
        assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]  # ... which ended with it
    finally:
        roles.stop_all()


def test_weights_file_with_another_sha256_is_refused(redis_server: RedisServer, tmp_path: Path) -> None:
    """Issue 15 #14: `--weights FILE` loaded any file; with `--sha256` one that differs is
    refused with one line naming the file, and the file's hash is logged either way."""
    from safetensors.torch import save_file

    keys = Keys(unique_prefix("player-sha"))
    cfg = load_config(RELIABILITY_CONFIG)
    publish_config(redis_server.client(), keys, cfg)
    weights = tmp_path / "model.safetensors"
    save_file(build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width)).state_dict(),
              str(weights))
    roles = FaultRoles(redis_server.url, keys.prefix, tmp_path)
    try:
        proc = roles.start("player", "player", "--weights", str(weights), "--sha256", "0" * 64, "--max-steps", "5")
        assert proc.wait(120) != 0
        out = (tmp_path / "player.log").read_text()
        assert f"{weights}: weights blob does not match its sha256" in out and "Traceback" not in out
    finally:
        roles.stop_all()


def test_weights_file_of_another_config_names_the_config(redis_server: RedisServer, tmp_path: Path) -> None:
    """Issue 16: a `--weights` file that does not fit the live config says which config it
    needs (its metadata names its run and config), in one line, instead of a load error."""
    from pipeline.wire.weights import to_blob, weights_metadata

    keys = Keys(unique_prefix("player-fit"))
    publish_config(redis_server.client(), keys, load_config(RELIABILITY_CONFIG))
    default = load_config()
    model = build_model(default.model, default.inputs, default.outputs, (default.game.hood_height, default.game.hood_width))
    weights = tmp_path / "other.safetensors"
    weights.write_bytes(to_blob(model.state_dict(), weights_metadata(default.run.name, 5, default.sha256(), 3)))
    roles = FaultRoles(redis_server.url, keys.prefix, tmp_path)
    try:
        proc = roles.start("player", "player", "--weights", str(weights), "--max-steps", "5")
        assert proc.wait(120) != 0
        out = (tmp_path / "player.log").read_text()
        assert f"{weights}: weights of model {default.run.name!r} do not fit the live config's model" in out
        assert "run the server with its config: --config " in out and "configs/default.toml (sha256" in out
        assert "Traceback" not in out
    finally:
        roles.stop_all()
