"""Game backends behind one protocol (`pipeline.games.base.Game`), loaded by name or dotted path."""

from pipeline.games.base import Controls, Environment, Game, Observation, load_game

__all__ = ["Controls", "Environment", "Game", "Observation", "load_game"]
