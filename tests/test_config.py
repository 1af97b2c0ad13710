"""The config schema rejects typos and bad values with the file, the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import CONFIG_DIR, Config, load_config
from pipeline.errors import ConfigError


def test_default_config_loads() -> None:
    cfg = load_config()
    assert cfg.game.backend == "sim"
    assert [o.name for o in cfg.outputs] == ["acceleration_braking", "steering"]
    assert all(o.type == "regression" and tuple(o.range) == (-1.0, 1.0) for o in cfg.outputs)
    assert cfg.balancing.version == "v3"
    assert cfg.buffers.start_fraction == 0.9


def test_all_errors_reported_at_once(tmp_path: Path) -> None:
    text = (CONFIG_DIR / "default.toml").read_text()
    text = text.replace("batch_size = 32", "batch_sise = 32").replace("capacity = 1000", "capacity = -5")
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "2 invalid" in msg
    assert "trainer.batch_sise: unknown key" in msg
    assert "buffers.capacity" in msg and "greater than 0" in msg


def test_held_out_seeds_must_not_overlap_training_seeds() -> None:
    with pytest.raises(ConfigError, match="held_out_seeds"):
        load_config(overrides={"collection": {"map_seeds": [1, 10000]}})


def test_discrete_delta_needs_controls_input() -> None:
    with pytest.raises(ConfigError, match="inputs.controls"):
        load_config(overrides={"outputs": [{"name": "steering", "type": "discrete_delta", "control": "steering"}]})


def test_json_round_trip() -> None:
    cfg = load_config()
    assert Config.from_json(cfg.to_json()) == cfg


def test_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("[run\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"game": {"backend": "simm"}}, "game.backend: unknown backend; use sim, gta5, screen, gymnasium, an installed plug-in's name (entry point group charles.games) or 'package.module:Class' (got 'simm')"),
    ({"player": {"device": "gpu"}}, "player.device: not a device; use auto, cpu, cuda or cuda:N (got 'gpu')"),
    ({"trainer": {"device": "cuda0"}}, "trainer.device: not a device"),
])
def test_unknown_backend_and_device_named_in_one_line(overrides: dict, message: str) -> None:  # type: ignore[type-arg]
    """Issue 18 #3: "simm" was reported as a DAgger problem with a dump of the config (and
    accepted with model_drives = 0); "gpu" was accepted as a device."""
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides)
    assert message in str(err.value) and "model_drives" not in str(err.value)
    assert len(str(err.value).splitlines()) == 2
    load_config(overrides={"game": {"backend": "my_game.world:Game"}, "collection": {"model_drives": 0.0},
                           "trainer": {"device": "cuda:1"}})


def test_default_toml_sets_every_key_of_the_schema() -> None:
    """Issue 18 #9: configs/default.toml "documents every key" but lacked 19 of them
    (trainer.convcam_every, trainer.amp, model.dropout, player.map_seeds, ...)."""
    import tomllib

    from pydantic import BaseModel

    from pipeline.config import DEFAULT_CONFIG, Config

    text = DEFAULT_CONFIG.read_text()
    data = tomllib.loads(text)
    missing = []
    for section, field in Config.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue  # [[outputs]]: a list; its entries set what their type needs
        # a key whose default is derived (None: TOML has no null) is shown commented out
        missing += [f"{section}.{key}" for key, f in model.model_fields.items() if key not in data.get(section, {})
                    and not (f.default is None and f"\n# {key} = " in text)]
    assert not missing, f"configs/default.toml lacks {missing}"
    assert "outputs" in data


def test_player_pps_follows_game_fps_and_a_mismatch_is_refused() -> None:
    """Issue 16: `game.fps` and `player.pps` were set apart, and a mismatch played in slow motion."""
    assert load_config().player.pps == 30.0
    cfg = load_config(overrides={"game": {"fps": 20.0}})
    assert cfg.player.pps == 20.0
    assert Config.from_json(cfg.to_json()).player.pps == 20.0
    assert load_config(overrides={"game": {"fps": 20.0}, "player": {"pps": 20.0}}).player.pps == 20.0
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"game": {"fps": 20.0}, "player": {"pps": 30.0}})
    assert "player.pps = 30.0 differs from game.fps = 20.0" in str(err.value) and "1.50x" in str(err.value)


#: keys whose schema default differs from configs/default.toml on purpose
OPT_IN_BY_DEFAULT_TOML = {
    "collection.model_drives": "DAgger needs a backend with expert labels: a config turns it on (default.toml: 0.5)",
    "trainer.lr_decay_batches": "a decay's length is the machine's batch rate times the minutes it should take: a "
    "config sets its own (default.toml: 5000, ~19 min on 2 cores); left out, the rate stays constant",
}


def test_a_key_left_out_gets_what_default_toml_says() -> None:
    """A config that leaves a key out gets the schema's default, so the schema's defaults are
    default.toml's measured values: the docs/games.md example left out samples_per_insert,
    ema_decay and the balancing keys, and silently trained with draw-and-delete, no average
    and the original's balancing (14 keys differed)."""
    import tomllib

    import pytest as _pytest

    from pipeline.config import DEFAULT_CONFIG, Config

    toml = tomllib.loads(DEFAULT_CONFIG.read_text())
    schema = Config.model_validate({"outputs": toml["outputs"]}).model_dump(mode="json")
    differ = []
    for section, values in toml.items():
        if section == "outputs":
            continue
        for key, value in values.items():
            default = schema[section][key]
            same = default == _pytest.approx(value, rel=1e-3) if isinstance(value, float) else default == value
            if not same and f"{section}.{key}" not in OPT_IN_BY_DEFAULT_TOML:
                differ.append(f"{section}.{key}: default.toml {value!r}, schema {default!r}")
    assert not differ, differ
