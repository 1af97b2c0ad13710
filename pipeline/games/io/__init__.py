"""Talking to a real game: controller translation, virtual gamepads and key senders, human input, X11 and Win32 windows."""
