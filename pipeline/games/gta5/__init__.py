"""The GTA5 backend: screen capture + virtual gamepad + the TCP bridge to the Charles mod."""

from pipeline.games.gta5.bridge import PROTOCOL_VERSION, BridgeClient, BridgeVersionError
from pipeline.games.gta5.game import GTA5Game

__all__ = ["PROTOCOL_VERSION", "BridgeClient", "BridgeVersionError", "GTA5Game"]
