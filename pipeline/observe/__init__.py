"""Watching the system: role status, the consoles, progress bars, the web dashboard."""
