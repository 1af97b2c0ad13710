"""Charles: a live, distributed system that teaches an AI to drive.

The library lives here; process entry points live in `workers/`.
"""

__version__ = "0.1.0"
