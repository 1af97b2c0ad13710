"""Weights on the wire: safetensors blobs with a sha256 and a monotonically increasing version.

The blob lives in a key (`weights:latest`, and `weights:v:{n}` for the last few versions);
the channel carries only `{version, sha256, model}` because pub/sub is at-most-once and
drops slow subscribers. A (re)connecting player fetches the latest itself.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import redis
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from pipeline.errors import WeightsError
from pipeline.wire.keys import Keys

# KEYS[1] = version counter; ARGV[1] = the lowest version allowed minus one (from the checkpoint).
_NEXT_VERSION_LUA = """
local v = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if v <= floor then
  v = floor + 1
  redis.call('SET', KEYS[1], v)
end
return v
"""


@dataclass(frozen=True)
class WeightsInfo:
    """What a notification and the `weights:latest` hash say about one version."""

    version: int
    sha256: str
    model: str
    created: float
    batches: int

    def notification(self) -> str:
        return json.dumps({"version": self.version, "sha256": self.sha256, "model": self.model})


def to_blob(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Serialise tensors with safetensors (no code runs on load)."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    return st_save(tensors, metadata=metadata)


def from_blob(blob: bytes, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Verify the hash (when given) and parse safetensors; anything else is a WeightsError."""
    if sha256 is not None and hashlib.sha256(blob).hexdigest() != sha256:
        raise WeightsError("weights blob does not match its sha256; refusing to load it")
    try:
        return st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"weights blob is not valid safetensors: {exc}") from None


def _info(raw: dict[bytes, bytes]) -> WeightsInfo:
    return WeightsInfo(
        version=int(raw[b"version"]),
        sha256=raw[b"sha256"].decode(),
        model=raw[b"model"].decode(),
        created=float(raw[b"created"]),
        batches=int(raw[b"batches"]),
    )


class WeightsStore:
    """Publish and fetch weights for one run."""

    def __init__(self, r: redis.Redis, keys: Keys, keep_versions: int = 5) -> None:
        self.r = r
        self.keys = keys
        self.keep_versions = keep_versions
        self._next_version = r.register_script(_NEXT_VERSION_LUA)

    def publish(self, state: dict[str, torch.Tensor], model: str, batches: int, min_version: int = 0) -> WeightsInfo:
        """Store a new version and notify subscribers; the version never goes backwards."""
        blob = to_blob(state, {"model": model, "batches": str(batches)})
        version = int(self._next_version(keys=[self.keys.weights_version_counter], args=[min_version]))
        info = WeightsInfo(version, hashlib.sha256(blob).hexdigest(), model, time.time(), batches)
        fields = {
            "blob": blob,
            "version": info.version,
            "sha256": info.sha256,
            "model": info.model,
            "created": info.created,
            "batches": info.batches,
        }
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.keys.weights_latest, mapping=fields)
        pipe.hset(self.keys.weights_version_blob(version), mapping=fields)
        pipe.delete(self.keys.weights_version_blob(version - self.keep_versions))
        pipe.publish(self.keys.weights_channel, info.notification())
        pipe.execute()
        return info

    def latest_info(self) -> WeightsInfo | None:
        raw = self.r.hmget(self.keys.weights_latest, ["version", "sha256", "model", "created", "batches"])
        if raw[0] is None:
            return None
        return _info(dict(zip([b"version", b"sha256", b"model", b"created", b"batches"], raw, strict=True)))

    def fetch(self, version: int | None = None, model: str | None = None
              ) -> tuple[WeightsInfo, dict[str, torch.Tensor]]:
        """Fetch and verify the latest (or one kept) version; with `model`, refuse another
        model's weights before decoding them."""
        key = self.keys.weights_latest if version is None else self.keys.weights_version_blob(version)
        raw = self.r.hgetall(key)
        if not raw and version is not None:  # older than keep_versions: the best one keeps its own copy
            best = self.r.hgetall(self.keys.weights_best)
            raw = best if b"blob" in best and int(best.get(b"version", 0)) == version else {}
        if not raw:
            raise WeightsError(f"no weights published{'' if version is None else f' for version {version}'}")
        info = _info(raw)
        if model is not None and info.model != model:
            raise WeightsError(f"weights are for model {info.model!r}, this run is {model!r}")
        return info, from_blob(raw[b"blob"], info.sha256)

    def fetch_best(self) -> tuple[WeightsInfo, dict[str, torch.Tensor]] | None:
        """The evaluator's best version (its blob is copied into `weights:best`), or None."""
        best = self.r.hget(self.keys.weights_best, "version")
        if best is None:
            return None
        return self.fetch(int(best))


def parse_notification(data: bytes | str) -> WeightsInfo | None:
    """A channel message as WeightsInfo (partial: created/batches unknown), or None if malformed."""
    try:
        msg = json.loads(data)
        return WeightsInfo(int(msg["version"]), str(msg["sha256"]), str(msg["model"]), 0.0, 0)
    except (ValueError, KeyError, TypeError):
        return None
