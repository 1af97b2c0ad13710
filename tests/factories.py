"""Small builders of valid samples and sample sets for tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import redis

from pipeline.config import Config, load_config
from pipeline.wire.keys import Keys
from pipeline.wire.manifest import SampleSet, SetMeta, manifest
from pipeline.wire.schema import SampleSchema, empty_columns

#: The collector the sets of these builders come from (and whose stream `publish_entry` uses).
TEST_COLLECTOR = "collector-test"


def tiny_config(**overrides: object) -> Config:
    """The default config at a tiny scale: 32x24 frames, small buffers and batches, with the
    mechanics the tests were written against (draw and delete, the last iterate published, one
    sample per bin, one evaluation episode per environment) rather than the tuned defaults."""
    base: dict[str, object] = {
        "game": {"hood_width": 32, "hood_height": 24},
        "collection": {"episode_s": 60.0},
        "model": {"width": 32, "dense": 1024},
        "balancing": {"samples_per_bin": 1, "round_timeout_s": 20.0, "min_bins_filled": 0.5, "sample_every": 1},
        "buffers": {"capacity": 20, "stream_maxlen": 50, "samples_per_insert": 1.0},
        "trainer": {"batch_size": 8, "publish_every": 2, "checkpoint_every": 4, "log_every": 1, "ema_decay": 0.0},
        "evaluator": {"episodes_per_environment": 1},
    }
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value  # type: ignore[dict-item]
    return load_config(overrides=base)


def columns(schema: SampleSchema, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cols = empty_columns(schema, n)
    cols["frames"][:] = rng.integers(0, 255, cols["frames"].shape, dtype=np.uint8)
    cols["speed"][:] = rng.uniform(0, 20, n)
    cols["purpose"][:] = rng.uniform(-1, 1, (n, 2))
    cols["controls"][:] = rng.uniform(-1, 1, (n, 2))
    cols["targets"][:] = rng.uniform(-1, 1, (n, 2))
    cols["game_time"][:] = np.arange(n) / 30
    return cols


def sample_set(cfg: Config, output: str, n: int, seed: int = 0) -> SampleSet:
    schema = SampleSchema.from_config(cfg)
    return SampleSet(output, TEST_COLLECTOR, f"ep{seed}", columns(schema, n, seed), {"map_seed": 1})


def stored_rows(r: redis.Redis, keys: Keys, output: str) -> int:
    """Row keys of a buffer in Redis (with or without an id in the buffer's set)."""
    return sum(1 for _ in r.scan_iter(match=keys.buffer_row_prefix(output) + "*", count=1000))


def publish_entry(r: Any, keys: Keys, output: str, entry: Mapping[str, bytes], ttl: int = 3600,
                  collector: str = TEST_COLLECTOR) -> Any:
    """Publish a set in full as a collector does (rows as its incoming keys, the manifest on
    its stream), malformed ones too: their rows go under the meta's set_id, or 'unknown'.
    `r` may be a pipeline."""
    set_id = SetMeta.read(entry.get("meta", b"")).set_id or "unknown"
    for name, value in entry.items():
        if name != "meta":
            r.set(keys.incoming(collector, set_id, name[1:]), value, ex=ttl)
    return r.xadd(keys.stream(output, collector), manifest(entry))
