"""The one exception hierarchy of Charles, so callers can catch by meaning.

    CharlesError
    ├── ConfigError            a config file or value is invalid (raised before Redis is touched)
    ├── CodecError             bytes that are not a valid Charles message (never decoded further)
    ├── SampleError            a decoded message that breaks the sample schema
    ├── WeightsError           weights that fail their hash, format or model check
    ├── GameError              a game backend failed (bridge down, malformed reply, no window)
    │   └── BridgeVersionError the GTA5 mod speaks another protocol version
    ├── MissingExtraError      an optional dependency (extra) is not installed
    │   └── ViewerMissingError a window needs pygame (the `viewer` extra)
    ├── NotReadyError          a job ran before the system could serve it (no config published yet)
    ├── JobRefused             an rq job names a function this worker does not run
    └── SupervisionError       a Procfile, role list or concurrency that cannot be supervised
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


class BridgeVersionError(GameError):
    """The mod speaks another protocol version: update the mod or Charles."""


#: How to get the `viewer` extra (pygame) for `charles sim` and human driving.
VIEWER_INSTALL = "pip install 'charles[viewer]'"


class ViewerMissingError(MissingExtraError):
    """pygame is not installed; names the extra that provides it."""

    def __init__(self) -> None:
        CharlesError.__init__(
            self,
            f"a window needs pygame, which is not installed: {VIEWER_INSTALL} "
            "(in a checkout: pip install -c constraints.txt -e '.[viewer]')",
        )
        self.package, self.extra = "pygame", "viewer"


class NotReadyError(CharlesError):
    """A job ran before the system could serve it, e.g. no server has published a config yet."""


class JobRefused(CharlesError):
    """An rq job names a function this worker does not run."""


class SupervisionError(CharlesError):
    """A Procfile, a role list or a concurrency that cannot be supervised."""
