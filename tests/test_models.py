"""Models from config: every shipped config builds and trains a step; weights are safetensors;
the context the collector labels is the context the player feeds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from pipeline.collect.context import ContextBuilder
from pipeline.config import CONFIG_DIR, Config, InputsConfig, ModelConfig, OutputConfig, load_config
from pipeline.errors import ConfigError, MissingExtraError
from pipeline.games.base import Controls, Observation
from pipeline.models import backbone_kind, batch_to_tensors, build_model, compute_loss, predict
from pipeline.models.encoders import VectorEncoder, purpose_features, speed_features
from pipeline.wire.schema import ContextSpec, SampleSchema, empty_columns

HAS_TIMM = importlib.util.find_spec("timm") is not None
SHIPPED = sorted(CONFIG_DIR.glob("*.toml"))
torch.set_num_threads(min(2, torch.get_num_threads()))


def _columns(cfg: Config, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cols = empty_columns(SampleSchema.from_config(cfg), n)
    cols["frames"][:] = rng.integers(0, 256, cols["frames"].shape, dtype=np.uint8)
    cols["speed"][:] = rng.uniform(0, 30, n)
    cols["purpose"][:] = np.stack([rng.uniform(0, 500, n), rng.uniform(-np.pi, np.pi, n)], 1)
    cols["controls"][:] = rng.uniform(-1, 1, (n, 2))
    cols["targets"][:] = rng.uniform(-1, 1, (n, 2))
    cols["history"][:] = rng.uniform(-1, 1, cols["history"].shape)
    return cols


def _hw(cfg: Config) -> tuple[int, int]:
    return cfg.game.hood_height, cfg.game.hood_width


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_config_builds_and_trains_a_step(path: Path) -> None:
    cfg = load_config(path)
    if backbone_kind(cfg.model.backbone) != "small_cnn" and not HAS_TIMM:
        pytest.skip(f"{path.name} needs timm ({cfg.model.backbone}); run it on the GPU machine")
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, _hw(cfg))
    assert [h.name for h in model.heads] == cfg.output_names()
    batch = batch_to_tensors(_columns(cfg, 2), "cpu")
    logits = model(batch)
    for head in model.heads:
        assert logits[head.name].shape == (2, head.size)
    total, per_output, metrics = compute_loss(model, logits, batch)
    assert set(per_output) == set(cfg.output_names())
    assert all(f"{name}/mae" in metrics for name in cfg.output_names())
    total.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    feats = model.last_features
    assert isinstance(feats, torch.Tensor) and feats.dim() == 4 and feats.shape[0] == 2


def test_default_model_learns_a_toy_target() -> None:
    """Targets follow image brightness and purpose direction; 40 steps must cut the loss."""
    cfg = load_config(CONFIG_DIR / "default.toml")
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, _hw(cfg))
    cols = _columns(cfg, 16)
    brightness = np.linspace(0, 255, 16).astype(np.uint8)
    cols["frames"][:] = brightness[:, None, None, None, None]
    cols["targets"][:, 0] = brightness / 127.5 - 1
    cols["targets"][:, 1] = np.sin(cols["purpose"][:, 1])
    batch = batch_to_tensors(cols, "cpu")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        total, _, _ = compute_loss(model, model(batch), batch, with_metrics=False)
        opt.zero_grad()
        total.backward()
        opt.step()
        losses.append(float(total.detach()))
    assert min(losses[-5:]) < 0.5 * losses[0]


def test_weights_round_trip_through_safetensors(tmp_path: Path) -> None:
    cfg = load_config(CONFIG_DIR / "mixed_outputs.toml")
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, _hw(cfg)).eval()
    state = model.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    save_file(state, str(tmp_path / "w.safetensors"))
    other = build_model(cfg.model, cfg.inputs, cfg.outputs, _hw(cfg)).eval()
    other.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    batch = batch_to_tensors(_columns(cfg, 3), "cpu")
    with torch.no_grad():
        a, b = model(batch), other(batch)
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def _context(cfg: Config, seed: int = 0) -> dict[str, np.ndarray]:
    cols = _columns(cfg, 1, seed)
    return {**{k: v[0] for k, v in cols.items() if k != "targets"}, "game_time": np.float64(1.0)}


@pytest.mark.parametrize("name", ["default", "mixed_outputs", "keys", "history_lstm"])
def test_predict_gives_controls_in_range_and_keeps_the_mode(name: str) -> None:
    cfg = load_config(CONFIG_DIR / f"{name}.toml")
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, _hw(cfg)).train()
    raw, controls = predict(model, _context(cfg))
    assert model.training
    assert isinstance(controls, Controls)
    assert -1 <= controls.acceleration_braking <= 1 and -1 <= controls.steering <= 1
    assert set(raw) == set(cfg.output_names())
    driven = {c for h in model.heads for c in h.controls_driven()}
    assert sum(len(v) for v in raw.values()) == sum(len(h.controls_driven()) for h in model.heads)
    assert driven == {"acceleration_braking", "steering"}


def test_predict_matches_the_batched_forward() -> None:
    cfg = load_config(CONFIG_DIR / "default.toml")
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, _hw(cfg)).eval()
    ctx = _context(cfg, seed=3)
    raw, controls = predict(model, ctx)
    with torch.no_grad():
        logits = model(batch_to_tensors({k: np.asarray(v)[None] for k, v in ctx.items()}, "cpu"))
    expected = float(logits["steering"][0, 0].clamp(-1, 1))
    assert raw["steering"] == [pytest.approx(expected, abs=1e-6)]
    assert controls.steering == pytest.approx(expected, abs=1e-6)


def _small(**inputs: object) -> tuple[ModelConfig, InputsConfig, list[OutputConfig]]:
    outputs = [OutputConfig(name="steering", control="steering")]
    return ModelConfig(width=8, dense=32, head=[16]), InputsConfig(**inputs), outputs


def test_sequence_keeps_a_token_grid_and_reports_the_newest_frames_features() -> None:
    m, i, o = _small(sequence_length=3, sequence_stride_s=0.25)
    model = build_model(m, i, o, (96, 128))
    assert model.sequence_encoder is not None
    linear = [x for x in model.sequence_encoder.reduce if isinstance(x, torch.nn.Linear)][0]
    assert linear.in_features > 32  # a grid of tokens, not one pooled vector
    cfg = Config(inputs=i, model=m, outputs=o, game={"hood_width": 128, "hood_height": 96})
    cols = _columns(cfg, 2)
    logits = model(batch_to_tensors(cols, "cpu"))
    assert logits["steering"].shape == (2, 1)
    assert model.last_features.shape == (2, 48, 3, 4)  # 8 * 6 channels, 96x128 / 32
    # the newest frame decides last_features: change only the oldest, features stay
    model.eval()(batch_to_tensors(cols, "cpu"))
    before = model.last_features.clone()
    cols["frames"][:, 0] = 0
    model(batch_to_tensors(cols, "cpu"))
    torch.testing.assert_close(model.last_features, before)


@pytest.mark.parametrize("encoder", ["mlp", "lstm"])
def test_history_and_stacked_frames(encoder: str) -> None:
    m, i, o = _small(stacked_frames=3, history_length=5, history_encoder=encoder)
    model = build_model(m, i, o, (64, 64))
    cfg = Config(inputs=i, model=m, outputs=o, game={"hood_width": 64, "hood_height": 64})
    cols = _columns(cfg, 2)
    out = model(batch_to_tensors(cols, "cpu"))["steering"]
    cols["history"][:] = 0
    assert not torch.allclose(out, model(batch_to_tensors(cols, "cpu"))["steering"])


def test_dual_and_frozen_backbones() -> None:
    m, i, o = _small()
    m = m.model_copy(update={"dual_backbone": True, "frozen": True})
    model = build_model(m, i, o, (64, 64)).train()
    assert len(model.backbones) == 2 and not model.backbones[0].training
    cfg = Config(inputs=i, model=m, outputs=o, game={"hood_width": 64, "hood_height": 64})
    batch = batch_to_tensors(_columns(cfg, 2), "cpu")
    total, _, _ = compute_loss(model, model(batch), batch)
    total.backward()
    assert all(p.grad is None for p in model.backbones.parameters())
    assert all(p.grad is not None for p in model.trunk.parameters())
    assert isinstance(model.last_features, tuple) and len(model.last_features) == 2


def test_pretrained_from_a_local_safetensors_file(tmp_path: Path) -> None:
    m, i, o = _small()
    source = build_model(m, i, o, (64, 64))
    path = tmp_path / "backbone.safetensors"
    save_file(source.backbones[0].state_dict(), str(path))
    loaded = build_model(m.model_copy(update={"pretrained": str(path)}), i, o, (64, 64))
    for (k, a), (_, b) in zip(source.backbones[0].state_dict().items(),
                              loaded.backbones[0].state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=k)
    with pytest.raises(ConfigError, match="not found"):
        build_model(m.model_copy(update={"pretrained": str(tmp_path / "nope.safetensors")}), i, o, (64, 64))
    with pytest.raises(ConfigError, match="safetensors"):
        build_model(m.model_copy(update={"pretrained": str(tmp_path / "w.pth")}), i, o, (64, 64))


def test_unknown_backbone_and_missing_timm() -> None:
    m, i, o = _small()
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_model(m.model_copy(update={"backbone": "resnet9000"}), i, o, (64, 64))
    if HAS_TIMM:
        pytest.skip("timm is installed")
    with pytest.raises(MissingExtraError, match="timm"):
        build_model(m.model_copy(update={"backbone": "xception"}), i, o, (64, 64))


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_group_norm_drives_as_it_trained_whatever_else_is_in_the_batch(norm: str) -> None:
    """A live batch holds one or two environments: with BatchNorm an image's output depends on them
    and on the running statistics at inference; with GroupNorm it does not."""
    torch.manual_seed(0)
    cfg = load_config(CONFIG_DIR / "default.toml")
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"norm": norm, "width": 8})})
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, _hw(cfg))
    day, night = _columns(cfg, 4, seed=1), _columns(cfg, 4, seed=2)
    night["frames"] //= 8  # darker images: other statistics
    mixed = {k: np.concatenate([day[k][:1], night[k][1:]]) for k in day}
    with torch.no_grad():
        model.train()
        with_day = model(batch_to_tensors(day, "cpu"))["steering"][0]
        with_night = model(batch_to_tensors(mixed, "cpu"))["steering"][0]
        model.eval()
        at_inference = model(batch_to_tensors(day, "cpu"))["steering"][0]
    same = torch.allclose(with_day, with_night, atol=1e-5) and torch.allclose(with_day, at_inference, atol=1e-5)
    assert same == (norm == "group")


def test_group_norm_is_refused_for_a_timm_backbone() -> None:
    with pytest.raises(ValueError, match="small_cnn only"):
        ModelConfig(backbone="xception", norm="group")
    with pytest.raises(ValueError, match="norm"):
        ModelConfig(norm="layer")


# -- context: what the collector labels is what the player feeds -------------------------
def _obs(t: int) -> Observation:
    frame = np.full((4, 6, 3), t % 256, dtype=np.uint8)
    controls = Controls(float(np.sin(t)), float(np.cos(t)))
    return Observation(frame=frame, speed=float(t), purpose=np.array([t, -t], np.float32),
                       controls=controls, game_time=t / 30)


def test_collector_context_matches_player_context() -> None:
    inputs = InputsConfig(sequence_length=3, sequence_stride_s=0.25, history_length=4,
                          history_stride_s=0.1, label_shift_s=0.1)
    spec = ContextSpec.from_inputs(inputs, fps=30.0)
    assert (spec.frame_stride, spec.history_stride, spec.label_shift) == (8, 3, 3)
    lag = 1 + spec.label_shift  # the collector labels the tick `lag` ago with the newest controls
    player, collector = ContextBuilder(spec), ContextBuilder(spec)
    seen: dict[int, dict[str, np.ndarray]] = {}
    checked = 0
    for t in range(60):
        player.push(_obs(t))
        collector.push(_obs(t))
        seen[t] = player.context(0)
        if collector.ready(lag):
            row = collector.context(lag)
            expected = seen[t - lag]
            assert set(row) == set(expected)
            for key in row:
                np.testing.assert_array_equal(row[key], expected[key], err_msg=key)
            # the frames are 0.25 s apart on the game clock, oldest first
            assert [int(f[0, 0, 0]) for f in row["frames"]] == [t - lag - 16, t - lag - 8, t - lag]
            assert row["history"][:, 2].tolist() == [t - lag - 12, t - lag - 9, t - lag - 6, t - lag - 3]
            checked += 1
    assert checked > 20


def test_log_speed_encoding_tells_a_standstill_from_a_slow_roll() -> None:
    """`inputs.speed_encoding`: linear keeps the original speed / 30 (what the shipped model was
    trained on); log puts 0 and 0.5 m/s 0.41 apart, and a model fed it learns "standing -> go,
    rolling -> brake" where the same steps on speed / 30 do not."""
    speed = torch.tensor([0.0, 0.5, 3.0, 30.0])
    torch.testing.assert_close(speed_features(speed, "linear"), speed / 30.0)
    torch.testing.assert_close(speed_features(speed, "log"), torch.log1p(speed))
    torch.testing.assert_close(speed_features(-speed, "log"), -torch.log1p(speed))  # reversing keeps its sign

    cfg = load_config(CONFIG_DIR / "default.toml")
    assert cfg.inputs.speed_encoding == "linear"
    inputs = cfg.inputs.model_copy(update={"speed_encoding": "log"})
    model = build_model(cfg.model, inputs, cfg.outputs, _hw(cfg)).eval()
    batch = batch_to_tensors(_columns(cfg, 3), "cpu")
    net = model.vectors.net
    assert net is not None
    with torch.no_grad():
        parts = torch.cat([torch.log1p(batch["speed"].float())[:, None],
                           purpose_features(batch["purpose"].float())], dim=1)
        torch.testing.assert_close(model.vectors(batch), net(parts))

    def final_loss(encoding: str) -> float:
        torch.manual_seed(0)
        encoder = VectorEncoder(speed=True, purpose=False, controls=False, out_dim=16, speed_encoding=encoding)
        head = torch.nn.Linear(16, 1)
        opt = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=1e-3)
        speeds = torch.tensor([0.0, 0.0, 0.5, 0.5])
        target = torch.tensor([1.0, 1.0, -1.0, -1.0])
        for _ in range(500):
            loss = (head(encoder({"speed": speeds}))[:, 0] - target).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return float(loss.detach())

    assert final_loss("log") < 0.3  # 0.16 (1000 steps: 0.003)
    assert final_loss("linear") > 0.9  # 0.96 (1000 steps: 0.84)
