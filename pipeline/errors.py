"""The one exception hierarchy of Charles, so callers can catch by meaning.

    CharlesError
    ├── ConfigError        a config file or value is invalid (raised before Redis is touched)
    ├── CodecError         bytes that are not a valid Charles message (never decoded further)
    ├── SampleError        a decoded message that breaks the sample schema
    ├── WeightsError       weights that fail their hash, format or model check
    ├── GameError          a game backend failed (bridge down, malformed reply, no window)
    └── MissingExtraError  an optional dependency (extra) is not installed
"""

from __future__ import annotations


class CharlesError(Exception):
    """Base of every error Charles raises on purpose."""


class ConfigError(CharlesError):
    """A config file or value is invalid; the message names the file, the key and what is allowed."""


class CodecError(CharlesError):
    """Bytes that could not be decoded safely (truncated, oversized, forbidden dtype, ...)."""


class SampleError(CharlesError):
    """A decoded sample set that does not match the schema the active config expects."""


class WeightsError(CharlesError):
    """Weights that cannot be trusted or used (hash mismatch, not safetensors, wrong model)."""


class GameError(CharlesError):
    """A game backend failed in a way the caller may recover from (reconnect, respawn)."""


class MissingExtraError(CharlesError):
    """An optional dependency is missing; the message names the pip extra that provides it."""

    def __init__(self, package: str, extra: str, needed_by: str = "") -> None:
        super().__init__(
            (f"{needed_by} needs {package}, which" if needed_by else package)
            + f" is not installed; install the '{extra}' extra: pip install -c constraints.txt -e '.[{extra}]'"
        )
        self.package = package
        self.extra = extra
