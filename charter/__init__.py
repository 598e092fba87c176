"""Charter: a small, complete, hackable Claude-style assistant system."""

__version__ = "0.1.0"
