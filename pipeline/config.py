"""The one typed config schema of Charles, loaded from TOML and checked once at start.

Every section is a pydantic model with `extra="forbid"`, so a misspelt key stops the
process before it touches Redis. `load_config` reports every problem at once, each with
the file, the dotted key and what is allowed. The objects that follow the live config
(the server, a collector's episodes, the evaluator's jobs, the game cache) take the whole
`Config`, because a new one can arrive from Redis at any time; every other class takes
only the sections or values it needs, unpacked by its caller.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import ConfigError
from pipeline.serve.replay import ReplayLimit, deadlock_reasons, split_batch

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.toml"

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
#: Image sides: anything larger is a typo that would allocate gigabytes per frame.
Pixels = Annotated[int, Field(gt=0, le=4096)]
Fraction = Annotated[float, Field(ge=0, le=1)]

#: The controls every game backend understands, in this order in every control vector.
CONTROL_NAMES: tuple[str, ...] = ("acceleration_braking", "steering")


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class RunConfig(Section):
    """Names and folders of this run."""

    name: str = Field("charles_small_cnn", min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    log_dir: str = "runs"
    checkpoint_dir: str = "checkpoints"


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", value):
        raise ValueError("not a device; use auto, cpu, cuda or cuda:N")
    return value


#: What `game.backend` may be: a built-in or plug-in name, or 'package.module:Class'.
_BACKEND_SYNTAX = r"[A-Za-z_][A-Za-z0-9_.-]*|[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*"
_UNKNOWN_BACKEND = ("unknown backend; use sim, gta5, screen, gymnasium, an installed plug-in's name "
                    "(entry point group charles.games) or 'package.module:Class'")


def _backend(value: str) -> str:
    """The syntax only: whether a plug-in's name is installed is checked where the config is
    loaded from a file (`check_backend`), so a machine without the plug-in (`charles status`)
    still reads the active config from Redis."""
    if not re.fullmatch(_BACKEND_SYNTAX, value):
        raise ValueError(_UNKNOWN_BACKEND)
    return value


#: torch device names a config may ask for ("gpu" is not one)
Device = Annotated[str, AfterValidator(_device)]


class GameConfig(Section):
    """Which game backend drives, and how fast its clock runs."""

    backend: Annotated[str, AfterValidator(_backend)] = Field(
        "sim", description="sim | gta5 | screen | gymnasium | an installed plug-in's name | 'package.module:Class'")
    fps: Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] = 30.0
    hood_width: Pixels = 160
    hood_height: Pixels = 120
    cinematic_width: Pixels = 640
    cinematic_height: Pixels = 360
    max_speed_mps: Annotated[float, Field(gt=0, le=10000, allow_inf_nan=False)] = Field(
        150.0, description="the server refuses samples faster than this (m/s); raise it for a faster game")
    options: dict[str, Any] = Field(default_factory=dict, description="passed to the backend")


class CollectionConfig(Section):
    """What the server varies between collection episodes (one rq job = one episode)."""

    episode_s: PositiveFloat = Field(45.0, le=86400, description="game seconds per episode")
    map_seeds: tuple[int, int] = Field((1, 1000), description="inclusive range of map seeds")
    held_out_seeds: list[int] = Field(default_factory=lambda: [9001, 9002, 9003, 9004, 9005])
    weathers: list[Literal["clear", "overcast", "rain", "fog"]] = Field(
        default_factory=lambda: ["clear", "overcast", "rain", "fog"]
    )
    time_of_day: tuple[float, float] = Field((6.0, 22.0), description="hours, sampled uniformly")
    night_fraction: Fraction = Field(0.15, description="share of episodes at night")
    cars: list[str] = Field(default_factory=lambda: ["sedan", "sports", "truck"])
    traffic_density: tuple[float, float] = (0.0, 1.0)
    npc_styles: list[str] = Field(
        default_factory=list, description="NPC driving styles episodes draw from, a repeat weighs it more "
        "(empty: every style the backend declares, 'normal' twice as often as each other)"
    )
    jobs_ahead: int = Field(1, ge=0, description="episodes waiting on each live collector's own job list beyond the one it runs")
    job_timeout_s: PositiveFloat = Field(900.0, le=86400)
    max_backlog_sets: PositiveInt = Field(200, le=1_000_000, description="sets a collector holds while Redis is away")
    skip_standing: bool = Field(
        True, description="leave out ticks standing still while the NPC waits (they teach 'stay standing')"
    )
    setting_off_repeat: int = Field(3, ge=1, le=10, description="times a setting-off tick is offered to the balancer")
    model_drives: Fraction = Field(
        0.0, description="DAgger: share of segments the latest model drives, the backend's expert labels "
        "(a backend that declares expert_labels; 0 = off)"
    )
    dagger_segment_s: PositiveFloat = Field(3.0, le=3600, description="DAgger: game seconds between driver switches")
    model_drives_after_version: PositiveInt = Field(
        1, description="DAgger: the NPC drives alone until this weights version is published"
    )
    nice_once_trained: int = Field(
        10, ge=0, le=19, description="CPU nice a collector lowers itself to once a weights version exists: "
        "where it shares cores with the trainer, the trainer comes first then (until then its --nice, so "
        "the buffers fill). At or below the nice it runs at: no change (a process cannot raise its priority back)"
    )

    @model_validator(mode="after")
    def _ranges(self) -> CollectionConfig:
        if self.map_seeds[0] > self.map_seeds[1]:
            raise ValueError("map_seeds must be [low, high] with low <= high")
        overlap = [s for s in self.held_out_seeds if self.map_seeds[0] <= s <= self.map_seeds[1]]
        if overlap:
            raise ValueError(f"held_out_seeds {overlap} fall inside map_seeds; they must not")
        if not 0 <= self.time_of_day[0] <= self.time_of_day[1] <= 24:
            raise ValueError("time_of_day must be [start, end] hours within 0..24")
        return self


OutputType = Literal["regression", "classification", "discrete_delta", "keys"]


class OutputConfig(Section):
    """One model output: its type decides target encoding, head, loss, metric, decoding, bins."""

    name: str = Field(..., pattern=r"^[a-z][a-z0-9_]*$")
    type: OutputType = "regression"
    control: Literal["acceleration_braking", "steering", "both"] = Field(
        "acceleration_braking", description="the game control this output drives ('both' for keys)"
    )
    range: tuple[float, float] = (-1.0, 1.0)
    bins: list[float] = Field(
        default_factory=list,
        description="balancing bin edges inside range; empty = derived from the type",
    )
    classes: PositiveInt = Field(21, description="classification: number of classes over range")
    deltas: list[float] = Field(
        default_factory=lambda: [-0.3, -0.1, -0.03, 0.0, 0.03, 0.1, 0.3],
        description="discrete_delta: the changes applied to the current control value",
    )
    keys: list[str] = Field(
        default_factory=lambda: ["w", "a", "s", "d"], description="keys: the independent keys"
    )
    key_threshold: Fraction = 0.5
    loss_weight: NonNegativeFloat = 1.0
    loss: Literal["l1", "l2"] = Field(
        "l1", description="regression: l1 fits the median (a bimodal 'full left or full right' is not averaged "
        "into 'straight'); l2 fits the mean, so a rare label (braking hard behind a car) pulls the prediction"
    )
    bin_weighting: float = Field(
        0.0, ge=0.0, le=1.0,
        description="balance at training time: a row's loss in this output weighs frequency(its bin) ** "
        "-bin_weighting, over the balancing bins (0 = off; 0.5 = 1/sqrt, as the shipped model's steering); "
        "for buffers collectors fill unbalanced (pipeline/train/bin_weights.py)",
    )

    @model_validator(mode="after")
    def _check(self) -> OutputConfig:
        lo, hi = self.range
        if not lo < hi:
            raise ValueError(f"range must be [low, high] with low < high, got {list(self.range)}")
        if any(not lo <= b <= hi for b in self.bins):
            raise ValueError(f"bins must lie inside range {list(self.range)}")
        if self.bins != sorted(self.bins):
            raise ValueError("bins must be sorted ascending")
        if self.type == "keys" and self.control != "both":
            raise ValueError("type 'keys' drives both controls: set control = 'both'")
        if self.type != "keys" and self.control == "both":
            raise ValueError("control = 'both' is only for type 'keys'")
        if self.loss != "l1" and self.type != "regression":
            raise ValueError(f"loss = {self.loss!r} is only for type 'regression' (the others use cross-entropy)")
        return self


class InputsConfig(Section):
    """What the model sees; the collector and the player build exactly this context."""

    image: bool = True
    speed: bool = True
    speed_encoding: Literal["linear", "log"] = Field(
        "linear",
        description="speed as the model sees it: linear = speed / 30 m/s (the original); log = log1p(speed), "
        "which tells a standstill from a slow roll (0 and 0.5 m/s differ by 0.41 instead of 0.017)",
    )
    purpose: bool = True
    controls: bool = Field(False, description="current control values (discrete_delta needs it)")
    stacked_frames: PositiveInt = Field(1, le=64, description="frames concatenated on channels")
    stacked_stride_s: PositiveFloat = 0.1
    history_length: int = Field(0, ge=0, le=10_000, description="last N controls/speed/purpose vectors")
    history_stride_s: PositiveFloat = 0.1
    history_encoder: Literal["mlp", "lstm"] = "mlp"
    sequence_length: PositiveInt = Field(1, le=64, description="frames through backbone + LSTM")
    sequence_stride_s: PositiveFloat = 0.25
    label_shift_s: NonNegativeFloat = Field(
        0.0, description="targets taken this far ahead to cover inference latency"
    )


class ModelConfig(Section):
    """Backbone and head; larger backbones come from timm (extra `timm`)."""

    backbone: str = Field("small_cnn", description="small_cnn | xception | inception_resnet_v2 | regnet | vit | dinov2 | dinov2_small | 'timm:<name>'")
    width: PositiveInt = Field(24, description="small_cnn: channels of the first stage")
    norm: Literal["batch", "group"] = Field(
        "batch", description="small_cnn: normalisation after each convolution (group: per image, the same in "
        "training and at inference)")
    pretrained: str = Field("", description="local file with backbone weights; never downloaded")
    frozen: bool = False
    dual_backbone: bool = False
    dense: PositiveInt = 256
    head: list[PositiveInt] = Field(default_factory=lambda: [256, 64, 16])
    lstm_hidden: PositiveInt = 128
    dropout: Fraction = 0.0

    @model_validator(mode="after")
    def _check_norm(self) -> ModelConfig:
        if self.norm != "batch" and self.backbone != "small_cnn":
            raise ValueError(f"model.norm = {self.norm!r} applies to small_cnn only; a timm model keeps its own layers")
        return self


class BalancingConfig(Section):
    """How collectors balance samples into sample sets (v3 = one output at a time)."""

    version: Literal["v1", "v3", "v4"] = "v3"
    samples_per_bin: PositiveInt = 10
    round_timeout_s: PositiveFloat = Field(
        1.0, description="game seconds before a round is sent with the bins it has"
    )
    min_bins_filled: Fraction = Field(0.0, description="share of bins a timed-out round needs")
    sample_every: PositiveInt = Field(3, description="consider every k-th frame as a candidate (with the other "
                                      "defaults a round never fills: every candidate is sent, unbalanced)")
    setting_off_bin: bool = Field(
        False, description="setting-off ticks (under 3 m/s, throttle over 0.2) get a bin of their own in every "
        "round (v3/v4) instead of competing for the full-throttle bin; needs collection.setting_off_repeat = 1")

    @model_validator(mode="after")
    def _check_setting_off_bin(self) -> BalancingConfig:
        if self.setting_off_bin and self.version == "v1":
            raise ValueError("balancing.setting_off_bin needs version v3 or v4 (v1 bins combinations of outputs)")
        return self


class BuffersConfig(Section):
    """Per-output buffers in Redis: the training pool."""

    capacity: PositiveInt = Field(1000, le=10_000_000, description="samples per output buffer")
    start_fraction: Fraction = Field(0.9, description="train only while every buffer is this full")
    stream_maxlen: PositiveInt = Field(
        100, le=10_000_000, description="unread sample sets per stream; beyond this the oldest are dropped (counted)"
    )
    stream_keep: int = Field(
        20, ge=0, le=10_000_000, description="routed sets left in each stream for other readers (recorder, samplers)"
    )
    max_message_mb: PositiveFloat = Field(64.0, le=512, description="Redis refuses bulk strings over 512 MB")
    incoming_ttl_s: PositiveInt = Field(
        3600, le=7 * 86400, description="rows of a published set that no server routed expire after this"
    )
    samples_per_insert: float = Field(
        8.0, ge=1.0, le=10_000,
        description="draws per inserted sample before it leaves (pipeline/serve/replay.py): 1 = draw and delete "
        "(the original); more = samples stay, the trainer waits when ahead, the oldest are evicted at capacity",
    )
    ratio_tolerance: int = Field(
        0, ge=0, le=1_000_000_000,
        description="draws a buffer may bank ahead of the ratio (0 = auto: 10% of a full buffer's worth, "
        "at least two batch shares)",
    )
    collector_share: float = Field(
        1.5, ge=0, le=1_000_000,
        description="fair shares of a buffer one collector may hold (capacity / live collectors each); beyond it "
        "its own oldest samples are evicted, so no collector can crowd out the others. 0 = no cap",
    )
    frame_codec: Literal["raw", "png", "zstd", "jpeg"] = Field(
        "raw", description="how frames travel, sit in the buffers and lie in recordings (pipeline/wire/frames.py): "
        "raw | png, zstd (lossless) | jpeg (lossy, at frame_quality); measured by `charles bench codec`",
    )
    frame_quality: Annotated[int, Field(ge=1, le=100)] = Field(
        90, description="jpeg: quality 1..100 (higher = larger and closer to the frame)",
    )
    shards: Annotated[int, Field(ge=1, le=1024)] = Field(
        1, description="pipeline shards: streams and buffers split into this many hash-tagged key sets, which a "
        "Redis Cluster spreads over its nodes (docs/scaling.md); capacity is per output over all shards",
    )


class TrainerConfig(Section):
    """Continuous training from the buffers."""

    batch_size: PositiveInt = Field(32, le=65_536)
    learning_rate: PositiveFloat = Field(1e-3, le=10)
    weight_decay: NonNegativeFloat = 0.0
    publish_every: PositiveInt = Field(200, description="batches between weight publications")
    checkpoint_every: PositiveInt = 200
    log_every: PositiveInt = 10
    convcam_every: PositiveInt = 500
    device: Device = Field("auto", description="auto | cpu | cuda | cuda:N")
    amp: bool = Field(True, description="mixed precision on CUDA")
    prefetch: int = Field(2, ge=0, description="batches drawn ahead while the model trains")
    keep_versions: PositiveInt = Field(5, description="published versions kept for evaluation")
    ema_decay: float = Field(
        0.998, ge=0.0, lt=1.0,
        description="publish an exponential moving average of the weights with this decay per batch "
        "(0 = the last iterate); 0.998 averages over about 500 batches, and until then the mean of "
        "the iterates so far",
    )
    augment_shift_px: int = Field(
        0, ge=0, le=32,
        description="move every drawn frame by a random whole-pixel offset of up to this many pixels "
        "(edges repeated; DrQ): with samples_per_insert > 1 the draws of one sample then differ (0 = off). "
        "For driving it is label noise: a sideways shift moves the lane the steering label reads "
        "(docs/evaluation.md (i))",
    )
    lr_decay_batches: int = Field(
        0, ge=0, le=10**9,
        description="batches over which the learning rate falls on a cosine from learning_rate to "
        "learning_rate x lr_final_fraction, then stays there (0 = constant)",
    )
    lr_final_fraction: Fraction = Field(0.1, description="the learning rate's floor, as a share of learning_rate")
    cpu_threads: int = Field(
        1, ge=0, le=256,
        description="torch threads when training on a CPU (0 = torch's default); collectors and "
        "players share the cores, and a spinning 2-thread pool on a busy 2-core machine was 3x slower",
    )


class ControlConfig(Section):
    """Controller translation: predictions -> controller values past the dead zones."""

    output: Literal["gamepad", "keyboard"] = "gamepad"
    stick_deadzone: Fraction = 7849 / 32767
    trigger_deadzone: Fraction = 30 / 255
    steering_gain: PositiveFloat = 1.0
    keyboard_threshold: Fraction = 0.5


class UnstuckConfig(Section):
    """Stuck detection (displacement, not odometer) and the Unstuck respawn."""

    min_displacement_m: PositiveFloat = 2.0
    window_s: PositiveFloat = 4.0
    grace_s: NonNegativeFloat = Field(2.0, description="no check right after a respawn")
    max_drive_s: PositiveFloat = Field(
        90.0, description="with weights pending this long, respawn anyway so they are swapped in"
    )


class PlayerConfig(Section):
    """The driving loop."""

    pps: Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] | None = Field(
        None, description="predictions per second to aim for; unset = game.fps, the only rate that "
        "keeps the game at real speed (each prediction steps it by 1/fps s)")
    realtime: bool = Field(True, description="pace the game clock to the wall clock")
    overlap: bool = Field(
        False, description="step the game in a second thread while the model predicts; the game "
        "applies the previous prediction (one tick of latency, as with a real game running on its own)",
    )
    game_process: bool = Field(
        False, description="run the game backend in a child process, frames through shared memory: "
        "the game's CPU work and the model no longer share one interpreter lock",
    )
    follow: Literal["latest", "best"] = "latest"
    device: Device = Field("cpu", description="cpu | cuda | cuda:N | auto")
    live_view_fps: NonNegativeFloat = Field(10.0, description="JPEGs/s for the dashboard")
    jpeg_quality: Annotated[int, Field(ge=10, le=100)] = 80
    map_seeds: tuple[int, int] = Field((1, 1000), description="seeds the player drives on")


class EvaluatorConfig(Section):
    """Closed-loop scoring of published versions on held-out seeds."""

    episode_s: PositiveFloat = 60.0
    environments: list[str] = Field(default_factory=lambda: ["day", "night", "rain", "traffic"])
    episodes_per_environment: PositiveInt = 4
    processes: Annotated[int, Field(ge=1, le=64)] = Field(
        1, description="episodes driven at once, each in its own process (1 = in the evaluator's own)")
    confidence: Annotated[float, Field(gt=0.5, lt=1.0)] = Field(
        0.9, description="level of the bootstrap intervals around every score")
    bootstrap_resamples: Annotated[int, Field(ge=100, le=100_000)] = Field(
        2000, description="random resamples when a plan has more than 5 episodes (up to 5: all, exactly)")
    rank_by: Literal["ratio_to_npc", "game_score"] = Field(
        "ratio_to_npc", description="what `best` follows: distance between incidents over the NPC's, or the "
        "game's own score (a backend that declares one)")


class DashboardConfig(Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(gt=0, lt=65536)] = 8000


class Config(Section):
    """A whole run: every section with its defaults; `configs/default.toml` sets them explicitly."""

    run: RunConfig = Field(default_factory=RunConfig)
    game: GameConfig = Field(default_factory=GameConfig)
    collection: CollectionConfig = Field(default_factory=CollectionConfig)
    outputs: list[OutputConfig] = Field(
        default_factory=lambda: [
            OutputConfig(name="acceleration_braking", control="acceleration_braking"),
            OutputConfig(name="steering", control="steering"),
        ],
        min_length=1,
    )
    inputs: InputsConfig = Field(default_factory=InputsConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    balancing: BalancingConfig = Field(default_factory=BalancingConfig)
    buffers: BuffersConfig = Field(default_factory=BuffersConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    unstuck: UnstuckConfig = Field(default_factory=UnstuckConfig)
    player: PlayerConfig = Field(default_factory=PlayerConfig)
    evaluator: EvaluatorConfig = Field(default_factory=EvaluatorConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        names = [o.name for o in self.outputs]
        if len(set(names)) != len(names):
            raise ValueError(f"output names must be unique, got {names}")
        if any(o.type == "discrete_delta" for o in self.outputs) and not self.inputs.controls:
            raise ValueError("a discrete_delta output needs inputs.controls = true")
        if self.balancing.setting_off_bin and self.collection.setting_off_repeat != 1:
            raise ValueError(
                "balancing.setting_off_bin keeps setting-off ticks in a bin of their own: set "
                f"collection.setting_off_repeat = 1 (not {self.collection.setting_off_repeat}), "
                "repeats would fill that bin with copies of one frame"
            )
        if self.player.pps is None:
            self.player.pps = self.game.fps
        elif self.player.pps != self.game.fps:
            raise ValueError(
                f"player.pps = {self.player.pps} differs from game.fps = {self.game.fps}: each prediction "
                f"steps the game by 1/fps s, so the game would run at {self.player.pps / self.game.fps:.2f}x "
                "real speed; leave player.pps out (it follows game.fps) or set the two equal"
            )
        stalls = deadlock_reasons(self.replay_limit(), self.shard_capacity(), self.buffers.start_fraction,
                                  self._batch_share())
        if stalls:
            raise ValueError("the trainer could never draw: " + "; ".join(stalls))
        return self

    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def shard_capacity(self) -> int:
        """Samples per output buffer of one shard: the capacity split over the shards."""
        return math.ceil(self.buffers.capacity / self.buffers.shards)

    def replay_limit(self) -> ReplayLimit:
        """One shard's replay limit, with an automatic tolerance resolved (a set tolerance
        is split over the shards like the capacity)."""
        b = self.buffers
        tolerance = math.ceil(b.ratio_tolerance / b.shards)
        return ReplayLimit.auto(b.samples_per_insert, tolerance, self.shard_capacity(), self._batch_share())

    def _batch_share(self) -> int:
        """The most one batch takes from one output's buffer."""
        return max(split_batch(self.trainer.batch_size, self.output_names()))

    def to_json(self) -> str:
        return self.model_dump_json()

    def sha256(self) -> str:
        """The config's identity: the sha256 of its JSON (the `config` key's `sha256`, and the
        `config_sha256` that weights files carry)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_json(cls, text: str, source: str = "<redis>") -> Config:
        try:
            return cls.model_validate(json.loads(text))
        except (ValidationError, json.JSONDecodeError) as exc:
            raise ConfigError(_format_errors(source, exc)) from None


def _format_errors(source: str, exc: Exception) -> str:
    if not isinstance(exc, ValidationError):
        return f"{source}: {exc}"
    lines = [f"{source}: {exc.error_count()} invalid setting(s):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<top level>"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see configs/default.toml for every key)"
        # a check across sections gets the whole config as its input: naming it would dump the file
        got = "" if not err["loc"] else f" (got {err.get('input')!r})"
        lines.append(f"  - {key}: {msg}{got}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read and validate a TOML config; `overrides` (nested dicts) are merged on top."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if overrides:
        data = _merge(data, overrides)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(str(path), exc)) from None
    check_backend(cfg, str(path))
    return cfg


def check_backend(cfg: Config, source: str) -> None:
    """What the config asks of its backend: a plug-in named by its entry point must be installed
    here, and what it declares (`pipeline.games.base.Capabilities`) must allow what is asked:
    DAgger needs a backend that gives expert labels.
    The backend's class is imported only when asked for something (a plug-in must then be
    importable here); the server checks the environments it varies (`serve.server`)."""
    from pipeline.games.base import BUILTIN_BACKENDS, installed_backends

    backend = cfg.game.backend
    if backend not in BUILTIN_BACKENDS and ":" not in backend and backend not in installed_backends():
        raise ConfigError(f"{source}: 1 invalid setting(s):\n  - game.backend: {_UNKNOWN_BACKEND} (got {backend!r})")
    drives = cfg.collection.model_drives
    if drives <= 0:
        return
    from pipeline.games.base import capabilities_of

    try:
        labels = capabilities_of(cfg.game.backend, cfg.game.options).expert_labels
    except ConfigError as exc:
        raise ConfigError(f"{source}: collection.model_drives = {drives} needs the backend's capabilities, "
                          f"but {exc}") from None
    if not labels:
        raise ConfigError(
            f"{source}: collection.model_drives = {drives} needs a backend that gives expert labels, and "
            f"{cfg.game.backend!r} declares none (Capabilities.expert_labels); set collection.model_drives = 0"
        )


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
