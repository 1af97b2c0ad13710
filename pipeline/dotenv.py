"""The `.env` file that gives every `charles` command the Redis address and password.

Read, without overriding what the environment already says, from CHARLES_ENV_FILE if set,
else `./.env` (honcho reads that one too), else the checkout's own `.env` (next to
`pipeline/`), so `charles status` works from any folder. `loaded` says which file was read,
so a Redis error can say where the password came from, or that none was found.
"""

from __future__ import annotations

import os
from pathlib import Path

#: the checkout this package runs from (an editable install); its `.env` is the fallback
CHECKOUT = Path(__file__).resolve().parent.parent

#: the file `load()` read, None when there was none
loaded: Path | None = None


def candidates() -> list[Path]:
    """Where `.env` is looked for, in order."""
    explicit = os.environ.get("CHARLES_ENV_FILE")
    if explicit:
        return [Path(explicit)]
    return [Path(".env"), CHECKOUT / ".env"]


def load() -> Path | None:
    """Read the first `.env` that exists into os.environ (existing variables win)."""
    global loaded
    for path in candidates():
        if path.is_file():
            for line in path.read_text().splitlines():
                line = line.strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                key, _, value = line.partition("=")
                os.environ.setdefault(key.strip(), value.strip().strip('"').strip("'"))
            loaded = path.resolve()
            return loaded
    loaded = None
    return None


def describe() -> str:
    """Where this process's Redis settings came from, for error messages."""
    if loaded is not None:
        return f"settings from {loaded}"
    looked = " or ".join(str(p.resolve()) for p in candidates())
    return f"no .env found ({looked}); run `charles init` in the checkout, or set CHARLES_ENV_FILE"
