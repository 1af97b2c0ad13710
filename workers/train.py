"""`charles train DIR... --config FILE`: train from recorded data, then `charles push`."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import click
import structlog

from pipeline.log import configure_logging
from workers.options import config_option, user_errors

log = structlog.get_logger("train")


@click.command(name="train")
@click.option("--offline", is_flag=True, hidden=True, help="accepted, and what this command always does")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@config_option("run config: model, inputs, outputs (default: configs/default.toml)")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--max-steps", type=int, default=None, help="stop after this many batches")
@click.option("--batch-size", type=int, default=None, help="default: trainer.batch_size")
@click.option("--val-fraction", type=float, default=0.1, show_default=True, help="share of episodes held out")
@click.option("--stride-frames", type=int, default=None, help="sequence/stack stride in frames (default: seconds from config)")
@click.option("--shift-frames", type=int, default=None, help="label shift in frames (default: inputs.label_shift_s)")
@click.option("--sample-every", type=int, default=1, show_default=True, help="use every k-th tick as a sample")
@click.option("--no-augment", is_flag=True, help="no minimap-aware flip/shift/colour augmentation")
@click.option("--no-balance", is_flag=True, help="plain shuffle instead of the bin-balancing sampler")
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="checkpoint folder (default: <checkpoint_dir>/<run.name>-offline)")
@click.option("--resume", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="start from this checkpoint (a live trainer's, to fine-tune)")
@click.option("--device", default=None, help="override trainer.device")
@click.option("--seed", type=int, default=0, show_default=True)
def cli(offline: bool, dirs: tuple[Path, ...], config_path: Path | None, epochs: int, max_steps: int | None,
        batch_size: int | None, val_fraction: float, stride_frames: int | None, shift_frames: int | None,
        sample_every: int, no_augment: bool, no_balance: bool, workers: int, out_dir: Path | None,
        resume: Path | None, device: str | None, seed: int) -> None:
    """Train epochs over recorded data directories (offline; live training is `charles trainer`):
    TensorBoard, validation loss per epoch, checkpoints."""
    configure_logging("train")
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from pipeline.config import DEFAULT_CONFIG, load_config
    from pipeline.errors import CharlesError, ConfigError
    from pipeline.models import build_model
    from pipeline.models.loading import pick_device
    from pipeline.process import install_signal_handlers
    from pipeline.train.learner import Learner
    from pipeline.train.offline import (
        OfflineSettings,
        OfflineTrainer,
        build_datasets,
        build_loaders,
    )
    from pipeline.wire.schema import SampleSchema

    with user_errors():
        cfg = load_config(config_path)
    torch.manual_seed(seed)
    name = f"{cfg.run.name}-offline"
    out = out_dir or Path(cfg.run.checkpoint_dir) / name
    settings = OfflineSettings(dirs=list(dirs), out_dir=out, epochs=epochs, max_steps=max_steps,
                               batch_size=batch_size, val_fraction=val_fraction, seed=seed, workers=workers,
                               balance=not no_balance, augment=not no_augment, stride_frames=stride_frames,
                               shift_frames=shift_frames, sample_every=sample_every,
                               log_every=cfg.trainer.log_every, checkpoint_every=cfg.trainer.checkpoint_every)
    try:
        train, val = build_datasets(cfg, settings)
    except (CharlesError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    t = cfg.trainer
    config_file = config_path or DEFAULT_CONFIG
    try:
        torch_device = pick_device(device or t.device)
    except ConfigError as exc:
        where = "--device" if device else f"{config_file}: trainer.device"
        raise click.ClickException(f"{where}: {exc}") from None
    with user_errors(f"{config_file}: "):
        model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    train_loader, val_loader = build_loaders(train, val, cfg, settings)
    learner = Learner(model, t.learning_rate, t.weight_decay, torch_device, t.amp)
    if resume is not None:
        with user_errors():
            learner.load_checkpoint(resume)
        log.info("checkpoint_resumed", folder=str(resume), batches=learner.batches)
    stop = threading.Event()
    install_signal_handlers(stop)
    writer = SummaryWriter(log_dir=str(Path(cfg.run.log_dir) / name))
    trainer = OfflineTrainer(learner, train_loader, val_loader, SampleSchema.from_config(cfg), out, cfg.run.name,
                             writer=writer, log_every=t.log_every, checkpoint_every=t.checkpoint_every,
                             extra={"data": [str(d) for d in dirs], "config_sha256": cfg.sha256()})
    log.info("offline_training", device=str(learner.device), train=len(train), val=len(val), out=str(out))
    try:
        summary = trainer.run(epochs, max_steps=max_steps, stop=stop)
    finally:
        writer.close()
    click.echo(json.dumps({"checkpoint": str(out), **{k: v for k, v in summary.items() if k != "epochs"},
                           "last_epoch": summary["epochs"][-1] if summary["epochs"] else None}))
