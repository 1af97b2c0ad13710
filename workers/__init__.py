"""Thin process entry points: parse options, configure logging, build objects, run."""
