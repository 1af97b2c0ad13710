"""`charles trainer`: train continuously from the buffers, log to TensorBoard, publish weights."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import click
import structlog

from pipeline.log import configure_logging
from pipeline.process import install_signal_handlers, wait_for_config
from pipeline.wire.presence import Presence, new_worker_id
from pipeline.wire.redis_conn import connect, keys_from_env, redis_url, safe_url

log = structlog.get_logger("trainer")


@click.command(name="trainer")
@click.option("--max-batches", type=int, default=None, help="stop after this many batches (tests)")
@click.option("--device", default=None, help="override trainer.device (auto | cpu | cuda)")
@click.option("--nice", "niceness", type=int, default=5, show_default=True,
              help="CPU priority below players, above collectors")
def cli(max_batches: int | None, device: str | None, niceness: int) -> None:
    """Wait for the config, resume from the last checkpoint, train until SIGTERM."""
    configure_logging("trainer")
    os.nice(niceness)
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from pipeline.evaluate.scoreboard import enqueue_evaluation
    from pipeline.models import build_model
    from pipeline.serve.shards import ShardedBuffers
    from pipeline.train.bin_weights import BinWeights
    from pipeline.train.distributed import DistributedContext
    from pipeline.train.learner import Learner, checkpoint_exists
    from pipeline.train.live import Trainer, TrainerSettings
    from pipeline.wire.schema import SampleSchema
    from pipeline.wire.weights import WeightsStore

    stop = threading.Event()
    install_signal_handlers(stop)
    r, keys = connect(), keys_from_env()
    log.info("trainer_starting", redis=safe_url(redis_url()))
    fetched = wait_for_config(r, keys, stop)
    if fetched is None:
        return
    cfg, _ = fetched
    t = cfg.trainer
    model = build_model(cfg.model, cfg.inputs, cfg.outputs, (cfg.game.hood_height, cfg.game.hood_width))
    dist = DistributedContext.from_env()  # set by torchrun: data-parallel over its ranks
    schedule = {"ema_decay": t.ema_decay, "augment_shift_px": t.augment_shift_px,
                "lr_decay_batches": t.lr_decay_batches, "lr_final_fraction": t.lr_final_fraction,
                "row_weights": BinWeights.for_outputs(cfg.outputs)}
    if dist is not None:
        dev = dist.init()
        learner = Learner(model, t.learning_rate, t.weight_decay, dev, t.amp, wrap=lambda m: dist.wrap(m, dev),
                          **schedule)
    else:
        learner = Learner(model, t.learning_rate, t.weight_decay, device or t.device, t.amp, **schedule)
    if learner.device.type == "cpu" and t.cpu_threads:
        torch.set_num_threads(t.cpu_threads)
    ckpt = Path(cfg.run.checkpoint_dir) / cfg.run.name
    if checkpoint_exists(ckpt):
        learner.load_checkpoint(ckpt)
        log.info("checkpoint_resumed", folder=str(ckpt), batches=learner.batches, version=learner.last_version)
    writer = SummaryWriter(log_dir=str(Path(cfg.run.log_dir) / cfg.run.name)) if dist is None or dist.is_main else None
    presence = Presence(r, keys, "trainer", new_worker_id("trainer"))
    trainer = Trainer(
        r, keys, learner,
        ShardedBuffers.for_config(r, keys, cfg),
        SampleSchema.from_config(cfg),
        TrainerSettings(cfg.run.name, t.batch_size, t.publish_every, t.checkpoint_every, t.log_every,
                        t.prefetch, ckpt, cfg.sha256()),
        WeightsStore(r, keys, t.keep_versions),
        writer=writer,
        on_status=lambda status: presence.beat(**status, device=str(learner.device), model=cfg.run.name),
        on_publish=lambda info: enqueue_evaluation(r, keys, info),
        dist=dist,
    )
    from pipeline.train.tensorboard import TrainerMonitor

    if writer is not None:
        trainer.on_log = TrainerMonitor(writer, trainer.buffers.fills, cfg.buffers.capacity, learner.module,
                                        t.convcam_every)
    log.info("trainer_ready", device=str(learner.device), params=sum(p.numel() for p in model.parameters()))
    try:
        trainer.run(stop, max_batches=max_batches)
    finally:
        if learner.batches and trainer.is_main:
            trainer.checkpoint()
        if writer is not None:
            writer.close()
        if dist is not None:
            dist.close()
    log.info("trainer_stopped", batches=learner.batches, version=trainer.published_version)
