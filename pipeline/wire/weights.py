"""Weights on the wire: safetensors blobs with a sha256 and a monotonically increasing version.

The blob lives in a key (`weights:latest`, and `weights:v:{n}` for the last few versions);
the channel carries only `{version, sha256, model}` because pub/sub is at-most-once and
drops slow subscribers. A (re)connecting player fetches the latest itself. Every blob, and
every weights file Charles writes, carries `weights_metadata` in its safetensors header.
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


def weights_metadata(model: str, batches: int, config_sha256: str = "", version: int = 0) -> dict[str, str]:
    """What a weights blob or file says about itself, so a tool can tell which run and config
    it needs: `model` (the run name), `batches`, and where known `config_sha256` (the sha256 of
    the config's JSON, as the `config` key keeps it) and `version` (the published version)."""
    meta = {"model": model} if model else {}
    meta["batches"] = str(int(batches))
    if config_sha256:
        meta["config_sha256"] = config_sha256
    if version:
        meta["version"] = str(int(version))
    return meta


def blob_metadata(blob: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors blob that `from_blob` already accepted."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


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


#: the fields of a weights hash that describe its version (everything but the blob)
_INFO_FIELDS = [b"version", b"sha256", b"model", b"created", b"batches"]


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

    def publish(self, state: dict[str, torch.Tensor], model: str, batches: int, min_version: int = 0,
                config_sha256: str = "") -> WeightsInfo:
        """Store a new version and notify subscribers; the version never goes backwards. The
        blob's metadata names the model, batches, version and (given) the config's sha256."""
        version = int(self._next_version(keys=[self.keys.weights_version_counter], args=[min_version]))
        blob = to_blob(state, weights_metadata(model, batches, config_sha256, version))
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
        pipe.execute()
        # after the write, not inside its MULTI: a cluster refuses PUBLISH in a transaction,
        # and a player told of a version can always fetch it
        self.r.publish(self.keys.weights_channel, info.notification())
        return info

    def latest_info(self) -> WeightsInfo | None:
        return self._info_of(self.keys.weights_latest)

    def _info_of(self, key: str) -> WeightsInfo | None:
        """The version fields of one weights hash (not its blob), or None when it is gone."""
        raw = self.r.hmget(key, _INFO_FIELDS)
        return None if raw[0] is None else _info(dict(zip(_INFO_FIELDS, raw, strict=True)))

    def kept_infos(self, since: float = 0.0) -> list[WeightsInfo]:
        """Every version still kept in Redis (the newest `keep_versions`), published at or after
        `since` (epoch s), oldest first: the history a learning curve scores after its run."""
        latest = self.latest_info()
        infos: list[WeightsInfo] = []
        version = 0 if latest is None else latest.version
        while version > 0:
            info = self._info_of(self.keys.weights_version_blob(version))
            if info is None or info.created < since:
                break
            infos.append(info)
            version -= 1
        return infos[::-1]

    def fetch(self, version: int | None = None, model: str | None = None
              ) -> tuple[WeightsInfo, dict[str, torch.Tensor]]:
        """Fetch and verify the latest (or one kept) version; with `model`, refuse another
        model's weights before decoding them."""
        info, blob = self.fetch_blob(version, model)
        return info, from_blob(blob, info.sha256)

    def fetch_blob(self, version: int | None = None, model: str | None = None) -> tuple[WeightsInfo, bytes]:
        """Like `fetch`, the blob itself (its sha256 checked against the version's)."""
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
        blob = raw[b"blob"]
        if hashlib.sha256(blob).hexdigest() != info.sha256:
            raise WeightsError(f"weights version {info.version} does not match its sha256; refusing it")
        return info, blob

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
