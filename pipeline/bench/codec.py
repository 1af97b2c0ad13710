"""`charles bench codec`: bytes, encode and decode time per frame of every frame codec.

Real simulator frames (the NPC driving on a few maps, by day, at night, in rain) at the
config's hood size and at 270x480 (`configs/xception_270x480.toml`), each codec side by
side in one run: bytes per frame and per buffer row, the collector's encode and the
trainer's decode time per frame (one thread, as each of them runs it), the error of the
lossy one, and what the original's 25,000 samples per output would hold in Redis. At
270x480 `details.levels_480x270` adds PNG and zstd at other compression levels.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import structlog

from pipeline.bench import result
from pipeline.config import GameConfig, load_config
from pipeline.errors import ConfigError

log = structlog.get_logger(__name__)

#: the sizes measured besides the config's hood: the original's 480x270 hood
SIZES: tuple[tuple[int, int], ...] = ((480, 270),)
#: (map seed, weather, hour): day, dusk rain, night, fog
_SCENES = ((1, "clear", 12.0), (2, "rain", 18.5), (3, "clear", 23.0), (9001, "fog", 9.0))
_FRAMES_PER_SCENE = 12
_TICKS_BETWEEN = 20  # frames 2/3 s apart: different enough that no codec sees one twice
#: the original trained from this many samples per output (issue 19's target: <= 4 GB)
ORIGINAL_SAMPLES_PER_OUTPUT = 25_000


def sim_frames(size: tuple[int, int], count: int = len(_SCENES) * _FRAMES_PER_SCENE) -> np.ndarray:
    """`count` hood frames [count, H, W, 3] the NPC sees while it drives, spread over the
    scenes (also the realistic frames of `bench pipeline` and `bench trainer`: noise or
    zeros would tell nothing about a codec)."""
    from pipeline.games.base import Environment
    from pipeline.games.sim import SimGame

    game = SimGame(hood_size=size)
    out: list[np.ndarray] = []
    per_scene = -(-count // len(_SCENES))
    try:
        for seed, weather, hours in _SCENES:
            game.reset(Environment(map_seed=seed, episode_seed=seed, weather=weather, time_of_day=hours,
                                   traffic_density=0.6))
            for _ in range(min(per_scene, count - len(out))):
                for _ in range(_TICKS_BETWEEN):
                    obs = game.step()
                out.append(np.ascontiguousarray(obs.frame))
    finally:
        game.close()
    return np.stack(out)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _measure(codec: Any, frames: list[np.ndarray], seconds: float, outputs: int) -> dict[str, Any]:
    from pipeline.wire import frames as frames_mod
    from pipeline.wire.rows import encode_row

    shape = frames[0].shape
    coded = [bytes(codec.encode(f)) for f in frames]  # warm up (and the bytes)
    reps, start = 0, time.perf_counter()
    while reps < 1 or time.perf_counter() - start < seconds / 2:
        for f in frames:
            codec.encode(f)
        reps += 1
    encode_ms = 1000 * (time.perf_counter() - start) / (reps * len(frames))
    out = np.empty(shape, np.uint8)
    reps, start = 0, time.perf_counter()
    while reps < 1 or time.perf_counter() - start < seconds / 2:
        for data in coded:
            frames_mod.decode(data, codec.name, shape, out=out)
        reps += 1
    decode_ms = 1000 * (time.perf_counter() - start) / (reps * len(frames))
    decoded = [frames_mod.decode(data, codec.name, shape).copy() for data in coded]
    row = {"speed": np.float32(3.0), "purpose": np.zeros(2, np.float32), "controls": np.zeros(2, np.float32),
           "targets": np.zeros(2, np.float32), "history": np.zeros((0, 5), np.float32), "game_time": np.float64(1.0)}
    header = len(encode_row({**row, "frames": frames[0]}, "e" * 32, time.time(), 0, codec)) - len(coded[0])
    frame_bytes = float(np.mean([len(c) for c in coded]))
    psnr = [_psnr(a, b) for a, b in zip(frames, decoded, strict=True)]
    return {
        "bytes_per_frame": round(frame_bytes, 1),
        "bytes_per_row": round(frame_bytes + header, 1),
        "encode_ms_per_frame": round(encode_ms, 4),
        "decode_ms_per_frame": round(decode_ms, 4),
        "psnr_db": None if codec.lossless else round(float(np.mean(psnr)), 2),
        "max_abs_error": int(max(np.abs(a.astype(np.int16) - b).max() for a, b in zip(frames, decoded, strict=True))),
        "gb_for_25000_per_output": round(ORIGINAL_SAMPLES_PER_OUTPUT * outputs * (frame_bytes + header) / 1e9, 3),
    }


def _levels(frames: list[np.ndarray], seconds: float) -> dict[str, Any]:
    """Bytes and encode ms per frame of the lossless codecs at other compression levels
    (the codecs use `PNG_LEVEL` and `ZSTD_LEVEL`): what a higher level would buy."""
    import cv2
    import zstandard

    images = [f.reshape(-1, *f.shape[2:]) for f in frames]
    encoders: dict[str, Any] = {}
    for level in (1, 3, 6, 9):
        encoders[f"png{level}"] = lambda im, lv=level: cv2.imencode(".png", im, [cv2.IMWRITE_PNG_COMPRESSION, lv])[1]
    for level in (1, 3, 9):
        z = zstandard.ZstdCompressor(level=level)
        encoders[f"zstd{level}"] = lambda im, z=z: z.compress(im)
    out = {}
    for name, encode in encoders.items():
        sizes = [len(encode(im)) for im in images]
        reps, start = 0, time.perf_counter()
        while reps < 1 or time.perf_counter() - start < seconds:
            for im in images:
                encode(im)
            reps += 1
        out[name] = {"bytes_per_frame": round(float(np.mean(sizes)), 1),
                     "encode_ms_per_frame": round(1000 * (time.perf_counter() - start) / (reps * len(images)), 4)}
    return out


def run(config_path: str | None = None, seconds: float = 10.0, **_: Any) -> dict[str, Any]:
    """Per codec and size: bytes, encode and decode ms per frame, ratio to raw. The value is
    the bytes per frame of the config's codec at 270x480, against raw (ratio = raw / value)."""
    import cv2

    from pipeline.wire.frames import CODECS, JPEG, FrameCodec

    try:
        cfg = load_config(config_path)
        game, buffers, outputs = cfg.game, cfg.buffers, len(cfg.outputs)
    except ConfigError:
        if config_path:
            raise
        game, buffers, outputs = GameConfig(), None, 2  # no default config file: the schema's defaults
    chosen = buffers.frame_codec if buffers else "raw"
    quality = buffers.frame_quality if buffers else 90
    cv2.setNumThreads(1)  # one collector, one draw thread: one core each
    codecs = [FrameCodec(name, quality) for name in CODECS]
    codecs += [FrameCodec(JPEG, q) for q in (75, 95) if q != quality]
    sizes = [(game.hood_width, game.hood_height), *(s for s in SIZES if s != (game.hood_width, game.hood_height))]
    per_figure = max(seconds / (len(sizes) * len(codecs)), 0.05)
    details: dict[str, Any] = {"frame_codec": chosen, "frame_quality": quality, "outputs": outputs,
                               "frames": len(_SCENES) * _FRAMES_PER_SCENE, "scenes": [list(s) for s in _SCENES],
                               "opencv": cv2.__version__, "sizes": {}}
    value = raw = 0.0
    for w, h in sizes:
        frames = list(sim_frames((w, h))[:, None])  # rows of one frame: [1, H, W, 3]
        figures: dict[str, Any] = {}
        for codec in codecs:
            label = codec.name if codec.name != JPEG else f"jpeg{codec.quality}"
            figures[label] = _measure(codec, frames, per_figure, outputs)
        base = figures["raw"]["bytes_per_frame"]
        for fig in figures.values():
            fig["bytes_ratio_to_raw"] = round(fig["bytes_per_frame"] / base, 4)
        details["sizes"][f"{w}x{h}"] = figures
        if (w, h) == (480, 270):
            details["levels_480x270"] = _levels(frames, per_figure / 2)
            key = chosen if chosen != JPEG else f"jpeg{quality}"
            value, raw = figures[key]["bytes_per_frame"], base
    log.info("bench.codec", codec=chosen, bytes_per_frame=value)
    return result(name="codec", value=value, unit="bytes/frame (270x480)", ceiling=raw, details=details,
                  lower_is_better=True)
