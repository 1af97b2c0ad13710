"""The `charles` command: one subcommand per role, each imported only when it runs.

Heavy imports (torch, OpenCV) stay inside the subcommands, so `charles status` and
`charles --help` start instantly. A subcommand lives in `workers/<module>.py` as `cli`.
"""

from __future__ import annotations

import importlib

import click

#: subcommand -> "module:attribute" of its click command.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("workers.init_env:cli", "create .env with a generated Redis password"),
    "redis": ("workers.redis_server:cli", "run the project's own Redis (infra/redis.conf)"),
    "credentials": ("workers.credentials:cli", "a Redis user per remote collector or player: add, revoke, list"),
    "supervise": ("workers.supervise:cli", "run the Procfile's roles under supervisord (restarts crashes)"),
    "server": ("workers.server:cli", "publish config, route sample sets into buffers, hand out jobs"),
    "collector": ("workers.collector:cli", "run the collection episodes the server hands this collector"),
    "trainer": ("workers.trainer:cli", "train continuously from the buffers, publish weights"),
    "player": ("workers.player:cli", "drive with the latest weights, swap at Unstuck"),
    "status": ("workers.status:cli", "print buffers, trainer, weights, players, collectors"),
    "console": ("workers.console:cli", "live Server/Trainer console, or a player's (--player ID)"),
    "evaluator": ("workers.evaluator:cli", "rq worker that scores every published version"),
    "evaluate": ("workers.evaluate:cli", "score one weights file closed-loop"),
    "dashboard": ("workers.dashboard:cli", "web page with the stream layout"),
    "tensorboard": ("workers.tensorboard:cli", "TensorBoard on the run logs, loopback Host names only"),
    "bench": ("workers.bench:cli", "benchmarks, one JSON object per target"),
    "sim": ("workers.sim:cli", "watch the NPC or drive the built-in simulator yourself"),
    "record": ("workers.record:cli", "record samples to disk (from streams or a human driver)"),
    "train": ("workers.train:cli", "train offline from recorded data directories"),
    "push": ("workers.push:cli", "publish a checkpoint to live players"),
    "export": ("workers.export:cli", "write the latest, best or a given published version to a weights file"),
    "data": ("workers.data:cli", "inspect data: histograms of what reached the buffers"),
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        target, _ = COMMANDS[name]
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return _unavailable(name)
        return getattr(module, attr)

    def invoke(self, ctx: click.Context) -> object:
        """Run the subcommand; a CharlesError that reaches here is a user error: one line, exit 1."""
        from pipeline.errors import CharlesError

        try:
            return super().invoke(ctx)
        except CharlesError as exc:
            raise click.ClickException(str(exc)) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in sorted(COMMANDS)])


def _unavailable(name: str) -> click.Command:
    @click.command(name=name, help="Not built yet.")
    def _cmd() -> None:
        raise click.ClickException(f"'charles {name}' is not available in this build")

    return _cmd


@click.group(cls=LazyGroup)
@click.version_option(package_name="charles")
def main() -> None:
    """Charles: collectors, trainer and players that teach an AI to drive, live, through Redis."""
    from pipeline import dotenv

    dotenv.load()


if __name__ == "__main__":
    main()
