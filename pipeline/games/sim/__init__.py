"""The built-in driving simulator, the default game backend (`game.backend = "sim"`).

Importing this package registers the gymnasium environment `CharlesSim-v0`.
"""

from pipeline.games.sim.game import OPTIONS, SimGame
from pipeline.games.sim.minimap import minimap_rect

__all__ = ["OPTIONS", "SimGame", "minimap_rect"]

GYM_ID = "CharlesSim-v0"


def _register_gym() -> None:
    """Make `gymnasium.make("CharlesSim-v0")` work once this package is imported."""
    from gymnasium.envs.registration import register, registry

    if GYM_ID not in registry:
        register(id=GYM_ID, entry_point="pipeline.games.sim.gym_env:CharlesSimEnv", max_episode_steps=3000)


_register_gym()
