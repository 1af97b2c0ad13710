"""`charles export`: published weights from a real Redis to a safetensors file with metadata,
and checkpoints' weights files with the same metadata."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import redis
import torch
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.errors import WeightsError
from pipeline.models.loading import read_weights_file
from pipeline.play.export import export_weights
from pipeline.train.learner import Learner
from pipeline.wire.keys import Keys
from pipeline.wire.local_redis import RedisServer
from pipeline.wire.weights import WeightsStore
from tests.factories import tiny_config

SHA = "c" * 64


def state(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((3, 2), value), "b": torch.arange(4, dtype=torch.float32) + value}


def publish(r: redis.Redis, keys: Keys, n: int, first: int = 1) -> list[int]:
    """Versions first..first+n-1, each with tensors and batches made from its number."""
    store = WeightsStore(r, keys, keep_versions=5)
    return [store.publish(state(float(i)), "run-x", batches=100 * i, config_sha256=SHA).version
            for i in range(first, first + n)]


def make_best(r: redis.Redis, keys: Keys, version: int) -> None:
    """What the evaluator's move_best leaves: the version's hash copied into `weights:best`."""
    raw = r.hgetall(keys.weights_version_blob(version))
    r.hset(keys.weights_best, mapping=raw)


def test_latest_best_and_a_version_with_metadata(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    versions = publish(r, keys, 3)
    make_best(r, keys, versions[1])
    publish(r, keys, 5, first=4)  # versions 4..8: v2 leaves the kept five, the best keeps its own copy
    for which, i in (("latest", 8), ("v6", 6), ("7", 7), ("best", 2), ("v2", 2)):
        path = tmp_path / f"{which}.safetensors"
        meta = export_weights(r, keys, which, path)
        tensors, on_file = read_weights_file(path)
        assert torch.equal(tensors["w"], state(float(i))["w"]) and torch.equal(tensors["b"], state(float(i))["b"])
        published = r.hget(keys.weights_version_blob(i) if i != 2 else keys.weights_best, "sha256")
        assert on_file == meta == {"model": "run-x", "batches": str(100 * i), "config_sha256": SHA,
                                   "version": str(i), "sha256": published.decode()}
    assert r.exists(keys.weights_version_blob(2)) == 0


def test_missing_versions_refused_in_one_line(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    for which, message in (("latest", "no weights published yet"), ("best", "no best version yet"),
                           ("v3", "version 3 is not in Redis (kept: none)")):
        with pytest.raises(WeightsError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            export_weights(r, keys, which, path)
        assert len(str(err.value).splitlines()) == 1
    publish(r, keys, 7)
    for which, message in (("v1", "version 1 is not in Redis (kept: v3, v4, v5, v6, v7)"),
                           ("v99", "version 99 is not in Redis"), ("newest", "names no version")):
        with pytest.raises(WeightsError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            export_weights(r, keys, which, path)
        assert len(str(err.value).splitlines()) == 1
    assert not path.exists()


def test_the_command(redis_server: RedisServer, r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    env = {"CHARLES_REDIS_URL": redis_server.url, "CHARLES_KEY_PREFIX": keys.prefix}
    publish(r, keys, 2)
    out = tmp_path / "latest.safetensors"
    result = CliRunner().invoke(main, ["export", "latest", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert '"version": "2"' in result.output and read_weights_file(out)[1]["version"] == "2"
    result = CliRunner().invoke(main, ["export", "v9", str(tmp_path / "x.safetensors")], env=env)
    assert result.exit_code == 1 and "version 9 is not in Redis" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_checkpoint_weights_carry_the_metadata(tmp_path: Path) -> None:
    cfg = tiny_config()
    learner = Learner(torch.nn.Linear(2, 2), 1e-3, device="cpu")
    learner.batches = 42
    learner.save_checkpoint(tmp_path / "ckpt", {"model": cfg.run.name, "config_sha256": cfg.sha256()})
    _, meta = read_weights_file(tmp_path / "ckpt" / "model.safetensors")
    assert meta == {"model": cfg.run.name, "batches": "42", "config_sha256": cfg.sha256()}
    assert cfg.sha256() == hashlib.sha256(cfg.to_json().encode()).hexdigest()


def test_a_file_that_does_not_fit_names_the_config_it_needs(tmp_path: Path) -> None:
    """Issue 16: weights carry their config's sha256, so a file that does not fit the given
    config names the shipped config it was trained with, or the sha256 to look for."""
    from pipeline.config import DEFAULT_CONFIG, load_config
    from pipeline.models import build_model
    from pipeline.models.loading import build_model_from
    from pipeline.wire.weights import to_blob, weights_metadata

    default = load_config()
    model = build_model(default.model, default.inputs, default.outputs, (default.game.hood_height, default.game.hood_width))
    other = tiny_config(model={"width": 8, "dense": 32, "head": [16]})  # same run name, another model
    assert other.run.name == default.run.name
    for sha, needed in ((default.sha256(), f"--config {DEFAULT_CONFIG.parent.name}/{DEFAULT_CONFIG.name}"),
                        ("d" * 64, "whose sha256 is dddddddddddddddd")):
        path = tmp_path / f"{sha[:4]}.safetensors"
        path.write_bytes(to_blob(model.state_dict(), weights_metadata(default.run.name, 10, sha)))
        tensors, meta = read_weights_file(path)
        with pytest.raises(WeightsError) as err:
            build_model_from(other, tensors, source=path, meta=meta, config_file="tiny.toml")
        assert "trained with another config" in str(err.value) and needed in str(err.value)
        assert len(str(err.value).splitlines()) == 1
