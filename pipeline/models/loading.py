"""Getting a model ready to drive: its device, and its weights from a file or a published blob."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import structlog
import torch

from pipeline.config import Config
from pipeline.errors import ConfigError, WeightsError

log = structlog.get_logger(__name__)


def build_model_from(cfg: Config, tensors: dict[str, Any], device: Any = "cpu", *, source: str | Path | None = None,
                     meta: dict[str, str] | None = None, config_file: str | Path | None = None) -> Any:
    """The configured model with these weights on `device`, or WeightsError when they do not
    fit it. It is built on the device: a random CPU initialisation of 23 M parameters that
    the weights overwrite anyway would cost a player half a second per new version.

    The error is one line: `source` (the file), what differs, and which config the weights
    need when their metadata names another run (`meta["model"]`) or another config
    (`meta["config_sha256"]`, which a shipped config may match) than `config_file`'s."""
    from pipeline.models import build_model

    with torch.device(device):
        model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    problem = misfit(model.state_dict(), tensors)
    if not problem:
        try:
            model.load_state_dict(tensors)
        except (RuntimeError, KeyError) as exc:
            problem = " ".join(str(exc).split())[:200]
    if problem:
        raise WeightsError(_misfit_message(cfg, problem, source, meta, config_file))
    return model.eval()


def misfit(expected: dict[str, Any], tensors: dict[str, Any]) -> str:
    """What keeps `tensors` from loading into a model whose state_dict is `expected` ('' = nothing)."""
    missing = sorted(set(expected) - set(tensors))
    unknown = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(expected[k].shape) != tuple(tensors[k].shape))
    parts = []
    if missing:
        parts.append(f"{len(missing)} tensor(s) missing: {_few(missing)}")
    if unknown:
        parts.append(f"{len(unknown)} not in the model: {_few(unknown)}")
    if wrong:
        shapes = [f"{k} {list(tensors[k].shape)} for {list(expected[k].shape)}" for k in wrong]
        parts.append(f"{len(wrong)} of another shape: {_few(shapes)}")
    return "; ".join(parts)


def _few(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def config_for_run(name: str) -> Path | None:
    """The shipped config (configs/*.toml) whose `[run] name` is `name`, if one is."""
    import tomllib

    from pipeline.config import CONFIG_DIR

    for path in sorted(CONFIG_DIR.glob("*.toml")):
        try:
            run = tomllib.loads(path.read_text()).get("run", {})
        except (OSError, ValueError):
            continue
        if isinstance(run, dict) and run.get("name") == name:
            return path
    return None


def config_with_sha256(sha256: str) -> Path | None:
    """The shipped config (configs/*.toml) whose sha256 (`Config.sha256`) is `sha256`, if one is."""
    from pipeline.config import CONFIG_DIR, load_config
    from pipeline.errors import ConfigError

    for path in sorted(CONFIG_DIR.glob("*.toml")):
        try:
            if load_config(path).sha256() == sha256:
                return path
        except ConfigError:
            continue
    return None


def _shown(path: str | Path) -> str:
    """A path as a user would type it from here: relative to the working folder when under it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _misfit_message(cfg: Config, problem: str, source: str | Path | None, meta: dict[str, str] | None,
                    config_file: str | Path | None) -> str:
    where = f"{source}: " if source else ""
    configured = (f"the model {_shown(config_file)} configures ({cfg.run.name!r})" if config_file
                  else f"the live config's model {cfg.run.name!r}")
    # a command with --config is told to pass one; a player follows the server's config
    give = "pass" if config_file else "run the server with"
    trained = (meta or {}).get("model")
    if trained and trained != cfg.run.name:
        needed = config_for_run(trained)
        return (f"{where}weights of model {trained!r} do not fit {configured} ({problem}); "
                + (f"{give} its config: --config {_shown(needed)}" if needed
                   else f"{give} the config whose [run] name is {trained!r} (--config FILE)"))
    sha = (meta or {}).get("config_sha256")
    if sha and sha != cfg.sha256():
        found = config_with_sha256(sha)
        return (f"{where}weights do not fit {configured} ({problem}); they were trained with another config: "
                + (f"{give} it: --config {_shown(found)}" if found
                   else f"{give} the config whose sha256 is {sha[:16]}... (--config FILE; `charles export` files name it)"))
    return f"{where}weights do not fit {configured} ({problem}); {give} the config they were trained with (--config FILE)"


def read_weights_file(path: str | Path, sha256: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """Tensors and metadata of a safetensors file; anything else (pickle, truncated, forged) is refused."""
    from pipeline.wire.weights import from_blob

    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read weights: {exc}") from None
    if sha256 is not None and hashlib.sha256(blob).hexdigest() != sha256.lower():
        raise WeightsError(f"{path}: sha256 is {hashlib.sha256(blob).hexdigest()}, expected {sha256}; refusing it")
    try:
        tensors = from_blob(blob)
    except WeightsError as exc:
        raise WeightsError(f"{path}: {exc} (only safetensors files are accepted)") from None
    return tensors, _metadata(blob)


def _metadata(blob: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors blob that `from_blob` already accepted."""
    from pipeline.wire.weights import blob_metadata

    return blob_metadata(blob)


def pick_device(name: str, fall_back: bool = False) -> torch.device:
    """`auto`: CUDA when there is a GPU, else the CPU. With `fall_back` (players: a config
    written for a GPU machine still drives on a laptop) an absent CUDA becomes the CPU, warned;
    without it (the trainer) asking for CUDA where there is none fails at once."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type != "cuda":
        return device
    missing = _cuda_missing(device)
    if missing and fall_back:
        log.warning("cuda_unavailable", asked=name, using="cpu", why=missing)
        return torch.device("cpu")
    if missing:
        raise ConfigError(f"device {name!r}: {missing}; use 'cpu' or 'auto'")
    return device


def _cuda_missing(device: torch.device) -> str:
    """Why `device` cannot be used here ('' when it can)."""
    if not torch.backends.cuda.is_built():
        return f"this torch {torch.__version__} is built without CUDA"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible on this machine"
    if device.index is not None and device.index >= torch.cuda.device_count():
        return f"this machine has {torch.cuda.device_count()} CUDA GPU(s)"
    return ""
