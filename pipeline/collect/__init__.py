"""Collectors: play an episode, label it with the expert (or DAgger), balance it into bins, publish sample sets."""
