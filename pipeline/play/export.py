"""Exporting published weights to a file: the latest, the best, or one kept version.

The reverse of `push`: the version's blob is fetched from Redis, its sha256 checked, and
its tensors written as safetensors with the metadata every weights file carries (model,
batches, config sha256, version) plus `sha256`, the published blob's. The file is what
`charles evaluate`, `charles player --weights` and `charles push` take.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import redis

from pipeline.errors import WeightsError
from pipeline.wire.keys import Keys
from pipeline.wire.weights import WeightsStore, blob_metadata, from_blob, to_blob, weights_metadata

#: What `charles export` takes: latest, best, or a version as vN (or N).
_VERSION = re.compile(r"v?([1-9][0-9]*)")
#: How far below the latest a refused version's message looks for the versions still kept.
_LOOK_BACK = 64


def choose_version(r: redis.Redis, keys: Keys, which: str) -> int:
    """The published version `which` names; a WeightsError of one line when there is none."""
    store = WeightsStore(r, keys)
    latest = store.latest_info()
    if which == "latest":
        if latest is None:
            raise WeightsError("no weights published yet: nothing to export (is a trainer running?)")
        return latest.version
    if which == "best":
        best = r.hget(keys.weights_best, "version")
        if best is None:
            raise WeightsError("no best version yet: the evaluator has not scored one above the others")
        return int(best)
    match = _VERSION.fullmatch(which)
    if match is None:
        raise WeightsError(f"{which!r} names no version; use latest, best or vN (e.g. v12)")
    version = int(match.group(1))
    newest = latest.version if latest is not None else 0
    candidates = list(range(max(1, newest - _LOOK_BACK), newest + 1))
    pipe = r.pipeline(transaction=False)
    for n in candidates:
        pipe.exists(keys.weights_version_blob(n))
    kept = [n for n, there in zip(candidates, pipe.execute(), strict=True) if there]
    best = r.hget(keys.weights_best, "version")
    if version in kept or (best is not None and int(best) == version):
        return version
    held = ", ".join(f"v{n}" for n in kept) or "none"
    raise WeightsError(f"version {version} is not in Redis (kept: {held}{'' if best is None else f'; best: v{int(best)}'}); "
                       "only the newest versions (trainer.keep_versions) and the best are kept")


def export_weights(r: redis.Redis, keys: Keys, which: str, path: Path) -> dict[str, str]:
    """Write version `which` (latest, best, vN) to `path`; returns the file's metadata."""
    version = choose_version(r, keys, which)
    info, blob = WeightsStore(r, keys).fetch_blob(version)
    published = blob_metadata(blob)
    meta = {**published, **weights_metadata(info.model, info.batches, published.get("config_sha256", ""),
                                             info.version), "sha256": info.sha256}
    data = to_blob(from_blob(blob, info.sha256), meta)
    path = Path(path)
    staging = path.with_name(path.name + ".part")
    try:
        staging.write_bytes(data)
        os.replace(staging, path)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot write the weights: {exc}") from None
    return meta
